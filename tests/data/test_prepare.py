import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cxr_core.cli import main
from cxr_core.data.prepare import prepare

from .test_term_tree import TREE


@pytest.fixture
def small_padchest(tmp_path):
    rng = np.random.default_rng(0)
    options = ["['normal']", "[' pleural effusion', 'Pneumonia']", "['atypical pneumonia']",
               "['calcified granuloma ']", "['exclude']", "nan-marker", "['bad'"]
    rows = []
    for i in range(400):
        cell = options[rng.integers(len(options))]
        rows.append({"ImageID": f"img{i}.png", "ImageDir": str(i % 3), "PatientID": f"p{i // 2}",
                     "Projection": "PA" if i % 10 else "L", "Pediatric": None,
                     "Labels": None if cell == "nan-marker" else cell})
    csv = tmp_path / "padchest.csv.gz"
    pd.DataFrame(rows).to_csv(csv, index=False)
    tree = tmp_path / "tree.txt"
    tree.write_text(TREE)
    return csv, tree


def test_prepare_writes_split_and_summary(small_padchest, tmp_path):
    csv, tree = small_padchest
    summaries = prepare(csv, tree, tmp_path / "out", min_count=20, seed=0)
    for name in ("specific", "general"):
        table = pd.read_csv(tmp_path / "out" / name / "split.csv")
        assert list(table.columns[:4]) == ["ImageID", "ImageDir", "PatientID", "split"]
        label_cols = table.columns[4:]
        counts = table[label_cols].sum()
        assert (counts >= 20).all() and list(counts) == sorted(counts, reverse=True)
        assert table.groupby("PatientID")["split"].nunique().max() == 1
        summary = json.loads((tmp_path / "out" / name / "summary.json").read_text())
        assert summary["input_rows"] == 400
        assert summary["kept_rows"] + sum(summary["dropped_rows"].values()) == 400
        assert summaries[name]["worst_deviation"] == summary["worst_deviation"]
    general = pd.read_csv(tmp_path / "out" / "general" / "split.csv")
    assert "pneumonia" in general.columns and "atypical pneumonia" not in general.columns


def test_cli_bad_arguments_exit_2_with_one_sentence(tmp_path, capsys):
    code = main(["prepare", "--csv", str(tmp_path / "missing.csv"), "--term-tree",
                 str(tmp_path / "t.txt"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "not found" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--csv"])
    assert exc.value.code == 2


def test_cli_module_entry_point_runs(small_padchest, tmp_path):
    csv, tree = small_padchest
    proc = subprocess.run([sys.executable, "-m", "cxr_core", "prepare", "--csv", str(csv),
                           "--term-tree", str(tree), "--out", str(tmp_path / "o"),
                           "--min-count", "20"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[specific]" in proc.stdout and "worst share deviation" in proc.stdout


def test_prepare_on_real_padchest(padchest_csv, term_tree_path, tmp_path):
    summaries = prepare(padchest_csv, term_tree_path, tmp_path, seed=0)
    for name, summary in summaries.items():
        table = pd.read_csv(tmp_path / name / "split.csv", low_memory=False)
        assert summary["input_rows"] == 160861
        assert table.groupby("PatientID")["split"].nunique().max() == 1
        assert (table.iloc[:, 4:].sum() >= 200).all()
        assert summary["worst_deviation"] <= 0.01, (name, summary["worst_deviation"])
        shares = table["split"].value_counts(normalize=True)
        assert abs(shares["train"] - 0.7) < 0.005 and abs(shares["test"] - 0.2) < 0.005
    spec = summaries["specific"]
    assert spec["dropped_rows"]["projection not PA"] == 160861 - 91728
    # normalising spellings matters: 'pleural effusion' has thousands of PA positives
    counts = {entry["key"]: entry["images"] for entry in spec["labels"]}
    assert counts["pleural effusion"] > 3000
    assert "hypoexpansion basal" in summaries["specific"]["labels_missing_from_term_tree"]
