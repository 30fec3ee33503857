"""Per-label operating thresholds chosen on the validation split."""

from __future__ import annotations

import numpy as np

THRESHOLD_METHODS = ("f1", "youden", "fixed")


def _f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    # imported here: the review path never fits thresholds and starts faster without sklearn
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(precision), where=(precision + recall) > 0)[:-1]
    return float(thresholds[int(np.argmax(f1))])


def _youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, p)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def choose_thresholds(y_true: np.ndarray, probs: np.ndarray, method: str = "f1",
                      default: float = 0.5) -> np.ndarray:
    """One threshold per label: F1-maximising, Youden's J, or the fixed `default`.

    A label without both classes in `y_true` keeps `default` (nothing to tune on); images
    whose label is unknown (NaN) are left out of that label's choice.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}")
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    out = np.full(y_true.shape[1], default, dtype=np.float64)
    if method == "fixed":
        return out
    for k in range(y_true.shape[1]):
        known = np.isfinite(np.asarray(y_true[:, k], dtype=np.float64))
        y, p = y_true[known, k].astype(int), probs[known, k]
        if len(y) == 0 or y.min() == y.max():
            continue
        out[k] = _f1_threshold(y, p) if method == "f1" else _youden_threshold(y, p)
    return out


def threshold_table(val_probs: np.ndarray, val_targets: np.ndarray) -> dict:
    """Ensemble and per-member thresholds for every method, chosen on validation (each entry
    records it: `chosen_on`, so test figures are never computed with test-tuned thresholds)."""
    mean = val_probs.mean(axis=0)
    return {
        method: {
            "ensemble": choose_thresholds(val_targets, mean, method).tolist(),
            "members": [choose_thresholds(val_targets, p, method).tolist()
                        for p in val_probs],
            "chosen_on": "validation",
        }
        for method in THRESHOLD_METHODS
    }
