"""The split table (`split.csv`: ids, split name, 0/1 label columns) and the crop-cache layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.errors import DataError

ID_COLUMNS = ("ImageID", "ImageDir", "PatientID", "split")


@dataclass
class SplitTable:
    """A `split.csv`: ids, split name and the 0/1 label columns (in file order)."""

    frame: pd.DataFrame
    labels: list[str]

    def part(self, split: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == split].reset_index(drop=True)

    def targets(self, split: str) -> np.ndarray:
        return self.part(split)[self.labels].to_numpy(np.float32)


def read_split(path: str | Path) -> SplitTable:
    """Read a split table written by `prepare` (or the default-bundle builder)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Split file not found: {path}")
    frame = pd.read_csv(path, dtype={"ImageID": str, "PatientID": str, "ImageDir": str})
    missing = [c for c in ("ImageID", "PatientID", "split") if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}.")
    labels = [c for c in frame.columns if c not in ID_COLUMNS]
    if not labels:
        raise DataError(f"{path} has no label columns.")
    return SplitTable(frame, labels)


def cache_path(cache_dir: str | Path, image_id: str) -> Path:
    """Where `preprocess` writes the crop of one image (always a .png)."""
    return Path(cache_dir) / (Path(str(image_id)).stem + ".png")


#: Subfolder of a crop cache with each crop's lung fields (lungs plus the area added below
#: them) as an 8-bit 0/255 PNG in the crop's frame: what training may swap outside of.
LUNGS_DIR = "lungs"


def lungs_cache_path(cache_dir: str | Path, image_id: str) -> Path:
    """Where `preprocess` writes the lung-fields mask of one crop (same name, `lungs/`)."""
    return Path(cache_dir) / LUNGS_DIR / (Path(str(image_id)).stem + ".png")


def _existing(paths: list[Path], message) -> list[str]:
    """The paths as strings, or a DataError with `message(missing count, total, first missing
    name)` when some are missing."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(message(len(missing), len(paths), missing[0].name))
    return [str(p) for p in paths]


def cached_lung_paths(cache_dir: str | Path, frame: pd.DataFrame) -> list[str]:
    """Lung-mask paths of the rows, refusing with a clear message when some are missing."""
    return _existing([lungs_cache_path(cache_dir, i) for i in frame["ImageID"]],
                     lambda n, total, first: f"{n} of {total} crops in {cache_dir} have no lung mask "
                     f"(first: {first}); run 'preprocess' again to add them.")


def cached_paths(cache_dir: str | Path, frame: pd.DataFrame) -> list[str]:
    """Cache paths of the rows, refusing with a clear message when some are missing."""
    return _existing([cache_path(cache_dir, i) for i in frame["ImageID"]],
                     lambda n, total, first: f"{n} of {total} images are missing from the cache "
                     f"{cache_dir} (first: {first}); run 'preprocess' first.")
