from pathlib import Path

from cxr_core.base.config import settings


def test_defaults_and_environment_overrides(monkeypatch, tmp_path):
    for var in ("CXR_DATA_DIR", "CXR_MODELS_DIR", "CXR_DB_URL", "CXR_BUNDLE", "CXR_STORE_IMAGES"):
        monkeypatch.delenv(var, raising=False)
    default = settings()
    assert default.data_dir.name == "data" and default.models_dir.name == "models"
    assert default.db_url.endswith("data/feedback.sqlite") and default.db_url.startswith("sqlite:///")
    assert default.default_bundle_path == default.models_dir / "cxr-demo"
    assert not default.store_images
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CXR_BUNDLE", str(tmp_path / "b"))
    monkeypatch.setenv("CXR_STORE_IMAGES", "1")
    monkeypatch.setenv("CXR_MAX_UPLOAD_MB", "7")
    custom = settings()
    assert custom.db_url == f"sqlite:///{tmp_path.as_posix()}/feedback.sqlite"
    assert custom.default_bundle_path == Path(tmp_path / "b") and custom.store_images
    assert custom.max_upload_mb == 7
    monkeypatch.setenv("CXR_DB_URL", "postgresql+psycopg2://u:p@db/cxr")
    assert settings().db_url == "postgresql+psycopg2://u:p@db/cxr"
