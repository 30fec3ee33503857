"""Training input pipeline throughput (with augmentation) and train-step time per architecture."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import timed, write_result


def _fake_cache(folder: Path, n: int = 64) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), (rng.random((512, 512)) * 65535).astype(np.uint16))
        paths.append(str(path))
    return paths


def main() -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from cxr_core.modeling.datasets import make_dataset
    from cxr_core.modeling.losses import label_weights, make_weighted_bce
    from cxr_core.modeling.model_building import build_classifier
    from cxr_core.modeling.registry import METHOD_ARCHITECTURES

    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = _fake_cache(Path(tmp))
        targets = np.random.default_rng(0).integers(0, 2, (len(paths), 35)).astype("float32")
        for augment in (False, True):
            ds = make_dataset(paths, targets, 224, 32, shuffle=True, augment=augment).repeat()
            it = iter(ds)
            next(it)
            start = time.perf_counter()
            batches = 6
            for _ in range(batches):
                next(it)
            rate = batches * 32 / (time.perf_counter() - start)
            result["pipeline_images_per_s" + ("_augmented" if augment else "_decode_only")] = round(rate, 1)

    labels = [f"l{k}" for k in range(35)]
    x = np.random.default_rng(0).random((8, 224, 224, 1)).astype("float32")
    y = np.random.default_rng(1).integers(0, 2, (8, 35)).astype("float32")
    w_pos, w_neg = label_weights(y)
    steps = {}
    for arch in METHOD_ARCHITECTURES:
        classifier = build_classifier(arch, labels, 224, weights=None)
        model = classifier.model
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_weighted_bce(w_pos, w_neg))
        stats = timed(lambda: model.train_on_batch(x, y), repeat=3, warmup=1)
        steps[arch] = {"train_step_s_batch8_224px": round(stats["median_s"], 3),
                       "params": int(model.count_params())}
        keras.backend.clear_session()
    result["train_step"] = steps
    write_result("training", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
