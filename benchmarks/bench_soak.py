"""Soak: many reviews through one `Reviewer` in one process. Resident memory after a warm-up
must stay in a small band (slope reported), and no file handle or thread may be left behind."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

import numpy as np

from benchmarks.common import REPO, SHARED, write_result

REVIEWS = 300
WARMUP = 20


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc), MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def open_files() -> list[str]:
    """What this process's file descriptors point to (Linux /proc)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed between listing and reading (the listing's own fd)
            pass
    return sorted(targets)


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def soak_inputs(limit: int = WARMUP) -> list[bytes]:
    """Different X-rays (sizes vary), each seen once during the warm-up: the shipped samples,
    then NIH images when present."""
    files = sorted((REPO / "assets" / "samples").glob("*.png"))
    nih = SHARED / "nih-sample" / "images"
    if nih.is_dir():
        files += sorted(nih.glob("*.png"))[: limit - len(files)]
    return [path.read_bytes() for path in files[:limit]]


def soak(reviews: int = REVIEWS, warmup: int = WARMUP, report_every: int = 10,
         collect_each: bool = False) -> dict:
    """Review `reviews` images in turn (with the page's overlays and a report every
    `report_every`); memory, file handles and threads compared after `warmup` reviews.
    `collect_each` runs a full garbage collection before each memory sample, so that what is
    measured is memory still held (a leak), not reference cycles awaiting collection."""
    from cxr_core.base.config import settings
    from cxr_core.explain.overlay import overlay
    from cxr_core.explain.report import report_pdf
    from cxr_core.review.pipeline import Reviewer

    reviewer = Reviewer.from_paths(settings().default_bundle_path)
    inputs = soak_inputs()
    rss, seconds = [], []
    files_after_warmup = threads_after_warmup = py_threads_after_warmup = None
    for i in range(reviews):
        start = time.perf_counter()
        review = reviewer.review_one(inputs[i % len(inputs)], filename=f"soak{i}.png")
        for k in review.order(extra=1):
            overlay(review.image.pixels, review.heatmap_original(k), 0.4)
        if report_every and i % report_every == 0:
            report_pdf(review)
        del review
        seconds.append(time.perf_counter() - start)
        if collect_each:
            gc.collect()
        if i + 1 == warmup:
            gc.collect()
            files_after_warmup, threads_after_warmup = open_files(), os_threads()
            py_threads_after_warmup = threading.active_count()
        rss.append(rss_mb())
    gc.collect()
    after = np.asarray(rss[warmup:])
    steps = np.arange(warmup, reviews)
    slope = float(np.polyfit(steps, after, 1)[0]) if len(after) > 1 else 0.0
    tail = min(100, len(after))
    tail_slope = float(np.polyfit(steps[-tail:], after[-tail:], 1)[0]) if tail > 1 else 0.0
    files_end = open_files()
    return {
        "reviews": reviews, "warmup": warmup, "report_every": report_every,
        "collect_each": collect_each,
        "distinct_images": len(inputs),
        "rss_mb_after_warmup": float(after[0]), "rss_mb_end": float(rss[-1]),
        "rss_band_mb": float(after.max() - after.min()),
        "rss_slope_mb_per_100_reviews": slope * 100,
        "rss_slope_mb_per_100_reviews_last_100": tail_slope * 100,
        "rss_mb_every_10": [round(v, 1) for v in rss[::10]],
        "review_median_s": float(np.median(seconds[warmup:])),
        "open_files_after_warmup": len(files_after_warmup), "open_files_end": len(files_end),
        "new_open_files": sorted(set(files_end) - set(files_after_warmup)),
        "os_threads_after_warmup": threads_after_warmup, "os_threads_end": os_threads(),
        "python_threads_after_warmup": py_threads_after_warmup,
        "python_threads_end": threading.active_count(),
    }


def main() -> int:
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    result = soak(int(os.environ.get("CXR_SOAK_REVIEWS", REVIEWS)))
    write_result("soak", result)
    leaks = result["new_open_files"] or result["os_threads_end"] > result["os_threads_after_warmup"]
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
