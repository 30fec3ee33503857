"""The node's on-disk queue: one entry per instance, atomic receive, results kept before sending,
doubling back-off, nothing but a small record left once sent, no identifier in a file name."""

from __future__ import annotations

import json

import pytest

from cxr_core.pacs.queue import RECEIVED, REVIEWED, DiskQueue, item_key

UID = "1.2.826.0.1.3680043.8.498.1234567890"


def test_same_instance_is_queued_once_and_named_by_a_hash(tmp_path):
    queue = DiskQueue(tmp_path / "q", owner=True)
    assert queue.put(UID, b"first") is True
    assert queue.put(UID, b"second") is False  # a resend of the same instance
    key = item_key(UID)
    assert queue.keys() == [key] and queue.source(key) == b"first"
    assert UID not in " ".join(str(p) for p in (tmp_path / "q").rglob("*"))
    assert (tmp_path / "q").stat().st_mode & 0o777 == 0o700


def test_partial_receive_left_by_a_crash_is_dropped_on_restart(tmp_path):
    queue = DiskQueue(tmp_path / "q", owner=True)
    partial = tmp_path / "q" / "tmp" / "abc-123"
    partial.mkdir()
    (partial / "source.dcm").write_bytes(b"half")
    reader = DiskQueue(tmp_path / "q")  # the app only looks
    assert partial.exists() and reader.keys() == []
    DiskQueue(tmp_path / "q", owner=True)
    assert not partial.exists()
    assert queue.keys() == []


def test_results_are_kept_then_sent_with_backoff_then_only_a_record_stays(tmp_path):
    queue = DiskQueue(tmp_path / "q", owner=True)
    queue.put(UID, b"image")
    key = item_key(UID)
    assert queue.keys(RECEIVED) == [key]
    queue.save_results(key, b"sr", b"sc", refused=False)
    assert queue.keys(RECEIVED) == [] and queue.keys(REVIEWED) == [key]
    assert queue.results(key) == {"sr": b"sr", "sc": b"sc"}
    delays = [queue.failed(key, "PACS@host:104 refused or did not answer the association.", 5, 30)
              for _ in range(4)]
    assert delays == [5, 10, 20, 30]  # doubling, capped
    state = queue.state(key)
    assert state["attempts"] == 4 and "refused" in state["last_error"]
    queue.mark_sent(key, "PACS@host:104", ["sr"])
    assert queue.state(key)["sent"] == {"PACS@host:104": ["sr"]}
    queue.finish(key)
    assert queue.keys() == [] and not (tmp_path / "q" / "items" / key).exists()
    record = json.loads((tmp_path / "q" / "done" / f"{key}.json").read_text())
    assert record["attempts"] == 4 and record["refused"] is False
    assert queue.put(UID, b"image again") is False  # already answered: not reviewed twice
    assert queue.counts() == {"received": 0, "reviewed": 0, "sent": 1}
    assert [row.status for row in queue.rows()] == ["sent"]


def test_refused_item_has_no_sc(tmp_path):
    queue = DiskQueue(tmp_path / "q", owner=True)
    queue.put(UID, b"image")
    queue.save_results(item_key(UID), b"sr", None, refused=True)
    assert queue.results(item_key(UID)) == {"sr": b"sr"}
    assert queue.rows()[0].refused is True


@pytest.mark.parametrize("text", ["", "x" * 17, "A\\B"])
def test_bad_ae_titles_are_one_sentence(text):
    from cxr_core.pacs.settings import PacsSettingsError, check_aet

    with pytest.raises(PacsSettingsError, match="not a valid AE title"):
        check_aet(text)
