"""DICOM de-identification: what the tool keeps of a DICOM header when it stores or writes one.

A stored upload (``CXR_STORE_IMAGES=1``) and the DICOM results keep the pixels, the acquisition
attributes the models need (modality, body part, view, photometric and VOI attributes) and the
study/series/instance UIDs (so results file into the right study); every attribute of the
patient module (group 0010), the people and places of the study, its dates and times, free-text
descriptions and all private tags are removed.
"""

from __future__ import annotations

import io
import logging

from .image_io import looks_like_raw_dicom, sniff_format

log = logging.getLogger(__name__)

#: attributes outside the patient group that can name or date a person, a visit or a place
IDENTIFYING_KEYWORDS = (
    "AccessionNumber", "StudyID", "ReferringPhysicianName", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
    "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "AcquisitionDateTime",
    "StudyDescription", "SeriesDescription", "RequestedProcedureDescription",
    "PerformedProcedureStepDescription", "ImageComments", "AdditionalPatientHistory",
    "RequestAttributesSequence", "ReferencedPatientSequence", "OtherPatientIDsSequence",
)
#: the patient attributes the DICOM objects this tool writes must carry, empty
PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
PATIENT_GROUP = 0x0010


def strip_identifiers(ds) -> None:
    """Remove in place every identifying attribute of a pydicom Dataset (module docstring)."""
    ds.remove_private_tags()
    for element in list(ds):
        if element.tag.group == PATIENT_GROUP:
            del ds[element.tag]
    for keyword in IDENTIFYING_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "CXR Review: patient group, dates, names and private tags removed"


def deidentified_bytes(data: bytes) -> bytes | None:
    """The same file without identifying attributes when it is DICOM (anything else as given);
    None when a DICOM cannot be rewritten, so that the caller keeps nothing rather than a header."""
    if sniff_format(data) != "dicom" and not looks_like_raw_dicom(data):
        return data
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        strip_identifiers(ds)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001  (any parser or writer failure: keep nothing)
        log.warning("an upload was not stored: its DICOM header could not be de-identified (%s)",
                    type(exc).__name__)
        return None
    return out.getvalue()
