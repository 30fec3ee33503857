"""DICOMweb client for a PACS: search studies (QIDO-RS), retrieve their X-rays (WADO-RS) and store
results back (STOW-RS), with dicomweb-client. Patient attributes found are shown to the reader
and go back to the PACS only: nothing here logs them.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from datetime import date

from ..base.errors import CxrError
from .settings import DicomWebSettings

log = logging.getLogger(__name__)

#: SOP classes of the X-rays the tool reviews: CR, DX for presentation, DX for processing
XRAY_CLASSES = ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1")
XRAY_MODALITIES = ("CR", "DX")
#: libraries that log request URLs (with the search's patient text) at debug level
QUIET_LOGGERS = ("dicomweb_client", "urllib3.connectionpool")


class DicomWebError(CxrError):
    """The DICOMweb server cannot be reached or refused a request."""


@dataclass(frozen=True)
class StudyHit:
    """One study found by a search (held in memory for the reader; never logged or stored)."""

    study_uid: str
    patient_name: str = field(repr=False)
    patient_id: str = field(repr=False)
    study_date: str = field(repr=False)
    accession: str = field(repr=False)
    description: str = field(repr=False)
    modalities: str = ""
    instances: int = 0


def _value(item: dict, tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):  # person name: {"Alphabetic": "..."}
        value = value.get("Alphabetic", "")
    return str(value)


class DicomWebClient:
    """The few DICOMweb calls the tool makes, with one sentence for every failure."""

    def __init__(self, config: DicomWebSettings, timeout_s: float = 30.0):
        if not config.configured:
            raise DicomWebError("No DICOMweb server is configured: set CXR_DICOMWEB_URL (docs/pacs.md).")
        for name in QUIET_LOGGERS:  # their debug lines hold query URLs: patient names and IDs
            logging.getLogger(name).setLevel(max(logging.getLogger(name).level, logging.INFO))
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        if config.user:
            session.auth = (config.user, config.password)
        self.url = config.url
        self._session = session
        self._client = DICOMwebClient(url=config.url, session=session)
        self._timeout = timeout_s
        session.request = _with_timeout(session.request, timeout_s)

    def _call(self, what: str, func, *args, **kwargs):
        import requests

        try:
            return func(*args, **kwargs)
        except requests.HTTPError as exc:
            code = getattr(exc.response, "status_code", "?")
            raise DicomWebError(f"The DICOMweb server refused to {what} (HTTP {code}).") from exc
        except requests.RequestException as exc:
            raise DicomWebError(f"The DICOMweb server at {self.url} cannot be reached to {what}.") from exc

    def _qido(self, what: str, path: str, params: dict) -> list[dict]:
        """A QIDO-RS GET with '*' left as is: some servers (Orthanc 1.10) do not match an encoded
        wildcard, which is how dicomweb-client sends it."""
        from urllib.parse import urlencode

        def get():
            response = self._session.get(f"{self.url}/{path}?{urlencode(params, doseq=True, safe='*')}",
                                         headers={"Accept": "application/dicom+json"})
            response.raise_for_status()
            return response.json() if response.content else []

        return self._call(what, get)

    def search_studies(self, date_from: date | None = None, date_to: date | None = None,
                       text: str = "", modality: str = "", body_part: str = "", limit: int = 100) -> list[StudyHit]:
        """QIDO-RS study search: date range, patient name/ID or accession text, modality
        (CR or DX; both when empty) and body part; newest first."""
        base: dict[str, str] = {}
        if date_from or date_to:
            base["StudyDate"] = f"{date_from.strftime('%Y%m%d') if date_from else ''}-" \
                                f"{date_to.strftime('%Y%m%d') if date_to else ''}"
        text = text.strip()
        searches = [dict(base)]
        if text:  # the text may be a name, a patient ID or an accession number
            searches = [{**base, "PatientName": f"*{text}*"}, {**base, "PatientID": text},
                        {**base, "AccessionNumber": text}]
        hits: dict[str, StudyHit] = {}
        for modality_value in ([modality] if modality else list(XRAY_MODALITIES)):
            for filters in searches:
                found = self._qido("search studies", "studies", {
                    **filters, "ModalitiesInStudy": modality_value, "limit": limit,
                    "includefield": ["StudyDescription", "NumberOfStudyRelatedInstances"]})
                for item in found:
                    uid = _value(item, "0020000D")
                    if uid and uid not in hits:
                        hits[uid] = StudyHit(
                            uid, _value(item, "00100010"), _value(item, "00100020"), _value(item, "00080020"),
                            _value(item, "00080050"), _value(item, "00081030"),
                            "\\".join(str(v) for v in item.get("00080061", {}).get("Value", [])),
                            int(_value(item, "00201208") or 0))
        if body_part.strip():  # a series attribute: keep the studies with a matching series
            keep = set()
            for modality_value in ([modality] if modality else list(XRAY_MODALITIES)):
                found = self._qido("search series", "series", {
                    "BodyPartExamined": body_part.strip().upper(), "Modality": modality_value})
                keep |= {_value(item, "0020000D") for item in found}
            hits = {uid: hit for uid, hit in hits.items() if uid in keep}
        return sorted(hits.values(), key=lambda h: h.study_date, reverse=True)[:limit]

    def retrieve_xrays(self, study_uid: str) -> list[bytes]:
        """WADO-RS: the CR/DX images of a study as DICOM Part 10 files (other objects skipped)."""
        datasets = self._call("retrieve a study", self._client.retrieve_study, study_uid)
        files = []
        for ds in datasets:
            if str(ds.get("SOPClassUID", "")) not in XRAY_CLASSES:
                continue
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            files.append(buf.getvalue())
        return files

    def store(self, parts: list[bytes]) -> None:
        """STOW-RS: store DICOM Part 10 files (results) on the server."""
        import pydicom

        datasets = [pydicom.dcmread(io.BytesIO(part)) for part in parts]
        response = self._call("store results", self._client.store_instances, datasets)
        failed = response.get("00081198", {}).get("Value", []) if response is not None else []
        if failed:
            raise DicomWebError(f"The DICOMweb server refused {len(failed)} of {len(datasets)} objects.")

    def series_of_study(self, study_uid: str) -> list[dict]:
        """QIDO-RS: the series of a study (modality, number of instances), for checks."""
        found = self._call("search series", self._client.search_for_series, study_uid,
                           fields=["NumberOfSeriesRelatedInstances"])
        return [{"uid": _value(s, "0020000E"), "modality": _value(s, "00080060"),
                 "instances": int(_value(s, "00201209") or 0)} for s in found]


def _with_timeout(request, timeout_s: float):
    def call(method, url, **kwargs):
        kwargs.setdefault("timeout", timeout_s)
        return request(method, url, **kwargs)
    return call


def pacs_name(data: bytes) -> str:
    """A neutral worklist name for a retrieved X-ray: a hash of its bytes, never a patient
    attribute or the PACS's own identifiers."""
    import hashlib

    return f"pacs-{hashlib.sha256(data).hexdigest()[:12]}.dcm"


def pull_studies(client: DicomWebClient, study_uids: list[str]) -> list[tuple[str, bytes]]:
    """WADO-RS: the CR/DX X-rays of the chosen studies as (neutral name, Part 10 bytes) pairs,
    ready for `Worklist.add`."""
    files = []
    for uid in study_uids:
        files += [(pacs_name(data), data) for data in client.retrieve_xrays(uid)]
    log.info("retrieved %d X-ray(s) from %d study(ies) over DICOMweb", len(files), len(study_uids))
    return files


def store_review(client: DicomWebClient, review, pages=None) -> int:
    """STOW-RS the SR (and, unless refused, the report's Secondary Capture) of one review of a
    DICOM X-ray into its own study; returns the number of objects stored."""
    from ..review.dicom_out import dicom_results

    results = dicom_results(review, pages)
    parts = [results.sr] + ([results.sc] if results.sc is not None else [])
    client.store(parts)
    return len(parts)
