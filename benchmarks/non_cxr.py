"""Seeded generator of images that are NOT frontal chest X-rays, for the input check.

Kinds: natural-image-like scenes (a cartoon landscape, random shapes, smooth clouds), text
pages and noise (of these the input check's fit sees only uniform noise), and real X-rays
rotated or cropped (`cxr_core.imaging.input_negatives`, here applied to X-rays the fit never
saw). Every image is float32 in [0, 1] (colour scenes converted to grayscale like the loader).
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from cxr_core.imaging.input_negatives import XRAY_TRANSFORMS, transform_xray

SYNTHETIC_KINDS = ("landscape", "shapes", "clouds", "text_dark_on_light", "text_light_on_dark",
                   "uniform_noise", "gaussian_noise", "salt_pepper")
XRAY_KINDS = XRAY_TRANSFORMS


def _gray(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0


def _smooth_field(rng: np.random.Generator, size: int, octaves: int = 5) -> np.ndarray:
    """Multi-scale smooth noise in [0, 1] (clouds, terrain)."""
    field = np.zeros((size, size), np.float32)
    for octave in range(octaves):
        cells = 2 ** (octave + 2)
        coarse = rng.random((cells, cells)).astype(np.float32)
        field += cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) / 2 ** octave
    field -= field.min()
    return field / max(float(field.max()), 1e-6)


def landscape(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Sky gradient, a sun, grey mountains (triangles) and green ground: a cartoon scene."""
    img = np.zeros((size, size, 3), np.uint8)
    sky = np.linspace(255, 150, size // 2 + 1)[:, None]
    img[: size // 2 + 1, :, 0] = sky
    img[: size // 2 + 1, :, 1] = sky * 0.8
    img[: size // 2 + 1, :, 2] = 90
    img[size // 2:, :] = (40, int(rng.integers(120, 200)), 50)
    for _ in range(int(rng.integers(1, 4))):
        peak_x = int(rng.integers(size // 6, 5 * size // 6))
        peak_y = int(rng.integers(size // 8, size // 2 - 20))
        half = int(rng.integers(size // 6, size // 3))
        tri = np.array([[peak_x - half, size // 2 + 10], [peak_x, peak_y], [peak_x + half, size // 2 + 10]])
        grey = int(rng.integers(90, 170))
        cv2.fillPoly(img, [tri.astype(np.int32)], (grey, grey, grey))
    cv2.circle(img, (int(rng.integers(40, size - 40)), int(rng.integers(30, size // 4))),
               int(rng.integers(15, 40)), (0, 220, 255), -1)
    return _gray(img)


def shapes(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Random coloured rectangles and ellipses on a coloured background."""
    img = np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)
    for _ in range(int(rng.integers(5, 15))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(20, size // 2)),
                                          y0 + int(rng.integers(20, size // 2))), colour, -1)
        else:
            cv2.ellipse(img, (x0, y0), (int(rng.integers(10, size // 4)), int(rng.integers(10, size // 4))),
                        float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return _gray(img)


def clouds(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    return _smooth_field(rng, size)


_WORDS = ("patient", "report", "the", "chest", "normal", "lorem", "ipsum", "findings", "of",
          "image", "review", "table", "data", "and", "with", "model", "result", "page")


def _text(rng: np.random.Generator, size: int, dark_on_light: bool) -> np.ndarray:
    background, ink = (255, 0) if dark_on_light else (0, 255)
    img = np.full((size, size), background, np.uint8)
    scale = float(rng.uniform(0.5, 1.2))
    step = int(30 * scale) + 6
    for row, y in enumerate(range(step, size - 5, step)):
        words = " ".join(rng.choice(_WORDS, int(rng.integers(3, 8))))
        cv2.putText(img, words, (int(rng.integers(5, 30)), y), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    ink, 1 + int(scale > 0.9), cv2.LINE_AA)
    return img.astype(np.float32) / 255.0


def text_dark_on_light(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    return _text(rng, size, True)


def text_light_on_dark(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    return _text(rng, size, False)


def uniform_noise(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    return rng.random((size, size)).astype(np.float32)


def gaussian_noise(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    return np.clip(rng.normal(0.5, 0.15, (size, size)), 0, 1).astype(np.float32)


def salt_pepper(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    img = np.full((size, size), 0.5, np.float32)
    u = rng.random((size, size))
    img[u < 0.1] = 0.0
    img[u > 0.9] = 1.0
    return img


def synthetic_images(per_kind: int, seed: int = 0, size: int = 512) -> Iterator[tuple[str, np.ndarray]]:
    """(kind, image) for `per_kind` images of every synthetic kind, reproducibly."""
    makers = {name: globals()[name] for name in SYNTHETIC_KINDS}
    for k, name in enumerate(SYNTHETIC_KINDS):
        rng = np.random.default_rng([seed, k])
        for _ in range(per_kind):
            yield name, makers[name](rng, size)


def transformed_xrays(xrays: list[np.ndarray], kinds=XRAY_KINDS) -> Iterator[tuple[str, np.ndarray]]:
    """(kind, image) for every X-ray under every rotation/crop kind."""
    for image in xrays:
        for kind in kinds:
            yield kind, transform_xray(np.asarray(image, np.float32), kind)
