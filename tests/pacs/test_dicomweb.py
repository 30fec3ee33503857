"""The Worklist's PACS source against a real Orthanc (DICOMweb plugin): real chest X-rays with
patient tags are pushed into Orthanc, found by a QIDO-RS search, pulled by WADO-RS into a
worklist, reviewed, and their SR and SC stored back by STOW-RS into the same study, where they pass
dciodvfy and read back with the right references and findings. The patient tags never reach the
feedback store, the logs or the worklist's names."""

from __future__ import annotations

import io
import logging
from datetime import date

import pydicom
import pytest
from pydicom.uid import generate_uid

from cxr_core.pacs.dicomweb import (
    DicomWebClient,
    DicomWebError,
    pull_studies,
    store_review,
)
from cxr_core.pacs.settings import DicomWebSettings
from cxr_core.review.dicom_out import (
    MULTIFRAME_SC_CLASS,
    referenced_instances,
    sr_findings,
)
from tests.pacs.conftest import dciodvfy_errors, nih_images, xray_dicom

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


@pytest.fixture(scope="module")
def reviewer():
    """The shipped demo bundle with the Lite engine (the fastest), once for the module."""
    from cxr_core.base.config import settings
    from cxr_core.review.pipeline import Reviewer

    return Reviewer.from_paths(settings().default_bundle_path, engine="lite")


def test_search_pull_review_and_store_back_into_the_same_study(orthanc, reviewer, tmp_path, caplog):
    from cxr_core.review.worklist import Worklist

    study_uid, other_uid = generate_uid(), generate_uid()
    pngs = nih_images(2, start=60)
    orthanc.upload(xray_dicom(pngs[0], "WEB-0001", study_uid, patient_name="Webster^Ada",
                              accession="ACCW0001"))
    orthanc.upload(xray_dicom(pngs[1], "WEB-0002", other_uid, patient_name="Other^Bob",
                              accession="ACCW0002", StudyDate="20250101"))
    client = DicomWebClient(DicomWebSettings(orthanc.dicomweb))
    caplog.set_level(logging.DEBUG)
    # QIDO-RS: date range, patient text, modality
    hits = client.search_studies(date_from=date(2026, 11, 1), date_to=date(2026, 12, 31),
                                 text="Webster", modality="DX", body_part="CHEST")
    assert [h.study_uid for h in hits] == [study_uid]
    assert hits[0].patient_id == "WEB-0001" and hits[0].accession == "ACCW0001"
    assert [h.study_uid for h in client.search_studies(text="ACCW0002")] == [other_uid]
    assert client.search_studies(text="Webster", modality="CR") == []
    # WADO-RS into a worklist, reviewed there
    files = pull_studies(client, [study_uid])
    assert len(files) == 1 and files[0][0].startswith("pacs-") and "WEB" not in files[0][0]
    worklist = Worklist()
    assert worklist.add(files) == 1
    worklist.run_queued(reviewer)
    item = worklist.items[0]
    assert item.status == "ready", item.error
    review = item.review
    assert review.image.dicom_ref.study_instance_uid == study_uid
    # STOW-RS back: an SR and an SC in the same study
    assert store_review(client, review) == 2
    instances = orthanc.study_instances(study_uid)
    by_class = {}
    for instance in instances:
        meta = orthanc.get(f"/instances/{instance['id']}/metadata?expand")
        by_class.setdefault(meta["SopClassUid"], []).append(instance["id"])
    assert sorted(len(v) for v in by_class.values()) == [1, 1, 1]
    source_sop = review.image.dicom_ref.sop_instance_uid
    sr_data = orthanc.file(by_class[SR_CLASS][0])
    sc_data = orthanc.file(by_class[MULTIFRAME_SC_CLASS][0])
    for data in (sr_data, sc_data):
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.StudyInstanceUID == study_uid and ds.PatientID == "WEB-0001"
        assert str(ds.PatientName) == "Webster^Ada" and ds.AccessionNumber == "ACCW0001"
        assert ds.StudyDate == "20261201" and ds.PatientBirthDate == "19600214"
        assert {sop for _, sop in referenced_instances(ds)} == {source_sop}
        assert dciodvfy_errors(data, tmp_path) == []
    rows = {row["label"]: row for row in sr_findings(pydicom.dcmread(io.BytesIO(sr_data)))}
    assert set(rows) == set(review.labels)
    for k, label in enumerate(review.labels):
        assert rows[label]["probability"] == pytest.approx(float(review.probs[k]), abs=1e-5)
        assert rows[label]["call"] == ("positive" if review.findings[k] else "negative")
    sc = pydicom.dcmread(io.BytesIO(sc_data))
    assert int(sc.NumberOfFrames) >= 1 and sc.pixel_array.shape[-1] == 3
    # patient identifiers go back to the PACS only: not into the logs...
    for secret in ("Webster", "WEB-0001", "ACCW0001"):
        assert secret not in caplog.text
    # ... nor into the feedback store
    from cxr_core.review.feedback import FeedbackStore, Submission

    db = tmp_path / "fb.sqlite"
    store = FeedbackStore(f"sqlite:///{db}", image_dir=tmp_path / "images")
    store.submit(Submission(
        image_sha256=review.image.sha256, bundle_id=review.bundle_id, label_set=review.label_set,
        reviewer="tester", labels=review.labels, probabilities=review.probs.tolist(),
        thresholds=review.thresholds.tolist(), model_positive=review.findings.tolist(),
        agreement=review.agreement.tolist(), decisions={label: "agree" for label in review.labels},
        input_check=review.input_check.record()), image_bytes=item.data)
    store.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "check-" not in p.name)
    assert list((tmp_path / "images").rglob("*")), "the store kept no image to check"
    stored_names = " ".join(str(p) for p in tmp_path.rglob("*"))
    for secret in (b"Webster", b"WEB-0001", b"ACCW0001", b"19600214"):
        assert secret not in stored and secret.decode() not in stored_names


def test_unreachable_server_is_one_sentence():
    client = DicomWebClient(DicomWebSettings("http://127.0.0.1:9/dicom-web"), timeout_s=2)
    with pytest.raises(DicomWebError, match="cannot be reached"):
        client.search_studies(text="x")


def test_worklist_page_from_pacs_search_retrieve_review_store(orthanc, tmp_path, monkeypatch):
    """The Worklist page's 'From PACS' source, clicked through with AppTest."""
    import sys
    import time

    from streamlit.testing.v1 import AppTest

    from tests.pacs.conftest import REPO

    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CXR_DICOMWEB_URL", orthanc.dicomweb)
    monkeypatch.setenv("CXR_ENGINE", "lite")
    from cxr_core.pacs.queue import DiskQueue

    node_queue = DiskQueue(tmp_path / "node-queue", owner=True)  # as a running node keeps it
    node_queue.put("1.2.3.4.5", b"received image")
    monkeypatch.setenv("CXR_NODE_QUEUE", str(tmp_path / "node-queue"))
    for name in ("CXR_DB_URL", "CXR_BUNDLE", "CXR_PACS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    study_uid = generate_uid()
    orthanc.upload(xray_dicom(nih_images(1, start=70)[0], "PAGE-0001", study_uid,
                              patient_name="Pagetest^Eve", accession="ACCP0001"))
    at = AppTest.from_file(str(REPO / "app_pages" / "0_Worklist.py"), default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    assert any(e.label.startswith("DICOM node queue: 1 to review, 0 to send, 0 sent") for e in at.expander)
    at.date_input(key="pacs_from").set_value(date(2026, 11, 1))
    at.date_input(key="pacs_to").set_value(date(2026, 12, 31))
    at.text_input(key="pacs_text").set_value("Pagetest")
    next(b for b in at.button if b.label == "Search PACS").click()
    at.run()
    options = at.multiselect(key="pacs_chosen").options
    assert len(options) == 1 and "Pagetest" in options[0]
    at.multiselect(key="pacs_chosen").set_value(options)
    at.run()
    at.button(key="pacs_retrieve").click()
    at.run()
    deadline = time.time() + 300
    while any("Reviewing" in p.proto.text for p in at.get("progress")) and time.time() < deadline:
        time.sleep(1)
        at.run()
    assert not at.exception, at.exception
    at.button(key="pacs_store_one").click()
    at.run()
    assert any("2 object(s) stored" in s.value for s in at.success), [s.value for s in at.success]
    classes = sorted(orthanc.get(f"/instances/{i['id']}/metadata?expand")["SopClassUid"]
                     for i in orthanc.study_instances(study_uid))
    assert classes == sorted(["1.2.840.10008.5.1.4.1.1.1.1", SR_CLASS, MULTIFRAME_SC_CLASS])
