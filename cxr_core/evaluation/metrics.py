"""Per-label and overall metrics: AUC, F1 of the positive class, macro F1 over both classes
(what the method reports as F1), precision, recall and Hamming loss. A target that is unknown
(NaN: the image's source does not annotate that finding) is left out of its label's metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)


def label_metrics(y_true: np.ndarray, probs: np.ndarray, predicted: np.ndarray,
                  labels: list[str]) -> pd.DataFrame:
    """One row per label, over the images whose label is known (`unknown` counts the others).
    AUC is NaN (and `note` says why) when a label has one class only."""
    y_true = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(predicted).astype(int)
    rows = []
    for k, label in enumerate(labels):
        known = np.isfinite(y_true[:, k])
        y, p, b = y_true[known, k].astype(int), np.asarray(probs)[known, k], predicted[known, k]
        if len(y) == 0:  # no image here is annotated for this label: nothing to measure
            rows.append({"label": label, "positives": 0, "images": 0, "unknown": int((~known).sum()),
                         **dict.fromkeys(("auc", "f1_positive", "f1_macro", "precision", "recall"),
                                         float("nan")),
                         "note": "not annotated for these images"})
            continue
        single_class = y.min() == y.max()
        rows.append({
            "label": label,
            "positives": int(y.sum()),
            "images": int(len(y)),
            "unknown": int((~known).sum()),
            "auc": float("nan") if single_class else float(roc_auc_score(y, p)),
            "f1_positive": float(f1_score(y, b, zero_division=0)),
            "f1_macro": float(f1_score(y, b, average="macro", labels=[0, 1], zero_division=0)),
            "precision": float(precision_score(y, b, zero_division=0)),
            "recall": float(recall_score(y, b, zero_division=0)),
            "note": "no positives in this split" if y.sum() == 0 else (
                "no negatives in this split" if single_class else ""),
        })
    return pd.DataFrame(rows)


def overall_metrics(y_true: np.ndarray, probs: np.ndarray, predicted: np.ndarray) -> dict:
    """Macro AUC over labels with both classes, mean per-label F1s, Hamming loss."""
    table = label_metrics(y_true, probs, predicted, [str(k) for k in range(np.shape(y_true)[1])])
    return {
        "auc_macro": float(table["auc"].mean(skipna=True)) if table["auc"].notna().any() else float("nan"),
        "f1_positive_macro": float(table["f1_positive"].mean()),
        "f1_macro": float(table["f1_macro"].mean()),
        "hamming_loss": masked_hamming_loss(y_true, predicted),
        "labels_without_auc": int(table["auc"].isna().sum()),
    }


def masked_hamming_loss(y_true: np.ndarray, predicted: np.ndarray) -> float:
    """Share of wrong calls among the known (image, label) pairs."""
    y_true = np.asarray(y_true, dtype=np.float64)
    known = np.isfinite(y_true)
    if not known.any():
        return float("nan")
    wrong = (np.where(known, y_true, 0) >= 0.5) != np.asarray(predicted).astype(bool)
    return float((wrong & known).sum() / known.sum())
