"""The published per-label results ship as data and are matched to a bundle's labels by name."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr_core.evaluation.paper import (
    DATA_DIR,
    normalise_label,
    paper_table,
    side_by_side,
    unmatched_paper_labels,
    write_side_by_side,
)


def test_the_tables_ship_with_their_citation_and_notes():
    assert "arXiv:2207.14408" in (DATA_DIR / "README.md").read_text()
    specific, general = paper_table("specific"), paper_table("general")
    assert len(specific) == 36 and len(general) == 54  # labels plus the Global row
    assert specific.loc[specific["label"] == "Global", "ctp_auc"].notna().all()
    assert paper_table("cxr-public") is None


def test_labels_match_by_normalised_name():
    assert normalise_label("  COPD   signs") == normalise_label("copd signs") == "copd signs"
    assert normalise_label("Costophrenic-angle blunting") == "costophrenic angle blunting"
    ours = pd.DataFrame({"label": ["copd signs", "cardiomegaly", "made up"], "positives": [300, 200, 20],
                         "auc": [0.90, 0.80, 0.70], "f1_macro": [0.70, 0.60, 0.50],
                         "auc_low": [0.85, 0.70, np.nan], "auc_high": [0.95, 0.85, np.nan]})
    side = side_by_side(ours, "specific", "CTP").set_index("label")
    table8 = paper_table("specific").set_index("label")
    assert side.loc["copd signs", "paper_label"] == "COPD signs"
    assert side.loc["copd signs", "paper_auc"] == table8.loc["COPD signs", "ctp_auc"]  # 0.833
    assert side.loc["copd signs", "auc_difference"] == ours.loc[0, "auc"] - table8.loc["COPD signs", "ctp_auc"]
    assert side.loc["copd signs", "auc_versus_paper"] == "above"  # 0.85 > 0.833
    assert side.loc["cardiomegaly", "auc_versus_paper"] == "below"  # 0.85 < 0.937
    assert side.loc["made up", "paper_label"] == "" and side.loc["made up", "auc_versus_paper"] == "no published value"
    assert side_by_side(ours, "specific", "MobileNet") is None
    missing = unmatched_paper_labels(ours["label"].tolist(), "specific")
    assert "Normal" in missing and "COPD signs" not in missing and len(missing) == 33


def test_side_by_side_files_only_for_padchest_label_sets(tmp_path):
    ours = pd.DataFrame({"label": ["Normal"], "positives": [50], "auc": [0.8], "f1_macro": [0.7]})
    assert write_side_by_side({"CTP": ours}, "cxr-public", tmp_path) == []
    written = write_side_by_side({"CTP": ours}, "general", tmp_path)
    assert [p.name for p in written] == ["paper_comparison.csv", "paper_comparison.md"]
    assert "| Normal | 50 | 0.800 | 0.770 | +0.030 |" in written[1].read_text()
