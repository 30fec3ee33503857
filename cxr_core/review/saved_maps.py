"""`explain --save-maps`: every label's ensemble map of one X-ray as a `<stem>_maps.npz`, for
researchers' own analyses, in the whole original image's frame at the Review page's display size.

Keys: `labels` (K,) str; `probabilities` (K,) float; `maps` (K, h, w) float32 in [0, 1], the
maps the Review page shows (zero outside the crop box, never masked); `lungs` (h, w) bool, the
lung fields from the segmentation (lungs plus the area added below them); `original_size` (2,)
int, (H, W) of the original image. (h, w) is the original shrunk to at most 1024 px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base.errors import DataError
from ..explain.overlay import DISPLAY_MAX_SIDE
from .pipeline import Review

MAPS_SUFFIX = "_maps.npz"
KEYS = ("labels", "probabilities", "maps", "lungs", "original_size")


def maps_arrays(review: Review, max_side: int = DISPLAY_MAX_SIDE) -> dict[str, np.ndarray]:
    """The arrays `--save-maps` writes for one review."""
    return {
        "labels": np.asarray(review.labels, dtype=str),
        "probabilities": np.asarray(review.probs, np.float64),
        "maps": review.maps_display(max_side).astype(np.float32),
        "lungs": review.lungs_display(max_side),
        "original_size": np.asarray(review.image.original_size, np.int64),
    }


def write_maps(review: Review, out_dir: Path, stem: str) -> Path:
    """Write `<stem>_maps.npz` (compressed) into `out_dir`; returns its path."""
    path = Path(out_dir) / f"{stem}{MAPS_SUFFIX}"
    np.savez_compressed(path, **maps_arrays(review))
    return path


def read_maps(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a `<stem>_maps.npz` (no pickled objects are read)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            missing = [key for key in KEYS if key not in data.files]
            if missing:
                raise DataError(f"{Path(path).name} is not a saved-maps file: it lacks {', '.join(missing)}.")
            return {key: data[key] for key in KEYS}
    except (OSError, ValueError) as exc:
        raise DataError(f"{Path(path).name} could not be read as a saved-maps file ({exc}).") from exc
