"""Images that are not frontal chest X-rays, made from real ones, to fit the input check.

A rotated X-ray (90, 180, 270 degrees) or a cut-out part of one (a half, a quarter) is what a
user most plausibly uploads by mistake and the hardest for the check to tell apart; noise, smooth
random fields and pages of text stand for everything else (a scanned document or a photograph
uploaded by mistake). The benchmark's own generators are separate code with other seeds, and
some of its kinds (landscapes, shapes) are never seen by the fit.
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


def field_image(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """A smooth random field (cloud- or terrain-like): blurred noise summed over several
    scales, with a random gamma."""
    field = np.zeros((size, size), np.float32)
    for sigma in (size / 8, size / 24, size / 64):
        layer = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), float(sigma))
        layer -= layer.mean()
        field += layer / max(float(layer.std()), 1e-6) * float(rng.uniform(0.3, 1.0))
    field -= field.min()
    field /= max(float(field.max()), 1e-6)
    return np.ascontiguousarray(field ** float(rng.uniform(0.6, 1.8)), dtype=np.float32)


_FONTS = (cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
          cv2.FONT_HERSHEY_TRIPLEX)


def document_image(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """A page of random letters in lines, sometimes ruled into a table; dark ink on a light page
    or the reverse (a screenshot in a dark theme)."""
    light = rng.random() < 0.5
    paper, ink = (int(rng.integers(200, 256)), int(rng.integers(0, 80))) if light else \
        (int(rng.integers(0, 60)), int(rng.integers(170, 256)))
    page = np.full((size, size), paper, np.uint8)
    font, scale = _FONTS[int(rng.integers(len(_FONTS)))], float(rng.uniform(0.4, 1.3))
    step = int(24 * scale) + int(rng.integers(6, 16))
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:%"))
    for y in range(step, size - 4, step):
        line = "".join(rng.choice(letters, int(rng.integers(10, 60))))
        cv2.putText(page, line, (int(rng.integers(2, 40)), y), font, scale, ink, 1, cv2.LINE_AA)
    if rng.random() < 0.4:  # a table's rules
        for x in np.sort(rng.integers(0, size, int(rng.integers(2, 6)))):
            cv2.line(page, (int(x), 0), (int(x), size - 1), ink, 1)
    return page.astype(np.float32) / 255.0


#: the non-X-ray kinds of the fit, taken in turn
OTHER_IMAGES = (noise_image, field_image, document_image)
