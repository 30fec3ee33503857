"""Send results to a destination: C-STORE to a DICOM node, or STOW-RS to a DICOMweb server."""

from __future__ import annotations

import io
import logging

from ..base.errors import CxrError
from .settings import Destination, DicomWebSettings

log = logging.getLogger(__name__)

#: Comprehensive SR Storage and Multi-frame True Color Secondary Capture Image Storage
RESULT_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.7.4")
#: statuses of a C-STORE that mean stored (success, and the warnings of PS3.4 B.2.3)
STORED = {0x0000, 0xB000, 0xB007, 0xB006}


class SendError(CxrError):
    """A destination is down or refused the results."""


def send(destination: Destination, objects: list[bytes], calling_aet: str = "CXRREVIEW",
         timeout_s: float = 30.0) -> None:
    """Store every object at the destination, or raise SendError with the reason."""
    if destination.kind == "stow":
        from .dicomweb import DicomWebClient

        try:
            DicomWebClient(DicomWebSettings(destination.url, destination.user, destination.password),
                           timeout_s).store(objects)
        except CxrError as exc:
            raise SendError(str(exc)) from exc
        return
    _c_store(destination, objects, calling_aet, timeout_s)


def _c_store(destination: Destination, objects: list[bytes], calling_aet: str, timeout_s: float) -> None:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # noqa: F401  (registers the UIDs)

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for uid in RESULT_CLASSES:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.aet)
    if not assoc.is_established:
        raise SendError(f"{destination.name} refused or did not answer the association.")
    try:
        for data in objects:
            ds = pydicom.dcmread(io.BytesIO(data))
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in STORED:
                what = "no answer" if code < 0 else f"status 0x{code:04X}"
                raise SendError(f"{destination.name} did not store a result ({what}).")
    finally:
        if assoc.is_established:
            assoc.release()
