"""Several reviewers at once on one `streamlit run` (real Chromium sessions, bounded in time)."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pytest

from cxr_core.review.feedback import FeedbackStore
from tests.ui.browser_driver import (
    CHROMIUM,
    percentile,
    review_files,
    run_sessions,
    streamlit_server,
)

log = logging.getLogger(__name__)
SESSIONS = 3


def check_sessions(results, store_url: str) -> dict:
    """Every session saw its own review and saved once; returns latency figures. Rows of other
    reviewers (earlier rounds) in the store are left aside."""
    errors = [(r.reviewer, r.error) for r in results if r.error]
    assert not errors, errors
    frame = FeedbackStore(store_url).reviews_frame()
    frame = frame[frame["reviewer"].isin([r.reviewer for r in results])]
    assert len(frame) == len(results)  # each feedback stored exactly once
    assert frame["review_uid"].is_unique and set(frame["version"]) == {1}
    by_reviewer = frame.set_index("reviewer")
    assert sorted(by_reviewer.index) == sorted(r.reviewer for r in results)
    positives = {}
    for r in results:
        row = by_reviewer.loc[r.reviewer]
        # the row saved from this session is the review of the file this session uploaded
        assert row["image_sha256"] == hashlib.sha256(r.file.read_bytes()).hexdigest(), r.reviewer
        assert row["comment"].endswith(f"({r.reviewer})")
        positives[r.reviewer] = set(row["model_labels"])
    for r in results:  # each page called its own findings positive and none that only another
        # image had: a positive finding's heatmap title says "above threshold"
        mine = positives[r.reviewer]
        others = set().union(*(p for name, p in positives.items() if name != r.reviewer)) - mine

        def called_positive(label: str) -> bool:
            return re.search(rf"{re.escape(label)}: p=[0-9.]+, \d+/\d+ models positive, above "
                             rf"threshold", r.text) is not None

        assert all(called_positive(label) for label in mine), (r.reviewer, mine)
        shown_foreign = [lab for lab in others if called_positive(lab)]
        assert not shown_foreign, (r.reviewer, shown_foreign)
    review = [r.review_s for r in results]
    save = [r.save_s for r in results]
    return {"sessions": len(results), "review_p50_s": percentile(review, 50),
            "review_p95_s": percentile(review, 95), "save_p50_s": percentile(save, 50),
            "save_p95_s": percentile(save, 95)}


def test_three_reviewers_at_once_each_get_their_own_review(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (make test installs it with apt when it can)")
    files = review_files(SESSIONS)
    assert len(files) == SESSIONS
    jobs = [(f"Reviewer {i}", path) for i, path in enumerate(files)]
    with streamlit_server(tmp_path / "data") as url:
        results = run_sessions(url, jobs, timeout_s=480)
    figures = check_sessions(results, f"sqlite:///{tmp_path / 'data' / 'feedback.sqlite'}")
    log.info("load test: %s", figures)
    assert figures["review_p95_s"] < 480
