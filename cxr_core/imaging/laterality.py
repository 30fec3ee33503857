"""Is this frontal X-ray likely mirrored left-right? Read from the lung masks' shapes.

On a correctly oriented frontal film the patient's left side is on the image's right, and the
heart takes room from the left lung: the lung field on the image's right is the smaller one, and
the gap between the lungs widens towards the image's right at the bases (the heart's shadow).
A mirrored image shows both the other way round. Its maps would then point at the wrong side, so
the reader is warned; nothing is refused (situs inversus and dextrocardia exist).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: The image is called likely mirrored when the score is below minus this margin (the score of
#: a mirrored image is about the negative of the original's); measured on real X-rays, see
#: docs/explanations.md.
MIRROR_MARGIN = 0.05
#: The warning the Review page and the report show.
MIRROR_WARNING = ("This X-ray may be mirrored left-right (the heart's shadow and the smaller lung "
                  "field are on the image's left): check the side marker; the heatmaps follow "
                  "the image as shown.")


@dataclass(frozen=True)
class Laterality:
    """Cues of the heart's side and the verdict; score > 0 reads as correctly oriented."""

    area_cue: float  # log(area of the image-left lung / area of the image-right lung)
    heart_cue: float  # shift of the gap between the lungs towards the image's right, base vs apex
    score: float
    likely_mirrored: bool


def lung_pair(lungs: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The two largest lung fields as (image-left, image-right) boolean masks; None if fewer."""
    mask = (np.asarray(lungs) > 0).astype(np.uint8)
    count, labelled, stats, centroids = cv2.connectedComponentsWithStats(mask, 8)
    if count < 3:
        return None
    largest = np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:2] + 1
    left, right = sorted(largest, key=lambda i: centroids[i][0])
    return labelled == left, labelled == right


def laterality(lungs: np.ndarray, margin: float = MIRROR_MARGIN) -> Laterality | None:
    """The cues and verdict of a lung mask (any resolution); None when it does not hold two
    lung fields side by side over enough rows to tell."""
    pair = lung_pair(lungs)
    if pair is None:
        return None
    left, right = pair
    rows = np.flatnonzero(left.any(axis=1) & right.any(axis=1))
    if len(rows) < 12:
        return None
    width = left.shape[1]
    inner_left = np.array([np.flatnonzero(left[r]).max() for r in rows])
    inner_right = np.array([np.flatnonzero(right[r]).min() for r in rows])
    gap_centre = (inner_left + inner_right) / 2 / width
    third = len(rows) // 3
    heart_cue = float(gap_centre[-third:].mean() - gap_centre[:third].mean())
    area_cue = float(np.log(left.sum() / right.sum()))
    score = area_cue + heart_cue
    return Laterality(area_cue, heart_cue, score, bool(score < -margin))
