"""Operating points: what a threshold means for one label (sensitivity, specificity, PPV and NPV
at the validation prevalence), and saving a chosen set of thresholds as a named threshold method.
Operating points are chosen on the validation predictions: test figures computed with thresholds
tuned on the test split would be optimistic, so every saved method records its split."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from ..base.errors import BundleError
from ..modeling.bundle import Bundle
from ..modeling.thresholds import THRESHOLD_METHODS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,39}$")
SPLITS = ("validation", "test")


def operating_data(bundle: Bundle, method: str | None = None) -> dict:
    """What operating points are chosen on: the stored validation predictions, as `method`
    sees them (calibrated or raw): targets (N, K), CTP scores (N, K), member probabilities."""
    from .recalibration import val_predictions

    stored = val_predictions(bundle)
    if stored is None:
        raise BundleError(f"Bundle {bundle.path} stores no validation predictions: run "
                          "'python -m cxr_core evaluate --refit-thresholds' on it first.")
    probs = bundle.calibrate(stored["member_probs"], method)
    return {"split": "validation", "targets": stored["targets"].astype(np.float64),
            "scores": probs.mean(axis=0), "member_probs": probs, "image_ids": stored["image_ids"]}


def _known(y, scores) -> tuple[np.ndarray, np.ndarray]:
    """Targets and scores of the images whose target is known (not NaN)."""
    y, scores = np.asarray(y, dtype=np.float64), np.asarray(scores)
    known = np.isfinite(y)
    return y[known], scores[known]


def rates_at(y: np.ndarray, scores: np.ndarray, threshold: float,
             prevalence: float | None = None) -> dict:
    """Confusion counts and rates of `scores >= threshold`; PPV and NPV at `prevalence`
    (default: the prevalence of `y`), from sensitivity and specificity by Bayes' rule.
    Images whose label is unknown (NaN) are left out."""
    y, scores = _known(y, scores)
    y = y.astype(bool)
    called = np.asarray(scores) >= threshold
    tp, fp = int((y & called).sum()), int((~y & called).sum())
    fn, tn = int((y & ~called).sum()), int((~y & ~called).sum())
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    prev = float(y.mean()) if prevalence is None else float(prevalence)
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "sensitivity": sens, "specificity": spec, "prevalence": prev,
            **predictive_values(sens, spec, prev)}


def predictive_values(sensitivity, specificity, prevalence: float) -> dict:
    """PPV and NPV for given sensitivity, specificity and prevalence (NaN when undefined)."""
    sens, spec = np.asarray(sensitivity, float), np.asarray(specificity, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        true_pos, false_pos = sens * prevalence, (1 - spec) * (1 - prevalence)
        true_neg, false_neg = spec * (1 - prevalence), (1 - sens) * prevalence
        ppv = np.where(true_pos + false_pos > 0, true_pos / (true_pos + false_pos), np.nan)
        npv = np.where(true_neg + false_neg > 0, true_neg / (true_neg + false_neg), np.nan)
    as_out = (lambda v: float(v)) if ppv.ndim == 0 else (lambda v: v)
    return {"ppv": as_out(ppv), "npv": as_out(npv)}


def operating_curve(y: np.ndarray, scores: np.ndarray, prevalence: float | None = None) -> pd.DataFrame:
    """Every distinct ROC threshold of one label with its sensitivity, specificity, PPV, NPV
    (images whose label is unknown left out)."""
    y, scores = _known(y, scores)
    y = y.astype(int)
    if len(y) == 0 or y.min() == y.max():
        return pd.DataFrame(columns=["threshold", "sensitivity", "specificity", "ppv", "npv"])
    fpr, tpr, thresholds = roc_curve(y, scores, drop_intermediate=False)
    keep = np.isfinite(thresholds)  # the first point (nothing called positive) has threshold inf
    prev = float(y.mean()) if prevalence is None else float(prevalence)
    frame = pd.DataFrame({"threshold": np.minimum(thresholds[keep], 1.0),
                          "sensitivity": tpr[keep], "specificity": 1 - fpr[keep]})
    values = predictive_values(frame["sensitivity"].to_numpy(), frame["specificity"].to_numpy(), prev)
    frame["ppv"], frame["npv"] = values["ppv"], values["npv"]
    return frame


def threshold_for(y: np.ndarray, scores: np.ndarray, target: str, value: float) -> float:
    """The highest threshold reaching `value` of `target` ('sensitivity' or 'specificity': the
    lowest threshold for specificity), for picking an operating point by a requirement."""
    curve = operating_curve(y, scores)
    if curve.empty:
        raise ValueError("this label has a single class on the test split: no operating curve")
    hits = curve[curve[target] >= value]
    if hits.empty:
        raise ValueError(f"no threshold reaches {target} {value}")
    return float(hits["threshold"].max() if target == "sensitivity" else hits["threshold"].min())


def save_threshold_method(bundle: Bundle | str | Path, name: str, ensemble_thresholds,
                          member_thresholds=None, make_default: bool = False,
                          note: str = "", *, chosen_on: str) -> Bundle:
    """Store ensemble thresholds (one per label) as threshold method `name` in the bundle,
    with the split they were chosen on (`chosen_on`: 'validation' or 'test').

    The members keep the thresholds of the method the set was derived from (the current
    default unless given); the method works on the same (raw or calibrated) probabilities.
    """
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    name = name.strip()
    if not _NAME.match(name) or "+" in name:
        raise BundleError("A threshold method name is 1-40 letters, digits, spaces, '.', '_' or '-'.")
    if chosen_on not in SPLITS:
        raise BundleError("Say on which split the thresholds were chosen: validation or test.")
    if name in THRESHOLD_METHODS:
        raise BundleError(f"'{name}' is a built-in threshold method; choose another name.")
    values = np.asarray(ensemble_thresholds, dtype=float)
    if values.shape != (len(bundle.labels),) or not np.all((values >= 0) & (values <= 1)):
        raise BundleError(f"Give one threshold between 0 and 1 for each of the {len(bundle.labels)} labels.")
    base_name = bundle.threshold_method
    base = bundle.threshold_entry(base_name)
    members = base["members"] if member_thresholds is None else np.asarray(member_thresholds).tolist()
    entry = {"ensemble": values.tolist(), "members": members, "source": "operating points",
             "chosen_on": chosen_on, "derived_from": base_name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if note:
        entry["note"] = note
    if base.get("calibration"):
        entry["calibration"] = base["calibration"]
    bundle.set_thresholds(name, entry, make_default=make_default)
    bundle.save()
    return Bundle.load(bundle.path)
