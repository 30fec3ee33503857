"""All-label Grad-CAM cost vs the forward pass and vs naive per-label Grad-CAM (five real
architectures, 224 px, weights=None, K = 35 and 54); end-to-end review latency at batch 1."""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from benchmarks.common import timed, timed_interleaved, write_result

NAIVE_LABELS_MEASURED = 4  # naive cost is linear in K: measured on 4 labels, scaled to K


def _compiled_forward(model):
    import tensorflow as tf

    return tf.function(lambda t: model(t, training=False))


def main() -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from cxr_core.gradcam import all_label_cams, explain_arrays, naive_gradcam
    from cxr_core.model_building import build_classifier
    from cxr_core.registry import METHOD_ARCHITECTURES

    x = np.random.default_rng(0).random((1, 224, 224, 1)).astype("float32")
    result: dict = {"naive_labels_measured": NAIVE_LABELS_MEASURED}
    for k in (35, 54):
        labels = [f"l{i}" for i in range(k)]
        keras.utils.set_random_seed(0)
        members = [build_classifier(a, labels, 224, weights=None, augment=False) for a in METHOD_ARCHITECTURES]
        # both sides compiled (tf.function), as the app runs them
        logits_only = [_compiled_forward(m.model) for m in members]
        runs = timed_interleaved({
            "forward": lambda: [np.asarray(f(x)) for f in logits_only],
            "maps": lambda: [all_label_cams(m, x) for m in members],
            # what a review runs: maps resized to 224, normalised, ensemble mean and std
            "full": lambda: explain_arrays(members, x[..., 0], 224),
        }, repeat=9)
        forward, maps, full = runs["forward"], runs["maps"], runs["full"]
        naive_per_member = {}
        for m in members:
            stats = timed(lambda: [naive_gradcam(m, x, j) for j in range(NAIVE_LABELS_MEASURED)],
                          repeat=1, warmup=1)
            naive_per_member[m.arch.name] = stats["median_s"] / NAIVE_LABELS_MEASURED * k
        naive_total = sum(naive_per_member.values())
        result[f"K={k}"] = {
            "ensemble_forward_s": round(forward["median_s"], 3),
            "ensemble_probs_and_all_maps_s": round(maps["median_s"], 3),
            "ratio_maps_over_forward": round(maps["median_s"] / forward["median_s"], 3),
            "ensemble_explanation_224px_s": round(full["median_s"], 3),
            "ratio_explanation_over_forward": round(full["median_s"] / forward["median_s"], 3),
            "target_ratio": 1.3,
            "naive_per_label_gradcam_s_estimated": round(naive_total, 1),
            "naive_per_member_s": {a: round(v, 1) for a, v in naive_per_member.items()},
            "speedup_vs_naive": round(naive_total / maps["median_s"], 1),
        }
        keras.backend.clear_session()
    result["end_to_end"] = end_to_end()
    result["cold_start_five_architectures"] = cold_start()
    write_result("explain", result)
    return 0


def cold_start(k: int = 54) -> dict:
    """Seconds from loading a five-architecture bundle (random weights, 224 px) to the first
    complete review (the app's first result after start), then a second review."""
    import tempfile
    from pathlib import Path

    import keras

    from cxr_core.bundle import write_bundle
    from cxr_core.model_building import build_classifier
    from cxr_core.pipeline import Reviewer
    from cxr_core.registry import METHOD_ARCHITECTURES
    from benchmarks.bench_preprocess import synthetic_xray

    labels = [f"l{i}" for i in range(k)]
    with tempfile.TemporaryDirectory() as tmp:
        members = [build_classifier(a, labels, 224, weights=None, augment=False) for a in METHOD_ARCHITECTURES]
        rng = np.random.default_rng(0)
        write_bundle(Path(tmp) / "five", members, labels, "bench", rng.random((5, 40, k)),
                     rng.integers(0, 2, (40, k)), training={})
        del members
        keras.backend.clear_session()
        data = synthetic_xray(1024)
        start = time.perf_counter()
        reviewer = Reviewer.from_paths(Path(tmp) / "five")
        reviewer.review_one(data, filename="x.png")
        first = time.perf_counter() - start
        start = time.perf_counter()
        reviewer.review_one(data, filename="x.png")
        second = time.perf_counter() - start
    return {"labels": k, "first_result_s": round(first, 2), "next_result_s": round(second, 2),
            "target_first_s": 30}


def end_to_end() -> dict:
    """Median latency of one review with the shipped default bundle, split by stage."""
    from cxr_core.config import settings
    from cxr_core.image_io import load_image
    from cxr_core.overlay import overlay
    from cxr_core.pipeline import Reviewer
    from benchmarks.bench_preprocess import synthetic_xray

    bundle_path = settings().default_bundle_path
    if not (bundle_path / "manifest.json").is_file():
        return {"skipped": f"no default bundle at {bundle_path}"}
    reviewer = Reviewer.from_paths(bundle_path)
    data = synthetic_xray(1024)
    stages = {"decode_s": [], "preprocess_s": [], "ensemble_and_maps_s": [], "overlays_s": [], "total_s": []}
    for i in range(6):
        t0 = time.perf_counter()
        image = load_image(data, filename="x.png")
        t1 = time.perf_counter()
        review = reviewer.review([image])[0]
        t2 = time.perf_counter()
        for k in review.order(extra=0) or [int(np.argmax(review.probs))]:
            overlay(image.pixels, review.heatmap_original(k))
        t3 = time.perf_counter()
        if i == 0:
            continue  # warm-up
        stages["decode_s"].append(t1 - t0)
        stages["preprocess_s"].append(review.timings["preprocess_s"])
        stages["ensemble_and_maps_s"].append(review.timings["ensemble_and_maps_s"])
        stages["overlays_s"].append(t3 - t2)
        stages["total_s"].append(t3 - t0)
    return {"bundle": reviewer.bundle.bundle_id, "members": reviewer.bundle.archs,
            "image": "1024x1024 16-bit PNG (synthetic)",
            **{k: round(statistics.median(v), 3) for k, v in stages.items()}}


if __name__ == "__main__":
    sys.exit(main())
