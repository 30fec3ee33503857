"""Operating points: rates at a threshold, PPV/NPV at a prevalence, saved threshold methods."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_core.base.errors import BundleError
from cxr_core.modeling.bundle import Bundle
from cxr_core.evaluation.operating_points import (
    operating_curve,
    rates_at,
    save_threshold_method,
    threshold_for,
)
from tests.modeling.bundle_factory import make_split, write_synthetic_bundle


def test_rates_at_a_threshold_and_predictive_values_at_another_prevalence():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1])
    r = rates_at(y, s, 0.5)
    assert (r["tp"], r["fn"], r["fp"], r["tn"]) == (3, 1, 1, 5)
    assert r["sensitivity"] == 0.75 and r["specificity"] == pytest.approx(5 / 6)
    assert r["ppv"] == pytest.approx(3 / 4) and r["npv"] == pytest.approx(5 / 6)
    rare = rates_at(y, s, 0.5, prevalence=0.01)  # same test, a rarer finding: PPV collapses
    expected = 0.75 * 0.01 / (0.75 * 0.01 + (1 / 6) * 0.99)
    assert rare["ppv"] == pytest.approx(expected) and rare["npv"] > r["npv"]


def test_operating_curve_and_threshold_for_a_required_sensitivity():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    s = 1 / (1 + np.exp(-(rng.normal(size=500) + 2 * y)))
    curve = operating_curve(y, s)
    assert curve["sensitivity"].is_monotonic_increasing and curve["specificity"].is_monotonic_decreasing
    t = threshold_for(y, s, "sensitivity", 0.9)
    assert rates_at(y, s, t)["sensitivity"] >= 0.9
    assert rates_at(y, s, np.nextafter(t, 1))["sensitivity"] < 0.9 or t == s.max()
    assert operating_curve(np.zeros(5), np.arange(5) / 5).empty


def test_a_saved_threshold_set_is_a_named_method_of_the_bundle(tmp_path):
    labels = ["effusion", "nodule", "normal"]
    path = write_synthetic_bundle(tmp_path / "b", make_split(200, labels, [0.3, 0.2, 0.5]), labels, [1, 1, 1])
    save_threshold_method(path, "high-sensitivity", [0.1, 0.2, 0.3], note="screening")
    bundle = Bundle.load(path)  # checksums still verify
    ens, members = bundle.thresholds("high-sensitivity")
    assert ens.tolist() == [0.1, 0.2, 0.3]
    assert np.array_equal(members, bundle.thresholds("f1")[1])
    assert bundle.manifest["threshold_method"] == "f1"
    bundle = save_threshold_method(bundle, "screening", [0.05, 0.05, 0.05], make_default=True)
    assert bundle.manifest["threshold_method"] == "screening"
    assert bundle.thresholds()[0].tolist() == [0.05, 0.05, 0.05]
    for name, values, needle in [("f1", [0.1] * 3, "built-in"), ("", [0.1] * 3, "name"),
                                 ("x+y", [0.1] * 3, "name"), ("ok", [0.1, 0.2], "each of the 3"),
                                 ("ok", [0.1, 2.0, 0.3], "between 0 and 1")]:
        with pytest.raises(BundleError, match=needle):
            save_threshold_method(path, name, values)
