"""GPU readiness check (`make gpu-check`): what the PadChest training needs from a GPU machine.

For each of the method's five architectures at 224 px, batch 32: train steps/s in float32 and
mixed_float16, each with and without XLA; the input pipeline's images/s (16-bit PNG crops ->
batches); Grad-CAM under mixed precision against the naive GradientTape reference; ensemble
inference images/s (all five members); and train steps/s under MirroredStrategy over all GPUs.
Writes benchmarks/results/gpu_check.json. On a machine without a GPU it says so and exits 0
without measuring anything (`--allow-cpu` runs the same code on the CPU as a smoke test; those
figures are not GPU figures and are written to gpu_check_cpu_smoke.json).

With `KERAS_BACKEND=jax` (a GPU machine that has JAX but not TensorFlow) it measures what does
not need TensorFlow: the same model definitions and loss, train steps/s in float32 and
mixed_float16 with and without JIT compilation, and ensemble inference images/s; the tf.data
pipeline, Grad-CAM and MirroredStrategy are then reported as not measured.

    python -m benchmarks.gpu_check [--size 224] [--batch 32] [--steps 30] [--arch NAME ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("gpu_check")
NO_GPU = ("gpu-check: no GPU is visible to TensorFlow on this machine, so there is nothing to "
          "measure (install tensorflow[and-cuda] with the pinned version on a GPU machine and run "
          "'make gpu-check' there). Exiting without results.")
LABELS = [f"label{k}" for k in range(35)]
EAGER_STEPS = 5  # JAX without JIT runs op by op: a few steps tell its (slow) rate
PRECISIONS = (("float32", False), ("float32", True), ("mixed_float16", False), ("mixed_float16", True))


def rates_per_precision(arch: str, measure, jit_only: bool = False) -> dict:
    """Train steps/s of one member for each (policy, compiled) pair in PRECISIONS, via
    `measure(policy, compiled)`; a failing pair is recorded instead of stopping the rest."""
    rates = {}
    for policy, compiled in PRECISIONS:
        if jit_only and not compiled:
            continue
        key = f"{policy}{'+xla' if compiled else ''}"
        try:
            rates[key] = round(measure(policy, compiled), 2)
        except Exception as exc:  # one failing combination (e.g. XLA) must not hide the rest
            rates[key] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
        log.info("%s %s: %s steps/s", arch, key, rates[key])
    return rates


def images_per_s(run_member, members: list, x: np.ndarray, repeats: int = 10) -> float:
    """Images per second of `run_member(member, x)` over every member, after one warm-up call
    of each (compilation)."""
    for member in members:
        run_member(member, x)
    started = time.perf_counter()
    for _ in range(repeats):
        for member in members:
            run_member(member, x)
    return repeats * len(x) / (time.perf_counter() - started)


def keras_engine() -> str:
    """The Keras backend this process runs on ("tensorflow" unless KERAS_BACKEND says else)."""
    import keras

    return keras.backend.backend()


def gpu_devices() -> list:
    if keras_engine() == "jax":
        import jax

        try:
            return jax.devices("gpu")
        except RuntimeError:  # no GPU platform
            return []
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def gpu_names(gpus: list) -> list[str]:
    if keras_engine() == "jax":
        return [getattr(g, "device_kind", str(g)) for g in gpus]
    import tensorflow as tf

    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
        except (RuntimeError, ValueError):
            names.append(gpu.name)
    return names


def synthetic_batches(size: int, batch: int, seed: int = 0):
    """An endless in-memory dataset of one batch of X-ray-like images and random targets."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.random((batch, size, size, 1)).astype("float32")
    y = (rng.random((batch, len(LABELS))) < 0.2).astype("float32")
    return tf.data.Dataset.from_tensors((x, y)).repeat(), y


def train_steps_per_s(arch: str, size: int, batch: int, steps: int, policy: str, xla: bool,
                      strategy=None) -> float:
    """Train steps per second of one member (weights=None; speed does not depend on them),
    augmentation on as in training: inside the model, or in the input pipeline under XLA."""
    import keras

    from cxr_core.modeling.datasets import augment_batches
    from cxr_core.modeling.losses import label_weights, make_weighted_bce
    from cxr_core.modeling.model_building import build_classifier
    from cxr_core.modeling.runtime import configure

    keras.backend.clear_session()
    configure(mixed_precision=policy == "mixed_float16")
    ds, y = synthetic_batches(size, batch)
    ds = augment_batches(ds, xla)
    scope = strategy.scope() if strategy is not None else _nullcontext()
    with scope:
        model = build_classifier(arch, LABELS, size, weights=None, augment=not xla).model
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_weighted_bce(*label_weights(y)),
                      jit_compile=xla)
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # trace, compile, warm up
    started = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps / (time.perf_counter() - started)


def jax_train_steps_per_s(arch: str, size: int, batch: int, steps: int, policy: str,
                          jit: bool) -> float:
    """Train steps per second of one member under Keras's JAX backend (`train_on_batch`;
    the returned loss synchronises the device after every step)."""
    import keras

    from cxr_core.modeling.losses import label_weights, make_weighted_bce
    from cxr_core.modeling.model_building import build_classifier

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    steps = steps if jit else min(steps, EAGER_STEPS)
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 1)).astype("float32")
    y = (rng.random((batch, len(LABELS))) < 0.2).astype("float32")
    model = build_classifier(arch, LABELS, size, weights=None, augment=False).model
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_weighted_bce(*label_weights(y)),
                  jit_compile=jit)
    for _ in range(3):  # trace, compile, warm up
        model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch(x, y)
    elapsed = time.perf_counter() - started
    keras.mixed_precision.set_global_policy("float32")
    if not np.isfinite(float(np.asarray(loss).ravel()[0])):
        raise FloatingPointError(f"{arch} {policy}: the loss is not finite")
    return steps / elapsed


def jax_ensemble_images_per_s(archs: list[str], size: int, batch: int, repeats: int = 10) -> float:
    """Images per second through every member's compiled inference (`predict_on_batch`)."""
    import keras

    from cxr_core.modeling.model_building import build_classifier

    keras.backend.clear_session()
    members = [build_classifier(a, LABELS, size, weights=None, augment=False).model for a in archs]
    x = np.random.default_rng(0).random((batch, size, size, 1)).astype("float32")
    return images_per_s(lambda member, batch_x: member.predict_on_batch(batch_x), members, x, repeats)


def run_jax(archs: list[str], args, gpus: list) -> dict:
    """What the JAX backend can measure (see the module docstring)."""
    import jax
    import keras

    needs_tf = "not measured: needs TensorFlow, which this machine lacks"
    result: dict = {"engine": f"keras {keras.__version__} on jax {jax.__version__}",
                    "gpus": gpu_names(gpus), "size": args.size, "batch": args.batch,
                    "steps": args.steps, "steps_without_jit": min(args.steps, EAGER_STEPS),
                    "archs": archs, "train_steps_per_s": {}, "gradcam_mixed_precision": needs_tf,
                    "pipeline_images_per_s": needs_tf, "mirrored": needs_tf}
    for arch in archs:
        result["train_steps_per_s"][arch] = rates_per_precision(
            arch, lambda policy, jit: jax_train_steps_per_s(arch, args.size, args.batch,
                                                            args.steps, policy, jit),
            jit_only=args.jit_only)
    result["ensemble_inference_images_per_s"] = round(
        jax_ensemble_images_per_s(archs, args.size, args.batch), 1)
    return result


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def pipeline_images_per_s(size: int, batch: int, batches: int = 20) -> float:
    """The training input pipeline (PNG decode, resize, batch, prefetch) on 512 px crops."""
    import cv2

    from cxr_core.modeling.datasets import make_dataset

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(64):
            path = Path(tmp) / f"crop{i}.png"
            cv2.imwrite(str(path), (rng.random((512, 512)) * 65535).astype(np.uint16))
            paths.append(str(path))
        ds = make_dataset(paths, np.zeros((64, len(LABELS)), "float32"), size, batch,
                          shuffle=True).repeat()
        it = iter(ds)
        next(it)
        started = time.perf_counter()
        for _ in range(batches):
            next(it)
        return batches * batch / (time.perf_counter() - started)


def gradcam_exactness(arch: str, size: int) -> dict:
    """Largest difference between the closed-form all-label Grad-CAM and the naive reference
    under mixed_float16 (normalised maps; channel weights relative to their largest)."""
    import keras

    from cxr_core.explain.gradcam import all_label_cams, naive_gradcam, normalise_maps
    from cxr_core.modeling.model_building import build_classifier
    from cxr_core.modeling.runtime import configure

    keras.backend.clear_session()
    configure(mixed_precision=True)
    keras.utils.set_random_seed(0)
    built = build_classifier(arch, LABELS[:4], size, weights=None, augment=False)
    rng = np.random.default_rng(0)
    for name in ("head_dense", "logits"):  # a random head gives mostly zero maps; widen it
        layer = built.model.get_layer(name)
        layer.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") for w in layer.get_weights()])
    x = rng.random((2, size, size, 1)).astype("float32")
    _, cams, weights = all_label_cams(built, x, return_weights=True)
    map_diff = weight_diff = 0.0
    nonzero = 0
    for k in range(4):
        ref_map, ref_weights = naive_gradcam(built, x, k, return_weights=True)
        scale = max(float(np.abs(ref_weights).max()), 1e-12)
        weight_diff = max(weight_diff, float(np.abs(ref_weights - weights[..., k]).max()) / scale)
        map_diff = max(map_diff, float(np.abs(normalise_maps(ref_map) - normalise_maps(cams[..., k])).max()))
        nonzero += int(ref_map.max() > 0)
    configure(mixed_precision=False)
    return {"max_map_diff": round(map_diff, 5), "max_weight_rel_diff": round(weight_diff, 5),
            "labels_with_nonzero_maps": nonzero, "within_2e-2": map_diff < 2e-2 and weight_diff < 2e-2}


def ensemble_images_per_s(archs: list[str], size: int, batch: int, repeats: int = 10) -> float:
    """Images per second through every member's compiled inference graph (one batch size)."""
    import keras

    from cxr_core.modeling.model_building import build_classifier
    from cxr_core.modeling.runtime import configure

    keras.backend.clear_session()
    configure(mixed_precision=False)
    members = [build_classifier(a, LABELS, size, weights=None) for a in archs]
    x = np.random.default_rng(0).random((batch, size, size, 1)).astype("float32")
    return images_per_s(lambda member, batch_x: member.features_and_logits(batch_x), members, x,
                        repeats)


def main(argv: list[str] | None = None) -> int:
    from cxr_core.modeling.registry import METHOD_ARCHITECTURES

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--arch", action="append", default=None)
    parser.add_argument("--jit-only", action="store_true",
                        help="JAX backend: skip the slow runs without JIT compilation")
    parser.add_argument("--allow-cpu", action="store_true", help="smoke-run on the CPU (not GPU figures)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    gpus = gpu_devices()
    if not gpus and not args.allow_cpu:
        print(NO_GPU)
        return 0
    from benchmarks.common import write_result

    archs = args.arch or list(METHOD_ARCHITECTURES)
    if keras_engine() == "jax":
        name = "gpu_check_jax" if gpus else "gpu_check_jax_cpu_smoke"
        write_result(name, run_jax(archs, args, gpus))
        return 0
    import tensorflow as tf

    result: dict = {"gpus": gpu_names(gpus), "size": args.size, "batch": args.batch,
                    "steps": args.steps, "archs": archs, "train_steps_per_s": {},
                    "gradcam_mixed_precision": {}}
    for arch in archs:
        result["train_steps_per_s"][arch] = rates_per_precision(
            arch, lambda policy, xla: train_steps_per_s(arch, args.size, args.batch, args.steps,
                                                        policy, xla))
        result["gradcam_mixed_precision"][arch] = gradcam_exactness(arch, args.size)
        log.info("%s Grad-CAM under mixed precision: %s", arch, result["gradcam_mixed_precision"][arch])
    result["pipeline_images_per_s"] = round(pipeline_images_per_s(args.size, args.batch), 1)
    result["ensemble_inference_images_per_s"] = round(ensemble_images_per_s(archs, args.size, args.batch), 1)
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or None
    strategy = tf.distribute.MirroredStrategy(devices)
    global_batch = args.batch * strategy.num_replicas_in_sync
    result["mirrored"] = {
        "replicas": strategy.num_replicas_in_sync, "global_batch": global_batch, "arch": archs[0],
        "train_steps_per_s": round(train_steps_per_s(archs[0], args.size, global_batch, args.steps,
                                                     "mixed_float16" if gpus else "float32", False,
                                                     strategy=strategy), 2)}
    result["mirrored"]["images_per_s"] = round(result["mirrored"]["train_steps_per_s"] * global_batch, 1)
    write_result("gpu_check" if gpus else "gpu_check_cpu_smoke", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
