"""The node's sending side against a real Orthanc: a destination that is down is retried with a
doubling back-off and reported (never dropped); STOW-RS to a DICOMweb server stores the SR and SC
in the source's study; a refusal is sent once, as it was kept."""

from __future__ import annotations

import io
import logging
import time

import pydicom
from pydicom.uid import generate_uid

from cxr_core.imaging.image_io import load_image
from cxr_core.pacs.node import Node
from cxr_core.pacs.queue import REVIEWED, item_key
from cxr_core.pacs.settings import Destination, NodeSettings
from cxr_core.review.dicom_out import MULTIFRAME_SC_CLASS, dicom_results
from tests.pacs.conftest import free_port, nih_images, xray_dicom
from tests.review.test_dicom_out import fake_review, report_pages

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


def queued_result(node: Node, patient_id: str) -> tuple[str, str]:
    """A received X-ray with its SR and SC in the node's queue: (queue key, study UID)."""
    study_uid = generate_uid()
    data = xray_dicom(nih_images(1, start=80)[0], patient_id, study_uid)
    image = load_image(data, filename="x.dcm")
    results = dicom_results(fake_review(image, labels=("pneumonia", "atelectasis")), report_pages())
    node.queue.put(image.dicom_ref.sop_instance_uid, data)
    key = item_key(image.dicom_ref.sop_instance_uid)
    node.queue.save_results(key, results.sr, results.sc, refused=False)
    return key, study_uid


def test_down_destination_backs_off_then_stow_delivers(orthanc, tmp_path, caplog):
    dead = Destination("dicom", aet="NOBODY", host="127.0.0.1", port=free_port())
    config = NodeSettings(aet="CXRREVIEW", allow=("ORTHANC",), send_to=(dead,), queue_dir=tmp_path / "q",
                          retry_s=2.0, retry_max_s=60.0)
    node = Node(config, reviewer_factory=lambda: None)
    key, study_uid = queued_result(node, "STOW-0001")
    caplog.set_level(logging.INFO)
    assert node.send_item(key) is False
    assert node.send_item(key) is False
    state = node.queue.state(key)
    assert state["attempts"] == 2 and "NOBODY@127.0.0.1" in state["last_error"]
    assert 2.0 < state["next_try"] - time.time() <= 4.0  # second delay: 2 x 2 s
    assert node.queue.keys(REVIEWED) == [key]  # kept, never dropped
    assert "retry 2 in 4 s" in caplog.text and "STOW-0001" not in caplog.text
    # the destination is now the PACS's DICOMweb STOW-RS endpoint
    node.config = NodeSettings(aet="CXRREVIEW", allow=("ORTHANC",), queue_dir=tmp_path / "q",
                               send_to=(Destination.parse(orthanc.dicomweb),))
    assert node.send_item(key) is True
    assert node.queue.keys() == [] and node.queue.counts()["sent"] == 1
    found = orthanc.post("/tools/find", json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid},
                                               "Expand": True})
    classes = sorted(orthanc.get(f"/instances/{i['ID']}/metadata?expand")["SopClassUid"] for i in found)
    assert classes == sorted([SR_CLASS, MULTIFRAME_SC_CLASS])
    sr = pydicom.dcmread(io.BytesIO(orthanc.file(next(
        i["ID"] for i in found if orthanc.get(f"/instances/{i['ID']}/metadata?expand")["SopClassUid"] == SR_CLASS))))
    assert sr.PatientID == "STOW-0001"
