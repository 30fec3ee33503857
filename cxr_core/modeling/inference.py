"""Member probabilities for arrays or cached crop files (no explanation maps)."""

from __future__ import annotations

import numpy as np

from ..imaging.resize import resize_batch
from .datasets import make_dataset


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, clipped so large logits never overflow."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def predict_arrays(classifiers: list, crops: np.ndarray, batch_size: int = 16,
                   flip: bool = False) -> np.ndarray:
    """(M, N, K) member probabilities for (N, H, W) crops in [0, 1]; with `flip`, each member's
    mean over the crop and its left-right mirror (test-time flips)."""
    out = []
    for classifier in classifiers:
        x = resize_batch(crops, classifier.input_size)
        views = (x, np.ascontiguousarray(x[:, :, ::-1])) if flip else (x,)
        probs = [sigmoid(np.concatenate([classifier.features_and_logits(v[i:i + batch_size])[1]
                                         for i in range(0, len(v), batch_size)])) for v in views]
        out.append(np.mean(probs, axis=0))
    return np.stack(out)


def predict_members(classifiers: list, paths: list[str], size: int, batch_size: int = 32,
                    flip: bool = False) -> np.ndarray:
    """(M, N, K) member probabilities for cached crop files, streamed through tf.data; with
    `flip`, each member's mean over the crop and its left-right mirror."""
    out = []
    for classifier in classifiers:
        ds = make_dataset(paths, np.zeros((len(paths), 1)), classifier.input_size, batch_size,
                          shuffle=False)
        probs = []
        for x, _ in ds:
            p = sigmoid(np.asarray(classifier.features_and_logits(x)[1]))
            if flip:
                mirrored = np.ascontiguousarray(np.asarray(x)[:, :, ::-1])
                p = 0.5 * (p + sigmoid(np.asarray(classifier.features_and_logits(mirrored)[1])))
            probs.append(p)
        out.append(np.concatenate(probs) if probs else np.zeros((0, 0)))
    return np.stack(out)
