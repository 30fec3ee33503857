"""Calibration metrics on generators with known answers; calibrators fitted on validation
(storing them in a bundle: tests/evaluation/test_recalibration.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from cxr_core.modeling.calibration import (
    apply_calibration,
    brier_score,
    calibration_table,
    expected_calibration_error,
    fit_calibration,
    reliability_curve,
)


def calibrated_sample(n: int, seed: int):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    return (rng.random(n) < p).astype(float), p


def test_a_perfectly_calibrated_generator_has_ece_near_zero():
    y, p = calibrated_sample(50_000, 0)
    assert expected_calibration_error(y, p) < 0.01
    curve = reliability_curve(y, p)
    assert np.allclose(curve["observed"], curve["mean_predicted"], atol=0.02)
    # over-confident: the true frequency is p, the model says p ** 3
    assert expected_calibration_error(y, p ** 3) > 0.15


def test_brier_score_and_table():
    assert brier_score([1, 0, 1], [1.0, 0.0, 0.5]) == pytest.approx(0.25 / 3)
    y, p = calibrated_sample(2000, 1)
    table = calibration_table(np.stack([y, 1 - y], 1), np.stack([p, 1 - p], 1), ["a", "b"])
    assert table["label"].tolist() == ["a", "b", "all labels"]
    assert table.loc[0, "brier"] == pytest.approx(brier_score(y, p))


def overconfident(p: np.ndarray) -> np.ndarray:
    """Logits three times too large: what temperature scaling is made to undo."""
    return expit(3 * logit(np.clip(p, 1e-6, 1 - 1e-6)))


@pytest.mark.parametrize("method,distortion", [("temperature", overconfident),
                                               ("isotonic", overconfident),
                                               ("isotonic", lambda p: p ** 3)])
def test_calibration_fitted_on_validation_lowers_test_ece(method, distortion):
    y_val, p_val = calibrated_sample(5000, 2)
    y_test, p_test = calibrated_sample(5000, 3)
    distorted_val, distorted_test = distortion(p_val), distortion(p_test)
    fitted = fit_calibration(method, y_val[:, None], distorted_val[None, :, None])
    fixed = apply_calibration(fitted, distorted_test[None, :, None])[0, :, 0]
    before = expected_calibration_error(y_test, distorted_test)
    after = expected_calibration_error(y_test, fixed)
    assert after < 0.03 and before > 0.08
    one_image = apply_calibration(fitted, distorted_test[None, :1])  # (M, K) works too
    assert one_image[0, 0] == pytest.approx(fixed[0])


def test_temperature_scaling_keeps_the_ranking():
    y, p = calibrated_sample(1000, 4)
    fitted = fit_calibration("temperature", y[:, None], (p ** 2)[None, :, None])
    out = apply_calibration(fitted, (p ** 2)[None, :, None])[0, :, 0]
    assert np.array_equal(np.argsort(out, kind="stable"), np.argsort(p ** 2, kind="stable"))


def test_unknown_labels_are_left_out_of_calibration_fits_and_tables():
    rng = np.random.default_rng(2)
    y = (rng.random((400, 2)) < 0.3).astype(float)
    probs = expit(rng.normal(size=(2, 400, 2)) * 2 + 3 * y - 1.5)
    y_unknown = y.copy()
    y_unknown[:150, 1] = np.nan
    for method in ("temperature", "isotonic"):
        fitted = fit_calibration(method, y_unknown, probs)
        reference = fit_calibration(method, y[150:], probs[:, 150:])
        assert fitted["members"][0][1] == reference["members"][0][1]
    table = calibration_table(y_unknown, probs[0], ["a", "b"]).set_index("label")
    assert table.loc["b", "positives"] == int(y[150:, 1].sum())
    assert table.loc["b", "brier"] == pytest.approx(np.mean((probs[0, 150:, 1] - y[150:, 1]) ** 2))
    assert np.isfinite(table.loc["all labels", ["ece", "brier", "prevalence"]].astype(float)).all()
