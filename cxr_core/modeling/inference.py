"""Member probabilities for arrays or cached crop files (no explanation maps)."""

from __future__ import annotations

import numpy as np

from ..imaging.resize import resize_batch
from .datasets import make_dataset


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, clipped so large logits never overflow."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def predict_arrays(classifiers: list, crops: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """(M, N, K) member probabilities for (N, H, W) crops in [0, 1]."""
    out = []
    for classifier in classifiers:
        x = resize_batch(crops, classifier.input_size)
        logits = np.concatenate([classifier.features_and_logits(x[i:i + batch_size])[1]
                                 for i in range(0, len(x), batch_size)])
        out.append(sigmoid(logits))
    return np.stack(out)


def predict_members(classifiers: list, paths: list[str], size: int, batch_size: int = 32) -> np.ndarray:
    """(M, N, K) member probabilities for cached crop files, streamed through tf.data."""
    out = []
    for classifier in classifiers:
        ds = make_dataset(paths, np.zeros((len(paths), 1)), classifier.input_size, batch_size,
                          shuffle=False)
        logits = [classifier.features_and_logits(x)[1] for x, _ in ds]
        out.append(sigmoid(np.concatenate(logits)) if logits else np.zeros((0, 0)))
    return np.stack(out)
