"""DICOM results: SR of the findings and SC of the heatmap report, read back with pydicom."""

import io
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from cxr_core.imaging.image_io import load_image
from cxr_core.review.dicom_out import (
    PATIENT_TAGS,
    DicomOutputError,
    dicom_results,
    referenced_instances,
    sr_findings,
    write_dicom_results,
)
from tests.helpers import dicom_xray_bytes, png_as_dicom


def fake_review(image, labels=("alpha", "beta", "gamma")):
    """What dicom_out reads from a Review, with arbitrary labels (no bundle needed)."""
    k = len(labels)
    rng = np.random.default_rng(1)
    probs = rng.random(k)
    thresholds = np.full(k, 0.5)
    findings = probs >= thresholds
    return SimpleNamespace(
        image=image, labels=list(labels), probs=probs, thresholds=thresholds, findings=findings,
        agreement=np.array([2, 0, 3][:k] + [1] * max(0, k - 3)), n_members=3,
        bundle_id="bundle-x-v1", label_set="test-set", threshold_method="f1",
        pre=SimpleNamespace(fallback=False),
        order=lambda include_all=False: list(np.argsort(-probs)))


def report_png() -> bytes:
    import cv2

    picture = np.zeros((120, 200, 3), np.uint8)
    picture[20:60, 30:90] = (0, 0, 255)  # red in BGR
    return cv2.imencode(".png", picture)[1].tobytes()


def test_sr_and_sc_round_trip_with_references_and_no_patient_values(tmp_path):
    image = load_image(dicom_xray_bytes(window=(2000, 4000)), filename="src.dcm")
    ref = image.dicom_ref
    review = fake_review(image)
    sr_path, sc_path = write_dicom_results(review, report_png(), tmp_path, "src")
    sr, sc = pydicom.dcmread(sr_path), pydicom.dcmread(sc_path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    for ds in (sr, sc):
        assert ds.StudyInstanceUID == ref.study_instance_uid
        assert ds.SeriesInstanceUID != ref.series_instance_uid
        assert ds.SOPInstanceUID != ref.sop_instance_uid
        assert referenced_instances(ds) == {(ref.series_instance_uid, ref.sop_instance_uid)}
        assert all(str(ds.get(tag, "")) == "" for tag in PATIENT_TAGS)
        assert ds.Manufacturer == "CXR Review"
        blob = sr_path.read_bytes() + sc_path.read_bytes()
        assert b"Secret" not in blob and b"ID-123" not in blob and b"19500101" not in blob
    rows = {row["Finding name"]: row for row in sr_findings(sr)}
    assert set(rows) == set(review.labels)
    for k, label in enumerate(review.labels):
        assert rows[label]["Ensemble probability"] == pytest.approx(review.probs[k], abs=1e-6)
        assert rows[label]["Decision threshold"] == pytest.approx(0.5)
        assert rows[label]["Models voting positive"] == review.agreement[k]
        assert rows[label]["Model call"] == ("positive" if review.findings[k] else "negative")
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
             for item in sr.ContentSequence if item.ValueType == "TEXT"}
    assert texts["Algorithm Version"] == "bundle-x-v1"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == ref.sop_instance_uid
    pixels = sc.pixel_array
    assert pixels.shape == (120, 200, 3) and tuple(pixels[40, 50]) == (255, 0, 0)  # RGB


def test_non_dicom_input_is_refused_with_one_sentence():
    image = load_image(dicom_xray_bytes(uids=False), filename="no-uids.dcm")
    with pytest.raises(DicomOutputError, match="need a DICOM X-ray"):
        dicom_results(fake_review(image), report_png())


def test_explain_cli_dicom_out_writes_sr_and_sc_for_dicom_inputs_only(tmp_path):
    """`explain --dicom-out` on the default bundle: a real review's findings in the SR."""
    import json
    from pathlib import Path

    from cxr_core.base.config import settings
    from pydicom.uid import generate_uid

    from cxr_core.cli import main

    sample = min((Path(__file__).resolve().parents[2] / "assets" / "samples").glob("*.png"))
    source = tmp_path / "chest.dcm"
    source.write_bytes(png_as_dicom(sample, Modality="DX", BodyPartExamined="CHEST",
                                    ViewPosition="PA", PatientID="anon-1",
                                    StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(),
                                    SOPInstanceUID=generate_uid(),
                                    SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1"))
    out = tmp_path / "out"
    assert main(["explain", str(source), str(sample), "--out", str(out), "--dicom-out"]) == 0
    assert sorted(p.name for p in out.glob("*.dcm")) == ["chest_findings_sr.dcm", "chest_report_sc.dcm"]
    sr = pydicom.dcmread(out / "chest_findings_sr.dcm")
    ref = load_image(source).dicom_ref
    assert sr.StudyInstanceUID == ref.study_instance_uid
    labels = [lab["name"] for lab in
              json.loads((settings().default_bundle_path / "manifest.json").read_text())["labels"]]
    rows = {row["Finding name"]: row for row in sr_findings(sr)}
    assert set(rows) == set(labels)
    predictions = json.loads((out / "predictions.json").read_text())["predictions"]
    for record in predictions:
        if record["image"] == "chest.dcm":
            assert rows[record["label"]]["Ensemble probability"] == pytest.approx(record["probability"], abs=1e-5)
    sc = pydicom.dcmread(io.BytesIO((out / "chest_report_sc.dcm").read_bytes()))
    assert sc.pixel_array.ndim == 3 and sc.SamplesPerPixel == 3
