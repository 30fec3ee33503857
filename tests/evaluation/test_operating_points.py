"""Operating points: rates at a threshold, PPV/NPV at a prevalence, saved threshold methods."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_core.base.errors import BundleError
from cxr_core.evaluation.operating_points import (
    operating_curve,
    rates_at,
    save_threshold_method,
    threshold_for,
)
from cxr_core.modeling.bundle import Bundle
from tests.modeling.bundle_factory import (
    make_split,
    split_with_empty_cache,
    write_synthetic_bundle,
)


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
    save_threshold_method(path, "high-sensitivity", [0.1, 0.2, 0.3], note="screening", chosen_on="validation")
    bundle = Bundle.load(path)  # checksums still verify
    ens, members = bundle.thresholds("high-sensitivity")
    assert ens.tolist() == [0.1, 0.2, 0.3]
    assert np.array_equal(members, bundle.thresholds("f1")[1])
    assert bundle.manifest["threshold_method"] == "f1"
    bundle = save_threshold_method(bundle, "screening", [0.05, 0.05, 0.05], make_default=True,
                                   chosen_on="validation")
    assert bundle.manifest["threshold_method"] == "screening"
    assert bundle.thresholds()[0].tolist() == [0.05, 0.05, 0.05]
    for name, values, needle in [("f1", [0.1] * 3, "built-in"), ("", [0.1] * 3, "name"),
                                 ("x+y", [0.1] * 3, "name"), ("ok", [0.1, 0.2], "each of the 3"),
                                 ("ok", [0.1, 2.0, 0.3], "between 0 and 1")]:
        with pytest.raises(BundleError, match=needle):
            save_threshold_method(path, name, values, chosen_on="validation")


def _fake_members(monkeypatch, split, labels, seed=0):
    """Members replaced by fixed probabilities per image (the crops are never read)."""
    from pathlib import Path

    from tests.modeling.bundle_factory import binormal

    targets = split.set_index("ImageID")[labels].to_numpy(float)
    rows = {image_id: i for i, image_id in enumerate(split["ImageID"])}
    probs = binormal(np.random.default_rng(seed), np.stack([targets, targets]), 1.5)

    def fake_members(classifiers, paths, input_size, **kwargs):
        return probs[:, [rows[Path(p).name] for p in paths]]

    monkeypatch.setattr("cxr_core.evaluation.evaluation.predict_members", fake_members)
    monkeypatch.setattr(Bundle, "classifiers", property(lambda self: []))


def _evaluable_bundle(tmp_path, monkeypatch, labels):
    split, split_csv, cache = split_with_empty_cache(tmp_path, 300, labels, [0.3, 0.3], seed=4)
    _fake_members(monkeypatch, split, labels)
    return write_synthetic_bundle(tmp_path / "b", split, labels, [1.5, 1.5]), cache, split_csv


def test_every_threshold_method_records_the_split_it_was_chosen_on(tmp_path):
    labels = ["effusion", "nodule"]
    path = write_synthetic_bundle(tmp_path / "b", make_split(200, labels, [0.3, 0.3]), labels, [1, 1])
    bundle = Bundle.load(path)
    assert {bundle.threshold_split(m) for m in bundle.threshold_methods} == {"validation"}
    bundle = save_threshold_method(bundle, "screening", [0.1, 0.1], chosen_on="validation")
    assert bundle.threshold_split("screening") == "validation"
    with pytest.raises(BundleError, match="validation or test"):
        save_threshold_method(bundle, "other", [0.1, 0.1], chosen_on="train")


def test_operating_points_read_the_validation_predictions_not_the_test_ones(tmp_path):
    from cxr_core.evaluation.operating_points import operating_data

    labels = ["effusion", "nodule"]
    path = write_synthetic_bundle(tmp_path / "b", make_split(200, labels, [0.3, 0.3]), labels, [1, 1])
    bundle = Bundle.load(path)
    data = operating_data(bundle)
    with np.load(path / "val_predictions.npz") as val:
        np.testing.assert_array_equal(data["targets"], val["targets"])
        np.testing.assert_allclose(data["scores"], val["member_probs"].mean(axis=0), rtol=1e-6)
    assert data["split"] == "validation"
    (path / "val_predictions.npz").unlink()
    with pytest.raises(BundleError, match="validation predictions"):
        operating_data(Bundle.load(path, verify=False))


def test_evaluate_refuses_test_figures_with_thresholds_chosen_on_test(tmp_path, monkeypatch):
    from cxr_core.base.errors import ThresholdSplitError
    from cxr_core.evaluation.evaluation import evaluate_bundle
    from cxr_core.evaluation.plots import MetricsDisplay

    labels = ["effusion", "nodule"]
    path, cache, split_csv = _evaluable_bundle(tmp_path, monkeypatch, labels)
    save_threshold_method(path, "tuned-on-test", [0.2, 0.2], make_default=True, chosen_on="test")
    with pytest.raises(ThresholdSplitError, match="chosen on the test split"):
        evaluate_bundle(path, cache, split_csv, n_resamples=0)
    bundle = Bundle.load(path)
    with pytest.raises(ThresholdSplitError):
        MetricsDisplay.from_bundle(bundle, "tuned-on-test", n_resamples=0)
    metrics = evaluate_bundle(path, cache, split_csv, n_resamples=0, method="f1")
    assert metrics["thresholds"] == {"method": "f1", "chosen_on": "validation"}


def test_a_threshold_method_without_its_split_is_flagged_unknown(tmp_path, monkeypatch, capsys):
    """A bundle saved before the record (an operating point then read the test predictions)."""
    from cxr_core.evaluation.evaluation import evaluate_bundle
    from cxr_core.evaluation.plots import MetricsDisplay

    labels = ["effusion", "nodule"]
    path, cache, split_csv = _evaluable_bundle(tmp_path, monkeypatch, labels)
    bundle = Bundle.load(path)
    entry = bundle.threshold_entry("f1")
    bundle.set_thresholds("old", {k: v for k, v in entry.items() if k != "chosen_on"} | {"source": "operating points"},
                          make_default=True)
    bundle.save()
    metrics = evaluate_bundle(path, cache, split_csv, n_resamples=0)
    assert metrics["thresholds"] == {"method": "old", "chosen_on": "unknown"}
    from cxr_core.cli import main

    assert main(["evaluate", "--bundle", str(path), "--data", str(cache), "--split", str(split_csv),
                 "--resamples", "10"]) == 0
    assert "thresholds old: chosen on an unrecorded split" in capsys.readouterr().out
    display = MetricsDisplay.from_bundle(Bundle.load(path), n_resamples=0)
    assert display.chosen_on == "unknown"
