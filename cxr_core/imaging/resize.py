"""The one resize used everywhere: area for shrinking, bilinear for enlarging."""

from __future__ import annotations

import cv2
import numpy as np


def resize_to(pixels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a float image to size x size (or (h, w)); area interpolation when shrinking."""
    height, width = (size, size) if isinstance(size, int) else size
    shrinking = pixels.shape[0] > height or pixels.shape[1] > width
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(pixels.astype(np.float32), (width, height), interpolation=interp)


def resize_batch(crops: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 1) float32 model input from (N, H, W) or (H, W) crops."""
    crops = np.asarray(crops, dtype=np.float32)
    if crops.ndim == 2:
        crops = crops[None]
    if crops.shape[1] == size and crops.shape[2] == size:
        return crops[..., None]
    return np.stack([resize_to(c, size) for c in crops])[..., None]
