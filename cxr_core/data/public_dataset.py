"""The bundled demonstration model: label set, split and bundle from the public X-rays in
`../shared/data/cxr-public` (Cohen et al.), through the same code path as a PadChest bundle."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.errors import DataError
from .split import split_quality, stratified_patient_split

log = logging.getLogger(__name__)

def read_metadata(data_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Labelled rows of `metadata.csv` and the finding-node columns."""
    path = Path(data_dir) / "metadata.csv"
    if not path.is_file():
        raise DataError(f"No metadata.csv in {data_dir}.")
    meta = pd.read_csv(path, dtype={"patient_id": str})
    nodes = list(meta.columns[meta.columns.get_loc("license") + 1:])
    labelled = meta[meta["finding"].notna() & (meta["finding"].astype(str).str.len() > 0)].copy()
    return labelled.reset_index(drop=True), nodes


def finding_groups(findings: pd.Series) -> dict[str, list[str]]:
    """General group of each node: its ancestor directly below the top of the hierarchy
    (Pneumonia/Viral/COVID-19 -> Viral); top-level nodes map to themselves."""
    groups: dict[str, list[str]] = {}
    for finding in findings.dropna():
        for path in str(finding).split("|"):
            parts = [p.strip() for p in path.split("/") if p.strip()]
            for depth, node in enumerate(parts):
                group = parts[1] if depth >= 1 else parts[0]
                groups.setdefault(node, [])
                if group not in groups[node]:
                    groups[node].append(group)
    return groups


def select_labels(frame: pd.DataFrame, nodes: list[str], min_each_class: int = 20) -> list[str]:
    """Nodes with at least `min_each_class` positives and negatives (meaningful test AUC)."""
    counts = frame[nodes].fillna(0).astype(int).sum()
    keep = [n for n in nodes if counts[n] >= min_each_class and len(frame) - counts[n] >= min_each_class]
    return sorted(keep, key=lambda n: (-counts[n], n))


def build_split(data_dir: Path, out_csv: Path, seed: int = 0, min_each_class: int = 20) -> dict:
    """Write a `split.csv` in the same format as `prepare`, patient-level and stratified."""
    frame, nodes = read_metadata(data_dir)
    labels = select_labels(frame, nodes, min_each_class)
    matrix = frame[labels].fillna(0).astype(np.uint8).to_numpy()
    split = stratified_patient_split(frame["patient_id"].to_numpy(), matrix, seed=seed)
    table = pd.DataFrame({
        "ImageID": frame["image"].map(lambda p: Path(p).name),
        "ImageDir": frame["image"].map(lambda p: str(Path(p).parent)),
        "PatientID": frame["patient_id"].astype(str),
        "split": split,
    })
    table = pd.concat([table, pd.DataFrame(matrix, columns=labels)], axis=1)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    quality = split_quality(split, frame["patient_id"].to_numpy(), matrix, labels)
    all_counts = frame[nodes].fillna(0).astype(int).sum()
    return {
        "images_root": str(Path(data_dir).resolve()),
        "source": "cxr-public (COVID-19 image data collection, Cohen et al.), 8-bit PNG, longest side 512 px",
        "images": int(len(table)),
        "views": frame["view"].value_counts().to_dict(),
        "patients_per_split": quality.patients,
        "images_per_split": quality.images,
        "labels": {lab: {s: int(quality.counts.loc[lab, s]) for s in quality.counts.columns}
                   for lab in labels},
        "label_rule": f"finding nodes with >= {min_each_class} positive and >= {min_each_class} "
                      "negative labelled images",
        "labels_not_kept": {n: int(all_counts[n]) for n in nodes if n not in labels},
        "worst_share_deviation": round(quality.worst_deviation, 4),
        "licences": frame["license"].fillna("not stated").replace("", "not stated").value_counts().to_dict(),
        "groups": {lab: finding_groups(frame["finding"]).get(lab, [lab]) for lab in labels},
    }
