"""Images that are not frontal chest X-rays, made from real ones, to fit the input check.

A rotated X-ray (90, 180, 270 degrees) or a cut-out part of one (a half, a quarter) is what a
user most plausibly uploads by mistake and the hardest for the check to tell apart; noise stands
for everything else. The fit sees only these kinds; the benchmark also uses kinds it never saw.
"""

from __future__ import annotations

import cv2
import numpy as np

XRAY_TRANSFORMS = ("rotate90", "rotate180", "rotate270", "left_half", "right_half", "top_half",
                   "bottom_half", "corner_quarter")


def transform_xray(image: np.ndarray, kind: str) -> np.ndarray:
    """A real X-ray rotated or cut so that it no longer shows a whole frontal chest."""
    image = np.asarray(image, np.float32)
    h, w = image.shape
    parts = {
        "rotate90": lambda: np.rot90(image, 1), "rotate180": lambda: np.rot90(image, 2),
        "rotate270": lambda: np.rot90(image, 3),
        "left_half": lambda: image[:, : w // 2], "right_half": lambda: image[:, w // 2:],
        "top_half": lambda: image[: h // 2], "bottom_half": lambda: image[h // 2:],
        "corner_quarter": lambda: image[: h // 2, : w // 2],
    }
    if kind not in parts:
        raise ValueError(f"unknown X-ray transform {kind}")
    return np.ascontiguousarray(parts[kind]())


def jitter_xray(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real X-ray as another acquisition might show it: slightly rotated, zoomed, shifted,
    mirrored and with another gamma (widens what the check accepts as a frontal X-ray)."""
    image = np.asarray(image, np.float32)
    h, w = image.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-10, 10)), float(rng.uniform(0.9, 1.1)))
    matrix[:, 2] += rng.uniform(-0.06, 0.06, 2) * (w, h)
    out = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(np.clip(out, 0, 1) ** float(rng.uniform(0.6, 1.6)), dtype=np.float32)


def noise_image(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Uniform noise, smoothed at a random scale (from pixel noise to blotches)."""
    noise = rng.random((size, size)).astype(np.float32)
    sigma = float(rng.choice([0.0, 2.0, 8.0, 24.0]))
    if sigma:
        noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    noise -= noise.min()
    return noise / max(float(noise.max()), 1e-6)
