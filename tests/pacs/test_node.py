"""The DICOM node against a real Orthanc: Orthanc routes a burst of 20 chest X-rays to it by
C-STORE, the node is killed in the middle and restarted, and Orthanc ends up with exactly 20 SR and
20 SC in the right studies; unknown callers and malformed datasets are refused and logged; an
image the input check refuses gets a short SR saying why and no SC."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from cxr_core.review.dicom_out import (
    MULTIFRAME_SC_CLASS,
    referenced_instances,
    sr_comments,
    sr_findings,
)
from tests.pacs.conftest import REPO, dciodvfy_errors, free_port, nih_images, xray_dicom

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
BURST = 20
NODE_AET = "CXRREVIEW"


class NodeProcess:
    """`python -m cxr_core node` in a subprocess, sending its results to Orthanc."""

    def __init__(self, orthanc, folder: Path):
        self.orthanc, self.folder = orthanc, folder
        self.port = free_port()
        self.queue = folder / "queue"
        self.log = folder / "node.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "CXR_ENGINE": "lite", "CXR_NODE_RETRY_S": "1", "CXR_NODE_RETRY_MAX_S": "4"}
        with open(self.log, "a") as handle:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cxr_core", "node", "--aet", NODE_AET, "--host", "127.0.0.1",
                 "--port", str(self.port), "--allow", "ORTHANC,CXRTEST", "--queue", str(self.queue),
                 "--send-to", f"{self.orthanc.aet}@127.0.0.1:{self.orthanc.dicom_port}"],
                cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the node exited: {self.log.read_text()[-2000:]}"
            if "listening on" in self.log.read_text() and echo(self.port, "CXRTEST"):
                return
            time.sleep(0.5)
        raise AssertionError(f"the node did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def sent(self) -> int:
        return len(list((self.queue / "done").glob("*.json"))) if (self.queue / "done").is_dir() else 0


def echo(port: int, calling: str) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def store(port: int, data: bytes, calling: str = "CXRTEST") -> int:
    """C-STORE one dataset to the node; returns the status (-1: association refused)."""
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    ae = AE(ae_title=calling)
    ae.add_requested_context(str(ds.SOPClassUID), ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    if not assoc.is_established:
        return -1
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status) if status else -2
    finally:
        assoc.release()


def wait_for(predicate, timeout: float, what: str, node: NodeProcess):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(2.0)
    raise AssertionError(f"timed out waiting for {what}; node log:\n{node.log.read_text()[-3000:]}")


def results_in(orthanc, study_uids: set[str]) -> dict[str, list[dict]]:
    """study UID -> its instances that are SR or SC (simplified tags)."""
    found = orthanc.post("/tools/find", json={"Level": "Series", "Query": {"Modality": "SR\\OT"},
                                               "Expand": True})
    by_study: dict[str, list[dict]] = {}
    for series in found:
        study = orthanc.get(f"/studies/{series['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"]
        if study in study_uids:
            for instance in series["Instances"]:
                by_study.setdefault(study, []).append(
                    {"id": instance, **orthanc.get(f"/instances/{instance}/metadata?expand")})
    return by_study


@pytest.fixture(scope="module")
def node(orthanc, tmp_path_factory):
    runner = NodeProcess(orthanc, tmp_path_factory.mktemp("node"))
    orthanc.put("/modalities/cxrnode", {"AET": NODE_AET, "Host": "127.0.0.1", "Port": runner.port})
    runner.start()
    yield runner
    runner.stop()


def test_burst_of_20_routed_by_orthanc_survives_a_kill_and_restart(orthanc, node, tmp_path):
    images = nih_images(BURST)
    studies = {}
    for i, png in enumerate(images):
        uid = generate_uid()
        studies[uid] = f"ROUTE-{i:04d}"
        orthanc.upload(xray_dicom(png, studies[uid], uid, index=i + 1, patient_name=f"Burst^Patient{i:02d}",
                                  accession=f"ACCB{i:04d}"))
    # kill the node while the burst is under way: some results sent, most not
    wait_for(lambda: node.sent() >= 3, 240, "the first results", node)
    sent_before_kill = node.sent()
    node.kill()
    assert sent_before_kill < BURST
    node.start()
    # the router's part: store jobs that failed while the node was down are retried
    for job in orthanc.get("/jobs?expand"):
        if job.get("State") == "Failure":
            orthanc.post(f"/jobs/{job['ID']}/resubmit", json={})

    def complete() -> bool:  # cheap: two queries (the full check follows once)
        counts = [len(orthanc.post("/tools/find", json={"Level": "Instance", "Query": {
            "Modality": modality, "PatientID": "ROUTE-*"}})) for modality in ("SR", "OT")]
        return min(counts) >= BURST

    wait_for(complete, 420, "20 SR + 20 SC in Orthanc", node)
    time.sleep(2.0)  # anything doubled would arrive now
    found = results_in(orthanc, set(studies))
    assert set(found) == set(studies)
    for study_uid, objects in found.items():
        classes = sorted(o["SopClassUid"] for o in objects)
        assert classes == sorted([SR_CLASS, MULTIFRAME_SC_CLASS]), (study_uid, classes)
        source = orthanc.post("/tools/find", json={"Level": "Instance", "Query": {
            "StudyInstanceUID": study_uid, "Modality": "DX"}, "Expand": True})[0]
        source_sop = source["MainDicomTags"]["SOPInstanceUID"]
        for obj in objects:
            ds = pydicom.dcmread(io.BytesIO(orthanc.file(obj["id"])))
            assert ds.PatientID == studies[study_uid] and ds.StudyInstanceUID == study_uid
            assert {sop for _, sop in referenced_instances(ds)} == {source_sop}
    assert node.sent() == BURST
    # patient identifiers never reach the queue's file names or the node's log
    names = " ".join(str(p) for p in node.queue.rglob("*"))
    log_text = node.log.read_text()
    for secret in ("ROUTE-", "Burst", "ACCB"):
        assert secret not in names and secret not in log_text


def test_unknown_caller_and_malformed_datasets_are_refused_and_logged(orthanc, node):
    good = xray_dicom(nih_images(1, start=40)[0], "REFUSE-1", generate_uid())
    assert store(node.port, good, calling="STRANGER") == -1  # rejected at association
    ds = pydicom.dcmread(io.BytesIO(good))
    del ds.PixelData
    ds.SOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf)
    assert store(node.port, buf.getvalue()) == 0xA900  # an image without pixels
    ds = pydicom.dcmread(io.BytesIO(good))
    ds.SOPInstanceUID = generate_uid()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]  # truncated pixels
    buf = io.BytesIO()
    ds.save_as(buf)
    assert store(node.port, buf.getvalue()) == 0xC000
    sr = pydicom.dcmread(io.BytesIO(good))  # a non-image dataset: a report
    sr.SOPClassUID, sr.SOPInstanceUID = SR_CLASS, generate_uid()
    del sr.PixelData
    buf = io.BytesIO()
    sr.save_as(buf)
    assert store(node.port, buf.getvalue()) == 0x0122  # SOP class not supported
    assert echo(node.port, "CXRTEST")  # still up
    log_text = node.log.read_text()
    assert "refused an association from calling AE 'STRANGER'" in log_text
    assert "lacks its study/series/instance UIDs or pixel data" in log_text
    assert f"SOP class {SR_CLASS} is not a CR/DX image" in log_text
    assert "pixel data could not be decoded" in log_text or "refused instance" in log_text
    assert "REFUSE-1" not in log_text


def test_image_the_input_check_refuses_gets_a_short_sr_and_no_sc(orthanc, node, tmp_path):
    study_uid = generate_uid()
    hand = xray_dicom(nih_images(1, start=41)[0], "HAND-1", study_uid, BodyPartExamined="HAND")
    assert store(node.port, hand) == 0
    wait_for(lambda: results_in(orthanc, {study_uid}).get(study_uid), 180, "the refusal SR", node)
    time.sleep(1.0)
    objects = results_in(orthanc, {study_uid})[study_uid]
    assert [o["SopClassUid"] for o in objects] == [SR_CLASS]
    data = orthanc.file(objects[0]["id"])
    sr = pydicom.dcmread(io.BytesIO(data))
    assert sr_findings(sr) == []
    assert any("Not reviewed" in c and "HAND" in c for c in sr_comments(sr))
    assert sr.PatientID == "HAND-1"
    assert dciodvfy_errors(data, tmp_path) == []


def test_an_image_the_pipeline_cannot_take_gets_a_refusal_sr_once(tmp_path):
    """No Orthanc needed: a reviewer that fails on every image; the batch falls back to one image
    at a time, then each gets a refusal SR and is never retried."""
    from types import SimpleNamespace

    from cxr_core.pacs.node import Node
    from cxr_core.pacs.queue import REVIEWED, item_key
    from cxr_core.pacs.settings import Destination, NodeSettings

    class Failing:
        bundle = SimpleNamespace(bundle_id="bundle-x-v1")
        calls = 0

        def review(self, images):
            Failing.calls += 1
            raise RuntimeError("pipeline broke")

    config = NodeSettings(allow=("A",), queue_dir=tmp_path / "q",
                          send_to=(Destination("dicom", aet="NOBODY", host="127.0.0.1", port=1),))
    node = Node(config, reviewer_factory=Failing)  # not started: no port, only the review step
    keys = []
    for i, png in enumerate(nih_images(2, start=90)):
        data = xray_dicom(png, f"FAIL-{i}", generate_uid())
        uid = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
        node.queue.put(uid, data)
        keys.append(item_key(uid))
    node.review_pending(Failing(), keys)
    assert Failing.calls == 3  # the batch, then each image once
    assert sorted(node.queue.keys(REVIEWED)) == sorted(keys)
    for key in keys:
        results = node.queue.results(key)
        assert set(results) == {"sr"}
        sr = pydicom.dcmread(io.BytesIO(results["sr"]))
        assert any("could not be analysed" in c for c in sr_comments(sr))
