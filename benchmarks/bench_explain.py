"""All-label Grad-CAM cost vs the forward pass and vs naive per-label Grad-CAM (five real
architectures, 224 px, weights=None, K = 35 and 54); end-to-end review latency at batch 1."""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

from benchmarks.common import REPO, timed, timed_interleaved, write_result

NAIVE_LABELS_MEASURED = 4  # naive cost is linear in K: measured on 4 labels, scaled to K


def _compiled_forward(model):
    import tensorflow as tf

    return tf.function(lambda t: model(t, training=False))


def _lite_forward_only(classifier, path):
    """The member's logits-only graph as TensorFlow Lite: the Lite engine's forward baseline."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    model, size = classifier.model, classifier.input_size
    spec = tf.TensorSpec((None, size, size, 1), tf.float32)
    fn = tf.function(lambda t: tf.sigmoid(model(t, training=False)), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert())
    from cxr_core.explain.engines import interpreter_class

    interpreter = interpreter_class()(model_path=str(path), num_threads=os.cpu_count())
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def run(x):
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out).copy()

    return run


def lite_ratios(members, x: np.ndarray, naive_total: float) -> dict:
    """The same ratios for the Lite engine (exports of the same members)."""
    import tempfile
    from pathlib import Path

    from cxr_core.explain.engines import LiteEngine, export_lite
    from cxr_core.explain.ensemble_maps import explain_arrays

    with tempfile.TemporaryDirectory() as tmp:
        forward_only, engines = [], []
        start = time.perf_counter()
        for m in members:
            path = export_lite(m, Path(tmp) / f"{m.arch.name}.tflite")
            engines.append(LiteEngine(path, m.arch.name, m.input_size))
        export_s = time.perf_counter() - start
        for m in members:
            forward_only.append(_lite_forward_only(m, Path(tmp) / f"{m.arch.name}_forward.tflite"))
        runs = timed_interleaved({
            "forward": lambda: [f(x) for f in forward_only],
            "maps": lambda: [e.explain(x) for e in engines],
            "full": lambda: explain_arrays(engines, x[..., 0], 224),
        }, repeat=9)
    forward, maps, full = (runs[n]["median_s"] for n in ("forward", "maps", "full"))
    return {
        "export_all_members_s": round(export_s, 1),
        "ensemble_forward_s": round(forward, 3),
        "ensemble_probs_and_all_maps_s": round(maps, 3),
        "ratio_maps_over_forward": round(maps / forward, 3),
        "ensemble_explanation_224px_s": round(full, 3),
        "ratio_explanation_over_forward": round(full / forward, 3),
        "speedup_vs_naive_tensorflow": round(naive_total / maps, 1),
    }


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from cxr_core.explain.ensemble_maps import explain_arrays
    from cxr_core.explain.gradcam import all_label_cams, naive_gradcam
    from cxr_core.modeling.model_building import build_classifier
    from cxr_core.modeling.registry import METHOD_ARCHITECTURES

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
            "engine": "tensorflow",
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
        result[f"K={k} lite"] = lite_ratios(members, x, naive_total)
        keras.backend.clear_session()
    result["end_to_end"] = end_to_end()
    result["cold_start_five_architectures"] = cold_start()
    write_result("explain", result)
    return 0


def _first_result_in_fresh_process(bundle, engine: str) -> dict:
    """Start a new Python process, review one X-ray with `bundle`, review it again; seconds
    from the process start (imports included) to the first result, split by stage."""
    import json
    import subprocess

    start = time.time()
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_explain", "--first-result",
                          str(bundle), engine], capture_output=True, text=True, check=True,
                         cwd=str(REPO), env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    child = json.loads(out.stdout.strip().splitlines()[-1])
    child["first_result_s"] = round(child.pop("first_result_at") - start, 2)
    return child


def _first_result_child(bundle: str, engine: str) -> None:
    t0 = time.perf_counter()
    from benchmarks.bench_preprocess import synthetic_xray
    from cxr_core.review.pipeline import Reviewer

    t1 = time.perf_counter()
    reviewer = Reviewer.from_paths(bundle, engine=engine)
    t2 = time.perf_counter()
    data = synthetic_xray(1024)
    reviewer.review_one(data, filename="x.png")
    first_at, t3 = time.time(), time.perf_counter()
    reviewer.review_one(data, filename="x.png")
    t4 = time.perf_counter()
    import json

    print(json.dumps({"engine": reviewer.engines[0].kind, "import_s": round(t1 - t0, 2),
                      "open_bundle_s": round(t2 - t1, 2), "first_review_s": round(t3 - t2, 2),
                      "next_review_s": round(t4 - t3, 2), "first_result_at": first_at}))


def cold_start(k: int = 54) -> dict:
    """A five-architecture bundle (random weights, 224 px): seconds from a fresh process start
    to the first complete review, with the TensorFlow engine and after `compile_bundle` with
    the Lite engine (the app's first result after start)."""
    import tempfile
    from pathlib import Path

    import keras

    from cxr_core.explain.engines import compile_bundle
    from cxr_core.modeling.bundle import write_bundle
    from cxr_core.modeling.model_building import build_classifier
    from cxr_core.modeling.registry import METHOD_ARCHITECTURES

    labels = [f"l{i}" for i in range(k)]
    with tempfile.TemporaryDirectory() as tmp:
        members = [build_classifier(a, labels, 224, weights=None, augment=False) for a in METHOD_ARCHITECTURES]
        rng = np.random.default_rng(0)
        path = write_bundle(Path(tmp) / "five", members, labels, "bench", rng.random((5, 40, k)),
                            rng.integers(0, 2, (40, k)), training={})
        del members
        keras.backend.clear_session()
        tensorflow = _first_result_in_fresh_process(path, "tensorflow")
        start = time.perf_counter()
        compile_bundle(path)
        compile_s = time.perf_counter() - start
        lite = _first_result_in_fresh_process(path, "lite")
    return {"labels": k, "target_first_s": 30, "tensorflow_engine": tensorflow,
            "compile_bundle_s": round(compile_s, 1), "lite_engine": lite}


def end_to_end() -> dict:
    """Median latency of one review with the shipped default bundle, split by stage."""
    from benchmarks.bench_preprocess import synthetic_xray
    from cxr_core.base.config import settings
    from cxr_core.explain.overlay import overlay
    from cxr_core.imaging.image_io import load_image
    from cxr_core.modeling.bundle import Bundle
    from cxr_core.review.pipeline import Reviewer

    bundle_path = settings().default_bundle_path
    if not Bundle.exists(bundle_path):
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
    if len(sys.argv) == 4 and sys.argv[1] == "--first-result":
        _first_result_child(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
