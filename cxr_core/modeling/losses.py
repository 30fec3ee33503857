"""Weighted binary cross-entropy on logits, with per-label weights from training prevalence.

For label k with P_k positives among N training images:
    w_pos_k = N / (2 P_k),   w_neg_k = N / (2 (N - P_k))
so positives and negatives of every label contribute equally in total, whatever the imbalance
(a balanced label gets weights 1 and 1). Counts are clipped at 1 to avoid division by zero.

A label that is unknown for an image (NaN: its source does not annotate that finding) is masked
per element: it adds nothing to the loss or the AUC metric, and N_k counts the known images only.
"""

from __future__ import annotations

import functools

import numpy as np


def label_weights(y_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w_pos, w_neg) per label from a 0/1 training label matrix (NaN: unknown, not counted)."""
    y_train = np.asarray(y_train, dtype=np.float64)
    known = np.isfinite(y_train)
    n = np.clip(known.sum(axis=0), 1, None)
    positives = np.clip(np.where(known, y_train, 0).sum(axis=0), 1, None)
    negatives = np.clip(n - np.where(known, y_train, 0).sum(axis=0), 1, None)
    return (n / (2 * positives)).astype(np.float32), (n / (2 * negatives)).astype(np.float32)


def make_weighted_bce(w_pos: np.ndarray, w_neg: np.ndarray):
    """A Keras loss (y_true, logits) -> per-sample mean over labels of the weighted BCE, where
    an unknown label (NaN) contributes zero. Written in `keras.ops` (any Keras backend)."""
    from keras import ops

    wp = np.asarray(w_pos, np.float32)
    wn = np.asarray(w_neg, np.float32)

    def weighted_bce(y_true, logits):
        y_true = ops.cast(y_true, "float32")
        logits = ops.cast(logits, "float32")
        known = ops.logical_not(ops.isnan(y_true))
        y_true = ops.where(known, y_true, ops.zeros_like(y_true))
        # -log(sigmoid(z)) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z): stable for any z
        loss = (ops.convert_to_tensor(wp) * y_true * ops.softplus(-logits)
                + ops.convert_to_tensor(wn) * (1 - y_true) * ops.softplus(logits))
        return ops.mean(ops.where(known, loss, ops.zeros_like(loss)), axis=-1)

    return weighted_bce



@functools.cache
def _masked_auc_class():
    import keras
    from keras import ops

    class MaskedAUC(keras.metrics.AUC):
        """`keras.metrics.AUC` over the known labels only: each known element weighs 1, each
        unknown one (NaN) 0, as per-element sample weights of the multi-label AUC."""

        def update_state(self, y_true, y_pred, sample_weight=None):
            y_true = ops.cast(y_true, "float32")
            known = ops.logical_not(ops.isnan(y_true))
            weight = ops.cast(known, "float32")
            if sample_weight is not None:
                weight = weight * ops.cast(ops.reshape(sample_weight, (-1, 1)), "float32")
            return super().update_state(ops.where(known, y_true, ops.zeros_like(y_true)), y_pred,
                                        sample_weight=weight)

    return MaskedAUC



def masked_auc(**kwargs):
    """A Keras AUC metric that leaves unknown labels out (Keras is imported here, on first use)."""
    return _masked_auc_class()(**kwargs)
