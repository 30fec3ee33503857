"""Weighted binary cross-entropy on logits, with per-label weights from training prevalence.

For label k with P_k positives among N training images:
    w_pos_k = N / (2 P_k),   w_neg_k = N / (2 (N - P_k))
so positives and negatives of every label contribute equally in total, whatever the imbalance
(a balanced label gets weights 1 and 1). Counts are clipped at 1 to avoid division by zero.
"""

from __future__ import annotations

import numpy as np


def label_weights(y_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w_pos, w_neg) per label from a 0/1 training label matrix."""
    y_train = np.asarray(y_train, dtype=np.float64)
    n = max(len(y_train), 1)
    positives = np.clip(y_train.sum(axis=0), 1, None)
    negatives = np.clip(n - y_train.sum(axis=0), 1, None)
    return (n / (2 * positives)).astype(np.float32), (n / (2 * negatives)).astype(np.float32)


def make_weighted_bce(w_pos: np.ndarray, w_neg: np.ndarray):
    """A Keras loss (y_true, logits) -> per-sample mean over labels of the weighted BCE.

    Written in `keras.ops`, so it runs on any Keras backend (TensorFlow here)."""
    from keras import ops

    wp = np.asarray(w_pos, np.float32)
    wn = np.asarray(w_neg, np.float32)

    def weighted_bce(y_true, logits):
        y_true = ops.cast(y_true, "float32")
        logits = ops.cast(logits, "float32")
        # -log(sigmoid(z)) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z): stable for any z
        loss = (ops.convert_to_tensor(wp) * y_true * ops.softplus(-logits)
                + ops.convert_to_tensor(wn) * (1 - y_true) * ops.softplus(logits))
        return ops.mean(loss, axis=-1)

    return weighted_bce
