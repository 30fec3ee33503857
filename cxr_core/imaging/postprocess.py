"""Lung-mask post-processing and crop box, as the method describes.

Fill holes -> drop small blobs -> keep at most two lungs -> split merged lungs -> add the area
below the lungs -> crop box with a margin. Implausible masks fall back to the whole image and
are flagged, never silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class MaskResult:
    """Post-processed masks (uint8 0/1) and the crop box (x0, y0, x1, y1), end-exclusive."""

    lungs: np.ndarray
    full: np.ndarray  # lungs plus the area below them
    box: tuple[int, int, int, int]
    fallback: bool
    reason: str = ""


def resize_result(result: MaskResult, shape: tuple[int, int]) -> MaskResult:
    """The same masks and box in another resolution (masks interpolated, then thresholded)."""
    height, width = shape
    sy, sx = height / result.lungs.shape[0], width / result.lungs.shape[1]

    def scale(mask: np.ndarray) -> np.ndarray:
        grown = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        return (grown >= 0.5).astype(np.uint8)

    x0, y0, x1, y1 = result.box
    box = (int(np.floor(x0 * sx)), int(np.floor(y0 * sy)),
           min(width, int(np.ceil(x1 * sx))), min(height, int(np.ceil(y1 * sy))))
    return MaskResult(scale(result.lungs), scale(result.full), box, result.fallback, result.reason)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes: flood the background from a padded border; the rest is foreground."""
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = padded.copy()
    ff_mask = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(flood, ff_mask, (0, 0), 1)
    holes = flood == 0
    return (padded | holes)[1:-1, 1:-1].astype(np.uint8)


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    return labels, stats[1:]  # drop the background row; component k has label k + 1


def remove_small(mask: np.ndarray, min_fraction: float = 0.005) -> np.ndarray:
    """Remove connected components smaller than `min_fraction` of the image area."""
    labels, stats = _components(mask)
    keep = [k + 1 for k, s in enumerate(stats) if s[cv2.CC_STAT_AREA] >= min_fraction * mask.size]
    return np.isin(labels, keep).astype(np.uint8)


def keep_largest(mask: np.ndarray, n: int = 2) -> np.ndarray:
    """Keep the `n` largest connected components."""
    labels, stats = _components(mask)
    if len(stats) <= n:
        return mask.astype(np.uint8)
    order = np.argsort(-stats[:, cv2.CC_STAT_AREA])[:n] + 1
    return np.isin(labels, order).astype(np.uint8)


def _two_cores(depth: np.ndarray) -> np.ndarray | None:
    """Labels 1 and 2 on the two largest cores of a blob (its distance transform above a rising
    fraction of its peak), or None when no level splits it in two (no neck to cut)."""
    peak = float(depth.max())
    for fraction in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            (depth > fraction * peak).astype(np.uint8), connectivity=8)
        if count - 1 >= 2:
            order = np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:2] + 1
            cores = np.zeros(depth.shape, np.int32)
            cores[labels == order[0]] = 1
            cores[labels == order[1]] = 2
            return cores
    return None


def split_merged(mask: np.ndarray, probs: np.ndarray | None = None,
                 min_width_fraction: float = 0.45) -> np.ndarray:
    """When the largest blob is wide and no second lung of similar size exists, the two lungs
    are merged: separate them along the gap between them, never by a straight cut.

    Watershed from the two lung cores (the blob's distance transform above a level that splits
    it in two): without `probs` the floods advance evenly, so they meet half-way along the neck;
    with the segmenter's `probs`, where it was least sure (the dark gap between the lungs) is
    high ground, so they meet there. Only the pixels on that meeting line are removed."""
    labels, stats = _components(mask)
    if len(stats) == 0:
        return mask.astype(np.uint8)
    areas = stats[:, cv2.CC_STAT_AREA]
    largest = int(np.argmax(areas))
    w = stats[largest, cv2.CC_STAT_WIDTH]
    others = np.delete(areas, largest)
    if w < min_width_fraction * mask.shape[1] or (others.size and others.max() > 0.2 * areas[largest]):
        return mask.astype(np.uint8)
    blob = (labels == largest + 1).astype(np.uint8)
    depth = cv2.distanceTransform(blob, cv2.DIST_L2, 5)
    markers = _two_cores(depth)
    if markers is None:
        return mask.astype(np.uint8)
    elevation = np.zeros(mask.shape, np.float32)
    if probs is not None:
        elevation = 0.9 * (1.0 - np.clip(np.asarray(probs, np.float32), 0.0, 1.0))
    elevation[blob == 0] = 1.0  # outside the blob is flooded last: floods stay inside it
    image = cv2.cvtColor((np.clip(elevation, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    cv2.watershed(image, markers)
    kernel = np.ones((3, 3), np.uint8)
    inside = blob > 0  # the floods go on outside the blob afterwards: only the inside counts
    near_left = cv2.dilate(((markers == 1) & inside).astype(np.uint8), kernel) > 0
    near_right = cv2.dilate(((markers == 2) & inside).astype(np.uint8), kernel) > 0
    cut = inside & near_left & near_right  # the meeting line and the pixels touching it
    out = mask.astype(np.uint8).copy()
    out[cut] = 0
    return out


def add_below_lungs(mask: np.ndarray) -> np.ndarray:
    """Add, in every column of the lungs' extent, the area from the lowest lung pixel down to
    the lower boundary of the lung fields (columns between the lungs use interpolated bottoms)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return mask.astype(np.uint8)
    x0, x1, bottom = xs.min(), xs.max(), ys.max()
    cols = np.arange(x0, x1 + 1)
    has = mask[:, x0:x1 + 1].any(axis=0)
    lowest = np.where(has, mask.shape[0] - 1 - np.argmax(mask[::-1, x0:x1 + 1], axis=0), -1)
    known = cols[has]
    start = np.interp(cols, known, lowest[has]).astype(int)
    rows = np.arange(mask.shape[0])[:, None]
    below = (rows >= start[None, :]) & (rows <= bottom)
    out = mask.astype(np.uint8).copy()
    out[:, x0:x1 + 1] |= below.astype(np.uint8)
    return out


def plausibility(mask: np.ndarray) -> str:
    """Empty string when the lung mask looks like two lungs, else the reason it does not."""
    area = mask.mean()
    if area == 0:
        return "no lung found"
    if area < 0.05:
        return f"lung area {area:.1%} of the image is implausibly small"
    if area > 0.85:
        return f"lung area {area:.1%} of the image is implausibly large"
    ys, xs = np.nonzero(mask)
    h = (ys.max() - ys.min() + 1) / mask.shape[0]
    w = (xs.max() - xs.min() + 1) / mask.shape[1]
    if not 0.4 <= w / h <= 2.5:
        return f"lung box aspect {w / h:.2f} is implausible"
    cx = (xs.max() + xs.min()) / 2 / mask.shape[1]
    if not 0.25 <= cx <= 0.75:
        return "lungs are far off the image centre"
    return ""


def crop_box(mask: np.ndarray, margin: float = 0.05) -> tuple[int, int, int, int]:
    """Bounding box of the mask with a margin (fraction of the box size), clipped to the image."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my, mx = int(round((y1 - y0) * margin)), int(round((x1 - x0) * margin))
    return (max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my))


def postprocess_mask(probs: np.ndarray, threshold: float = 0.5, min_fraction: float = 0.005,
                     margin: float = 0.05) -> MaskResult:
    """Turn a lung probability map into clean masks and a crop box (see module docstring)."""
    mask = (np.asarray(probs) >= threshold).astype(np.uint8)
    mask = fill_holes(mask)
    mask = remove_small(mask, min_fraction)
    mask = split_merged(mask, probs)
    mask = keep_largest(mask, 2)
    mask = fill_holes(mask)
    reason = plausibility(mask)
    height, width = mask.shape
    if reason:
        full_box = (0, 0, width, height)
        return MaskResult(mask, mask.copy(), full_box, True, reason)
    full = add_below_lungs(mask)
    return MaskResult(mask, full, crop_box(full, margin), False, "")
