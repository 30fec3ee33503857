"""`evaluate` from the CLI on a synthetic bundle (members replaced by known predictions):
intervals in the printed summary and the tables, calibration fitted on validation and used,
the published-method table for a PadChest label set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_core.cli import main
from cxr_core.modeling.bundle import Bundle
from tests.modeling.bundle_factory import (
    binormal,
    make_split,
    split_with_empty_cache,
    write_synthetic_bundle,
)

LABELS = ["copd signs", "cardiomegaly"]



def _flip_dependent_members(monkeypatch, split, seed: int, cube: bool = False):
    """Stand-in members: sharp probabilities with test-time flips, blurred without (cubed: sharp
    but over-confident), read per image from the cache paths; no classifier is built. Returns
    (sharp probabilities (M, N, K), row of each image id)."""
    targets = split.set_index("ImageID")[LABELS].to_numpy(float)
    rows = {image_id: i for i, image_id in enumerate(split["ImageID"])}
    rng = np.random.default_rng(seed)
    sharp = binormal(rng, np.stack([targets, targets]), 2.0)
    sharp = sharp ** 3 if cube else sharp
    blurred = binormal(rng, np.stack([targets, targets]), 0.5)

    def fake_members(classifiers, paths, input_size, flip=False, **kwargs):
        return (sharp if flip else blurred)[:, [rows[Path(p).name] for p in paths]]

    monkeypatch.setattr("cxr_core.evaluation.evaluation.predict_members", fake_members)
    monkeypatch.setattr("cxr_core.modeling.inference.predict_members", fake_members)
    monkeypatch.setattr(Bundle, "classifiers", property(lambda self: []))
    return sharp, rows

def test_evaluate_with_calibration_writes_intervals_calibration_and_paper_tables(tmp_path, monkeypatch, capsys):
    split = make_split(600, LABELS, [0.3, 0.25], seed=8)
    split_csv = tmp_path / "split.csv"
    split.to_csv(split_csv, index=False)
    bundle_dir = write_synthetic_bundle(tmp_path / "bundle", split, LABELS, [1.5, 1.5], val=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    for image_id in split["ImageID"]:
        (cache / image_id).write_bytes(b"")  # the fake members below never read the crops
    targets = split.set_index("ImageID")[LABELS].to_numpy(float)
    rows = {image_id: i for i, image_id in enumerate(split["ImageID"])}
    probs = binormal(np.random.default_rng(0), np.stack([targets, targets]), 1.5) ** 3  # over-confident

    def fake_members(classifiers, paths, input_size, **kwargs):
        return probs[:, [rows[Path(p).name] for p in paths]]

    monkeypatch.setattr("cxr_core.evaluation.evaluation.predict_members", fake_members)
    monkeypatch.setattr("cxr_core.modeling.inference.predict_members", fake_members)
    monkeypatch.setattr(Bundle, "classifiers", property(lambda self: []))
    code = main(["evaluate", "--bundle", str(bundle_dir), "--data", str(cache), "--split", str(split_csv),
                 "--calibrate", "isotonic", "--calibrated-default", "--resamples", "200"])
    assert code == 0
    out = capsys.readouterr().out
    assert "isotonic calibration fitted on" in out and "default: f1+isotonic" in out
    assert "patient-level bootstrap (200 resamples" in out
    ctp_line = next(line for line in out.splitlines() if line.strip().startswith("CTP:"))
    assert ctp_line.count("[") == 2  # AUC and F1 with their intervals
    bundle = Bundle.load(bundle_dir)
    assert (bundle_dir / "val_predictions.npz").is_file()
    metrics = bundle_dir / "metrics"
    auc = pd.read_csv(metrics / "auc_by_label.csv")
    assert {"CTP low", "CTP high", "ci_note"} <= set(auc.columns) and auc["CTP low"].notna().all()
    calibration = pd.read_csv(metrics / "calibration.csv")
    pooled = calibration[(calibration["label"] == "all labels") & (calibration["model"] == "CTP")]
    raw_ctp = probs.mean(axis=0)[[rows[i] for i in bundle.test_predictions()["image_ids"]]]
    from cxr_core.modeling.calibration import expected_calibration_error

    assert pooled["ece"].iloc[0] < expected_calibration_error(bundle.test_predictions()["targets"], raw_ctp)
    paper = pd.read_csv(metrics / "paper_comparison.csv")
    assert set(paper.loc[paper["model"] == "CTP", "paper_label"]) == {"COPD signs", "Cardiomegaly"}


def test_choose_flips_keeps_them_only_when_validation_auc_rises(tmp_path, monkeypatch, capsys):
    """`evaluate --choose-flips`: members whose flip-averaged probabilities separate the classes
    better get flips on (and the test predictions are the flipped ones); worse, they stay off."""
    split, split_csv, cache = split_with_empty_cache(tmp_path, 400, LABELS, [0.3, 0.25], seed=3)
    targets = split.set_index("ImageID")[LABELS].to_numpy(float)
    rows = {image_id: i for i, image_id in enumerate(split["ImageID"])}
    rng = np.random.default_rng(1)
    sharp = binormal(rng, np.stack([targets, targets]), 2.0)
    blurred = binormal(rng, np.stack([targets, targets]), 0.5)
    monkeypatch.setattr(Bundle, "classifiers", property(lambda self: []))
    for flips_help, expected in ((True, "on"), (False, "off")):
        bundle_dir = write_synthetic_bundle(tmp_path / expected, split, LABELS, [1.5, 1.5], val=False)
        with_flips, without = (sharp, blurred) if flips_help else (blurred, sharp)

        def fake_members(classifiers, paths, input_size, flip=False, **kwargs):
            return (with_flips if flip else without)[:, [rows[Path(p).name] for p in paths]]

        monkeypatch.setattr("cxr_core.evaluation.evaluation.predict_members", fake_members)
        assert main(["evaluate", "--bundle", str(bundle_dir), "--data", str(cache),
                     "--split", str(split_csv), "--choose-flips", "--resamples", "50"]) == 0
        assert f"test-time flips {expected}" in capsys.readouterr().out
        bundle = Bundle.load(bundle_dir)
        choice = bundle.manifest["inference"]
        assert bundle.tta_flip is flips_help and choice["tta_flip"] is flips_help
        assert (choice["val_auc_flip"] > choice["val_auc_plain"]) is flips_help
        stored = bundle.test_predictions()
        chosen = sharp[:, [rows[i] for i in stored["image_ids"]]]
        np.testing.assert_allclose(stored["member_probs"], chosen, atol=1e-6)


def test_calibrate_with_choose_flips_fits_the_calibration_on_the_flipped_predictions(tmp_path, monkeypatch):
    """`evaluate --calibrate --choose-flips`: flips are chosen first, so the calibrator and the
    calibrated thresholds are fitted on the probabilities the pipeline will produce (with flips)."""
    from cxr_core.modeling.calibration import apply_calibration, fit_calibration
    from cxr_core.modeling.thresholds import threshold_table

    split, split_csv, cache = split_with_empty_cache(tmp_path, 400, LABELS, [0.3, 0.25], seed=5)
    sharp, rows = _flip_dependent_members(monkeypatch, split, seed=2, cube=True)  # over-confident, but separating
    bundle_dir = write_synthetic_bundle(tmp_path / "bundle", split, LABELS, [1.5, 1.5], val=False)
    assert main(["evaluate", "--bundle", str(bundle_dir), "--data", str(cache), "--split", str(split_csv),
                 "--calibrate", "temperature", "--calibrated-default", "--choose-flips",
                 "--resamples", "20"]) == 0
    bundle = Bundle.load(bundle_dir)
    assert bundle.tta_flip
    val = split[split["split"] == "val"]
    flipped = sharp[:, [rows[i] for i in val["ImageID"]]]
    val_targets = val[LABELS].to_numpy(float)
    expected = fit_calibration("temperature", val_targets, flipped)
    stored = bundle.manifest["calibration"]["temperature"]
    np.testing.assert_allclose(np.asarray(stored["members"], float),
                               np.asarray(expected["members"], float), rtol=1e-5)
    refit = threshold_table(apply_calibration(expected, flipped), val_targets)["f1"]
    assert bundle.threshold_method == "f1+temperature"
    np.testing.assert_allclose(bundle.thresholds()[0], refit["ensemble"], rtol=1e-5)


def test_changing_flips_drops_the_calibrations_fitted_without_them(tmp_path, monkeypatch):
    """A calibration (and every threshold method fitted on it) fitted under the other flip
    setting no longer matches the probabilities: `choose_test_time_flips` removes them."""
    from cxr_core.evaluation.evaluation import choose_test_time_flips
    from cxr_core.evaluation.recalibration import calibrate_bundle

    split, split_csv, cache = split_with_empty_cache(tmp_path, 300, LABELS, [0.3, 0.25], seed=6)
    _flip_dependent_members(monkeypatch, split, seed=3)
    bundle_dir = write_synthetic_bundle(tmp_path / "bundle", split, LABELS, [1.5, 1.5], val=False)
    calibrate_bundle(bundle_dir, "isotonic", cache, split_csv, make_default=True)
    choice = choose_test_time_flips(bundle_dir, cache, split_csv)
    bundle = Bundle.load(bundle_dir)
    assert choice["tta_flip"] and bundle.tta_flip
    assert "isotonic" not in bundle.calibrations
    assert not any("+" in name for name in bundle.threshold_methods)
    assert bundle.threshold_method == "f1" and choice["dropped_threshold_methods"]
    assert not (bundle_dir / "val_predictions.npz").is_file()  # made without flips


def test_evaluate_leaves_unknown_labels_out_of_every_figure(tmp_path, monkeypatch):
    """A label one source does not annotate (empty in split.csv): its unknown test images are
    stored as unknown and count in no metric of that label (AUC, F1, intervals, calibration)."""
    from sklearn.metrics import roc_auc_score

    from cxr_core.evaluation.demo import auc_by_source
    from cxr_core.evaluation.evaluation import evaluate_bundle

    split = make_split(500, LABELS, [0.3, 0.25], seed=9)
    unknown_rows = split["PatientID"].str[-1].isin(["1", "2", "3"]).to_numpy()  # another source
    split["ImageDir"] = np.where(unknown_rows, "cxr-public/images", "nih-sample/images")
    split[LABELS[1]] = split[LABELS[1]].astype(float).where(~unknown_rows)
    split_csv = tmp_path / "split.csv"
    split[LABELS[1]] = split[LABELS[1]].astype("Int64")
    split.to_csv(split_csv, index=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    for image_id in split["ImageID"]:
        (cache / image_id).write_bytes(b"")
    targets = split.set_index("ImageID")[LABELS].to_numpy(float)
    rows = {image_id: i for i, image_id in enumerate(split["ImageID"])}
    rng = np.random.default_rng(5)
    probs = binormal(rng, np.stack([np.nan_to_num(targets)] * 2), 1.5)
    probs[:, np.isnan(targets[:, 1]), 1] = 0.99  # would be false positives if counted as negatives

    def fake_members(classifiers, paths, input_size, **kwargs):
        return probs[:, [rows[Path(p).name] for p in paths]]

    monkeypatch.setattr("cxr_core.evaluation.evaluation.predict_members", fake_members)
    monkeypatch.setattr(Bundle, "classifiers", property(lambda self: []))
    bundle_dir = write_synthetic_bundle(tmp_path / "bundle", split.fillna(0), LABELS, [1.5, 1.5])
    metrics = evaluate_bundle(bundle_dir, cache, split_csv, refit_thresholds=True, n_resamples=50)
    stored = Bundle.load(bundle_dir).test_predictions()
    test = split[split["split"] == "test"]
    known = test[LABELS[1]].notna().to_numpy()
    assert np.isnan(stored["targets"][:, 1]).sum() == (~known).sum() > 0
    ctp = pd.DataFrame(metrics["per_label"]["CTP"]).set_index("label").loc[LABELS[1]]
    scores = stored["member_probs"].mean(axis=0)[:, 1]
    assert ctp["images"] == known.sum() and ctp["unknown"] == (~known).sum()
    assert ctp["auc"] == pytest.approx(roc_auc_score(test[LABELS[1]][known].astype(int), scores[known]))
    assert np.isfinite(ctp["auc_low"]) and np.isfinite(metrics["overall"]["CTP"]["hamming_loss"])
    val = np.load(bundle_dir / "val_predictions.npz")["targets"]
    assert np.isnan(val[:, 1]).any() and not np.isnan(val[:, 0]).any()
    calibration = pd.read_csv(bundle_dir / "metrics" / "calibration.csv")
    assert calibration.loc[(calibration["model"] == "CTP") & (calibration["label"] == LABELS[1]),
                           "positives"].iloc[0] == int(test[LABELS[1]].sum())
    by_source = auc_by_source(test["ImageDir"], stored["targets"], scores[:, None].repeat(2, 1),
                              LABELS, min_positives=5).set_index("label")
    assert by_source.loc[LABELS[1], "cxr-public positives"] == 0
    assert np.isnan(by_source.loc[LABELS[1], "cxr-public AUC"])
