import hashlib
import multiprocessing as mp
import threading

import pytest

from cxr_core.base.errors import FeedbackError
from cxr_core.review.feedback import (
    FeedbackStore,
    Submission,
    agreement_stats,
    latest_reviews,
)

LABELS = ["pneumonia", "pleural effusion", "atelectasis"]


def make_submission(reviewer="Dr A", sha=None, decisions=None, added=None, comment=""):
    return Submission(
        image_sha256=sha or hashlib.sha256(b"img").hexdigest(), bundle_id="b1", label_set="demo",
        reviewer=reviewer, labels=LABELS, probabilities=[0.9, 0.8, 0.1], thresholds=[0.5] * 3,
        model_positive=[True, True, False], agreement=[3, 2, 0],
        decisions=decisions if decisions is not None else {"pneumonia": "agree", "pleural effusion": "disagree"},
        added_labels=added or [], comment=comment)


def test_expert_labels_policy():
    sub = make_submission(decisions={"pneumonia": "agree", "pleural effusion": "disagree"}, added=["atelectasis"])
    assert sub.expert_labels() == ["pneumonia", "atelectasis"]
    # no decision on a model positive keeps it
    assert make_submission(decisions={}).expert_labels() == ["pneumonia", "pleural effusion"]


def test_submit_persists_and_revisions_are_new_versions(tmp_path):
    url = f"sqlite:///{tmp_path / 'fb.sqlite'}"
    store = FeedbackStore(url, image_dir=tmp_path / "images")
    first = store.submit(make_submission(comment="<b>bold?</b>"), image_bytes=b"raw-image")
    second = store.submit(make_submission(decisions={"pneumonia": "agree"}))
    assert (first["version"], second["version"]) == (1, 2)
    frame = FeedbackStore(url).reviews_frame()  # a new connection sees both
    assert len(frame) == 2 and frame["comment"].iloc[0] == "<b>bold?</b>"
    assert list(frame["expert_labels"].iloc[1]) == ["pneumonia", "pleural effusion"]
    assert len(latest_reviews(frame)) == 1
    stored = list((tmp_path / "images").iterdir())
    assert [p.name for p in stored] == [hashlib.sha256(b"img").hexdigest() + ".img"]
    export = store.export_for_retraining()
    assert list(export.columns[:3]) == ["image_sha256", "bundle_id", "label_set"]
    assert export["expert_labels"].tolist() == ["pneumonia", "pneumonia|pleural effusion"]


def test_invalid_submissions_are_refused(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.sqlite'}")
    with pytest.raises(FeedbackError, match="reviewer"):
        store.submit(make_submission(reviewer="  "))
    with pytest.raises(FeedbackError, match="Unknown"):
        store.submit(make_submission(added=["Dragon"]))
    assert store.count() == 0


def test_agreement_between_model_experts_and_experts(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.sqlite'}")
    store.submit(make_submission("A", decisions={"pneumonia": "agree", "pleural effusion": "agree"}))
    store.submit(make_submission("B", decisions={"pneumonia": "agree", "pleural effusion": "disagree"}))
    stats = agreement_stats(store.reviews_frame(), LABELS).set_index("label")
    assert stats.loc["pneumonia", "model_expert_agreement"] == 1.0
    assert stats.loc["pleural effusion", "model_expert_agreement"] == 0.5
    assert stats.loc["pleural effusion", "inter_expert_agreement"] == 0.0
    assert stats.loc["pneumonia", "inter_expert_agreement"] == 1.0


def _writer(url: str, reviewer: str, count: int) -> None:
    store = FeedbackStore(url)
    for _ in range(count):
        store.submit(make_submission(reviewer))


def test_concurrent_threads_and_processes_lose_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'fb.sqlite'}"
    FeedbackStore(url)
    threads = [threading.Thread(target=_writer, args=(url, f"T{i % 2}", 10)) for i in range(6)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, "P", 10)) for _ in range(3)]
    for worker in threads + procs:
        worker.start()
    for worker in threads + procs:
        worker.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    frame = FeedbackStore(url).reviews_frame()
    assert len(frame) == 6 * 10 + 3 * 10
    # versions per reviewer are exactly 1..n: no duplicates, no gaps
    for reviewer, group in frame.groupby("reviewer"):
        assert sorted(group["version"]) == list(range(1, len(group) + 1)), reviewer
