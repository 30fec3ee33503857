"""Evaluation of a bundle on the test split (members replaced by known predictions): what is
stored and written, thresholds refitted on validation, the member/ensemble outputs, the tables
(images and positives apart, bootstrap interval columns, calibration), macro AUC and the
test-time-flip bookkeeping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxr_core.base.errors import BundleError
from cxr_core.evaluation.evaluation import (
    ENSEMBLES,
    choose_test_time_flips,
    comparison_table,
    drop_fits_of_other_flips,
    evaluate_bundle,
    evaluate_predictions,
    macro_auc,
    model_outputs,
    write_calibration_tables,
    write_tables,
)
from cxr_core.modeling.bundle import Bundle
from cxr_core.modeling.thresholds import threshold_table
from tests.modeling.bundle_factory import (
    ARCHS,
    binormal,
    make_split,
    split_with_empty_cache,
    write_synthetic_bundle,
)

LABELS = ["effusion", "nodule"]


@pytest.fixture
def evaluable(tmp_path, monkeypatch):
    """A synthetic bundle without stored validation predictions, its split and an (empty) crop
    cache; the members are replaced by fixed probabilities per image, one set per flip setting."""
    split, split_csv, cache = split_with_empty_cache(tmp_path, 240, LABELS, [0.35, 0.25], seed=11)
    targets = split[LABELS].to_numpy(float)
    rng = np.random.default_rng(2)
    probs = {False: binormal(rng, np.stack([targets, targets]), 1.5),
             True: binormal(rng, np.stack([targets, targets]), 3.0)}  # flips separate better
    rows = {image_id: i for i, image_id in enumerate(split["ImageID"])}
    calls = []

    def members(classifiers, paths, input_size, flip=False, **kwargs):
        calls.append((len(paths), flip))
        return probs[flip][:, [rows[Path(p).name] for p in paths]]

    monkeypatch.setattr("cxr_core.evaluation.evaluation.predict_members", members)
    monkeypatch.setattr(Bundle, "classifiers", property(lambda self: []))
    path = write_synthetic_bundle(tmp_path / "bundle", split, LABELS, [1.5, 1.5], val=False)
    return {"path": path, "cache": cache, "split_csv": split_csv, "split": split, "probs": probs,
            "rows": rows, "calls": calls}


def test_evaluate_bundle_stores_test_predictions_metrics_and_tables(evaluable):
    path, split, probs = evaluable["path"], evaluable["split"], evaluable["probs"][False]
    metrics = evaluate_bundle(path, evaluable["cache"], evaluable["split_csv"], n_resamples=0)
    test = split[split["split"] == "test"].reset_index(drop=True)
    assert metrics["split"] == "test" and metrics["images"] == len(test) > 20
    assert set(metrics["overall"]) == {*ARCHS, *ENSEMBLES} == set(metrics["per_label"])
    assert not metrics["intervals"]
    bundle = Bundle.load(path)  # the checksums cover what was written
    stored = bundle.test_predictions()
    assert stored["image_ids"].tolist() == test["ImageID"].tolist()
    np.testing.assert_array_equal(stored["targets"], test[LABELS].to_numpy())
    expected = probs[:, [evaluable["rows"][i] for i in test["ImageID"]]]
    np.testing.assert_allclose(stored["member_probs"], expected, rtol=1e-6)
    assert bundle.metrics["images"] == len(test)
    assert set(bundle.metrics["overall"]) == set(metrics["overall"])
    ctp = pd.DataFrame(metrics["per_label"]["CTP"]).set_index("label")
    for k, label in enumerate(LABELS):
        assert ctp.loc[label, "auc"] == pytest.approx(
            roc_auc_score(test[label], expected.mean(axis=0)[:, k]))
    written = {p.name for p in (path / "metrics").iterdir()}
    assert {"auc_by_label.csv", "auc_by_label.md", "f1_macro_by_label.csv", "f1_positive_by_label.md",
            "overall.csv", "overall.md", "calibration.csv", "calibration.md"} <= written
    auc_table = pd.read_csv(path / "metrics" / "auc_by_label.csv")
    assert auc_table["label"].tolist() == LABELS
    assert auc_table["CTP"].tolist() == pytest.approx(ctp["auc"].tolist())


def test_evaluation_with_intervals_records_the_resampling(evaluable):
    metrics = evaluate_bundle(evaluable["path"], evaluable["cache"], evaluable["split_csv"],
                              n_resamples=40, seed=3)
    assert metrics["intervals"]["resamples"] == 40 and metrics["intervals"]["seed"] == 3
    ctp = metrics["overall"]["CTP"]
    assert ctp["auc_macro_low"] <= ctp["auc_macro"] <= ctp["auc_macro_high"]
    again = evaluate_bundle(evaluable["path"], evaluable["cache"], evaluable["split_csv"],
                            n_resamples=40, seed=3)
    assert again["overall"]["CTP"]["auc_macro_low"] == ctp["auc_macro_low"]  # seeded


def test_a_split_with_other_labels_is_refused(evaluable, tmp_path):
    other = evaluable["split"].rename(columns={"nodule": "mass"})
    other.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(BundleError, match="label columns differ"):
        evaluate_bundle(evaluable["path"], evaluable["cache"], tmp_path / "other.csv", n_resamples=0)
    assert not evaluable["calls"]  # refused before any prediction


def test_refitting_chooses_thresholds_on_validation_and_keeps_its_predictions(evaluable):
    path, split = evaluable["path"], evaluable["split"]
    evaluate_bundle(path, evaluable["cache"], evaluable["split_csv"], refit_thresholds=True,
                    n_resamples=0)
    val = split[split["split"] == "val"]
    val_probs = evaluable["probs"][False][:, [evaluable["rows"][i] for i in val["ImageID"]]]
    expected = threshold_table(val_probs, val[LABELS].to_numpy(np.float32))
    bundle = Bundle.load(path)
    for method, entry in expected.items():
        ens, members = bundle.thresholds(method)
        np.testing.assert_allclose(ens, entry["ensemble"])
        np.testing.assert_allclose(members, entry["members"])
    with np.load(path / "val_predictions.npz") as stored:
        assert stored["image_ids"].tolist() == val["ImageID"].tolist()
        np.testing.assert_allclose(stored["member_probs"], val_probs, rtol=1e-6)
    assert [n for n, _ in evaluable["calls"]] == [len(val), int((split["split"] == "test").sum())]


def test_member_and_ensemble_outputs_follow_their_rules():
    member_probs = np.array([[[0.9, 0.2], [0.6, 0.4], [0.1, 0.7]],
                             [[0.7, 0.3], [0.3, 0.5], [0.2, 0.9]]])  # (M=2, N=3, K=2)
    ens_t = np.array([0.5, 0.5])
    mem_t = np.array([[0.5, 0.5], [0.5, 0.35]])
    out = model_outputs(member_probs, ["A", "B"], ens_t, mem_t)
    assert list(out) == ["A", "B", *ENSEMBLES]
    np.testing.assert_array_equal(out["A"][1], member_probs[0] >= mem_t[0])
    np.testing.assert_allclose(out["CTP"][0], member_probs.mean(axis=0))
    np.testing.assert_array_equal(out["CTP"][1], member_probs.mean(axis=0) >= ens_t)
    votes = ((member_probs[0] >= mem_t[0]).astype(int) + (member_probs[1] >= mem_t[1])) / 2
    np.testing.assert_allclose(out["PTC label-wise"][0], votes)
    np.testing.assert_allclose(out["PTC mode"][0], votes)
    # label-wise majority: both vote yes -> yes, both no -> no; a 1-1 tie follows CTP
    labelwise = out["PTC label-wise"][1]
    assert labelwise[0, 0] and not labelwise[0, 1] and labelwise[2, 1]
    assert labelwise[1, 0] == out["CTP"][1][1, 0]


def test_evaluate_predictions_gives_one_table_per_model_and_an_overall_one():
    rng = np.random.default_rng(0)
    targets = (rng.random((80, 2)) < 0.4).astype(float)
    member_probs = binormal(rng, np.stack([targets, targets]), 2.0)
    mem_t = np.full((2, 2), 0.3)
    tables = evaluate_predictions(member_probs, targets, LABELS, ["A", "B"], np.full(2, 0.3), mem_t)
    assert set(tables) == {"A", "B", *ENSEMBLES, "overall"}
    assert tables["overall"]["model"].tolist() == ["A", "B", *ENSEMBLES]
    assert tables["A"]["label"].tolist() == LABELS
    assert tables["A"]["auc"].tolist() == pytest.approx(
        [roc_auc_score(targets[:, k], member_probs[0, :, k]) for k in range(2)])
    assert "auc_low" not in tables["CTP"].columns
    with_ci = evaluate_predictions(member_probs, targets, LABELS, ["A", "B"], np.full(2, 0.3), mem_t,
                                   groups=np.arange(80) // 2, n_resamples=30, seed=1)
    ctp = with_ci["CTP"].set_index("label")
    assert (ctp["auc_low"] <= ctp["auc"]).all() and (ctp["auc"] <= ctp["auc_high"]).all()
    assert with_ci["overall"].attrs["resampling"]["resamples"] == 30


def test_comparison_table_marks_best_and_survives_labels_without_auc():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    member_probs = np.array([[[0.9, 0.1], [0.1, 0.2], [0.8, 0.3], [0.3, 0.1]],
                             [[0.6, 0.1], [0.5, 0.2], [0.4, 0.3], [0.7, 0.1]]])
    tables = evaluate_predictions(member_probs, y, ["a", "b"], ["m1", "m2"],
                                  np.array([0.5, 0.5]), np.full((2, 2), 0.5))
    table = comparison_table(tables, ["m1", "m2"], "auc")
    assert table.loc[0, "best_member"] == "m1" and table.loc[0, "m1"] == 1.0
    assert table.loc[1, "best_member"] == ""  # label b has no positives: no AUC, no crash
    assert table.loc[0, "ensembles_beating_all_members"] == ""  # nothing beats a perfect AUC


def test_macro_auc_averages_the_labels_with_both_classes():
    targets = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    probs = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5], [0.4, 0.2, 0.5], [0.6, 0.4, 0.5]])
    assert macro_auc(targets, probs) == pytest.approx(roc_auc_score(targets[:, 0], probs[:, 0]))
    assert np.isnan(macro_auc(targets[:, 1:], probs[:, 1:]))


def test_choosing_flips_keeps_them_when_validation_auc_rises(evaluable):
    choice = choose_test_time_flips(evaluable["path"], evaluable["cache"], evaluable["split_csv"])
    assert choice["tta_flip"] is True and choice["val_auc_flip"] > choice["val_auc_plain"]
    assert choice["dropped_calibrations"] == [] and choice["dropped_threshold_methods"] == []
    bundle = Bundle.load(evaluable["path"])
    assert bundle.tta_flip and bundle.inference["val_auc_flip"] == choice["val_auc_flip"]


def test_dropping_fits_of_the_other_flips_removes_calibrations_and_their_methods(evaluable):
    from cxr_core.evaluation.recalibration import calibrate_bundle

    path = evaluable["path"]
    evaluate_bundle(path, evaluable["cache"], evaluable["split_csv"], refit_thresholds=True,
                    n_resamples=0)
    calibrate_bundle(path, "temperature", make_default=True)
    bundle = Bundle.load(path)
    assert bundle.threshold_method == "f1+temperature" and bundle.tta_flip is False
    dropped = drop_fits_of_other_flips(bundle)
    assert dropped["calibrations"] == ["temperature"]
    assert set(dropped["threshold_methods"]) == {"f1+temperature", "youden+temperature",
                                                 "fixed+temperature"}
    assert set(bundle.threshold_methods) == {"f1", "youden", "fixed"}
    assert bundle.threshold_method == "f1" and not bundle.calibrations
    assert not (path / "val_predictions.npz").exists()


def synthetic_tables(tmp_path, n_resamples=200):
    labels = ["effusion", "nodule", "rare"]
    split = make_split(900, labels, [0.3, 0.2, 0.004], seed=5)
    bundle = Bundle.load(write_synthetic_bundle(tmp_path / "b", split, labels, [1.5, 1.0, 1.0]))
    stored = bundle.test_predictions()
    ens_t, mem_t = bundle.thresholds()
    patients = split.set_index("ImageID").loc[stored["image_ids"], "PatientID"].to_numpy()
    tables = evaluate_predictions(stored["member_probs"], stored["targets"], labels, bundle.archs,
                                  ens_t, mem_t, groups=patients, n_resamples=n_resamples, seed=0)
    return bundle, stored, tables


def test_tables_count_images_and_positives_and_carry_intervals(tmp_path):
    bundle, stored, tables = synthetic_tables(tmp_path)
    frame = comparison_table(tables, ARCHS, "auc")
    n = stored["targets"].shape[0]
    assert (frame["images"] == n).all()
    assert frame["positives"].tolist() == stored["targets"].sum(axis=0).astype(int).tolist()
    for name in [*ARCHS, "CTP", "PTC label-wise", "PTC mode"]:
        ok = frame[f"{name} low"].notna()
        assert ok.tolist() == [True, True, False]  # the rare label gets no interval
        assert ((frame.loc[ok, f"{name} low"] <= frame.loc[ok, name])
                & (frame.loc[ok, name] <= frame.loc[ok, f"{name} high"])).all()
    assert frame.loc[2, "ci_note"].startswith("too few positives")
    overall = tables["overall"].set_index("model")
    assert (overall["auc_macro_low"] < overall["auc_macro_high"]).all()
    assert overall.attrs["resampling"]["unit"] == "patient"
    plain = evaluate_predictions(stored["member_probs"], stored["targets"], bundle.labels, bundle.archs,
                                 *bundle.thresholds())
    assert "auc_low" not in plain["CTP"].columns  # intervals only when asked for


def test_written_tables_show_intervals_and_calibration(tmp_path):
    bundle, stored, tables = synthetic_tables(tmp_path)
    out = tmp_path / "metrics"
    write_tables(tables, ARCHS, out)
    md = (out / "auc_by_label.md").read_text()
    header = md.splitlines()[0]
    assert "| images | positives |" in header and "CTP low" not in header
    effusion = next(line for line in md.splitlines() if line.startswith("| effusion"))
    assert effusion.count("[") == 2 + 3  # every member and ensemble with its interval
    assert "too few positives" in md and "percentile bootstrap" in (out / "overall.md").read_text()
    csv = (out / "auc_by_label.csv").read_text().splitlines()[0]
    assert "CTP low" in csv and "CTP high" in csv
    write_calibration_tables(stored["targets"], stored["member_probs"], bundle.labels, ARCHS, out)
    cal = (out / "calibration.csv").read_text()
    assert cal.count("all labels") == 1 + len(ARCHS)
    assert np.isfinite(float(cal.splitlines()[1].split(",")[3]))
