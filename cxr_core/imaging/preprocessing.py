"""The one preprocessing path: grayscale -> 512 px -> [0, 1] -> segment -> post-process -> crop.

Training, batch preprocessing, the CLI and the app all call `preprocess_image`, which returns
the crop box so heatmaps can be mapped back onto the original X-ray.

Aspect handling: the image is resized to 512 x 512 without padding (PadChest images are close to
square; the crop box is mapped back by the inverse per-axis scale, so no information is lost).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .image_io import LoadedImage
from .postprocess import MaskResult, postprocess_mask, resize_result
from .resize import resize_to

WORK_SIZE = 512
#: Version of what the crops of a cache are made by (work size, post-processing, crop rule):
#: raise it whenever a change here or in `postprocess` changes the crops, so that training
#: never reuses a member trained on crops made the old way (see `batch_preprocess.cache_identity`).
CROP_VERSION = 1


@dataclass
class Preprocessed:
    """What the classifier and the explanation need from one X-ray."""

    image: np.ndarray  # 512 x 512 float32 [0, 1], the whole X-ray
    crop: np.ndarray  # WORK_SIZE x WORK_SIZE float32 [0, 1], the lung crop
    mask: MaskResult  # lung masks and crop box in 512 px coordinates
    original_size: tuple[int, int]  # (height, width) of the original image

    @property
    def box_original(self) -> tuple[int, int, int, int]:
        """Crop box (x0, y0, x1, y1) in the original image's pixel coordinates."""
        height, width = self.original_size
        x0, y0, x1, y1 = self.mask.box
        sx, sy = width / WORK_SIZE, height / WORK_SIZE
        return (int(round(x0 * sx)), int(round(y0 * sy)), int(round(x1 * sx)), int(round(y1 * sy)))

    @property
    def fallback(self) -> bool:
        return self.mask.fallback


def crop_to_box(image: np.ndarray, box: tuple[int, int, int, int], size: int = WORK_SIZE) -> np.ndarray:
    """Cut the box out of a 512 px image and resize it to size x size."""
    x0, y0, x1, y1 = box
    return resize_to(image[y0:y1, x0:x1], size)


def to_work(image: LoadedImage | np.ndarray) -> np.ndarray:
    """Grayscale [0, 1] image -> the 512 x 512 working image."""
    pixels = image.pixels if isinstance(image, LoadedImage) else np.asarray(image, np.float32)
    return np.clip(resize_to(pixels, WORK_SIZE), 0.0, 1.0)


def segment_works(works: np.ndarray, segmenter) -> list[MaskResult]:
    """Segment 512 px images and post-process at the U-Net's own resolution (4x fewer pixels
    than at 512), then bring masks and box to 512 px."""
    native = getattr(segmenter, "size", WORK_SIZE)
    probs = segmenter.predict(works, output_size=native)
    if probs.ndim == 2:
        probs = probs[None]
    return [resize_result(postprocess_mask(p), (WORK_SIZE, WORK_SIZE)) for p in probs]


def preprocess_batch(images: list[LoadedImage | np.ndarray], segmenter) -> list[Preprocessed]:
    """Run the whole front end (module docstring) on decoded images, the U-Net in one batch."""
    if not images:
        return []
    works = [to_work(im) for im in images]
    masks = segment_works(np.stack(works), segmenter)
    out = []
    for im, work, mask in zip(images, works, masks):
        pixels = im.pixels if isinstance(im, LoadedImage) else im
        out.append(Preprocessed(work, crop_to_box(work, mask.box), mask, tuple(pixels.shape[:2])))
    return out


def preprocess_image(image: LoadedImage | np.ndarray, segmenter) -> Preprocessed:
    """Run the whole front end on one decoded image (see module docstring)."""
    return preprocess_batch([image], segmenter)[0]
