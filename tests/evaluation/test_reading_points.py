"""Reading points (balanced, high sensitivity, high specificity) and the default calibration,
chosen on validation and stored in the bundle; the `operating-points` command."""

import numpy as np
import pytest

from cxr_core.evaluation.reading_points import (
    READING_POINTS,
    TARGET,
    choose_calibration,
    fit_reading_points,
    point_threshold,
    rates,
    reading_of,
)
from cxr_core.evaluation.recalibration import val_predictions
from cxr_core.modeling.bundle import Bundle
from cxr_core.modeling.calibration import apply_calibration

from ..modeling.bundle_factory import make_split, write_synthetic_bundle

LABELS = ["pneumonia", "normal", "effusion"]


@pytest.fixture
def bundle_dir(tmp_path):
    split = make_split(400, LABELS, [0.4, 0.4, 0.15], seed=1)
    return write_synthetic_bundle(tmp_path / "b", split, LABELS, [1.5, 2.0, 1.0], distort=3.0)


def test_each_point_follows_its_rule_on_validation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.5 * y + rng.normal(0.25, 0.2, 300), 0, 1)
    balanced = point_threshold(y, p, "balanced")
    sens_b, spec_b = rates(y, p, balanced)
    cuts = np.unique(p)
    assert sens_b + spec_b == pytest.approx(max(sum(rates(y, p, c)) for c in cuts))
    high_sens = point_threshold(y, p, "high sensitivity")
    assert rates(y, p, high_sens)[0] >= TARGET
    above = cuts[cuts > high_sens]
    assert rates(y, p, above.min())[0] < TARGET  # the highest cut that keeps it
    high_spec = point_threshold(y, p, "high specificity")
    assert rates(y, p, high_spec)[1] >= TARGET
    below = cuts[cuts < high_spec]
    assert rates(y, p, below.max())[1] < TARGET  # the lowest cut that keeps it
    y_nan = y.astype(float)
    y_nan[:50] = np.nan  # unknown labels are left out
    assert point_threshold(y_nan, p, "balanced") == point_threshold(y[50:], p[50:], "balanced")
    assert point_threshold(np.zeros(10), p[:10], "balanced") == 0.5  # one class: the default


def test_points_and_calibration_are_fitted_on_validation_and_stored(bundle_dir):
    reading = fit_reading_points(bundle_dir)
    bundle = Bundle.load(bundle_dir)
    assert reading_of(bundle) == reading and reading["default"] == "balanced"
    assert bundle.threshold_method == "f1"  # the bundle's own default is left as it was
    # miscalibrated probabilities (raised to the third power): a calibration lowers the
    # out-of-fold validation ECE and is used
    assert reading["calibration"] in ("temperature", "isotonic")
    assert reading["val_ece"][reading["calibration"]] < reading["val_ece"]["raw"]
    stored = val_predictions(bundle)
    calibrated = apply_calibration(bundle.calibrations[reading["calibration"]], stored["member_probs"])
    mean = calibrated.mean(axis=0)
    thresholds = {}
    for point in READING_POINTS:
        entry = bundle.threshold_entry(point)
        assert entry["chosen_on"] == "validation" and entry["calibration"] == reading["calibration"]
        assert entry["reading_point"] == point and len(entry["members"]) == 2
        thresholds[point] = np.asarray(entry["ensemble"])
        for k in range(len(LABELS)):  # the recorded rates are the validation rates
            sens, spec = rates(stored["targets"][:, k], mean[:, k], entry["ensemble"][k])
            assert entry["sensitivity"][k] == pytest.approx(sens)
            assert entry["specificity"][k] == pytest.approx(spec)
        if point == "high sensitivity":
            assert min(entry["sensitivity"]) >= TARGET
        if point == "high specificity":
            assert min(entry["specificity"]) >= TARGET
    assert np.all(thresholds["high sensitivity"] <= thresholds["balanced"])
    assert np.all(thresholds["balanced"] <= thresholds["high specificity"])
    # the review applies the point's calibration and thresholds
    probs = bundle.calibrate(stored["member_probs"], "balanced")
    assert np.allclose(probs, calibrated)


def test_no_calibration_when_none_lowers_the_validation_error():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.02, 0.98, (2, 3000, 2))
    p[1] = p[0]
    targets = (rng.uniform(size=(3000, 2)) < p[0]).astype(float)  # calibrated by construction
    name, eces = choose_calibration(targets, p)
    assert set(eces) == {"raw", "temperature", "isotonic"}
    if name is None:
        assert min(eces["temperature"], eces["isotonic"]) >= eces["raw"]
    else:
        assert eces[name] < eces["raw"]
    assert eces["raw"] < 0.03
    squashed = p ** 3  # far from calibrated: a calibration is chosen
    assert choose_calibration(targets, squashed)[0] is not None


def test_operating_points_command_fits_an_existing_bundle(bundle_dir, capsys):
    from cxr_core.cli import main

    assert main(["operating-points", "--bundle", str(bundle_dir)]) == 0
    out = capsys.readouterr().out
    assert "calibration:" in out and "high sensitivity (" in out and "pneumonia " in out
    assert reading_of(Bundle.load(bundle_dir)) is not None


def test_a_bundle_without_validation_predictions_is_a_clear_error(tmp_path):
    from cxr_core.base.errors import BundleError

    split = make_split(60, LABELS, [0.4, 0.4, 0.2])
    path = write_synthetic_bundle(tmp_path / "nov", split, LABELS, [1, 1, 1], val=False)
    with pytest.raises(BundleError, match="stores no validation predictions"):
        fit_reading_points(path)
