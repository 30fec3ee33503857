"""Does a heatmap point at the finding? Measures of one map against one radiologist's box, the
two baselines they are read beside, and patient-level bootstrap summaries.

Every function here is pure: maps, boxes and masks are arrays in one pixel frame. Boxes are
(x, y, w, h) with (x, y) the top-left corner, in the map's pixels (`scale_box` brings a box
from the image's pixels into the map's). Maps are measured as computed: never masked or clipped
to the lungs. The measures:

- pointing game (Zhang et al. 2016): the map's peak lies inside the box, grown by a small
  tolerance; a flat peak (several pixels tied at the maximum) scores the share of them inside;
- energy in box: the share of the map's total energy inside the box;
- IoBB hit at 0.1 / 0.25 / 0.5 (Wang et al. 2017, ChestX-ray8): the map is thresholded at a
  share of its maximum, each connected region becomes a box, and the radiologist's box counts
  as found when some region's box has intersection / (region box area) at or above the level;
- lung share: the share of the map's energy on the lung fields (`explain.attention`).

Baselines on the same boxes: a map uniform over the lungs (where findings can be, nothing
more) and the bundle's average map of that finding (what a model that ignores the image shows).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

from ..explain.attention import lung_energy_share
from .bootstrap import (
    CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    percentile_interval,
    resample_groups,
)

log = logging.getLogger(__name__)

#: Pointing-game tolerance as a share of the map's longest side (15 px on a 1024 px image).
POINTING_TOLERANCE = 15 / 1024
#: The map is thresholded at this share of its maximum for the IoBB boxes (about Wang et al.'s
#: 180 of 255).
IOBB_MAP_THRESHOLD = 0.7
#: Overlap levels at which a box counts as found (Wang et al.'s table).
IOBB_LEVELS = (0.1, 0.25, 0.5)
#: Side of the grid maps are brought to before comparing maps of different images.
SAMENESS_SIZE = 64
#: A label whose maps correlate at least this much (median, each with the others' mean) is
#: flagged: its map barely depends on the X-ray (Adebayo et al. 2018's data-randomisation check).
SAMENESS_FLAG = 0.9

SOURCES = ("model", "uniform_lungs", "average_map")
SOURCE_NAMES = {"model": "model", "uniform_lungs": "uniform over lungs", "average_map": "average map"}
MEASURES = ("pointing", "energy_in_box", *(f"iobb_{level:g}" for level in IOBB_LEVELS), "lung_share")
MEASURE_NAMES = {"pointing": "pointing game", "energy_in_box": "energy in box",
                 **{f"iobb_{level:g}": f"found at IoBB >= {level:g}" for level in IOBB_LEVELS},
                 "lung_share": "energy on lungs"}
OVERALL = "overall"

Box = tuple[float, float, float, float]


def scale_box(box: Box, from_size: tuple[int, int], to_size: tuple[int, int]) -> Box:
    """A box (x, y, w, h) given in an image of (H, W) `from_size`, in an image of `to_size`."""
    x, y, w, h = (float(v) for v in box)
    sy, sx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return x * sx, y * sy, w * sx, h * sy


def default_tolerance(shape: tuple[int, ...]) -> float:
    """Pointing-game tolerance in pixels for a map of this shape."""
    return POINTING_TOLERANCE * max(shape[:2])


def _box_mask(shape: tuple[int, int], box: Box, grow: float = 0.0) -> np.ndarray:
    """Pixels whose centre lies inside the box grown by `grow` pixels on every side."""
    x, y, w, h = box
    rows = np.arange(shape[0]) + 0.5
    cols = np.arange(shape[1]) + 0.5
    inside_r = (rows >= y - grow) & (rows <= y + h + grow)
    inside_c = (cols >= x - grow) & (cols <= x + w + grow)
    return inside_r[:, None] & inside_c[None, :]


def pointing_hit(heatmap: np.ndarray, box: Box, tolerance: float | None = None) -> float:
    """1.0 when the map's peak lies inside the box (grown by `tolerance` px), else 0.0; a peak
    shared by several pixels scores the share of them inside. NaN for a map with no energy."""
    heat = np.asarray(heatmap, np.float64)
    peak = heat.max()
    if not np.isfinite(peak) or peak <= 0:
        return float("nan")
    at_peak = heat >= peak - 1e-9 * abs(peak)
    grow = default_tolerance(heat.shape) if tolerance is None else float(tolerance)
    return float(at_peak[_box_mask(heat.shape, box, grow)].sum() / at_peak.sum())


def energy_in_box(heatmap: np.ndarray, box: Box) -> float:
    """Share of the map's (non-negative) energy inside the box; NaN for an empty map."""
    heat = np.clip(np.asarray(heatmap, np.float64), 0, None)
    total = heat.sum()
    if total <= 0:
        return float("nan")
    return float(heat[_box_mask(heat.shape, box)].sum() / total)


def map_regions(heatmap: np.ndarray, threshold: float = IOBB_MAP_THRESHOLD) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1), end exclusive, of the connected regions at or above `threshold`
    times the map's maximum (none for an empty map)."""
    heat = np.asarray(heatmap, np.float64)
    peak = heat.max()
    if not np.isfinite(peak) or peak <= 0:
        return []
    labelled, _ = ndimage.label(heat >= threshold * peak)
    return [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labelled)]


def iobb(region: tuple[int, int, int, int], box: Box) -> float:
    """Intersection of a region box (x0, y0, x1, y1) with the box (x, y, w, h) over the region's area."""
    x0, y0, x1, y1 = region
    x, y, w, h = box
    ix = max(0.0, min(x1, x + w) - max(x0, x))
    iy = max(0.0, min(y1, y + h) - max(y0, y))
    area = (x1 - x0) * (y1 - y0)
    return float(ix * iy / area) if area > 0 else 0.0


def best_iobb(heatmap: np.ndarray, box: Box, threshold: float = IOBB_MAP_THRESHOLD) -> float:
    """The largest IoBB of any thresholded region of the map with the box (0 when none)."""
    return max((iobb(region, box) for region in map_regions(heatmap, threshold)), default=0.0)


def uniform_map(mask: np.ndarray) -> np.ndarray:
    """A map of 1 on the mask and 0 elsewhere (the uniform-over-the-lungs baseline)."""
    return np.asarray(mask, bool).astype(np.float32)


def resize_map(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A map resized (bilinearly, area-averaged when shrinking) to (H, W)."""
    heat = np.asarray(heatmap, np.float32)
    if heat.shape == tuple(shape):
        return heat
    shrinking = shape[0] < heat.shape[0] and shape[1] < heat.shape[1]
    return cv2.resize(heat, (int(shape[1]), int(shape[0])),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def average_map(maps: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Mean of maps (of any sizes, each resized to `shape`), scaled to a maximum of 1."""
    if not maps:
        raise ValueError("average_map needs at least one map")
    mean = np.mean([resize_map(m, shape) for m in maps], axis=0)
    peak = float(mean.max())
    return (mean / peak if peak > 0 else mean).astype(np.float32)


def map_sameness(maps: list[np.ndarray], size: int = SAMENESS_SIZE) -> float:
    """How alike one label's maps are across X-rays: the median over maps of the Pearson
    correlation of a map with the mean of the others (all brought to size x size). Near 1: the
    map hardly depends on the image. NaN with fewer than 3 maps."""
    if len(maps) < 3:
        return float("nan")
    grid = np.stack([resize_map(m, (size, size)).ravel() for m in maps]).astype(np.float64)
    total = grid.sum(axis=0)
    values = []
    for i, row in enumerate(grid):
        others = (total - row) / (len(grid) - 1)
        if row.std() == 0 or others.std() == 0:  # a flat map: the same as the others only if they are flat too
            values.append(float(row.std() == others.std()))
            continue
        values.append(float(np.corrcoef(row, others)[0, 1]))
    return float(np.median(values))


def map_correlation(a: np.ndarray, b: np.ndarray, size: int = SAMENESS_SIZE) -> float:
    """Spearman rank correlation of two maps (brought to size x size): Adebayo et al.'s
    similarity between the maps of a trained and a randomised model."""
    from scipy.stats import spearmanr

    ra, rb = (resize_map(m, (size, size)).ravel() for m in (a, b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(spearmanr(ra, rb).statistic)


def box_measures(heatmap: np.ndarray, box: Box, lungs: np.ndarray | None = None,
                 tolerance: float | None = None, threshold: float = IOBB_MAP_THRESHOLD) -> dict[str, float]:
    """Every measure of one map against one box (in the map's pixels): pointing, energy_in_box,
    iobb (the best), iobb_<level> hits (0/1) and lung_share (NaN without a lung mask)."""
    best = best_iobb(heatmap, box, threshold)
    has_lungs = lungs is not None and np.asarray(lungs, bool).any()
    return {
        "pointing": pointing_hit(heatmap, box, tolerance),
        "energy_in_box": energy_in_box(heatmap, box),
        "iobb": best,
        **{f"iobb_{level:g}": float(best >= level) for level in IOBB_LEVELS},
        "lung_share": lung_energy_share(heatmap, lungs) if has_lungs else float("nan"),
    }


def bootstrap_mean(values, groups, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                   confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of per-box values with a patient-level bootstrap interval: (mean, low, high).
    Boxes without a value (NaN) are left out; NaN everywhere when none has one."""
    values = np.asarray(values, np.float64)
    groups = np.asarray(groups)
    keep = np.isfinite(values)
    values, groups = values[keep], groups[keep]
    if not len(values):
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if n_resamples < 1 or len(np.unique(groups)) < 2:
        return mean, float("nan"), float("nan")
    weights = resample_groups(groups, n_resamples, seed).weights.astype(np.float64)  # (N, B)
    totals = weights.sum(axis=0)
    samples = np.divide(values @ weights, totals, out=np.full(totals.shape, np.nan), where=totals > 0)
    low, high = percentile_interval(samples[:, None], confidence)
    return mean, float(low[0]), float(high[0])


def summarise(records: pd.DataFrame, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
              confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per finding and overall, each measure of each source with its bootstrap interval.

    `records` holds one row per (box, source): columns finding, patient, source and the
    `MEASURES`. Returns columns finding, measure, boxes, patients and per source
    `<source>`, `<source>_low`, `<source>_high`; findings sorted, 'overall' last.
    """
    rows = []
    findings = sorted(records["finding"].unique()) + [OVERALL]
    for finding in findings:
        part = records if finding == OVERALL else records[records["finding"] == finding]
        for measure in MEASURES:
            row = {"finding": finding, "measure": measure}
            for source in SOURCES:
                sub = part[part["source"] == source]
                mean, low, high = bootstrap_mean(sub[measure], sub["patient"], n_resamples, seed, confidence)
                row.update({source: mean, f"{source}_low": low, f"{source}_high": high})
                if source == "model":
                    row["boxes"] = int(np.isfinite(sub[measure].to_numpy(np.float64)).sum())
                    row["patients"] = int(sub["patient"].nunique())
            rows.append(row)
    columns = ["finding", "measure", "boxes", "patients"] + [
        c for s in SOURCES for c in (s, f"{s}_low", f"{s}_high")]
    return pd.DataFrame(rows, columns=columns)


def format_interval(value: float, low: float, high: float) -> str:
    """'0.34 [0.21, 0.48]' (two decimals); the value alone without an interval, '–' without one."""
    if not np.isfinite(value):
        return "–"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.2f}"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table: one row per finding and measure, each source's value
    with its 95% interval."""
    header = ["finding", "measure", "boxes"] + [SOURCE_NAMES[s] for s in SOURCES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in summary.iterrows():
        cells = [str(row["finding"]), MEASURE_NAMES.get(row["measure"], row["measure"]), str(row["boxes"])]
        cells += [format_interval(row[s], row[f"{s}_low"], row[f"{s}_high"]) for s in SOURCES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
