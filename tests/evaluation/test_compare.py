"""Bundle comparison: paired bootstrap of the AUC difference, shared images, lineage, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_core.base.errors import BundleError
from cxr_core.cli import main
from cxr_core.modeling.bundle import Bundle
from cxr_core.evaluation.compare import compare_bundles, compare_scores, lineage_chain
from tests.modeling.bundle_factory import make_split, write_synthetic_bundle


def test_identical_models_differ_by_exactly_zero_and_a_better_one_wins():
    rng = np.random.default_rng(0)
    y = rng.random((600, 2)) < 0.3
    weak = rng.normal(size=(600, 2)) + 0.3 * y
    strong = weak + 2.0 * y  # same noise, more signal: paired differences are tight
    table, macro, _ = compare_scores(y, weak, weak, ["a", "b"], n_resamples=200)
    assert (table["difference"] == 0).all() and (table["low"] == 0).all() and (table["high"] == 0).all()
    assert table["verdict"].tolist() == ["no clear difference"] * 2
    table, macro, _ = compare_scores(y, weak, strong, ["a", "b"], n_resamples=200)
    assert table["verdict"].tolist() == ["B better"] * 2 and macro["low"] > 0
    table, _, _ = compare_scores(y, strong, weak, ["a", "b"], n_resamples=200)
    assert table["verdict"].tolist() == ["A better"] * 2


def test_bundles_are_compared_on_shared_images_and_labels(tmp_path):
    split = make_split(500, ["effusion", "nodule", "normal"], [0.3, 0.3, 0.5], seed=2)
    a = write_synthetic_bundle(tmp_path / "a", split, ["effusion", "nodule", "normal"], [0.2, 0.2, 0.2],
                               seed=1, bundle_id="parent")
    # the child lacks one label and one test patient, and separates the classes far better
    test_ids = split.loc[split["split"] == "test", "PatientID"].unique()
    child_split = split[split["PatientID"] != test_ids[0]].drop(columns=["normal"])
    b = write_synthetic_bundle(tmp_path / "b", child_split, ["effusion", "nodule"], [3.0, 3.0], seed=2,
                               bundle_id="child", lineage={"parent_bundle_id": "parent", "reviews_used": 4})
    result = compare_bundles(a, b, n_resamples=200)
    assert result.table["label"].tolist() == ["effusion", "nodule"]
    assert result.images == int((child_split["split"] == "test").sum())
    assert result.unit == "patient" and set(result.table["verdict"]) == {"B better"}
    assert "child minus parent" in result.summary()
    chain = lineage_chain(Bundle.load(b), [Bundle.load(a)])
    assert [c["bundle_id"] for c in chain] == ["parent", "child"] and chain[1]["step"].startswith("fine-tuned on 4")
    orphan = lineage_chain(Bundle.load(b), [])
    assert orphan[0] == {"bundle_id": "parent", "found": False, "step": ""}


def test_different_ground_truth_is_refused(tmp_path):
    split = make_split(200, ["effusion"], [0.3], seed=3)
    a = write_synthetic_bundle(tmp_path / "a", split, ["effusion"], [1.0], bundle_id="a")
    flipped = split.copy()
    flipped["effusion"] = 1 - flipped["effusion"]
    b = write_synthetic_bundle(tmp_path / "b", flipped, ["effusion"], [1.0], bundle_id="b")
    with pytest.raises(BundleError, match="differently"):
        compare_bundles(a, b, n_resamples=10)


def test_compare_command_writes_tables_and_prints_the_summary(tmp_path, capsys):
    split = make_split(300, ["effusion", "nodule"], [0.3, 0.4], seed=4)
    a = write_synthetic_bundle(tmp_path / "a", split, ["effusion", "nodule"], [0.5, 0.5], bundle_id="a")
    b = write_synthetic_bundle(tmp_path / "b", split, ["effusion", "nodule"], [2.0, 2.0], bundle_id="b")
    assert main(["compare", str(a), str(b), "--resamples", "100", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "b minus a (CTP)" in out and "B better" in out
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "| effusion |" in md and "paired" in md.lower()
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert main(["compare", str(a), str(b), "--model", "ResNet50"]) == 2
