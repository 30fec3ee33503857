"""Patient-level bootstrap confidence intervals for per-label AUC, F1 and their macro means.

One resample draws patients with replacement; every image of a drawn patient enters with the
patient's count as its weight, so images of one patient never count as independent evidence.
All resamples are computed at once from a (B resamples, N images) weight matrix: AUC from one
sort per label and a cumulative sum, the confusion counts from one matrix product.
The same weights applied to two models' scores give a paired bootstrap (see `compare`).
An image whose label is unknown (NaN target) weighs nothing in that label's AUC and F1.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

log = logging.getLogger(__name__)

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
CONFIDENCE = 0.95
MIN_CLASS_COUNT = 10  # below this many positives (or negatives) a label gets no interval


@dataclass
class Resampling:
    """Bootstrap weights of the test images, drawn once and reused for every model."""

    weights: np.ndarray  # (N images, B resamples) float32: how often each image enters each
    unit: str  # "patient" or "image"
    n_units: int
    seed: int

    @property
    def n_resamples(self) -> int:
        return int(self.weights.shape[1])


def resample_groups(groups, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Resampling:
    """Draw `n_resamples` bootstrap samples of the groups (patients) of N images.

    `groups` holds one patient id per image; None means every image is its own unit.
    """
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    groups = np.asarray(groups)
    _, unit_of_image = np.unique(groups, return_inverse=True)
    n_units = int(unit_of_image.max()) + 1 if len(groups) else 0
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_units, size=(n_resamples, n_units))
    offsets = (np.arange(n_resamples) * n_units)[:, None]
    counts = np.bincount((drawn + offsets).ravel(), minlength=n_resamples * n_units)
    counts = counts.reshape(n_resamples, n_units).T.astype(np.float32)
    unique_images = n_units == len(groups)
    return Resampling(np.ascontiguousarray(counts[unit_of_image]), "image" if unique_images else "patient", n_units, seed)


def running_sum(rows: np.ndarray) -> np.ndarray:
    """Cumulative sum down the rows with a leading zero row: (R, B) -> (R + 1, B).

    A row-by-row loop of contiguous vector additions: about ten times faster here than
    `np.cumsum(axis=0)`, whose inner loop strides across rows.
    """
    out = np.zeros((rows.shape[0] + 1, rows.shape[1]), dtype=np.float32)
    out[1:] = rows
    for i in range(2, out.shape[0]):
        np.add(out[i], out[i - 1], out=out[i])
    return out


def weighted_auc(weights: np.ndarray, y: np.ndarray, scores: np.ndarray,
                 column_totals: np.ndarray | None = None) -> np.ndarray:
    """ROC AUC of one label under each column of `weights` (N images, B resamples); ties
    count one half. NaN where a resample holds no positive or no negative.

    The smaller class is sorted and cumulated. For each image of the other class, binary
    search finds the cumulated rows at and above its score; a sparse matrix gathers, in one
    pass over `weights`, how much weight of that class sits at each of those rows.
    """
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim == 1:
        weights = weights[:, None]
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    neg_idx, pos_idx = np.flatnonzero(~y), np.flatnonzero(y)
    if not len(neg_idx) or not len(pos_idx):
        return np.full(weights.shape[1], np.nan)
    cumulate_positives = len(pos_idx) < len(neg_idx)
    ranked, query = (pos_idx, neg_idx) if cumulate_positives else (neg_idx, pos_idx)
    ranked = ranked[np.argsort(scores[ranked], kind="stable")]
    cum = running_sum(weights[ranked])  # (R + 1, B); integer counts: exact in float32
    lo = np.searchsorted(scores[ranked], scores[query], side="left")
    hi = np.searchsorted(scores[ranked], scores[query], side="right")
    # weight of the ranked class below a query image = (cum[lo] + cum[hi]) / 2 (ties count half)
    at_rows = sparse.csr_matrix(
        (np.full(2 * len(query), 0.5, np.float32), (np.concatenate([lo, hi]), np.tile(query, 2))),
        shape=(cum.shape[0], weights.shape[0]))
    at_rows.sum_duplicates()  # untied scores have lo == hi: one entry of 1.0, half the work
    beaten = np.einsum("rb,rb->b", cum, at_rows @ weights, dtype=np.float64)
    totals = weights.sum(axis=0, dtype=np.float64) if column_totals is None else column_totals
    w_ranked = cum[-1].astype(np.float64)
    denominator = (totals - w_ranked) * w_ranked
    # negatives below positives; when positives are cumulated, positives above negatives
    numerator = denominator - beaten if cumulate_positives else beaten
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, np.nan)


def auc_samples(weights: np.ndarray, targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(B, K) AUC of every label under every resample."""
    targets, scores = np.asarray(targets, dtype=np.float64), np.asarray(scores)
    weights = np.asarray(weights, dtype=np.float32)
    totals = weights.sum(axis=0, dtype=np.float64)
    columns = []
    for k in range(targets.shape[1]):
        known = np.isfinite(targets[:, k])
        if known.all():
            columns.append(weighted_auc(weights, targets[:, k] >= 0.5, scores[:, k], totals))
        else:  # only the images whose label is known take part
            columns.append(weighted_auc(weights[known], targets[known, k] >= 0.5, scores[known, k]))
    return np.stack(columns, axis=1)  # (B, K)


def f1_samples(weights: np.ndarray, targets: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """(B, K) F1 of the positive class and macro F1 over both classes (the method's F1)."""
    weights = np.asarray(weights, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float64)
    known = np.isfinite(targets)
    y = known & (np.where(known, targets, 0) >= 0.5)
    b = known & np.asarray(predicted).astype(bool)
    k = y.shape[1]
    counts = (np.concatenate([y, b, y & b, known], axis=1).astype(np.float32).T @ weights).T  # one product
    positives, called, tp, totals = (counts[:, i * k:(i + 1) * k].astype(np.float64) for i in range(4))
    fp, fn = called - tp, positives - tp
    tn = totals - positives - fp

    def f1(hit, miss_a, miss_b):
        denominator = 2 * hit + miss_a + miss_b
        return np.divide(2 * hit, denominator, out=np.zeros_like(hit, dtype=np.float64),
                         where=denominator > 0)

    positive = f1(tp, fp, fn)
    return {"f1_positive": positive, "f1_macro": (positive + f1(tn, fn, fp)) / 2}


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the resample axis (0), ignoring resamples without a value."""
    tail = (1 - confidence) / 2 * 100
    samples = np.asarray(samples, dtype=np.float64)
    valid = np.isfinite(samples).any(axis=0)
    low = np.full(samples.shape[1:], np.nan)
    high = np.full(samples.shape[1:], np.nan)
    if valid.any():
        low[valid], high[valid] = np.nanpercentile(samples[:, valid], [tail, 100 - tail], axis=0)
    return low, high


def too_few_note(positives: int, negatives: int, min_count: int = MIN_CLASS_COUNT) -> str:
    """Why a label gets no interval, or '' when it gets one."""
    if positives < min_count:
        return f"too few positives for an interval ({positives} < {min_count})"
    if negatives < min_count:
        return f"too few negatives for an interval ({negatives} < {min_count})"
    return ""


METRICS = ("auc", "f1_macro", "f1_positive")


def label_intervals(resampling: Resampling, targets: np.ndarray, scores: np.ndarray,
                    predicted: np.ndarray, labels: list[str], confidence: float = CONFIDENCE,
                    min_count: int = MIN_CLASS_COUNT) -> tuple[pd.DataFrame, dict]:
    """Per-label `<metric>_low/_high` columns and the macro intervals of one model.

    Labels with fewer than `min_count` positives or negatives get NaN bounds and a `ci_note`.
    Macro intervals average, per resample, the same labels as the macro point estimate (every
    label for F1; labels with both classes for AUC), so the interval belongs to that estimate.
    """
    targets = np.asarray(targets, dtype=np.float64)
    samples = {"auc": auc_samples(resampling.weights, targets, scores),
               **f1_samples(resampling.weights, targets, predicted)}
    known = np.isfinite(targets)
    positives = (known & (np.where(known, targets, 0) >= 0.5)).sum(axis=0)
    negatives = known.sum(axis=0) - positives
    notes = [too_few_note(int(p), int(n), min_count) for p, n in zip(positives, negatives)]
    usable = np.array([not note for note in notes])
    in_macro = {"auc": (positives > 0) & (negatives > 0), "f1_macro": np.ones_like(usable),
                "f1_positive": np.ones_like(usable)}
    frame = pd.DataFrame({"label": labels})
    macro = {}
    for metric in METRICS:
        low, high = percentile_interval(samples[metric], confidence)
        frame[f"{metric}_low"] = np.where(usable, low, np.nan)
        frame[f"{metric}_high"] = np.where(usable, high, np.nan)
        if in_macro[metric].any():
            with warnings.catch_warnings():  # a resample may lose every positive of a label
                warnings.simplefilter("ignore", RuntimeWarning)
                per_resample = np.nanmean(samples[metric][:, in_macro[metric]], axis=1)
            m_low, m_high = percentile_interval(per_resample[:, None], confidence)
            macro[f"{metric}_low"], macro[f"{metric}_high"] = float(m_low[0]), float(m_high[0])
        else:
            macro[f"{metric}_low"] = macro[f"{metric}_high"] = float("nan")
    frame["ci_note"] = notes
    macro["labels_with_interval"] = int(usable.sum())
    return frame, macro


def model_intervals(outputs: dict[str, tuple[np.ndarray, np.ndarray]], targets: np.ndarray,
                    labels: list[str], groups=None, n_resamples: int = DEFAULT_RESAMPLES,
                    seed: int = DEFAULT_SEED, confidence: float = CONFIDENCE,
                    min_count: int = MIN_CLASS_COUNT) -> dict:
    """Intervals of every model from one shared resampling.

    `outputs` maps a model name to (scores (N, K), binary predictions (N, K)). Returns
    {"per_label": {model: DataFrame}, "macro": {model: dict}, "resampling": summary}.
    """
    n = np.asarray(targets).shape[0]
    resampling = resample_groups(np.arange(n) if groups is None else groups, n_resamples, seed)
    per_label, macro = {}, {}
    for name, (scores, binary) in outputs.items():
        per_label[name], macro[name] = label_intervals(resampling, targets, scores, binary, labels,
                                                       confidence, min_count)
    summary = {"unit": resampling.unit, "units": resampling.n_units, "resamples": n_resamples,
               "seed": seed, "confidence": confidence, "min_class_count": min_count}
    return {"per_label": per_label, "macro": macro, "resampling": summary}
