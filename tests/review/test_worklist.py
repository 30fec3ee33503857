"""The worklist: many files (zips included) reviewed in batches, failures listed, triage order."""

import io
import zipfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from cxr_core.base.config import settings
from cxr_core.review.worklist import (
    CRITICAL_WEIGHT,
    Worklist,
    expand_uploads,
    normal_index,
    top_findings,
    triage_reason,
    triage_score,
)
from tests.helpers import dicom_xray_bytes, png_as_dicom

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))


def mixed_files() -> list[tuple[str, bytes]]:
    """Five files: two PNGs, a JPEG, a DICOM (a real X-ray with a VOI window and UIDs) and a
    text file posing as a PNG."""
    from pydicom.uid import generate_uid

    jpeg = cv2.imencode(".jpg", cv2.imread(str(SAMPLES[2]), cv2.IMREAD_GRAYSCALE))[1].tobytes()
    dicom = png_as_dicom(SAMPLES[3], Modality="DX", BodyPartExamined="CHEST", ViewPosition="PA",
                         WindowCenter=2000, WindowWidth=3000, StudyInstanceUID=generate_uid(),
                         SeriesInstanceUID=generate_uid(), SOPInstanceUID=generate_uid(),
                         SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1")
    return [(SAMPLES[0].name, SAMPLES[0].read_bytes()), (SAMPLES[1].name, SAMPLES[1].read_bytes()),
            ("third.jpg", jpeg), ("study.dcm", dicom), ("broken.png", b"this is not an image")]


def zipped(files: list[tuple[str, bytes]], extra: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files:
            archive.writestr(f"batch/{name}", data)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def reviewer():
    from cxr_core.review.pipeline import Reviewer

    return Reviewer.from_paths(settings().default_bundle_path)


def fake_review(labels, probs, thresholds):
    probs, thresholds = np.array(probs), np.array(thresholds)
    findings = probs >= thresholds
    return SimpleNamespace(labels=labels, probs=probs, thresholds=thresholds, findings=findings,
                           order=lambda: [k for k in np.argsort(-probs) if findings[k]])


def test_triage_ranks_a_strong_finding_above_a_no_finding_study_and_says_why():
    """The issue's case: pulmonary edema 0.86 positive must rank above a 'No Finding' study
    (1 - p(normal) put it below); critical findings weigh more; 'normal' is left out."""
    labels = ["pneumonia", "No Finding", "pulmonary edema", "nodule"]
    thresholds = [0.4, 0.3, 0.6, 0.5]
    edema = fake_review(labels, [0.3, 0.5, 0.86, 0.2], thresholds)
    no_finding = fake_review(labels, [0.38, 0.1, 0.1, 0.1], thresholds)  # low p(normal), nothing positive
    nodule = fake_review(labels, [0.1, 0.1, 0.1, 0.86], thresholds)
    assert triage_score(no_finding) < 0 < triage_score(edema)
    assert triage_score(edema) == pytest.approx(CRITICAL_WEIGHT * (0.86 - 0.6) / 0.4)
    assert triage_score(no_finding) == pytest.approx((0.38 - 0.4) / 0.4)  # the nearest miss
    assert triage_score(nodule) == pytest.approx((0.86 - 0.5) / 0.5)
    assert triage_score(edema) > triage_score(nodule)  # 0.65 x 1.5 (critical) > 0.72
    assert triage_reason(edema) == "pulmonary edema 0.860 above its threshold 0.600, critical"
    assert triage_reason(nodule) == "nodule 0.860 above its threshold 0.500"
    assert triage_reason(no_finding) == "nothing above threshold; nearest: pneumonia 0.380 (threshold 0.400)"
    assert normal_index(edema.labels) == 1
    without = fake_review(["a", "b"], [0.3, 0.2], [0.6, 0.1])
    assert normal_index(without.labels) is None
    assert top_findings(without) == "b 0.200"
    assert top_findings(edema) == "pulmonary edema 0.860"  # 'normal' is never a finding
    assert top_findings(fake_review(["a"], [0.1], [0.5])) == "No finding above threshold."


def test_zip_members_are_expanded_and_bad_archives_listed():
    files = mixed_files()
    archive = zipped(files[:2], {"__MACOSX/._x.png": b"junk", "notes.txt": b"hello", "dir/": b""})
    images, failures = expand_uploads([("day.zip", archive), ("bad.zip", b"PK\x03\x04 truncated"),
                                       files[2]])
    assert [n for n, _ in images] == [f"day.zip/batch/{files[0][0]}", f"day.zip/batch/{files[1][0]}",
                                      "third.jpg"]
    assert images[0][1] == files[0][1]
    assert failures == [("bad.zip", "The zip archive is damaged or is not a zip file.")]
    _, empty = expand_uploads([("empty.zip", zipped([], {"a.txt": b"x"}))])
    assert "no PNG, JPEG or DICOM" in empty[0][1]


def test_five_mixed_files_one_failed_rest_ordered_by_triage(reviewer):
    worklist = Worklist()
    assert worklist.add(mixed_files()) == 5
    assert worklist.add(mixed_files()[:1]) == 0  # the same file again is not added twice
    first_name, first_data = mixed_files()[0]
    # the same image under another name, alone and inside a zip: still one row per study
    assert worklist.add([("copy.png", first_data), ("more.zip", zipped([("again.png", first_data)]))]) == 0
    assert worklist.duplicates == [first_name, "copy.png", "more.zip/batch/again.png"]
    assert worklist.start(reviewer, batch_size=2)
    worklist.wait(600)
    assert not worklist.running
    assert worklist.counts == {"queued": 0, "ready": 4, "refused": 0, "failed": 1, "total": 5}
    table = worklist.table()
    failed = table[table["status"] == "failed"]
    assert failed["file"].tolist() == ["broken.png"]
    assert failed["top findings"].iloc[0] == "The file is not a PNG, JPEG or DICOM image."
    ready = table[table["status"] == "ready"]
    assert table["status"].tolist() == ["ready"] * 4 + ["failed"]  # failed last
    scores = ready["triage score"].tolist()
    assert scores == sorted(scores, reverse=True)
    for row in ready.itertuples():
        item = worklist.item(row.file)
        assert row._4 == round(triage_score(item.review), 3)  # the documented definition
        assert row._6 == bool(item.review.pre.fallback)
    assert set(table["read"]) == {"no"}
    assert all(table.loc[table["status"] == "ready", "why"].str.len() > 0)
    dicom = worklist.item("study.dcm").review
    assert dicom.image.dicom_ref is not None and dicom.image.window is not None
    # "next" walks down the ready studies in list order, then stops
    order = ready["file"].tolist()
    assert worklist.next_name(None) == order[0]
    assert [worklist.next_name(n) for n in order] == order[1:] + [None]
    worklist.mark_seen(order[0])
    worklist.mark_reported(order[1])
    read = worklist.table().set_index("file")["read"]
    assert (read[order[0]], read[order[1]], read[order[2]]) == ("seen", "reported", "no")


def test_refused_and_damaged_uploads_are_listed_as_failed_without_reviewing():
    worklist = Worklist()
    added = worklist.add([("bad.zip", b"not a zip")], refused=[("huge.dcm", "The file is 80.0 MB; the limit is 50 MB.")])
    assert added == 2 and worklist.counts == {"queued": 0, "ready": 0, "refused": 0, "failed": 2, "total": 2}
    table = worklist.table()
    assert dict(zip(table["file"], table["top findings"])) == {
        "bad.zip": "The zip archive is damaged or is not a zip file.",
        "huge.dcm": "The file is 80.0 MB; the limit is 50 MB."}
    assert worklist.next_name(None) is None


def test_what_the_input_check_refuses_is_listed_as_refused_without_findings(reviewer):
    """A synthetic non-X-ray DICOM: listed as refused with the check's sentence, no triage
    score, below the reviewed studies and above the failed files; it can still be opened."""
    worklist = Worklist()
    worklist.add([(SAMPLES[0].name, SAMPLES[0].read_bytes()), ("noise.dcm", dicom_xray_bytes(window=(2000, 4000))),
                  ("broken.png", b"this is not an image")])
    worklist.start(reviewer, batch_size=2)
    worklist.wait(600)
    table = worklist.table()
    assert table["status"].tolist() == ["ready", "refused", "failed"]
    refused = table.set_index("file").loc["noise.dcm"]
    assert refused["top findings"].startswith("The image is unlike the frontal chest X-rays")
    assert refused["triage score"] is None or np.isnan(refused["triage score"])
    assert worklist.item("noise.dcm").review is not None  # the expert can still look
    assert worklist.next_name(SAMPLES[0].name) == "noise.dcm"


def test_two_files_with_one_name_are_two_studies_each_owning_only_its_review(reviewer):
    """Two different X-rays both called 'image.png' (two patients): each keeps its own row and
    its own review; a review made from other bytes is never taken as an item's own."""
    worklist = Worklist()
    assert worklist.add([("image.png", SAMPLES[0].read_bytes()), ("image.png", SAMPLES[1].read_bytes()),
                         ("z.zip/d/image.png", b"")]) == 3
    assert [item.name for item in worklist.items] == ["image.png", "image (2).png", "z.zip/d/image.png"]
    worklist.start(reviewer, batch_size=2)
    worklist.wait(600)
    first, second = worklist.item("image.png"), worklist.item("image (2).png")
    assert first.data == SAMPLES[0].read_bytes() and second.data == SAMPLES[1].read_bytes()
    assert first.owns(first.review) and second.owns(second.review)
    assert not first.owns(second.review) and not second.owns(first.review)
    assert not first.owns(None)
