"""DICOM results: SR of the findings and SC of the heatmap report, read back with pydicom and
checked by dciodvfy (dicom3tools) when it is installed."""

import io
import os
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from cxr_core.imaging.image_io import load_image
from cxr_core.review.dicom_out import (
    MULTIFRAME_SC_CLASS,
    DicomOutputError,
    dicom_results,
    referenced_instances,
    sr_comments,
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
        pre=SimpleNamespace(fallback=False), refused=False, input_check=None,
        order=lambda include_all=False: list(np.argsort(-probs)))


def report_png() -> bytes:
    import cv2

    picture = np.zeros((120, 200, 3), np.uint8)
    picture[20:60, 30:90] = (0, 0, 255)  # red in BGR
    return cv2.imencode(".png", picture)[1].tobytes()


def report_pages() -> list[np.ndarray]:
    """Two RGB 'pages' of one size: red on the first, blue on the second."""
    first, second = np.zeros((120, 200, 3), np.uint8), np.zeros((120, 200, 3), np.uint8)
    first[20:60, 30:90] = (255, 0, 0)
    second[20:60, 30:90] = (0, 0, 255)
    return [first, second]


def dciodvfy_errors(path) -> list[str]:
    """dciodvfy's error lines for a file; skips (fails under CXR_REQUIRE_ORTHANC=1) without it."""
    if shutil.which("dciodvfy") is None:
        reason = "dciodvfy (Debian package dicom3tools, `make orthanc`) is not installed"
        if os.environ.get("CXR_REQUIRE_ORTHANC") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def test_sr_and_sc_file_under_the_source_patient_and_study_with_references(tmp_path):
    image = load_image(dicom_xray_bytes(window=(2000, 4000)), filename="src.dcm")
    ref = image.dicom_ref
    review = fake_review(image, labels=("pneumonia", "atelectasis", "odd finding"))
    sr_path, sc_path = write_dicom_results(review, report_pages(), tmp_path, "src")
    sr, sc = pydicom.dcmread(sr_path), pydicom.dcmread(sc_path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sc.SOPClassUID == MULTIFRAME_SC_CLASS
    for ds in (sr, sc):
        assert ds.StudyInstanceUID == ref.study_instance_uid
        assert ds.SeriesInstanceUID != ref.series_instance_uid
        assert ds.SOPInstanceUID != ref.sop_instance_uid
        assert referenced_instances(ds) == {(ref.series_instance_uid, ref.sop_instance_uid)}
        # the source's patient module, so that the PACS files them under the same patient
        assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate) == ("Secret^Person", "ID-123", "19500101")
        assert ds.Manufacturer == "CXR Review" and "bundle-x-v1" in ds.SoftwareVersions
    rows = {row["label"]: row for row in sr_findings(sr)}
    assert set(rows) == set(review.labels)
    for k, label in enumerate(review.labels):
        assert rows[label]["probability"] == pytest.approx(review.probs[k], abs=1e-6)
        assert rows[label]["threshold"] == pytest.approx(0.5)
        assert rows[label]["agreement"] == review.agreement[k]
        assert rows[label]["call"] == ("positive" if review.findings[k] else "negative")
    # standard codes where they exist, the private scheme otherwise
    assert rows["pneumonia"]["code"] == ("233604007", "SCT", "Pneumonia")
    assert rows["atelectasis"]["code"] == ("46621007", "SCT", "Atelectasis")
    assert rows["odd finding"]["code"][1] == "99CXRREVIEW"
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
             for item in sr.ContentSequence if item.ValueType == "TEXT"}
    assert texts["Algorithm Version"] == "bundle-x-v1"
    images = [item for item in sr.ContentSequence if item.ValueType == "IMAGE"]
    assert images[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ref.sop_instance_uid
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == ref.sop_instance_uid
    # one frame per report page, in RGB
    pixels = sc.pixel_array
    assert int(sc.NumberOfFrames) == 2 and list(sc.PageNumberVector) == [1, 2]
    assert pixels.shape == (2, 120, 200, 3)
    assert tuple(pixels[0, 40, 50]) == (255, 0, 0) and tuple(pixels[1, 40, 50]) == (0, 0, 255)
    for path in (sr_path, sc_path):
        assert dciodvfy_errors(path) == []
    # a one-page report is a one-frame object, valid too
    _, one_page = write_dicom_results(review, report_pages()[:1], tmp_path, "one")
    single = pydicom.dcmread(one_page)
    assert int(single.NumberOfFrames) == 1 and "FrameIncrementPointer" not in single
    assert dciodvfy_errors(one_page) == []


def test_refused_image_gets_a_short_sr_saying_why_and_no_sc(tmp_path):
    image = load_image(dicom_xray_bytes(), filename="src.dcm")
    review = fake_review(image)
    review.refused = True
    review.input_check = SimpleNamespace(reason="The DICOM header says the body part is HAND, not the chest.")
    sr_path, sc_path = write_dicom_results(review, report_pages(), tmp_path, "src")
    assert sc_path is None and not (tmp_path / "src_report_sc.dcm").exists()
    sr = pydicom.dcmread(sr_path)
    assert sr_findings(sr) == []
    assert "Not reviewed: The DICOM header says the body part is HAND, not the chest." in sr_comments(sr)
    assert sr.PatientID == "ID-123" and sr.StudyInstanceUID == image.dicom_ref.study_instance_uid
    assert dciodvfy_errors(sr_path) == []


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
    rows = {row["label"]: row for row in sr_findings(sr)}
    assert set(rows) == set(labels)
    predictions = json.loads((out / "predictions.json").read_text())["predictions"]
    for record in predictions:
        if record["image"] == "chest.dcm":
            assert rows[record["label"]]["probability"] == pytest.approx(record["probability"], abs=1e-5)
    sc = pydicom.dcmread(io.BytesIO((out / "chest_report_sc.dcm").read_bytes()))
    assert sc.pixel_array.shape[-1] == 3 and sc.SamplesPerPixel == 3
