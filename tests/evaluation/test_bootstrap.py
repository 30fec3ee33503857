"""Patient-level bootstrap: exact weighted AUC/F1, honest coverage, patients kept together."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import f1_score, roc_auc_score

from cxr_core.evaluation.bootstrap import (
    auc_samples,
    f1_samples,
    label_intervals,
    model_intervals,
    resample_groups,
    weighted_auc,
)


def test_weighted_auc_matches_sklearn_with_ties_and_integer_weights():
    rng = np.random.default_rng(1)
    y = rng.random(400) < 0.2
    scores = np.round(rng.normal(size=400) + y, 1)  # many ties, inside and across classes
    assert weighted_auc(np.ones(400), y, scores)[0] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert weighted_auc(np.ones(400), ~y, scores)[0] == pytest.approx(roc_auc_score(~y, scores), abs=1e-12)
    weights = rng.integers(0, 4, size=(400, 3)).astype(np.float32)
    for b in range(3):
        rows = np.repeat(np.arange(400), weights[:, b].astype(int))
        assert weighted_auc(weights, y, scores)[b] == pytest.approx(roc_auc_score(y[rows], scores[rows]), abs=1e-9)


def test_f1_samples_match_sklearn_under_unit_weights():
    rng = np.random.default_rng(2)
    y = rng.random((300, 3)) < [0.1, 0.4, 0.7]
    b = rng.random((300, 3)) < 0.4
    f1 = f1_samples(np.ones((300, 1), np.float32), y, b)
    for k in range(3):
        assert f1["f1_positive"][0, k] == pytest.approx(f1_score(y[:, k], b[:, k]))
        assert f1["f1_macro"][0, k] == pytest.approx(f1_score(y[:, k], b[:, k], average="macro"))


def test_resampling_keeps_the_images_of_a_patient_together():
    groups = np.repeat(np.arange(50), 3)
    r = resample_groups(groups, n_resamples=20, seed=0)
    assert r.unit == "patient" and r.n_units == 50 and r.weights.shape == (150, 20)
    per_patient = r.weights.reshape(50, 3, 20)
    assert (per_patient == per_patient[:, :1, :]).all()  # same count for each image of a patient
    assert np.allclose(r.weights.sum(axis=0), 150)  # 50 patients drawn, 3 images each
    assert resample_groups(np.arange(30), 5, seed=0).unit == "image"
    assert np.array_equal(resample_groups(groups, 5, seed=3).weights, resample_groups(groups, 5, seed=3).weights)


def test_interval_covers_the_true_auc_about_95_percent_of_the_time():
    """200 seeded repetitions of a binormal problem with a known AUC (vectorised: fast)."""
    separation = 1.0
    true_auc = norm.cdf(separation / np.sqrt(2))
    hits = 0
    for rep in range(200):
        rng = np.random.default_rng(1000 + rep)
        y = rng.random(300) < 0.3
        scores = rng.normal(size=300) + separation * y
        r = resample_groups(np.arange(300), n_resamples=300, seed=rep)
        samples = auc_samples(r.weights, y[:, None], scores[:, None])[:, 0]
        low, high = np.percentile(samples, [2.5, 97.5])
        hits += low <= true_auc <= high
    assert 0.89 <= hits / 200 <= 0.99, hits


def test_label_intervals_mark_labels_with_too_few_cases_and_give_macro_bounds():
    rng = np.random.default_rng(3)
    y = np.zeros((400, 3), bool)
    y[:, 0] = rng.random(400) < 0.3
    y[:4, 1] = True  # 4 positives only
    y[:, 2] = rng.random(400) < 0.5
    scores = rng.normal(size=(400, 3)) + y
    r = resample_groups(np.arange(400), 200, seed=0)
    frame, macro = label_intervals(r, y, scores, scores > 0.5, ["a", "rare", "c"])
    assert frame.loc[1, "ci_note"].startswith("too few positives") and np.isnan(frame.loc[1, "auc_low"])
    assert frame.loc[0, "ci_note"] == "" and frame.loc[0, "auc_low"] < roc_auc_score(y[:, 0], scores[:, 0]) < frame.loc[0, "auc_high"]
    assert macro["labels_with_interval"] == 2
    point = np.mean([roc_auc_score(y[:, k], scores[:, k]) for k in range(3)])  # the macro estimate
    assert macro["auc_low"] < point < macro["auc_high"]
    for metric in ("f1_macro", "f1_positive"):
        assert (frame.loc[[0, 2], f"{metric}_low"] <= frame.loc[[0, 2], f"{metric}_high"]).all()


def test_model_intervals_share_one_resampling_and_report_it():
    rng = np.random.default_rng(4)
    y = rng.random((200, 2)) < 0.4
    s = rng.normal(size=(200, 2)) + y
    out = model_intervals({"a": (s, s > 0), "b": (s, s > 0)}, y, ["x", "y"], groups=np.arange(200) // 2,
                          n_resamples=100, seed=7)
    assert out["resampling"] == {"unit": "patient", "units": 100, "resamples": 100, "seed": 7,
                                 "confidence": 0.95, "min_class_count": 10}
    assert out["per_label"]["a"].equals(out["per_label"]["b"])  # same weights, same scores


def test_unknown_labels_are_left_out_of_every_resample():
    """An image whose label is unknown (NaN) weighs nothing in that label's resampled AUC and F1."""
    rng = np.random.default_rng(4)
    y = (rng.random((300, 2)) < 0.35).astype(float)
    scores = rng.normal(size=(300, 2)) + y
    predicted = scores > 0.5
    y_unknown = y.copy()
    y_unknown[:100, 1] = np.nan
    resampling = resample_groups(np.arange(300) // 2, n_resamples=50, seed=1)
    w = resampling.weights
    auc = auc_samples(w, y_unknown, scores)
    np.testing.assert_allclose(auc[:, 0], auc_samples(w, y[:, :1], scores[:, :1])[:, 0])
    np.testing.assert_allclose(auc[:, 1], auc_samples(w[100:], y[100:, 1:], scores[100:, 1:])[:, 0])
    f1 = f1_samples(w, y_unknown, predicted)
    reference = f1_samples(w[100:], y[100:, 1:], predicted[100:, 1:])
    for name in ("f1_positive", "f1_macro"):
        np.testing.assert_allclose(f1[name][:, 1], reference[name][:, 0])
    frame, _ = label_intervals(resampling, y_unknown, scores, predicted, ["a", "b"])
    assert np.isfinite(frame[["auc_low", "auc_high"]].to_numpy()).all()
