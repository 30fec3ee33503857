"""Patient-level multilabel-stratified train/val/test split with a count-aware refinement.

Step 1 (the library does the work): iterative stratification (`iterstrat`) over patients, with
10 folds mapped to 7 train / 1 val / 2 test. It sees each patient as a binary label row, so a
patient who brings many images of a label shifts that label's shares. Step 2: a greedy local
search moves single patients between splits, always the move that most lowers the worst
relative deviation of any label's image share from its target (ties: the sum of squares).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TARGET_SHARES = np.array([0.7, 0.1, 0.2])


@dataclass
class SplitQuality:
    """How well each label's images are shared out over the splits."""

    counts: pd.DataFrame  # label x split image counts
    prevalence: pd.DataFrame  # label x split share of the split's images carrying the label
    worst_deviation: float  # max over labels/splits of |share of positives - target share|
    worst_label: str
    patients: dict[str, int]
    images: dict[str, int]


def _patient_counts(patient_ids: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient image counts per label, plus a last column with the patient's image count."""
    patients, inverse = np.unique(patient_ids, return_inverse=True)
    counts = np.zeros((len(patients), matrix.shape[1] + 1), dtype=np.int64)
    np.add.at(counts[:, :-1], inverse, matrix.astype(np.int64))
    np.add.at(counts[:, -1], inverse, 1)
    return patients, inverse, counts


def _deviation(split_counts: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Relative deviation of each split's share of each column from its target share."""
    return split_counts / totals - TARGET_SHARES[:, None]


def _refine(assign: np.ndarray, counts: np.ndarray, rng: np.random.Generator,
            max_moves: int, tolerance: float) -> np.ndarray:
    """Greedily move patients between splits to lower the worst deviation (see module doc)."""
    totals = counts.sum(axis=0).astype(float)
    totals[totals == 0] = 1.0
    split_counts = np.stack([counts[assign == s].sum(axis=0) for s in range(3)]).astype(float)
    moves = 0
    for _ in range(max_moves):
        dev = _deviation(split_counts, totals)
        worst = np.abs(dev).max()
        if worst <= tolerance:
            break
        s_worst, col = np.unravel_index(np.abs(dev).argmax(), dev.shape)
        has_col = counts[:, col] > 0
        if dev[s_worst, col] > 0:  # too many positives in s_worst: move some out
            sources = [s_worst]
            dests = [d for d in range(3) if d != s_worst]
        else:  # too few: bring some in
            sources = [s for s in range(3) if s != s_worst]
            dests = [s_worst]
        best = None
        for src in sources:
            cand = np.flatnonzero(has_col & (assign == src))
            if cand.size > 4000:
                cand = rng.choice(cand, 4000, replace=False)
            if cand.size == 0:
                continue
            for dst in dests:
                if dst == src:
                    continue
                moved = counts[cand].astype(float)
                new = np.broadcast_to(split_counts, (cand.size, 3, split_counts.shape[1])).copy()
                new[:, src] -= moved
                new[:, dst] += moved
                new_dev = new / totals - TARGET_SHARES[None, :, None]
                new_max = np.abs(new_dev).max(axis=(1, 2))
                new_sq = (new_dev**2).sum(axis=(1, 2))
                i = np.lexsort((new_sq, new_max))[0]
                key = (new_max[i], new_sq[i])
                if best is None or key < best[0]:
                    best = (key, cand[i], src, dst)
        if best is None:
            break
        (new_max, new_sq), patient, src, dst = best
        if not (new_max < worst - 1e-12 or (new_max <= worst and new_sq < (dev**2).sum() - 1e-12)):
            break
        assign[patient] = dst
        split_counts[src] -= counts[patient]
        split_counts[dst] += counts[patient]
        moves += 1
    log.info("refinement made %d moves", moves)
    return assign


def stratified_patient_split(
    patient_ids: np.ndarray | pd.Series,
    matrix: np.ndarray,
    seed: int = 0,
    max_moves: int = 5000,
    tolerance: float = 0.002,
) -> np.ndarray:
    """Assign every image a split name so that no patient spans two splits.

    `matrix` is images x labels (0/1). Deterministic for a given seed.
    """
    patient_ids = np.asarray(patient_ids).astype(str)
    if len(patient_ids) != len(matrix):
        raise ValueError("patient_ids and matrix must have the same number of rows")
    patients, inverse, counts = _patient_counts(patient_ids, matrix)
    n_folds = 10
    assign = np.zeros(len(patients), dtype=np.int64)
    if len(patients) >= n_folds:
        binary = (counts[:, :-1] > 0).astype(np.int64)
        if binary.shape[1] == 0:
            binary = np.ones((len(patients), 1), dtype=np.int64)
        kfold = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        fold_to_split = np.array([0] * 7 + [1] + [2] * 2)
        for fold, (_, fold_idx) in enumerate(kfold.split(np.zeros(len(patients)), binary)):
            assign[fold_idx] = fold_to_split[fold]
    else:  # too few patients for the folds: deterministic shuffle by target shares
        order = np.random.default_rng(seed).permutation(len(patients))
        edges = np.round(np.cumsum(TARGET_SHARES) * len(patients)).astype(int)
        assign[order[edges[0]:edges[1]]] = 1
        assign[order[edges[1]:]] = 2
    rng = np.random.default_rng(seed)
    assign = _refine(assign, counts, rng, max_moves=max_moves, tolerance=tolerance)
    return np.array(SPLITS, dtype=object)[assign[inverse]]


def split_quality(
    split: np.ndarray, patient_ids: np.ndarray, matrix: np.ndarray, labels: list[str]
) -> SplitQuality:
    """Counts, prevalence and worst deviation from the target shares, per label and split."""
    split = np.asarray(split)
    counts = pd.DataFrame(
        {s: matrix[split == s].sum(axis=0) for s in SPLITS}, index=labels
    ).astype(int)
    sizes = {s: int((split == s).sum()) for s in SPLITS}
    prevalence = counts / pd.Series({s: max(sizes[s], 1) for s in SPLITS})
    totals = counts.sum(axis=1).replace(0, 1)
    dev = (counts.div(totals, axis=0) - pd.Series(dict(zip(SPLITS, TARGET_SHARES)))).abs()
    worst = float(dev.to_numpy().max()) if len(labels) else 0.0
    worst_label = str(dev.max(axis=1).idxmax()) if len(labels) else ""
    pids = pd.Series(np.asarray(patient_ids).astype(str))
    patients = {s: int(pids[split == s].nunique()) for s in SPLITS}
    return SplitQuality(counts, prevalence, worst, worst_label, patients, sizes)
