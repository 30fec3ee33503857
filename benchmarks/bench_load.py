"""Many reviewers on one server: N real Chromium sessions upload different X-rays to one
`streamlit run app.py` at once and submit feedback; per-review latency p50/p95, rows stored."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result

SESSIONS = int(os.environ.get("CXR_LOAD_SESSIONS", "6"))
ROUNDS = int(os.environ.get("CXR_LOAD_ROUNDS", "2"))
TIMEOUT_S = 600  # per round: the benchmark stops by itself


def main() -> int:
    from tests.ui.browser_driver import (
        CHROMIUM,
        percentile,
        review_files,
        run_sessions,
        streamlit_server,
    )
    from tests.ui.test_load import check_sessions

    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: install Debian's chromium (make test does)")
        return 1
    files = review_files(SESSIONS * ROUNDS)
    rounds, reviews, saves, per_round = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="cxr-load-") as tmp:
        data = Path(tmp) / "data"
        with streamlit_server(data) as url:
            started = time.perf_counter()
            warm = run_sessions(url, [("warm-up", files[0])], timeout_s=TIMEOUT_S)  # models loaded
            warm_s = time.perf_counter() - started
            assert not warm[0].error, warm[0].error
            for r in range(ROUNDS):
                batch = files[r * SESSIONS:(r + 1) * SESSIONS] or files[:SESSIONS]
                jobs = [(f"Reviewer {r}-{i}", path) for i, path in enumerate(batch)]
                started = time.perf_counter()
                results = run_sessions(url, jobs, timeout_s=TIMEOUT_S)
                wall = time.perf_counter() - started
                rounds.append({"sessions": len(jobs), "wall_s": wall,
                               "errors": [res.error for res in results if res.error]})
                reviews += [res.review_s for res in results]
                saves += [res.save_s for res in results]
                per_round.append(results)
        from cxr_core.review.feedback import FeedbackStore

        frame = FeedbackStore(f"sqlite:///{data / 'feedback.sqlite'}").reviews_frame()
        rows = int(len(frame))
        expected = 1 + sum(r["sessions"] for r in rounds)
        duplicates = int(frame.duplicated(["reviewer", "image_sha256"]).sum())
        checked = 0
        for results in per_round:  # each page showed its own review; each row stored once
            check_sessions(results, f"sqlite:///{data / 'feedback.sqlite'}")
            checked += len(results)
    result = {
        "sessions_at_once": SESSIONS, "rounds": ROUNDS, "reviews": len(reviews),
        "first_review_cold_s": warm_s,
        "review_p50_s": percentile(reviews, 50), "review_p95_s": percentile(reviews, 95),
        "save_p50_s": percentile(saves, 50), "save_p95_s": percentile(saves, 95),
        "rounds_detail": rounds, "rows_stored": rows, "rows_expected": expected,
        "duplicate_rows": duplicates, "sessions_checked": checked,
        "method": "one streamlit server (127.0.0.1, SQLite store); per round N Chromium contexts "
                  "upload at once; review = upload until the feedback form is on screen; save = "
                  "submit until 'Feedback saved'; a warm-up review first loads the models",
    }
    write_result("load", result)
    return 0 if rows == expected and duplicates == 0 and not any(r["errors"] for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
