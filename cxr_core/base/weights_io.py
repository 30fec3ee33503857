"""Weight archives and checksums shared by the segmenter and the classifier bundles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .errors import BundleError


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_member_weights(model, path: Path) -> None:
    """Store a model's weights as a float16 archive (half the size of float32, ~1e-3 rel. error)."""
    weights = model.get_weights()
    np.savez_compressed(path, **{f"w{i:04d}": w.astype(np.float16) if w.dtype.kind == "f" else w
                                 for i, w in enumerate(weights)})


def load_member_weights(model, path: Path) -> None:
    """Load a float16 archive into a model of the same architecture, refusing a mismatch."""
    with np.load(path) as archive:
        weights = [archive[f"w{i:04d}"] for i in range(len(archive.files))]
    current = model.get_weights()
    if len(weights) != len(current) or any(a.shape != b.shape for a, b in zip(weights, current)):
        raise BundleError(f"The weights in {path.name} do not fit the {model.name} architecture.")
    model.set_weights([w.astype(c.dtype) for w, c in zip(weights, current)])
