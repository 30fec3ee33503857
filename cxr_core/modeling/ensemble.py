"""Ensemble rules of the method, on member probabilities of shape (M members, N images, K labels).

- CTP ("combine then predict"): mean member probability, then the label threshold.
- PTC label-wise ("predict then combine"): per label, the majority of the members' binary
  predictions; a tie (even M, exactly half) is decided by the CTP prediction of that label.
- PTC mode: the most frequent whole predicted label set across members; among tied sets, the one
  closest (Hamming) to the PTC label-wise prediction, then the one of the earliest member.
- Agreement: per label, how many members predict it positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EnsemblePrediction:
    """Everything one forward pass of the ensemble yields."""

    member_probs: np.ndarray  # (M, N, K)
    probs: np.ndarray  # (N, K) CTP probability
    findings: np.ndarray  # (N, K) bool, CTP decision with the ensemble thresholds
    member_findings: np.ndarray  # (M, N, K) bool, each member with its own thresholds
    agreement: np.ndarray  # (N, K) int, members predicting positive

    @property
    def n_members(self) -> int:
        return int(self.member_probs.shape[0])


def binarize(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """probs >= threshold, thresholds broadcast over the last (label) axis."""
    return np.asarray(probs) >= np.asarray(thresholds)


def ctp(member_probs: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean probability over members and its binary decision."""
    mean = np.asarray(member_probs, dtype=np.float64).mean(axis=0)
    return mean, binarize(mean, thresholds)


def agreement(member_binary: np.ndarray) -> np.ndarray:
    """Number of members voting positive, per image and label."""
    return np.asarray(member_binary, dtype=bool).sum(axis=0)


def ptc_labelwise(member_binary: np.ndarray, tie_break: np.ndarray | None = None) -> np.ndarray:
    """Per-label majority vote; ties resolved by `tie_break` (default: negative)."""
    member_binary = np.asarray(member_binary, dtype=bool)
    votes = member_binary.sum(axis=0) * 2
    n = member_binary.shape[0]
    out = votes > n
    tie = votes == n
    if tie.any():
        out = np.where(tie, np.asarray(tie_break, bool) if tie_break is not None else False, out)
    return out


def ptc_mode(member_binary: np.ndarray, labelwise: np.ndarray | None = None) -> np.ndarray:
    """Most frequent whole label set per image (tie rule in the module docstring)."""
    member_binary = np.asarray(member_binary, dtype=bool)
    m, n, k = member_binary.shape
    labelwise = ptc_labelwise(member_binary) if labelwise is None else np.asarray(labelwise, bool)
    out = np.zeros((n, k), dtype=bool)
    for i in range(n):
        rows = member_binary[:, i, :]
        best_key, best_row = None, None
        for j in range(m):
            count = int((rows == rows[j]).all(axis=1).sum())
            distance = int((rows[j] != labelwise[i]).sum())
            key = (-count, distance, j)
            if best_key is None or key < best_key:
                best_key, best_row = key, rows[j]
        out[i] = best_row
    return out


def combine(member_probs: np.ndarray, ensemble_thresholds: np.ndarray,
            member_thresholds: np.ndarray) -> EnsemblePrediction:
    """CTP probabilities/findings plus each member's findings and the agreement counts."""
    member_probs = np.asarray(member_probs, dtype=np.float64)
    probs, findings = ctp(member_probs, ensemble_thresholds)
    member_findings = binarize(member_probs, np.asarray(member_thresholds)[:, None, :])
    return EnsemblePrediction(member_probs, probs, findings, member_findings,
                              agreement(member_findings))
