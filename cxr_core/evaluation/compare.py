"""Compare two bundles on the test images they share: per-label AUC difference with a paired
patient-level bootstrap interval (the same resamples for both), and bundle lineage as a chain."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.errors import BundleError
from .bootstrap import (
    CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    MIN_CLASS_COUNT,
    auc_samples,
    percentile_interval,
    resample_groups,
    too_few_note,
)
from ..modeling.bundle import Bundle

log = logging.getLogger(__name__)
ENSEMBLE_SCORE = "CTP"  # the ensemble with a probability of its own (the mean of the members)


def patients_of(bundle: Bundle, image_ids) -> tuple[np.ndarray, str]:
    """Patient id of each image from the bundle's split.csv, and 'patient'; image ids and
    'image' when the bundle has no split table naming them all."""
    image_ids = np.asarray(image_ids).astype(str)
    split = bundle.path / "split.csv"
    if split.is_file():
        frame = pd.read_csv(split, usecols=["ImageID", "PatientID"], dtype=str)
        mapping = dict(zip(frame["ImageID"], frame["PatientID"]))
        if all(i in mapping for i in image_ids):
            return np.asarray([mapping[i] for i in image_ids]), "patient"
    log.info("bundle %s: no patient ids for its test images, resampling images", bundle.bundle_id)
    return image_ids, "image"


def model_scores(bundle: Bundle, member_probs: np.ndarray, model: str) -> np.ndarray:
    """(N, K) scores of a member or of the CTP ensemble (the default threshold method's
    calibration applied, as `evaluate` does)."""
    probs = bundle.calibrate(member_probs)
    if model == ENSEMBLE_SCORE:
        return probs.mean(axis=0)
    if model in bundle.archs:
        return probs[bundle.archs.index(model)]
    raise BundleError(f"Bundle {bundle.bundle_id} has no model '{model}' (members: "
                      f"{', '.join(bundle.archs)}; ensemble: {ENSEMBLE_SCORE}).")


@dataclass
class Comparison:
    """Bundle B minus bundle A on their shared test images."""

    a_id: str
    b_id: str
    model: str
    images: int
    unit: str
    units: int
    table: pd.DataFrame  # label, positives, auc_a, auc_b, difference, low, high, verdict, note
    macro: dict
    resamples: int
    seed: int

    def summary(self) -> str:
        m = self.macro
        interval = ("" if np.isnan(m["low"]) else f" [{m['low']:+.3f}, {m['high']:+.3f}]")
        return (f"{self.b_id} minus {self.a_id} ({self.model}) on {self.images} shared test images "
                f"({self.units} {self.unit}s): macro AUC difference {m['difference']:+.3f}{interval} "
                f"over {m['labels']} labels; B better on {int((self.table['verdict'] == 'B better').sum())}, "
                f"A better on {int((self.table['verdict'] == 'A better').sum())}, no clear difference on "
                f"{int((self.table['verdict'] == 'no clear difference').sum())}.")


def compare_scores(targets: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                   labels: list[str], groups=None, n_resamples: int = DEFAULT_RESAMPLES,
                   seed: int = DEFAULT_SEED, confidence: float = CONFIDENCE,
                   min_count: int = MIN_CLASS_COUNT) -> tuple[pd.DataFrame, dict, object]:
    """Per-label AUC of A and B, B - A and its paired bootstrap interval, plus the macro row."""
    targets = np.asarray(targets, dtype=np.float64)  # NaN: unknown, left out per label
    n = targets.shape[0]
    resampling = resample_groups(np.arange(n) if groups is None else groups, n_resamples, seed)
    ones = np.ones((n, 1), np.float32)
    point_a, point_b = auc_samples(ones, targets, scores_a)[0], auc_samples(ones, targets, scores_b)[0]
    diff = auc_samples(resampling.weights, targets, scores_b) - auc_samples(resampling.weights, targets, scores_a)
    low, high = percentile_interval(diff, confidence)
    known = np.isfinite(targets).sum(axis=0)
    positives = np.nansum(targets, axis=0)
    notes = [too_few_note(int(p), int(m - p), min_count) for p, m in zip(positives, known)]
    usable = np.array([not note for note in notes])
    low, high = np.where(usable, low, np.nan), np.where(usable, high, np.nan)
    verdict = ["" if note else "B better" if lo > 0 else "A better" if hi < 0 else "no clear difference"
               for note, lo, hi in zip(notes, low, high)]
    table = pd.DataFrame({"label": labels, "positives": positives.astype(int), "auc_a": point_a,
                          "auc_b": point_b, "difference": point_b - point_a, "low": low, "high": high,
                          "verdict": verdict, "note": notes})
    macro = {"labels": int(usable.sum()), "difference": float("nan"), "low": float("nan"),
             "high": float("nan")}
    if usable.any():
        with warnings.catch_warnings():  # a resample may lose every positive of a label
            warnings.simplefilter("ignore", RuntimeWarning)
            per_resample = np.nanmean(diff[:, usable], axis=1)
        m_low, m_high = percentile_interval(per_resample[:, None], confidence)
        macro.update(difference=float(np.mean(point_b[usable] - point_a[usable])),
                     low=float(m_low[0]), high=float(m_high[0]))
    return table, macro, resampling


def compare_bundles(a: Bundle | str | Path, b: Bundle | str | Path, model: str = ENSEMBLE_SCORE,
                    n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Comparison:
    """B minus A on the test images and labels both bundles have stored predictions for."""
    a = a if isinstance(a, Bundle) else Bundle.load(a)
    b = b if isinstance(b, Bundle) else Bundle.load(b)
    stored_a, stored_b = a.test_predictions(), b.test_predictions()
    for bundle, stored in ((a, stored_a), (b, stored_b)):
        if stored is None:
            raise BundleError(f"Bundle {bundle.bundle_id} has no stored test predictions: run "
                              "'python -m cxr_core evaluate' on it first.")
    ids_a, ids_b = stored_a["image_ids"].astype(str), stored_b["image_ids"].astype(str)
    shared = [i for i in ids_a if i in set(ids_b)]
    if not shared:
        raise BundleError(f"Bundles {a.bundle_id} and {b.bundle_id} share no test image.")
    labels = [lab for lab in a.labels if lab in b.labels]
    if not labels:
        raise BundleError(f"Bundles {a.bundle_id} and {b.bundle_id} share no label.")
    row_a = pd.Series(np.arange(len(ids_a)), index=ids_a)[shared].to_numpy()
    row_b = pd.Series(np.arange(len(ids_b)), index=ids_b)[shared].to_numpy()
    col_a = [a.labels.index(lab) for lab in labels]
    col_b = [b.labels.index(lab) for lab in labels]
    targets = stored_a["targets"][row_a][:, col_a]
    other = stored_b["targets"][row_b][:, col_b]
    same = (targets == other) | (np.isnan(targets.astype(float)) & np.isnan(other.astype(float)))
    mismatched = int((~same).any(axis=1).sum())
    if mismatched:
        raise BundleError(f"Bundles {a.bundle_id} and {b.bundle_id} label {mismatched} shared test "
                          "image(s) differently; they were not evaluated on the same ground truth.")
    scores_a = model_scores(a, stored_a["member_probs"], model)[row_a][:, col_a]
    scores_b = model_scores(b, stored_b["member_probs"], model)[row_b][:, col_b]
    groups, _ = patients_of(a, shared)
    table, macro, resampling = compare_scores(targets, scores_a, scores_b, labels, groups,
                                              n_resamples, seed)
    return Comparison(a.bundle_id, b.bundle_id, model, len(shared), resampling.unit,
                      resampling.n_units, table, macro, n_resamples, seed)


def write_comparison(comparison: Comparison, out_dir: str | Path) -> list[Path]:
    """comparison.csv (one row per label) and comparison.md (with the summary line)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / "comparison.csv"
    comparison.table.to_csv(csv, index=False)
    lines = [f"# {comparison.b_id} versus {comparison.a_id}", "", comparison.summary(), "",
             f"Paired percentile bootstrap, {comparison.resamples} resamples of {comparison.unit}s, "
             f"seed {comparison.seed}; difference = B - A.", "",
             "| label | positives | AUC A | AUC B | B - A | 95% interval | verdict |",
             "|---|---|---|---|---|---|---|"]
    for _, r in comparison.table.iterrows():
        interval = r["note"] or f"[{r['low']:+.3f}, {r['high']:+.3f}]"
        lines.append(f"| {r['label']} | {r['positives']} | {_num(r['auc_a'])} | {_num(r['auc_b'])} | "
                     f"{_num(r['difference'], '+.3f')} | {interval} | {r['verdict']} |")
    md = out_dir / "comparison.md"
    md.write_text("\n".join(lines) + "\n")
    return [csv, md]


def _num(value, fmt: str = ".3f") -> str:
    return "n/a" if pd.isna(value) else format(float(value), fmt)


def lineage_chain(bundle: Bundle, known: list[Bundle]) -> list[dict]:
    """The chain of ancestors, oldest first, ending with `bundle`: each entry has the id,
    whether it is one of `known` (found on disk) and what the step recorded."""
    by_id = {b.bundle_id: b for b in known}
    chain = [{"bundle_id": bundle.bundle_id, "found": True, "step": _step(bundle)}]
    seen = {bundle.bundle_id}
    parent = bundle.lineage.get("parent_bundle_id")
    while parent and parent not in seen:
        seen.add(parent)
        found = by_id.get(parent)
        chain.append({"bundle_id": parent, "found": found is not None,
                      "step": _step(found) if found else ""})
        parent = found.lineage.get("parent_bundle_id") if found else None
    return chain[::-1]


def _step(bundle: Bundle) -> str:
    lineage = bundle.lineage
    if not lineage.get("parent_bundle_id"):
        return "trained from the split"
    return (f"fine-tuned on {lineage.get('reviews_used', '?')} reviews "
            f"({lineage.get('new_training_images', 0)} new, "
            f"{lineage.get('relabelled_training_images', 0)} relabelled training images)")
