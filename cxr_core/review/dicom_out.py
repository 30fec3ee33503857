"""Results back into DICOM: a Comprehensive Structured Report of the findings and a Secondary
Capture of the heatmap report, both in the source X-ray's study, built with highdicom.

What the objects carry (README "DICOM output" lists it too):
- from the source: Study Instance UID (same study), and in references only its Series Instance
  UID, SOP Instance UID and SOP Class UID;
- new: SOP Instance UID, Series Instance UID (one new series per object kind), series and
  instance numbers, content date/time, Manufacturer "CXR Review", the model bundle id;
- patient and study attributes the IODs require (Patient's Name, Patient ID, Birth Date, Sex,
  Accession Number, Study ID, Study Date/Time, Referring Physician) are present but EMPTY: the
  loader never keeps them, so the receiving system files the objects by Study Instance UID.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.errors import CxrError
from ..imaging.deidentify import PATIENT_KEYWORDS
from ..imaging.image_io import DicomReference

log = logging.getLogger(__name__)

MANUFACTURER = "CXR Review"
ALGORITHM_NAME = "CXR Review ensemble (Grad-CAM)"
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902
#: private coding scheme for the concepts DICOM has no code for (PS3.16: "99" prefix)
SCHEME = "99CXRREVIEW"
PATIENT_TAGS = PATIENT_KEYWORDS


class DicomOutputError(CxrError):
    """A DICOM result cannot be written (no DICOM source, or the object failed its check)."""


@dataclass(frozen=True)
class DicomResults:
    """The two objects of one review, encoded as DICOM Part 10 files."""

    sr: bytes
    sc: bytes


def _evidence(ref: DicomReference):
    """A stand-in for the source image: its UIDs and empty patient/study attributes only."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.StudyInstanceUID = ref.study_instance_uid
    ds.SeriesInstanceUID = ref.series_instance_uid
    ds.SOPInstanceUID = ref.sop_instance_uid
    ds.SOPClassUID = ref.sop_class_uid
    ds.Modality = ref.modality
    for name in PATIENT_TAGS + ("AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                                "ReferringPhysicianName"):
        setattr(ds, name, "")
    return ds


def _concept(code: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(code, SCHEME, meaning)


def _content(review):
    """Root container: algorithm, bundle, then one 'Finding' container per label."""
    from highdicom.sr import (
        CodedConcept,
        ContainerContentItem,
        NumContentItem,
        TextContentItem,
    )
    from pydicom.sr.codedict import codes

    contains = "CONTAINS"
    unit_one = CodedConcept("1", "UCUM", "no units")
    items = [
        TextContentItem(CodedConcept("111001", "DCM", "Algorithm Name"), ALGORITHM_NAME, contains),
        TextContentItem(CodedConcept("111003", "DCM", "Algorithm Version"), review.bundle_id, contains),
        TextContentItem(_concept("LABELSET", "Label set"), review.label_set, contains),
        TextContentItem(_concept("THRMETHOD", "Threshold method"), review.threshold_method, contains),
        TextContentItem(_concept("SEGFALLBACK", "Lung segmentation fallback"),
                        "yes" if review.pre.fallback else "no", contains),
    ]
    for k in review.order(include_all=True):
        finding = ContainerContentItem(codes.DCM.Finding, relationship_type=contains)
        finding.ContentSequence = [
            TextContentItem(_concept("FINDINGNAME", "Finding name"), review.labels[k], contains),
            NumContentItem(_concept("PROBABILITY", "Ensemble probability"),
                           round(float(review.probs[k]), 6), unit_one, relationship_type=contains),
            NumContentItem(_concept("THRESHOLD", "Decision threshold"),
                           round(float(review.thresholds[k]), 6), unit_one, relationship_type=contains),
            NumContentItem(_concept("AGREEMENT", "Models voting positive"),
                           int(review.agreement[k]), CodedConcept("{models}", "UCUM", "models"),
                           relationship_type=contains),
            NumContentItem(_concept("MODELS", "Models in the ensemble"), int(review.n_members),
                           CodedConcept("{models}", "UCUM", "models"), relationship_type=contains),
            TextContentItem(_concept("CALL", "Model call"),
                            "positive" if review.findings[k] else "negative", contains),
        ]
        items.append(finding)
    root = ContainerContentItem(CodedConcept("18748-4", "LN", "Diagnostic imaging report"))
    root.ContentSequence = items
    return root


def _encode(dataset) -> bytes:
    buf = io.BytesIO()
    dataset.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def structured_report(review, ref: DicomReference | None = None) -> bytes:
    """Comprehensive SR of every finding (probability, threshold, agreement, call, model id)."""
    from highdicom.sr import ComprehensiveSR
    from pydicom.uid import generate_uid

    ref = _require_ref(review, ref)
    sr = ComprehensiveSR(
        evidence=[_evidence(ref)], content=_content(review),
        series_instance_uid=generate_uid(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        is_complete=True, is_final=False, is_verified=False,
        series_description="CXR Review findings (AI, unverified)",
    )
    return _encode(sr)


def secondary_capture(review, report_png: bytes, ref: DicomReference | None = None) -> bytes:
    """Secondary Capture (RGB) of the heatmap report picture, in the source's study, with a
    Source Image reference to the X-ray and a Referenced Series item for its series."""
    import cv2
    from highdicom.sc import SCImage
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ref = _require_ref(review, ref)
    bgr = cv2.imdecode(np.frombuffer(report_png, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DicomOutputError("The report picture could not be decoded for the Secondary Capture.")
    sc = SCImage(
        pixel_array=np.ascontiguousarray(bgr[..., ::-1]), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", study_instance_uid=ref.study_instance_uid,
        series_instance_uid=generate_uid(), series_number=SC_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        patient_id="", patient_name="", patient_birth_date="", patient_sex="",
        accession_number="", study_id="", study_date=None, study_time=None,
        referring_physician_name="",
        # the report's panels show the X-ray in the usual frontal display: rows run towards
        # the patient's left, columns towards the feet
        patient_orientation=("L", "F"),
        series_description="CXR Review heatmap report (AI, unverified)",
    )
    source = Dataset()
    source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = ref.sop_class_uid, ref.sop_instance_uid
    sc.SourceImageSequence = [source]
    instance = Dataset()
    instance.ReferencedSOPClassUID, instance.ReferencedSOPInstanceUID = ref.sop_class_uid, ref.sop_instance_uid
    series = Dataset()
    series.SeriesInstanceUID = ref.series_instance_uid
    series.ReferencedInstanceSequence = [instance]
    sc.ReferencedSeriesSequence = [series]
    sc.ImageComments = f"Heatmap report of model bundle {review.bundle_id}; not for diagnosis alone."
    return _encode(sc)


def _require_ref(review, ref: DicomReference | None) -> DicomReference:
    ref = ref or getattr(review.image, "dicom_ref", None)
    if ref is None:
        raise DicomOutputError("DICOM results need a DICOM X-ray with study, series and instance "
                               "UIDs; this input has none.")
    return ref


def dicom_results(review, report_png: bytes) -> DicomResults:
    """Both objects for one review of a DICOM input, each read back and checked with pydicom."""
    results = DicomResults(structured_report(review), secondary_capture(review, report_png))
    check_results(results, review.image.dicom_ref)
    return results


def check_results(results: DicomResults, ref: DicomReference) -> None:
    """Read both objects back with pydicom and check the study/series/instance references and
    that no patient attribute has a value."""
    import pydicom

    for kind, data in (("Structured Report", results.sr), ("Secondary Capture", results.sc)):
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception as exc:  # pydicom raises many types for a broken file
            raise DicomOutputError(f"The {kind} could not be read back: {exc}") from exc
        if ds.StudyInstanceUID != ref.study_instance_uid:
            raise DicomOutputError(f"The {kind} is not in the source X-ray's study.")
        if any(str(ds.get(tag, "") or "") for tag in PATIENT_TAGS):
            raise DicomOutputError(f"The {kind} carries a patient attribute value.")
        if referenced_instances(ds) != {(ref.series_instance_uid, ref.sop_instance_uid)}:
            raise DicomOutputError(f"The {kind} does not reference the source X-ray.")


def referenced_instances(ds) -> set[tuple[str, str]]:
    """(series UID, SOP instance UID) pairs an SR's evidence or an SC's series references name."""
    pairs = set()
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.get("ReferencedSeriesSequence", []):
            for item in series.get("ReferencedSOPSequence", []):
                pairs.add((series.SeriesInstanceUID, item.ReferencedSOPInstanceUID))
    for series in ds.get("ReferencedSeriesSequence", []):
        for item in series.get("ReferencedInstanceSequence", []):
            pairs.add((series.SeriesInstanceUID, item.ReferencedSOPInstanceUID))
    return pairs


def sr_findings(ds) -> list[dict]:
    """The findings of an SR written by `structured_report`, read back from its content tree."""
    rows = []
    for item in ds.ContentSequence:
        if item.ValueType != "CONTAINER":
            continue
        row = {}
        for child in item.ContentSequence:
            meaning = child.ConceptNameCodeSequence[0].CodeMeaning
            if child.ValueType == "TEXT":
                row[meaning] = child.TextValue
            elif child.ValueType == "NUM":
                row[meaning] = float(child.MeasuredValueSequence[0].NumericValue)
        rows.append(row)
    return rows


def write_dicom_results(review, report_png: bytes, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """`<stem>_findings_sr.dcm` and `<stem>_report_sc.dcm` in out_dir."""
    results = dicom_results(review, report_png)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr_path, sc_path = out_dir / f"{stem}_findings_sr.dcm", out_dir / f"{stem}_report_sc.dcm"
    sr_path.write_bytes(results.sr)
    sc_path.write_bytes(results.sc)
    return sr_path, sc_path
