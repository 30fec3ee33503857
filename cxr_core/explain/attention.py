"""Where a heatmap's energy lies relative to the lung fields: the share on the lungs and the
reader's note when most of it lies elsewhere. Maps are measured as computed, never masked."""

from __future__ import annotations

import numpy as np

#: A finding's map with less than this share of its energy on the lung fields gets the note.
OUTSIDE_LUNGS_SHARE = 0.5
#: The note shown beside such a finding (Review page and report).
OUTSIDE_LUNGS_NOTE = "the model's attention for this finding is mostly outside the lungs"


def lung_energy_share(heatmap: np.ndarray, lungs: np.ndarray) -> float:
    """Share of the map's total (non-negative) energy that lies on the lung fields, in [0, 1];
    NaN for a map with no energy. `lungs` is a boolean mask of the map's shape."""
    heat = np.clip(np.asarray(heatmap, np.float64), 0, None)
    lungs = np.asarray(lungs, bool)
    if heat.shape != lungs.shape:
        raise ValueError(f"map {heat.shape} and lung mask {lungs.shape} differ in shape")
    total = heat.sum()
    if total <= 0:
        return float("nan")
    return float(heat[lungs].sum() / total)


def mostly_outside_lungs(heatmap: np.ndarray, lungs: np.ndarray,
                         share: float = OUTSIDE_LUNGS_SHARE) -> bool:
    """Whether less than `share` of the map's energy lies on the lungs (False for an empty map
    or an empty lung mask: nothing to say then)."""
    if not np.asarray(lungs, bool).any():
        return False
    value = lung_energy_share(heatmap, lungs)
    return bool(np.isfinite(value) and value < share)
