"""Evaluate tables: images and positives apart, bootstrap interval columns, calibration and
published-method files."""

from __future__ import annotations


import numpy as np

from cxr_core.modeling.bundle import Bundle
from cxr_core.evaluation.evaluation import (
    comparison_table,
    evaluate_predictions,
    write_calibration_tables,
    write_tables,
)
from tests.modeling.bundle_factory import ARCHS, make_split, write_synthetic_bundle


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


def test_model_card_shows_intervals_and_lineage_as_a_chain(tmp_path):
    from cxr_core.evaluation.model_card import render_model_card

    bundle, _, tables = synthetic_tables(tmp_path)
    overall = tables["overall"].set_index("model").to_dict(orient="index")
    manifest = {**bundle.manifest, "lineage": {"parent_bundle_id": "parent-1", "reviews_used": 3},
                "metrics": {"images": 10, "overall": overall, "intervals": tables["overall"].attrs["resampling"],
                            "per_label": {"CTP": tables["CTP"].to_dict(orient="records")}}}
    card = render_model_card(Bundle(tmp_path, manifest))
    ctp = overall["CTP"]
    assert f"{ctp['auc_macro']:.3f} [{ctp['auc_macro_low']:.3f}, {ctp['auc_macro_high']:.3f}]" in card
    assert "too few positives" in card and "patient-level bootstrap" in card
    assert "`parent-1` → `synthetic`" in card and "{" not in card.split("## Lineage")[1]
