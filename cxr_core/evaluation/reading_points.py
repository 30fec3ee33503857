"""Reading points: the operating points a reader chooses between on the Review page (balanced,
high sensitivity, high specificity), each chosen per finding on the VALIDATION predictions and
stored in the bundle as a threshold method with its validation sensitivity and specificity;
and the calibration they work on, used only when it lowers the validation calibration error
out of fold (so that isotonic's in-sample fit cannot win by overfitting).

`fit_reading_points` writes them into a bundle (the demo build does, and
`python -m cxr_core operating-points BUNDLE` does for an existing one).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..base.errors import BundleError
from ..modeling.bundle import Bundle
from ..modeling.calibration import (CALIBRATION_METHODS, apply_calibration,
                                    expected_calibration_error, fit_calibration)

log = logging.getLogger(__name__)

#: Sensitivity (or specificity) the high-sensitivity (high-specificity) point keeps on validation.
TARGET = 0.90
#: The reading points, in the order the Review page offers them, with the rule each follows.
READING_POINTS = {
    "balanced": "the threshold with the largest sensitivity + specificity (Youden's J)",
    "high sensitivity": f"the highest threshold that keeps sensitivity >= {TARGET:.2f}, "
                        "never above the balanced one",
    "high specificity": f"the lowest threshold that keeps specificity >= {TARGET:.2f}, "
                        "never below the balanced one",
}
DEFAULT_POINT = "balanced"
CV_FOLDS = 5


def _known(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The images whose label is known (not NaN) for one finding."""
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(y)
    return y[keep].astype(int), np.asarray(p, dtype=np.float64)[keep]


def rates(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of `p >= threshold` on the known labels (NaN when undefined)."""
    y, p = _known(y, p)
    called = p >= threshold
    pos, neg = y == 1, y == 0
    sens = float(called[pos].mean()) if pos.any() else float("nan")
    spec = float((~called[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def point_threshold(y: np.ndarray, p: np.ndarray, point: str, default: float = 0.5) -> float:
    """One finding's threshold for a reading point (module docstring), chosen among the
    predicted probabilities; `default` when validation has a single class for it."""
    if point not in READING_POINTS:
        raise ValueError(f"reading point must be one of {tuple(READING_POINTS)}")
    y, p = _known(y, p)
    if y.size == 0 or y.min() == y.max():
        return float(default)
    candidates = np.unique(p)  # every distinct cut: `p >= c`
    sens = np.array([(p[y == 1] >= c).mean() for c in candidates])
    spec = np.array([(p[y == 0] < c).mean() for c in candidates])
    if point == "balanced":
        return float(candidates[int(np.argmax(sens + spec))])
    if point == "high sensitivity":
        return float(candidates[sens >= TARGET].max())  # the lowest candidate keeps 1.0
    reached = candidates[spec >= TARGET]
    return float(reached.min()) if reached.size else float(np.nextafter(p.max(), np.inf))


def ordered_threshold(y: np.ndarray, p: np.ndarray, point: str) -> float:
    """`point_threshold`, kept on its side of the balanced one: high sensitivity never above
    it, high specificity never below it (the balanced point may already exceed the target)."""
    own = point_threshold(y, p, point)
    if point == "balanced":
        return own
    balanced = point_threshold(y, p, "balanced")
    return min(own, balanced) if point == "high sensitivity" else max(own, balanced)


def reading_thresholds(targets: np.ndarray, member_probs: np.ndarray, point: str) -> dict:
    """A threshold-method entry for one reading point: ensemble (CTP mean) and member
    thresholds, with the ensemble's validation sensitivity and specificity per finding."""
    targets, member_probs = np.asarray(targets, np.float64), np.asarray(member_probs, np.float64)
    mean = member_probs.mean(axis=0)
    k = targets.shape[1]
    ensemble = [ordered_threshold(targets[:, j], mean[:, j], point) for j in range(k)]
    members = [[ordered_threshold(targets[:, j], probs[:, j], point) for j in range(k)]
               for probs in member_probs]
    measured = [rates(targets[:, j], mean[:, j], ensemble[j]) for j in range(k)]
    return {"ensemble": ensemble, "members": members, "chosen_on": "validation",
            "reading_point": point, "rule": READING_POINTS[point],
            "sensitivity": [s for s, _ in measured], "specificity": [s for _, s in measured],
            "val_positives": [int(np.nansum(targets[:, j])) for j in range(k)]}


def _pooled_ece(targets: np.ndarray, probs: np.ndarray) -> float:
    known = np.isfinite(targets)
    return expected_calibration_error(targets[known], probs[known])


def out_of_fold_ece(targets: np.ndarray, member_probs: np.ndarray, method: str,
                    folds: int = CV_FOLDS, seed: int = 0) -> float:
    """Pooled ECE of the ensemble mean when each image is calibrated by a calibrator fitted on
    the other folds of validation (an honest estimate of what calibration buys)."""
    n = targets.shape[0]
    fold = np.random.default_rng(seed).permutation(n) % folds
    calibrated = np.empty_like(np.asarray(member_probs, np.float64))
    for f in range(folds):
        held, rest = fold == f, fold != f
        fitted = fit_calibration(method, targets[rest], member_probs[:, rest])
        calibrated[:, held] = apply_calibration(fitted, member_probs[:, held])
    return _pooled_ece(targets, calibrated.mean(axis=0))


def choose_calibration(targets: np.ndarray, member_probs: np.ndarray) -> tuple[str | None, dict]:
    """The calibration with the lowest out-of-fold validation ECE when it is below the raw
    probabilities' ECE, else None; returns it with every ECE measured."""
    targets, member_probs = np.asarray(targets, np.float64), np.asarray(member_probs, np.float64)
    eces = {"raw": _pooled_ece(targets, member_probs.mean(axis=0))}
    for method in CALIBRATION_METHODS:
        eces[method] = out_of_fold_ece(targets, member_probs, method)
    best = min(CALIBRATION_METHODS, key=lambda m: eces[m])
    return (best if eces[best] < eces["raw"] else None), eces


def fit_reading_points(bundle_path: str | Path, cache_dir: str | Path | None = None,
                       split_csv: str | Path | None = None) -> dict:
    """Choose the calibration and the three reading points on validation and store them in the
    bundle (threshold methods named after the points, `reading` in the manifest); the
    bundle's own default threshold method is left as it is. Returns the stored `reading`."""
    from .recalibration import predict_validation, val_predictions

    bundle = Bundle.load(bundle_path)
    if cache_dir is not None and split_csv is not None:
        stored = predict_validation(bundle, cache_dir, split_csv)
    else:
        stored = val_predictions(bundle)
    if stored is None:
        raise BundleError(f"Bundle {bundle.path} stores no validation predictions: give the image "
                          "cache and split (--data, --split) to compute them.")
    targets = np.asarray(stored["targets"], np.float64)
    raw = np.asarray(stored["member_probs"], np.float64)
    name, eces = choose_calibration(targets, raw)
    probs = raw
    if name is not None:
        calibration = fit_calibration(name, targets, raw)  # unknown (NaN) targets left out
        bundle.update(calibration={name: calibration})
        probs = apply_calibration(calibration, raw)
    for point in READING_POINTS:
        bundle.set_thresholds(point, {**reading_thresholds(targets, probs, point),
                                      "calibration": name})
    reading = {"points": list(READING_POINTS), "default": DEFAULT_POINT, "calibration": name,
               "val_ece": eces, "validation_images": int(targets.shape[0]),
               "tta_flip": bundle.tta_flip,
               "ece_note": f"pooled over findings, {CV_FOLDS}-fold out of fold on validation"}
    bundle.update(reading=None).update(reading=reading).save()
    log.info("reading points stored in %s (calibration: %s)", bundle.path, name or "none")
    return reading


def reading_of(bundle: Bundle) -> dict | None:
    """The bundle's stored reading points record, or None when it has none."""
    reading = bundle.reading
    if not reading or any(p not in bundle.threshold_methods for p in reading.get("points", [])):
        return None
    return dict(reading)


def displayed_method(bundle: Bundle, chosen: str | None = None) -> str:
    """The threshold method whose probabilities, thresholds and calls every page displays:
    the reading point the reader chose (calibrated when the bundle stores a calibration for
    it), the bundle's default reading point when none is chosen (or an unknown one), and the
    bundle's own threshold method when it stores no reading points."""
    reading = reading_of(bundle)
    if reading is None:
        return bundle.threshold_method
    return chosen if chosen in reading["points"] else reading["default"]
