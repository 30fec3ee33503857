"""`prepare`: PadChest table + term tree -> per label set `split.csv` and `summary.json`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd

from .label_sets import LABEL_SETS, LabelSet, build_label_set
from .padchest import filter_rows, read_padchest_csv
from .split import SPLITS, split_quality, stratified_patient_split
from .term_tree import load_term_tree

log = logging.getLogger(__name__)


def write_label_set(label_set: LabelSet, split: pd.Series, out_dir: Path) -> dict:
    """Write `split.csv` (ids, split, one 0/1 column per label) and return the summary dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = label_set.rows[["ImageID", "ImageDir", "PatientID"]].copy()
    table["split"] = split
    labels_frame = pd.DataFrame(label_set.matrix, columns=label_set.display)
    table = pd.concat([table.reset_index(drop=True), labels_frame], axis=1)
    table.to_csv(out_dir / "split.csv", index=False)
    quality = split_quality(
        split.to_numpy(), label_set.rows["PatientID"].to_numpy(), label_set.matrix,
        label_set.display,
    )
    return {
        "label_set": label_set.name,
        "kept_rows": int(len(table)),
        "dropped_no_selected_label": label_set.dropped_no_selected_label,
        "labels": [
            {
                "label": disp,
                "key": key,
                "images": int(label_set.matrix[:, j].sum()),
                "per_split": {s: int(quality.counts.loc[disp, s]) for s in SPLITS},
                "prevalence": {s: round(float(quality.prevalence.loc[disp, s]), 6)
                               for s in SPLITS},
            }
            for j, (key, disp) in enumerate(zip(label_set.labels, label_set.display))
        ],
        "patients_per_split": quality.patients,
        "images_per_split": quality.images,
        "worst_deviation": round(quality.worst_deviation, 6),
        "worst_deviation_label": quality.worst_label,
        "labels_missing_from_term_tree": label_set.missing_from_tree,
    }


def prepare(
    csv_path: str | Path,
    term_tree_path: str | Path,
    out_dir: str | Path,
    min_count: int = 200,
    seed: int = 0,
    projections: tuple[str, ...] = ("PA",),
    keep_pediatric: bool = False,
    label_sets: tuple[str, ...] = LABEL_SETS,
) -> dict[str, dict]:
    """Run the whole label engine and split; returns the summary of each label set."""
    started = time.perf_counter()
    tree = load_term_tree(term_tree_path)
    frame = read_padchest_csv(csv_path)
    log.info("read %d rows in %.1f s", len(frame), time.perf_counter() - started)
    rows, dropped = filter_rows(frame, projections=projections, keep_pediatric=keep_pediatric)
    summaries = {}
    for name in label_sets:
        t0 = time.perf_counter()
        label_set = build_label_set(name, rows, tree, min_count=min_count)
        split = pd.Series(
            stratified_patient_split(label_set.rows["PatientID"].to_numpy(), label_set.matrix,
                                     seed=seed)
        )
        summary = write_label_set(label_set, split, Path(out_dir) / name)
        summary.update(
            input_rows=int(len(frame)),
            rows_after_filters=int(len(rows)),
            dropped_rows=dict(dropped, **{"no selected label": label_set.dropped_no_selected_label}),
            min_count=min_count,
            seed=seed,
            projections=list(projections),
            keep_pediatric=keep_pediatric,
            seconds=round(time.perf_counter() - t0, 2),
        )
        (Path(out_dir) / name / "summary.json").write_text(json.dumps(summary, indent=2))
        summaries[name] = summary
    return summaries


def format_summary(summaries: dict[str, dict]) -> str:
    """A short human-readable summary of `prepare`'s result."""
    lines = []
    for name, s in summaries.items():
        lines.append(
            f"[{name}] {s['kept_rows']} images, {len(s['labels'])} labels (>= {s['min_count']}), "
            f"patients train/val/test = {s['patients_per_split']['train']}/"
            f"{s['patients_per_split']['val']}/{s['patients_per_split']['test']}, "
            f"worst share deviation {s['worst_deviation']:.4f} ({s['worst_deviation_label']})"
        )
        drops = ", ".join(f"{k}: {v}" for k, v in s["dropped_rows"].items())
        lines.append(f"  input rows {s['input_rows']}; dropped: {drops}")
    return "\n".join(lines)
