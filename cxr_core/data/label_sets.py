"""Build the 'specific' and 'general' label sets and keep labels with enough images."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .term_tree import TermTree

log = logging.getLogger(__name__)

LABEL_SETS = ("specific", "general")

#: Findings whose evidence lies on the lung fields (lungs plus the area below them, where
#: effusions collect), in PadChest spelling: their labels stay true when what lies outside the
#: lung fields is replaced (training's `outside_lungs` swap). Every other label (heart,
#: mediastinum, bones, devices, "normal") is treated as unknown on a swapped image.
FINDINGS_IN_LUNGS = frozenset({
    "pneumonia", "infiltrates", "atelectasis", "pulmonary edema", "pleural effusion",
    "consolidation", "nodule", "pulmonary mass", "mass", "pneumothorax", "emphysema",
    "interstitial pattern", "alveolar pattern", "ground glass pattern", "reticular interstitial pattern",
    "laminar atelectasis", "fibrotic band", "pulmonary fibrosis", "fibrosis", "granuloma",
    "calcified granuloma", "bronchiectasis", "lobar atelectasis", "segmental atelectasis",
    "costophrenic angle blunting", "pleural thickening", "apical pleural thickening",
    "hyperinflated lung", "air trapping", "cavitation", "abscess",
    "tuberculosis", "lung metastasis", "infiltration", "effusion", "edema",
})


def in_lungs(label: str) -> bool:
    """True for a finding whose evidence lies on the lung fields (`FINDINGS_IN_LUNGS`)."""
    return " ".join(str(label).lower().replace("_", " ").split()) in FINDINGS_IN_LUNGS


@dataclass
class LabelSet:
    """Rows that keep at least one selected label, with their 0/1 label matrix."""

    name: str
    rows: pd.DataFrame  # ImageID, ImageDir, PatientID (+ anything else), one row per image
    labels: list[str]  # normalised keys, most frequent first
    display: list[str]  # canonical spelling for display (term tree where known)
    matrix: np.ndarray  # uint8, rows x labels
    counts_all: dict[str, int]  # image count of every candidate label before selection
    dropped_no_selected_label: int
    missing_from_tree: list[str]


def to_general(labels: list[str], tree: TermTree) -> list[str]:
    """Map an image's specific labels to its general labels (union, order kept).

    Pure location terms are dropped; labels missing from the tree stay as their own group.
    """
    general: list[str] = []
    for label in labels:
        if tree.is_location(label):
            continue
        for group in tree.general_labels(label):
            if group not in general:
                general.append(group)
    return general


def build_label_set(
    name: str, rows: pd.DataFrame, tree: TermTree, min_count: int = 200
) -> LabelSet:
    """Select labels carried by at least `min_count` images, then drop images left with none."""
    if name not in LABEL_SETS:
        raise ValueError(f"label set must be one of {LABEL_SETS}, not {name!r}")
    per_image: pd.Series = rows["labels"]
    missing = sorted({lab for labs in per_image for lab in labs if lab not in tree})
    if name == "general":
        per_image = per_image.map(lambda labs: to_general(labs, tree))
    else:
        per_image = per_image.map(lambda labs: [lab for lab in labs if not tree.is_location(lab)])
    counts = pd.Series([lab for labs in per_image for lab in labs], dtype=object).value_counts()
    # Most frequent first; ties broken alphabetically so the column order is deterministic.
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    selected = [lab for lab, count in ordered if count >= min_count]
    index = {lab: i for i, lab in enumerate(selected)}
    matrix = np.zeros((len(rows), len(selected)), dtype=np.uint8)
    for r, labs in enumerate(per_image):
        for lab in labs:
            j = index.get(lab)
            if j is not None:
                matrix[r, j] = 1
    keep = matrix.any(axis=1)
    display = [tree.display.get(lab, lab) for lab in selected]
    log.info("%s set: %d labels with >= %d images; %d images kept", name, len(selected),
             min_count, int(keep.sum()))
    return LabelSet(
        name=name,
        rows=rows.loc[keep].reset_index(drop=True),
        labels=selected,
        display=display,
        matrix=matrix[keep],
        counts_all={lab: int(c) for lab, c in ordered},
        dropped_no_selected_label=int((~keep).sum()),
        missing_from_tree=missing,
    )
