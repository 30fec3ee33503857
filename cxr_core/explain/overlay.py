"""Map heatmaps back through the crop onto the original X-ray and colour them."""

from __future__ import annotations

import cv2
import numpy as np

#: Perceptually uniform colormap (matplotlib's 'inferno'): brightness rises with the value.
DEFAULT_COLORMAP = "inferno"
DEFAULT_ALPHA = 0.4


def to_original(heatmap: np.ndarray, box_original: tuple[int, int, int, int],
                original_size: tuple[int, int]) -> np.ndarray:
    """Place a crop-space heatmap (S x S) into the original image frame (H x W), zero outside."""
    height, width = original_size
    x0, y0, x1, y1 = box_original
    canvas = np.zeros((height, width), np.float32)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = cv2.resize(heatmap.astype(np.float32), (x1 - x0, y1 - y0),
                                          interpolation=cv2.INTER_LINEAR)
    return canvas


def colorize(values: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """[0, 1] values -> RGB float image in [0, 1] with a matplotlib colormap."""
    from matplotlib import colormaps

    return colormaps[colormap](np.clip(values, 0, 1))[..., :3].astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA,
            colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Blend a coloured heatmap over a grayscale [0, 1] image; returns RGB uint8.

    The colour's weight is alpha times the heat, so cold areas keep the X-ray fully readable.
    """
    gray = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2).astype(np.float32)
    weight = (float(np.clip(alpha, 0, 1)) * np.clip(heatmap, 0, 1))[..., None]
    blended = gray * (1 - weight) + colorize(heatmap, colormap) * weight
    return (blended * 255).round().astype(np.uint8)


def mask_outline(image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int],
                 fallback: bool) -> np.ndarray:
    """RGB uint8 view of an image with the lung outline (cyan) and crop box (yellow; red when
    segmentation fell back to the whole image). Mask and box are in the image's frame."""
    rgb = (np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2) * 255).astype(np.uint8).copy()
    thickness = max(1, round(max(image.shape) / 300))
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(rgb, contours, -1, (0, 220, 255), thickness)
    x0, y0, x1, y1 = box
    cv2.rectangle(rgb, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)),
                  (255, 60, 60) if fallback else (255, 220, 0), thickness)
    return rgb
