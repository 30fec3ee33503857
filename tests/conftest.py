"""Shared fixtures: keep Keras out of the home folder, locate ../shared, make small data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="cxr-keras-home-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CXR_SHARED_DIR", REPO.parent / "shared" / "data"))
PADCHEST_CSV = SHARED / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
TERM_TREE = SHARED / "padchest" / "term_tree.txt"
CXR_PUBLIC = SHARED / "cxr-public"


def require(path: Path) -> Path:
    """Skip the calling test with a clear reason when a piece of ../shared is absent."""
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (see ../shared/README.md)")
    return path


@pytest.fixture
def padchest_csv() -> Path:
    return require(PADCHEST_CSV)


@pytest.fixture
def term_tree_path() -> Path:
    return require(TERM_TREE)


@pytest.fixture
def cxr_public() -> Path:
    return require(CXR_PUBLIC / "metadata.csv").parent
