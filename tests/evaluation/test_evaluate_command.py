"""`evaluate` from the CLI on a synthetic bundle (members replaced by known predictions):
intervals in the printed summary and the tables, calibration fitted on validation and used,
the published-method table for a PadChest label set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.cli import main
from cxr_core.modeling.bundle import Bundle
from tests.modeling.bundle_factory import binormal, make_split, write_synthetic_bundle

LABELS = ["copd signs", "cardiomegaly"]


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
    split = make_split(400, LABELS, [0.3, 0.25], seed=3)
    split_csv = tmp_path / "split.csv"
    split.to_csv(split_csv, index=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    for image_id in split["ImageID"]:
        (cache / image_id).write_bytes(b"")  # the fake members below never read the crops
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
