"""The method's published per-label test results, side by side with a bundle's.

Liz et al., "Deep Learning for Understanding Multilabel Imbalanced Chest X-ray Datasets",
arXiv:2207.14408 (2022): Table 8 (35 specific labels) and Table 10 (general labels), AUC and F1
(macro over both classes) of five CNNs and three ensembles. The tables ship as data in
`data/paper_results/` with the notes on how their OCR text was cleaned (`ocr_note`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

DATA_DIR = Path(__file__).resolve().parent / "data" / "paper_results"
CITATION = ("Liz H, Huertas-Tato J, Sánchez-Montañés M, Del Ser J, Camacho D. Deep Learning for "
            "Understanding Multilabel Imbalanced Chest X-ray Datasets. arXiv:2207.14408, 2022 "
            "(Table 8: specific labels; Table 10: general labels).")
TABLES = {"specific": "specific_table8.csv", "general": "general_table10.csv"}
# our model names -> the column prefix of the published tables
PAPER_MODELS = {"DenseNet201": "densenet201", "EfficientNetB0": "efficientnet",
                "InceptionV3": "inception", "InceptionResNetV2": "inceptionresnet",
                "Xception": "xception", "CTP": "ctp", "PTC label-wise": "ptc_lw",
                "PTC mode": "ptc_mode"}


def normalise_label(name: str) -> str:
    """Lower case, punctuation to spaces, single spaces: 'COPD signs' == ' copd  signs'."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", str(name).casefold()).split())


@lru_cache(maxsize=None)
def paper_table(label_set: str) -> pd.DataFrame | None:
    """The published table of a PadChest label set ('specific' or 'general'), else None.

    Rows whose label the OCR lost ('' or containing '[?]') are kept but never matched.
    """
    if label_set not in TABLES:
        return None
    frame = pd.read_csv(DATA_DIR / TABLES[label_set], keep_default_na=False, na_values=[""])
    frame["label"] = frame["label"].fillna("")
    frame["ocr_note"] = frame["ocr_note"].fillna("")
    frame["key"] = [normalise_label(lab) if lab and "[?]" not in lab and lab != "Global" else ""
                    for lab in frame["label"]]
    return frame


def _uncertain(note: str, column: str) -> bool:
    return any(part.strip().startswith(f"{column}:") and "uncertain" in part
               for part in note.split(";"))


def side_by_side(table: pd.DataFrame, label_set: str, model: str = "CTP") -> pd.DataFrame | None:
    """One row per label of `table` (a per-label metrics table of one model: label, positives,
    auc, f1_macro and optional `_low/_high` bounds) with the published AUC and F1 of the same
    model and label, the differences, and whether the published value lies inside our interval.

    None when the label set or model has no published counterpart.
    """
    paper = paper_table(label_set)
    prefix = PAPER_MODELS.get(model)
    if paper is None or prefix is None:
        return None
    by_key = {key: row for key, row in paper.set_index("key").iterrows() if key}
    rows = []
    for _, ours in table.iterrows():
        match = by_key.get(normalise_label(ours["label"]))
        row = {"label": ours["label"], "positives": int(ours["positives"]),
               "paper_label": "" if match is None else match["label"],
               "paper_samples": pd.NA if match is None else int(match["samples"])}
        for metric, column in (("auc", "auc"), ("f1", "f1_macro")):
            published = np.nan if match is None else match[f"{prefix}_{metric}"]
            value = float(ours[column]) if pd.notna(ours[column]) else np.nan
            low, high = ours.get(f"{column}_low", np.nan), ours.get(f"{column}_high", np.nan)
            row[metric] = value
            row[f"{metric}_low"], row[f"{metric}_high"] = low, high
            row[f"paper_{metric}"] = published
            row[f"{metric}_difference"] = value - published
            row[f"{metric}_versus_paper"] = _verdict(value, low, high, published)
            note = "" if match is None else match["ocr_note"]
            row[f"paper_{metric}_uncertain"] = _uncertain(note, f"{prefix}_{metric}")
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["paper_samples"] = frame["paper_samples"].astype("Int64")
    return frame


def _verdict(value: float, low: float, high: float, published: float) -> str:
    if pd.isna(published):
        return "no published value"
    if pd.isna(value):
        return "no value here"
    if pd.notna(low) and pd.notna(high):
        if low <= published <= high:
            return "within interval"
        return "above" if low > published else "below"
    return "above (no interval)" if value > published else "below (no interval)"


def unmatched_paper_labels(labels: list[str], label_set: str) -> list[str]:
    """Published labels (with a readable name) that none of `labels` matches."""
    paper = paper_table(label_set)
    if paper is None:
        return []
    ours = {normalise_label(lab) for lab in labels}
    return [lab for lab, key in zip(paper["label"], paper["key"]) if key and key not in ours]


def write_side_by_side(tables: dict[str, pd.DataFrame], label_set: str, out_dir: str | Path,
                       models: tuple[str, ...] = ("CTP", "PTC label-wise", "PTC mode")) -> list[Path]:
    """paper_comparison.csv (every model with a published counterpart, one row per label) and
    paper_comparison.md (the CTP rows); nothing when the label set is not PadChest's."""
    frames = []
    for model in [*[m for m in tables if m in PAPER_MODELS and m not in models], *models]:
        if model in tables:
            side = side_by_side(tables[model], label_set, model)
            if side is not None:
                frames.append(side.assign(model=model))
    if not frames or all((f["paper_label"] == "").all() for f in frames):
        return []
    out_dir = Path(out_dir)
    frame = pd.concat(frames, ignore_index=True)
    csv = out_dir / "paper_comparison.csv"
    frame.to_csv(csv, index=False)
    ctp = frame[(frame["model"] == "CTP") & (frame["paper_label"] != "")]
    lines = [f"# Per-label test results next to the published method ({label_set} labels, CTP)", "",
             f"Published: {CITATION}", "",
             "| label | positives | AUC | published AUC | difference | versus published | "
             "F1 (macro) | published F1 | difference |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in ctp.iterrows():
        lines.append(f"| {r['label']} | {r['positives']} | {_fmt(r['auc'], r['auc_low'], r['auc_high'])} | "
                     f"{_fmt(r['paper_auc'])} | {_fmt(r['auc_difference'], sign=True)} | "
                     f"{r['auc_versus_paper']} | {_fmt(r['f1'], r['f1_low'], r['f1_high'])} | "
                     f"{_fmt(r['paper_f1'])} | {_fmt(r['f1_difference'], sign=True)} |")
    missing = sorted(set(frame.loc[frame["paper_label"] == "", "label"]))
    if missing:
        lines += ["", "Labels without a published row: " + ", ".join(missing)]
    md = out_dir / "paper_comparison.md"
    md.write_text("\n".join(lines) + "\n")
    return [csv, md]


def _fmt(value, low=np.nan, high=np.nan, sign: bool = False) -> str:
    if pd.isna(value):
        return "n/a"
    text = f"{value:+.3f}" if sign else f"{value:.3f}"
    return text + (f" [{low:.3f}, {high:.3f}]" if pd.notna(low) and pd.notna(high) else "")
