"""The demo data: both public sources as one PadChest-vocabulary table and its split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_core.data.public_dataset import (COHEN, NIH, build_split, combined_table, padchest_name,
                                          select_labels, source_of)
from cxr_core.data.split_table import read_split
from cxr_core.data.term_tree import load_term_tree, parse_term_tree

from ..conftest import SHARED, require

TREE = parse_term_tree("""label: normal
---
label: radiological finding
children:
- label: pleural effusion
- label: infiltrates
  children:
  - label: consolidation
---
label: differential diagnosis
children:
- label: pneumonia
  children:
  - label: viral pneumonia
    children:
    - label: COVID 19
- label: pulmonary edema
""")


@pytest.fixture
def shared_data():
    require(SHARED / "nih-sample" / "metadata.csv")
    require(SHARED / "cxr-public" / "metadata.csv")
    return SHARED, load_term_tree(require(SHARED / "padchest" / "term_tree.txt"))


def test_source_spellings_become_term_tree_spellings():
    assert padchest_name("edema", TREE) == "pulmonary edema"
    assert padchest_name(" Pleural Effusion", TREE) == "pleural effusion"
    assert padchest_name("covid 19", TREE) == "COVID 19"


def test_labels_need_both_classes_within_the_reference_source():
    rng = np.random.default_rng(0)
    n_nih, n_cohen = 200, 100
    table = pd.DataFrame({
        "source": [NIH] * n_nih + [COHEN] * n_cohen,
        # frequent in NIH: kept
        "pneumonia": np.r_[np.arange(n_nih) % 2, np.ones(n_cohen, int)],
        # only the other collection has it: a collection detector, not kept
        "COVID 19": np.r_[np.zeros(n_nih, int), np.ones(n_cohen, int)],
        # 49 NIH positives: one short of the rule
        "consolidation": np.r_[(np.arange(n_nih) < 49).astype(int), np.zeros(n_cohen, int)],
        "infiltrates": np.r_[(rng.random(n_nih) < 0.4).astype(int), np.zeros(n_cohen, int)],
    })
    kept = select_labels(table, ["pneumonia", "COVID 19", "consolidation", "infiltrates"])
    assert kept == ["pneumonia", "infiltrates"]  # most frequent first
    assert select_labels(table, ["consolidation"], min_each_class=49) == ["consolidation"]


def test_combined_table_holds_both_sources_in_padchest_words(shared_data):
    root, tree = shared_data
    table, findings = combined_table(root, tree)
    assert table["source"].value_counts().to_dict() == {NIH: 818, COHEN: 420}
    assert {"normal", "pneumonia", "pulmonary edema", "COVID 19", "viral pneumonia"} <= set(findings)
    assert all(f in tree for f in findings if f != "pulmonary edema") and "pulmonary edema" in tree
    nih = table[table["source"] == NIH]
    assert nih[["normal", "pneumonia", "pulmonary edema"]].sum().tolist() == [414, 404, 84]
    assert table.loc[table["source"] == COHEN, "COVID 19"].sum() == 358
    assert table["PatientID"].str.startswith((f"{NIH}-", f"{COHEN}-")).all()
    for row in table.groupby("source").head(2).itertuples():
        assert (root / row.ImageDir / row.ImageID).is_file()


def test_split_is_patient_level_balanced_by_source_and_seeded(shared_data, tmp_path):
    root, tree = shared_data
    summary = build_split(root, tmp_path / "a.csv", tree, seed=0)
    build_split(root, tmp_path / "b.csv", tree, seed=0)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    split = read_split(tmp_path / "a.csv")
    assert split.labels == ["pneumonia", "normal", "infiltrates", "atelectasis",
                            "pulmonary edema", "pleural effusion"]
    assert "COVID 19" in summary["labels_not_kept"]
    frame = split.frame
    assert (frame.groupby("PatientID")["split"].nunique() == 1).all()
    sources = source_of(frame["ImageDir"])
    test = frame[(frame["split"] == "test") & (sources == NIH)]
    assert all(test[label].sum() >= 10 for label in split.labels)
    for source in (NIH, COHEN):
        share = (frame[sources == source]["split"] == "test").mean()
        assert 0.15 < share < 0.25
    assert summary["groups"]["pneumonia"] == ["pneumonia"]
    assert summary["per_source"][NIH]["images"] == 818


def _tiny_sources(root, n_nih: int = 60, n_cohen: int = 30, seed: int = 0):
    """metadata.csv of both collections (no images): NIH annotates effusion, cxr-public does not."""
    rng = np.random.default_rng(seed)
    nih = pd.DataFrame({
        "image": [f"images/nih_{i:03d}.png" for i in range(n_nih)],
        "patient_id": [f"n{i // 2}" for i in range(n_nih)], "view": "PA", "sex": "F", "age": 50,
        "nih_labels": "", "license": "CC0",
        "pneumonia": (rng.random(n_nih) < 0.5).astype(int),
        "pleural effusion": (rng.random(n_nih) < 0.4).astype(int)})
    cohen = pd.DataFrame({
        "image": [f"images/c_{i:03d}.png" for i in range(n_cohen)], "lung_mask": "",
        "patient_id": [f"c{i}" for i in range(n_cohen)], "view": "AP", "sex": "M", "age": 60,
        "finding": "Pneumonia", "license": "",
        "Pneumonia": 1, "Viral": 0, "COVID-19": 0, "No Finding": 0})
    for name, frame in ((NIH, nih), (COHEN, cohen)):
        (root / name).mkdir(parents=True)
        frame.to_csv(root / name / "metadata.csv", index=False)
    return nih, cohen


def test_findings_a_source_does_not_annotate_are_unknown_not_absent(tmp_path):
    """cxr-public says nothing of effusions: its rows are unknown (NaN) there, not negative,
    in the table, the split file and the targets; the summary counts them per split."""
    _tiny_sources(tmp_path)
    table, _ = combined_table(tmp_path, TREE)
    cohen = table[table["source"] == COHEN]
    assert cohen["pleural effusion"].isna().all() and cohen["pneumonia"].eq(1).all()
    assert table.loc[table["source"] == NIH, "pleural effusion"].notna().all()
    summary = build_split(tmp_path, tmp_path / "split.csv", TREE, min_each_class=5)
    split = read_split(tmp_path / "split.csv")
    assert "pleural effusion" in split.labels
    k = split.labels.index("pleural effusion")
    for part in ("train", "val", "test"):
        rows = split.part(part)
        unknown = int(source_of(rows["ImageDir"]).eq(COHEN).sum())
        assert int(np.isnan(split.targets(part)[:, k]).sum()) == unknown
        assert summary["unknown_labels"]["pleural effusion"][part] == unknown
    assert sum(summary["unknown_labels"]["pleural effusion"].values()) == 30
    assert summary["unknown_labels"]["pneumonia"] == {"train": 0, "val": 0, "test": 0}
    assert "unknown" in summary["label_rule"]


def test_real_cxr_public_rows_are_unknown_for_the_findings_it_does_not_annotate(shared_data):
    root, tree = shared_data
    table, _ = combined_table(root, tree)
    cohen = table[table["source"] == COHEN]
    for label in ("infiltrates", "atelectasis", "pulmonary edema", "pleural effusion"):
        assert cohen[label].isna().sum() == 420
        assert table.loc[table["source"] == NIH, label].notna().all()


def test_patients_of_held_out_images_all_go_to_test_and_the_rest_split_as_before(tmp_path):
    """X-rays kept for a later check (the radiologists' boxes) and every other X-ray of their
    patients land in test; without them the split is what it was."""
    _tiny_sources(tmp_path)
    build_split(tmp_path, tmp_path / "plain.csv", TREE, min_each_class=5)
    held = {"nih_004.png", "c_007.png"}  # patients n2 (nih_004, nih_005) and c7
    summary = build_split(tmp_path, tmp_path / "held.csv", TREE, min_each_class=5, test_images=held)
    frame = read_split(tmp_path / "held.csv").frame
    patients = frame.set_index("ImageID").loc[sorted(held), "PatientID"]
    rows = frame[frame["PatientID"].isin(patients)]
    assert len(rows) == 3 and (rows["split"] == "test").all()
    assert summary["held_out_for_test"] == {"patients": 2, "images": 3}
    assert (frame.groupby("PatientID")["split"].nunique() == 1).all()
    plain = read_split(tmp_path / "plain.csv").frame
    assert set(plain["split"]) == set(frame["split"]) == {"train", "val", "test"}
    none = build_split(tmp_path, tmp_path / "none.csv", TREE, min_each_class=5, test_images=set())
    assert (tmp_path / "none.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
    assert none["held_out_for_test"] == {"patients": 0, "images": 0}
