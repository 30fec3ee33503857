"""Results back into DICOM: a Comprehensive Structured Report of the findings and a multi-frame
True Color Secondary Capture of the heatmap report (one frame per report page), both filed in the
source X-ray's patient and study, built with highdicom and pydicom.

What the objects carry (docs/pacs.md lists it too):
- from the source: Study Instance UID, the patient and study module (`PatientStudy`: name, ID,
  birth date, sex, accession, study date/time, study ID, referring physician), and in references
  its Series Instance UID, SOP Instance UID and SOP Class UID;
- new: SOP Instance UID, Series Instance UID (one new series per object kind), series and
  instance numbers, content date/time, Manufacturer, model name and software versions (package
  version and model bundle id);
- the SR's findings coded with SNOMED CT (or DICOM) codes where one exists, each with its
  probability, threshold, call (present/absent) and the models voting positive. A refused image
  (input check) gets a short SR saying why, without findings, and no Secondary Capture.
Why multi-frame: a report of several pages stays ONE object (one per review, sent or not as a
whole, and counted one to one with the reviewed images), and viewers page through its frames.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..base.errors import CxrError
from ..imaging.image_io import DicomReference, PatientStudy

log = logging.getLogger(__name__)

MANUFACTURER = "CXR Review"
MODEL_NAME = "CXR Review"
ALGORITHM_NAME = "CXR Review ensemble (Grad-CAM)"
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902
#: private coding scheme, only for the concepts no standard terminology has (PS3.16: "99" prefix)
SCHEME = "99CXRREVIEW"
#: Multi-frame True Color Secondary Capture Image Storage
MULTIFRAME_SC_CLASS = "1.2.840.10008.5.1.4.1.1.7.4"
#: the patient/study attributes the objects copy from the source (keyword -> PatientStudy field)
PATIENT_STUDY_KEYWORDS = {
    "PatientName": "patient_name", "PatientID": "patient_id", "PatientBirthDate": "patient_birth_date",
    "PatientSex": "patient_sex", "AccessionNumber": "accession_number", "StudyID": "study_id",
    "StudyDate": "study_date", "StudyTime": "study_time",
    "ReferringPhysicianName": "referring_physician_name",
}
PATIENT_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")

#: label (lower case) -> (code value, scheme, meaning): SNOMED CT where it has the finding,
#: DICOM's own code for an infiltrate; other labels fall back to the private scheme
FINDING_CODES = {
    "pneumonia": ("233604007", "SCT", "Pneumonia"),
    "atelectasis": ("46621007", "SCT", "Atelectasis"),
    "pleural effusion": ("60046008", "SCT", "Pleural effusion"),
    "effusion": ("60046008", "SCT", "Pleural effusion"),
    "pulmonary edema": ("19242006", "SCT", "Pulmonary edema"),
    "edema": ("19242006", "SCT", "Pulmonary edema"),
    "cardiomegaly": ("8186001", "SCT", "Cardiomegaly"),
    "pneumothorax": ("36118008", "SCT", "Pneumothorax"),
    "nodule": ("27925004", "SCT", "Nodule"),
    "mass": ("4147007", "SCT", "Mass"),
    "fibrosis": ("112674009", "SCT", "Fibrosis"),
    "infiltrates": ("112121", "DCM", "Infiltrate"),
    "infiltration": ("112121", "DCM", "Infiltrate"),
    "infiltrate": ("112121", "DCM", "Infiltrate"),
    "normal": ("17621005", "SCT", "Normal"),
    "no finding": ("17621005", "SCT", "Normal"),
}


class DicomOutputError(CxrError):
    """A DICOM result cannot be written (no DICOM source, or the object failed its check)."""


@dataclass(frozen=True)
class DicomResults:
    """The objects of one review, encoded as DICOM Part 10 files (no SC for a refused image)."""

    sr: bytes
    sc: bytes | None


def _patient_values(patient: PatientStudy | None) -> dict[str, str]:
    """DICOM keyword -> value of the source's patient/study module ('' when unknown)."""
    patient = patient or PatientStudy()
    return {keyword: getattr(patient, name) for keyword, name in PATIENT_STUDY_KEYWORDS.items()}


def _evidence(ref: DicomReference, patient: PatientStudy | None):
    """A stand-in for the source image: its UIDs and its patient/study module."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.StudyInstanceUID = ref.study_instance_uid
    ds.SeriesInstanceUID = ref.series_instance_uid
    ds.SOPInstanceUID = ref.sop_instance_uid
    ds.SOPClassUID = ref.sop_class_uid
    ds.Modality = ref.modality
    for keyword, value in _patient_values(patient).items():
        setattr(ds, keyword, value)
    return ds


def _concept(code: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(code, SCHEME, meaning)


def finding_code(label: str):
    """The coded concept of a finding label: SNOMED CT / DICOM when known, else private."""
    from highdicom.sr import CodedConcept

    value, scheme, meaning = FINDING_CODES.get(label.strip().lower(), (None, SCHEME, label))
    if value is None:
        return CodedConcept(label.strip().upper().replace(" ", "_")[:16], SCHEME, label)
    return CodedConcept(value, scheme, meaning)


def _header_items(bundle_id: str, label_set: str, threshold_method: str) -> list:
    from highdicom.sr import CodedConcept, TextContentItem
    from pydicom.sr.codedict import codes

    return [
        TextContentItem(codes.DCM.AlgorithmName, ALGORITHM_NAME, "CONTAINS"),
        TextContentItem(codes.DCM.AlgorithmVersion, bundle_id, "CONTAINS"),
        TextContentItem(codes.DCM.AlgorithmParameters,
                        f"label set: {label_set}; threshold method: {threshold_method}", "CONTAINS"),
        TextContentItem(CodedConcept("121106", "DCM", "Comment"),
                        "AI output, not verified by a radiologist; not for diagnosis alone.", "CONTAINS"),
    ]


def _source_image(ref: DicomReference):
    from highdicom.sr import ImageContentItem
    from pydicom.sr.codedict import codes

    return ImageContentItem(codes.DCM.SourceImageForImageProcessingOperation, ref.sop_class_uid,
                            ref.sop_instance_uid, relationship_type="CONTAINS")


def _root(items: list):
    from highdicom.sr import CodedConcept, ContainerContentItem

    root = ContainerContentItem(CodedConcept("18748-4", "LN", "Diagnostic imaging report"))
    root.ContentSequence = items
    return root


def _content(review, ref: DicomReference):
    """Root container: algorithm, bundle, source image, then one 'Finding' container per label."""
    from highdicom.sr import (
        CodeContentItem,
        CodedConcept,
        ContainerContentItem,
        NumContentItem,
        TextContentItem,
    )
    from pydicom.sr.codedict import codes

    contains = "CONTAINS"
    unit_one = CodedConcept("1", "UCUM", "no units")
    models = CodedConcept("{models}", "UCUM", "models")
    items = _header_items(review.bundle_id, review.label_set, review.threshold_method)
    items.append(TextContentItem(codes.DCM.Comment, "lung segmentation fallback: "
                                 + ("yes" if review.pre.fallback else "no"), contains))
    items.append(_source_image(ref))
    for k in review.order(include_all=True):
        finding = ContainerContentItem(codes.DCM.Finding, relationship_type=contains)
        finding.ContentSequence = [
            TextContentItem(codes.DCM.TrackingIdentifier, review.labels[k], contains),
            CodeContentItem(finding_code(review.labels[k]),
                            codes.SCT.Present if review.findings[k] else codes.SCT.Absent, contains),
            NumContentItem(codes.DCM.Probability, round(float(review.probs[k]), 6), unit_one,
                           relationship_type=contains),
            NumContentItem(codes.DCM.ThresholdValue, round(float(review.thresholds[k]), 6), unit_one,
                           relationship_type=contains),
            NumContentItem(_concept("AGREEMENT", "Models voting positive"), int(review.agreement[k]),
                           models, relationship_type=contains),
            NumContentItem(_concept("MODELS", "Models in the ensemble"), int(review.n_members),
                           models, relationship_type=contains),
        ]
        items.append(finding)
    return _root(items)


def _refusal_content(ref: DicomReference, bundle_id: str, label_set: str, threshold_method: str,
                     reason: str):
    from highdicom.sr import TextContentItem
    from pydicom.sr.codedict import codes

    items = _header_items(bundle_id, label_set, threshold_method)
    items.append(TextContentItem(codes.DCM.Comment, f"Not reviewed: {reason}", "CONTAINS"))
    items.append(_source_image(ref))
    return _root(items)


def _encode(dataset) -> bytes:
    buf = io.BytesIO()
    dataset.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _equipment(ds, bundle_id: str) -> None:
    """Device attributes: who made the object and with which software and model bundle."""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.SoftwareVersions = [f"cxr_core {__version__}", bundle_id]


def _sr(ref: DicomReference, patient: PatientStudy | None, content, bundle_id: str,
        description: str) -> bytes:
    from highdicom.sr import ComprehensiveSR
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    sr = ComprehensiveSR(
        evidence=[_evidence(ref, patient)], content=content,
        series_instance_uid=generate_uid(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        is_complete=True, is_final=False, is_verified=False, series_description=description,
    )
    _equipment(sr, bundle_id)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "CXR Review model outputs"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return _encode(sr)


def structured_report(review, ref: DicomReference | None = None) -> bytes:
    """Comprehensive SR of every finding (probability, threshold, call, agreement, model id), or
    for a refused image a short SR saying why (`refusal_report`)."""
    ref = _require_ref(review, ref)
    if review.refused:
        return refusal_report(ref, review.image.patient_study, review.bundle_id, review.input_check.reason,
                              review.label_set, review.threshold_method)
    return _sr(ref, review.image.patient_study, _content(review, ref), review.bundle_id,
               "CXR Review findings (AI, unverified)")


def refusal_report(ref: DicomReference, patient: PatientStudy | None, bundle_id: str, reason: str,
                   label_set: str = "", threshold_method: str = "") -> bytes:
    """A short SR for an image that was not reviewed: the reason, the algorithm, no findings."""
    return _sr(ref, patient, _refusal_content(ref, bundle_id, label_set, threshold_method, reason),
               bundle_id, "CXR Review: image not reviewed")


def _pages(report) -> list[np.ndarray]:
    """RGB uint8 pages from `report_pages` output, or one page from PNG bytes."""
    import cv2

    if isinstance(report, (bytes, bytearray)):
        bgr = cv2.imdecode(np.frombuffer(report, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DicomOutputError("The report picture could not be decoded for the Secondary Capture.")
        return [np.ascontiguousarray(bgr[..., ::-1])]
    pages = [np.ascontiguousarray(page, dtype=np.uint8) for page in report]
    if not pages or any(p.ndim != 3 or p.shape[2] != 3 or p.shape != pages[0].shape for p in pages):
        raise DicomOutputError("The report pages must be RGB pictures of one size for the Secondary Capture.")
    return pages


def secondary_capture(review, report: Sequence[np.ndarray] | bytes, ref: DicomReference | None = None) -> bytes:
    """Multi-frame True Color Secondary Capture of the heatmap report, one frame per page
    (`explain.report.report_pages`; PNG bytes make one frame), in the source's patient and study,
    with a Source Image reference to the X-ray and a Referenced Series item for its series."""
    from highdicom.sc import SCImage
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ref = _require_ref(review, ref)
    pages = _pages(report)
    patient = review.image.patient_study or PatientStudy()
    sc = SCImage(
        pixel_array=pages[0], photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", study_instance_uid=ref.study_instance_uid,
        series_instance_uid=generate_uid(), series_number=SC_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        patient_id=patient.patient_id, patient_name=patient.patient_name,
        patient_birth_date=patient.patient_birth_date or None, patient_sex=patient.patient_sex or None,
        accession_number=patient.accession_number, study_id=patient.study_id,
        study_date=patient.study_date or None, study_time=patient.study_time or None,
        referring_physician_name=patient.referring_physician_name,
        # the report's panels show the X-ray in the usual frontal display: rows run towards
        # the patient's left, columns towards the feet
        patient_orientation=("L", "F"),
        series_description="CXR Review heatmap report (AI, unverified)",
    )
    for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime"):
        if keyword not in sc:  # type 2: present, empty when the source has none
            setattr(sc, keyword, "")
    sc.SOPClassUID = sc.file_meta.MediaStorageSOPClassUID = MULTIFRAME_SC_CLASS
    sc.NumberOfFrames = len(pages)
    if len(pages) > 1:  # type 1C: only for more than one frame
        sc.FrameIncrementPointer = 0x00182001  # Page Number Vector
        sc.PageNumberVector = list(range(1, len(pages) + 1))
    sc.PixelData = np.stack(pages).tobytes()
    sc.BurnedInAnnotation = "YES"
    sc.BodyPartExamined = "CHEST"  # unpaired: General Series Laterality stays absent
    if "Laterality" in sc:
        del sc.Laterality
    _equipment(sc, review.bundle_id)
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


def dicom_results(review, report: Sequence[np.ndarray] | bytes | None = None) -> DicomResults:
    """The objects of one review of a DICOM input, each read back and checked with pydicom:
    the SR, and the report's Secondary Capture unless the input check refused the image.
    `report`: the report's pages (`report_pages`), drawn here when not given."""
    ref = _require_ref(review, None)
    sc = None
    if not review.refused:
        if report is None:
            from ..explain.report import report_pages

            report = report_pages(review)
        sc = secondary_capture(review, report)
    results = DicomResults(structured_report(review), sc)
    check_results(results, ref, review.image.patient_study)
    return results


def check_results(results: DicomResults, ref: DicomReference, patient: PatientStudy | None = None) -> None:
    """Read the objects back with pydicom and check the study/series/instance references and
    that they carry the source's patient and study attributes."""
    import pydicom

    expected = _patient_values(patient)
    for kind, data in (("Structured Report", results.sr), ("Secondary Capture", results.sc)):
        if data is None:
            continue
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception as exc:  # pydicom raises many types for a broken file
            raise DicomOutputError(f"The {kind} could not be read back: {exc}") from exc
        if ds.StudyInstanceUID != ref.study_instance_uid:
            raise DicomOutputError(f"The {kind} is not in the source X-ray's study.")
        if any(str(ds.get(keyword, "") or "") != value for keyword, value in expected.items()):
            raise DicomOutputError(f"The {kind} does not carry the source's patient and study attributes.")
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
    """The findings of an SR written by `structured_report`, read back from its content tree:
    one dict per finding with its label, code, probability, threshold, call and agreement."""
    rows = []
    for item in ds.ContentSequence:
        if item.ValueType != "CONTAINER":
            continue
        row = {}
        for child in item.ContentSequence:
            name = child.ConceptNameCodeSequence[0]
            if child.ValueType == "TEXT" and name.CodeValue == "112039":
                row["label"] = child.TextValue
            elif child.ValueType == "CODE":
                row["code"] = (name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning)
                row["call"] = {"52101004": "positive", "272519000": "negative"}[
                    child.ConceptCodeSequence[0].CodeValue]
            elif child.ValueType == "NUM":
                key = {"122157": "probability", "122411": "threshold", "AGREEMENT": "agreement",
                       "MODELS": "models"}[name.CodeValue]
                row[key] = float(child.MeasuredValueSequence[0].NumericValue)
        rows.append(row)
    return rows


def sr_comments(ds) -> list[str]:
    """The Comment texts of an SR's root (for a refused image: 'Not reviewed: <reason>')."""
    return [item.TextValue for item in ds.ContentSequence
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "121106"]


def write_dicom_results(review, report: Sequence[np.ndarray] | bytes | None, out_dir: Path,
                        stem: str) -> tuple[Path, Path | None]:
    """`<stem>_findings_sr.dcm` and (unless refused) `<stem>_report_sc.dcm` in out_dir."""
    results = dicom_results(review, report)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr_path, sc_path = out_dir / f"{stem}_findings_sr.dcm", out_dir / f"{stem}_report_sc.dcm"
    sr_path.write_bytes(results.sr)
    if results.sc is None:
        return sr_path, None
    sc_path.write_bytes(results.sc)
    return sr_path, sc_path
