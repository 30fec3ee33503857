"""Settings from environment variables (documented in README.md), with sane defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE_NAME = "cxr-demo"
#: where a bundle's lung segmenter lives unless its manifest names another (relative to the repo)
DEFAULT_SEGMENTER = "models/segmenter"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    models_dir: Path
    db_url: str
    max_upload_mb: int
    max_pixels: int
    store_images: bool
    default_bundle: str
    engine: str  # inference engine: auto | lite | tensorflow (see cxr_core.engines)

    @property
    def default_bundle_path(self) -> Path:
        candidate = Path(self.default_bundle)
        return candidate if candidate.is_absolute() else self.models_dir / candidate


def settings() -> Settings:
    """Read the settings now (so tests and the app can change the environment)."""
    data_dir = Path(os.environ.get("CXR_DATA_DIR", REPO_ROOT / "data")).expanduser()
    models_dir = Path(os.environ.get("CXR_MODELS_DIR", REPO_ROOT / "models")).expanduser()
    db_url = os.environ.get("CXR_DB_URL") or f"sqlite:///{(data_dir / 'feedback.sqlite').as_posix()}"
    return Settings(
        data_dir=data_dir,
        models_dir=models_dir,
        db_url=db_url,
        max_upload_mb=int(os.environ.get("CXR_MAX_UPLOAD_MB", "50")),
        max_pixels=int(os.environ.get("CXR_MAX_PIXELS", "50000000")),
        store_images=os.environ.get("CXR_STORE_IMAGES", "0").lower() in ("1", "true", "yes"),
        default_bundle=os.environ.get("CXR_BUNDLE", DEFAULT_BUNDLE_NAME),
        engine=os.environ.get("CXR_ENGINE", "auto").strip().lower(),
    )
