"""Shortcut audit: AUC within view, sex, age band and source tells a model that reads the
acquisition from one that reads the finding; stored in the bundle and its model card."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_core.cli import main
from cxr_core.evaluation.model_card import render_model_card
from cxr_core.evaluation.shortcut_audit import (
    age_band,
    audit_bundle,
    audit_markdown,
    subgroup_aucs,
    view_group,
)
from cxr_core.modeling.bundle import Bundle

from ..modeling.bundle_factory import make_split, write_synthetic_bundle

LABELS = ["pneumonia", "pleural effusion"]


def test_groups_are_read_leniently():
    assert [view_group(v) for v in ("PA", "AP Supine", "ap", "LL", None)] == ["PA", "AP", "AP", None, None]
    assert [age_band(a) for a in (12, "45", 60, 79.9, 95, "", "n/a")] == [
        "< 40", "40-59", "60-79", "60-79", ">= 80", None, None]


def test_a_view_shortcut_loses_its_auc_within_each_view():
    rng = np.random.default_rng(0)
    n = 600
    ap = rng.random(n) < 0.5
    y = rng.random(n) < np.where(ap, 0.6, 0.15)  # the finding is commoner on AP films
    shortcut = ap + rng.normal(0, 0.1, n)  # reads the view, not the image
    reader = y + rng.normal(0, 0.6, n)  # reads the finding
    attributes = pd.DataFrame({"view": np.where(ap, "AP", "PA")})
    patients = np.arange(n) // 2
    table = subgroup_aucs(np.stack([y, y], 1), np.stack([shortcut, reader], 1), ["shortcut", "reader"],
                          attributes, patients, n_resamples=200, seed=0).set_index(["label", "attribute", "group"])
    assert table.loc[("shortcut", "all", "all"), "auc"] > 0.7
    for view in ("AP", "PA"):
        row = table.loc[("shortcut", "view", view)]
        assert 0.4 < row["auc"] < 0.6 and row["auc_low"] < 0.5 < row["auc_high"]
        assert table.loc[("reader", "view", view), "auc_low"] > 0.75
    assert table.loc[("reader", "view", "AP"), "images"] == ap.sum()


def test_audit_is_stored_in_the_bundle_its_card_and_printed_by_the_cli(tmp_path, capsys):
    split = make_split(240, LABELS, [0.3, 0.2], seed=3)
    bundle_dir = write_synthetic_bundle(tmp_path / "b", split, LABELS, [2.0, 2.0], seed=1)
    rng = np.random.default_rng(1)
    metadata = pd.DataFrame({"image": "images/" + split["ImageID"],
                             "view": rng.choice(["AP", "PA"], len(split)),
                             "sex": rng.choice(["M", "F"], len(split)),
                             "age": rng.integers(20, 90, len(split))})
    metadata.to_csv(tmp_path / "meta.csv", index=False)
    table = audit_bundle(bundle_dir, [tmp_path / "meta.csv"], n_resamples=100)
    assert {"all", "view", "sex", "age band", "source"} == set(table["attribute"])
    test_rows = split[split["split"] == "test"]
    assert table[(table["attribute"] == "all")]["images"].iloc[0] == len(test_rows)
    per_view = table[(table["attribute"] == "view") & (table["label"] == "pneumonia")]
    assert per_view["images"].sum() == len(test_rows)
    bundle = Bundle.load(bundle_dir)
    assert (bundle_dir / "metrics" / "shortcut_audit.csv").is_file()
    card = render_model_card(bundle)
    assert "## Shortcut audit: test AUC within subgroups" in card
    assert "| view | AP |" in card and "| age band | < 40 |" in card
    assert audit_markdown(bundle.metrics["shortcut_audit"]["rows"]) in card
    assert main(["audit", "--bundle", str(bundle_dir), "--metadata", str(tmp_path / "meta.csv"),
                 "--resamples", "50"]) == 0
    assert "| sex | F |" in capsys.readouterr().out
    assert "Shortcut audit" in (bundle_dir / "MODEL_CARD.md").read_text()


def test_audit_needs_test_predictions(tmp_path):
    from cxr_core.base.errors import DataError

    split = make_split(60, LABELS, [0.3, 0.2], seed=3)
    bundle_dir = write_synthetic_bundle(tmp_path / "b", split, LABELS, [2.0, 2.0], seed=1)
    (bundle_dir / "test_predictions.npz").unlink()
    Bundle.load(bundle_dir, verify=False).save()
    with pytest.raises(DataError, match="no stored test predictions"):
        audit_bundle(bundle_dir)


def test_unknown_labels_are_left_out_of_every_subgroup():
    """A finding one source does not annotate (NaN) is neither a positive nor a negative there."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    n = 400
    other_source = np.arange(n) % 3 == 0
    y = (rng.random((n, 2)) < 0.3).astype(float)
    p = np.clip(0.35 * y + 0.65 * rng.random((n, 2)), 0, 1)
    y[other_source, 1] = np.nan
    attributes = pd.DataFrame({"source": np.where(other_source, "cxr-public", "nih-sample")})
    table = subgroup_aucs(y, p, LABELS, attributes, np.arange(n), n_resamples=50, seed=0)
    table = table.set_index(["label", "attribute", "group"])
    known = ~other_source
    whole = table.loc[("pleural effusion", "all", "all")]
    assert whole["images"] == known.sum() and whole["positives"] == int(y[known, 1].sum())
    assert whole["auc"] == pytest.approx(roc_auc_score(y[known, 1], p[known, 1]))
    unannotated = table.loc[("pleural effusion", "source", "cxr-public")]
    assert unannotated["positives"] == 0 and np.isnan(unannotated["auc"])
    assert table.loc[("pneumonia", "source", "cxr-public"), "images"] == other_source.sum()
