"""Calibration of predicted probabilities: reliability curves, expected calibration error and
Brier score, and post-hoc calibrators (temperature or isotonic, per member and label) fitted on
the validation split and applied to member probabilities before the ensemble.

A fitted calibration is plain JSON (stored in the bundle manifest under `calibration`):
{"method": "temperature", "members": [[T per label] per member]} or
{"method": "isotonic", "members": [[{"x": [...], "y": [...]} per label] per member]}.
Targets that are unknown (NaN: the source does not annotate the finding) are left out of every
curve, score and fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit

CALIBRATION_METHODS = ("temperature", "isotonic")
DEFAULT_BINS = 10
_EPS = 1e-6


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int = DEFAULT_BINS) -> pd.DataFrame:
    """Equal-width probability bins: count, mean predicted probability and observed frequency."""
    y, p = _known(y, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=n_bins) / count
        observed = np.bincount(which, weights=y, minlength=n_bins) / count
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": count,
                         "mean_predicted": mean_p, "observed": observed})


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Count-weighted mean |observed frequency - mean probability| over equal-width bins."""
    curve = reliability_curve(y, p, n_bins)
    used = curve["count"] > 0
    if not used.any():
        return float("nan")
    gap = (curve["observed"] - curve["mean_predicted"]).abs()[used]
    return float((gap * curve["count"][used]).sum() / curve["count"][used].sum())


def _known(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened targets and probabilities where the target is known (not NaN)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    known = np.isfinite(y)
    return y[known], p[known]


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared difference between probability and outcome (known targets only)."""
    y, p = _known(y, p)
    return float(np.mean((p - y) ** 2)) if len(y) else float("nan")


def calibration_table(targets: np.ndarray, probs: np.ndarray, labels: list[str],
                      n_bins: int = DEFAULT_BINS) -> pd.DataFrame:
    """ECE and Brier per label, then an 'all labels' row pooling every image-label pair."""
    targets, probs = np.asarray(targets, dtype=np.float64), np.asarray(probs, dtype=np.float64)

    def row(label: str, y: np.ndarray, p: np.ndarray) -> dict:
        y, p = _known(y, p)
        return {"label": label, "positives": int(y.sum()),
                "ece": expected_calibration_error(y, p, n_bins), "brier": brier_score(y, p),
                "mean_probability": float(p.mean()) if len(p) else float("nan"),
                "prevalence": float(y.mean()) if len(y) else float("nan")}

    rows = [row(lab, targets[:, k], probs[:, k]) for k, lab in enumerate(labels)]
    rows.append(row("all labels", targets, probs))
    return pd.DataFrame(rows)


# --- calibrators -----------------------------------------------------------------------------
def fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    """The temperature T minimising the log loss of sigmoid(logit(p) / T) (1.0 if one class)."""
    y, p = _known(y, p)
    if len(y) == 0 or y.min() == y.max():
        return 1.0
    z = logit(np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS))

    def loss(log_t: float) -> float:
        q = np.clip(expit(z / np.exp(log_t)), _EPS, 1 - _EPS)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    result = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def fit_isotonic(y: np.ndarray, p: np.ndarray) -> dict:
    """A non-decreasing step map from probability to observed frequency, as knots for
    `np.interp` (identity if one class)."""
    from sklearn.isotonic import IsotonicRegression

    y, p = _known(y, p)
    if len(y) == 0 or y.min() == y.max():
        return {"x": [0.0, 1.0], "y": [0.0, 1.0]}
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return {"x": [float(v) for v in model.X_thresholds_], "y": [float(v) for v in model.y_thresholds_]}


def fit_calibration(method: str, targets: np.ndarray, member_probs: np.ndarray) -> dict:
    """One calibrator per member and label, fitted on validation targets (N, K) and member
    probabilities (M, N, K)."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}")
    fit = fit_temperature if method == "temperature" else fit_isotonic
    targets, member_probs = np.asarray(targets), np.asarray(member_probs)
    members = [[fit(targets[:, k], probs[:, k]) for k in range(targets.shape[1])]
               for probs in member_probs]
    return {"method": method, "members": members, "fitted_on": "val",
            "images": int(targets.shape[0])}


def apply_calibration(calibration: dict, member_probs: np.ndarray) -> np.ndarray:
    """Calibrated member probabilities (M, N, K) (or (M, K) for one image)."""
    probs = np.asarray(member_probs, dtype=np.float64)
    single = probs.ndim == 2
    if single:
        probs = probs[:, None, :]
    params = calibration["members"]
    if len(params) != probs.shape[0] or any(len(p) != probs.shape[2] for p in params):
        raise ValueError("the calibration does not match the members and labels of these probabilities")
    out = np.empty_like(probs)
    for m, member in enumerate(params):
        for k, param in enumerate(member):
            if calibration["method"] == "temperature":
                z = logit(np.clip(probs[m, :, k], _EPS, 1 - _EPS))
                out[m, :, k] = expit(z / float(param))
            else:
                out[m, :, k] = np.interp(probs[m, :, k], param["x"], param["y"])
    return out[:, 0, :] if single else out
