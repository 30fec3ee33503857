"""Is this frontal X-ray likely mirrored left-right? Read from the lung masks and the heart's shadow.

On a correctly oriented frontal film the patient's left is on the image's right and the heart's
shadow lies over the medial base of that lung field. Seven cues from the post-processed lung
mask and the 512 px working image (the lungs' relative area and height, how the gap between
them and each lung's medial edge move from apex to base, and how bright the medial bases and
the lung fields are) enter one linear score, fitted on 320 real X-rays of ../shared/data
(160 NIH, 160 cxr-public), each as is and mirrored: cross-validated by image, 0.87 of them are
told right (0.15 of unmirrored X-rays warned, 0.88 of mirrored ones caught; docs/explanations.md).
A mirrored image's maps point at the wrong side, so the reader is warned; nothing is refused
(dextrocardia exists).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Cue weights and bias of the score (> 0: likely mirrored), fitted by logistic regression.
WEIGHTS = {"area": -5.223, "shift": -15.168, "edge_left": -8.546, "edge_right": -7.7,
           "heart_band": -30.899, "lung_brightness": 4.587, "height": -26.482}
BIAS = 0.216
#: Width of the band inside each lung's medial edge whose brightness is compared (512 px image).
BAND_PX = 25
#: The warning the Review page and the report show.
MIRROR_WARNING = ("This X-ray may be mirrored left-right (the heart's shadow and the lung shapes "
                  "read as if the patient's left were on the image's left): check the side marker; "
                  "the heatmaps follow the image as shown.")


@dataclass(frozen=True)
class Laterality:
    """The cues and the verdict; score > 0 reads as likely mirrored."""

    cues: dict[str, float]
    score: float

    @property
    def likely_mirrored(self) -> bool:
        return self.score > 0


def lung_pair(lungs: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The two largest lung fields as (image-left, image-right) boolean masks; None if fewer."""
    mask = (np.asarray(lungs) > 0).astype(np.uint8)
    count, labelled, stats, centroids = cv2.connectedComponentsWithStats(mask, 8)
    if count < 3:
        return None
    largest = np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:2] + 1
    left, right = sorted(largest, key=lambda i: centroids[i][0])
    return labelled == left, labelled == right


def laterality_cues(lungs: np.ndarray, image: np.ndarray) -> dict[str, float] | None:
    """The seven cues of a lung mask and the image of the same size; None when the mask does
    not hold two lung fields side by side over enough rows to tell."""
    pair = lung_pair(lungs)
    if pair is None:
        return None
    left, right = pair
    rows = np.flatnonzero(left.any(axis=1) & right.any(axis=1))
    if len(rows) < 12:
        return None
    height, width = left.shape
    image = np.asarray(image, np.float32)
    inner_left = np.array([np.flatnonzero(left[r]).max() for r in rows])
    inner_right = np.array([np.flatnonzero(right[r]).min() for r in rows])
    third = len(rows) // 3
    gap = (inner_left + inner_right) / 2 / width
    base = range(len(rows) - third, len(rows))
    band_left = np.mean([image[rows[i], max(0, inner_left[i] - BAND_PX):inner_left[i] + 1].mean() for i in base])
    band_right = np.mean([image[rows[i], inner_right[i]:inner_right[i] + BAND_PX].mean() for i in base])
    return {
        "area": float(np.log(left.sum() / right.sum())),
        "shift": float(gap[-third:].mean() - gap[:third].mean()),
        "edge_left": float((inner_left[-third:].mean() - inner_left[:third].mean()) / width),
        "edge_right": float((inner_right[-third:].mean() - inner_right[:third].mean()) / width),
        "heart_band": float(band_right - band_left),
        "lung_brightness": float(image[right].mean() - image[left].mean()),
        "height": float((np.flatnonzero(right.any(axis=1)).max() - np.flatnonzero(left.any(axis=1)).max()) / height),
    }


def laterality(lungs: np.ndarray, image: np.ndarray) -> Laterality | None:
    """Cues and verdict for a post-processed lung mask and its working image (same size)."""
    cues = laterality_cues(lungs, image)
    if cues is None:
        return None
    return Laterality(cues, float(sum(WEIGHTS[name] * value for name, value in cues.items()) + BIAS))
