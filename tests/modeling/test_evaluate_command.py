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

    monkeypatch.setattr("cxr_core.modeling.evaluation.predict_members", fake_members)
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
