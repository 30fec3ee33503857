"""A small description of a whole X-ray for the input check: layout, histogram, lung geometry.

Cheap (no network beyond the segmenter that already ran) and independent of the classifiers: a
16 x 16 thumbnail of the working image standardised to zero mean and unit variance (where the
bright and dark regions are: shoulders above, abdomen below, dark lungs either side of a bright
mediastinum) and its left-right mirror similarity, a 16-bin intensity histogram, a 16 x 16
thumbnail of the lung mask, and the lung-geometry measurements.
"""

from __future__ import annotations

import cv2
import numpy as np

from .lung_geometry import LungGeometry, measure_lungs
from .postprocess import MaskResult

THUMB = 16
BINS = 16


def describe_input(work: np.ndarray, mask: MaskResult,
                   geometry: LungGeometry | None = None) -> np.ndarray:
    """Descriptor (float32 vector) of a working image and its post-processed lung mask."""
    work = np.asarray(work, np.float32)
    thumb = cv2.resize(work, (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel()
    thumb = (thumb - thumb.mean()) / max(float(thumb.std()), 1e-3)
    mirror = float(np.mean(thumb * thumb.reshape(THUMB, THUMB)[:, ::-1].ravel()))
    hist = np.histogram(work, bins=BINS, range=(0.0, 1.0))[0].astype(np.float32) / work.size
    lungs = cv2.resize(mask.lungs.astype(np.float32), (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel()
    geometry = geometry or measure_lungs(mask.lungs)
    return np.concatenate([thumb, [mirror], hist, lungs, geometry.vector()]).astype(np.float32)


EDGE_SIZE = 256


def edge_strength(image: np.ndarray) -> float:
    """How sharp the image's strongest edges are: the 99th percentile of the gradient magnitude
    at 256 px over the image's spread (scale-free). Radiographs show bone and body edges;
    smooth fields (fog, clouds, blurred photographs) have almost none."""
    small = cv2.resize(np.asarray(image, np.float32), (EDGE_SIZE, EDGE_SIZE),
                       interpolation=cv2.INTER_AREA)
    gy, gx = np.gradient(small)
    return float(np.percentile(np.hypot(gx, gy), 99) / (float(small.std()) + 1e-6))


def descriptor_size() -> int:
    return 2 * THUMB * THUMB + 1 + BINS + len(LungGeometry.names())
