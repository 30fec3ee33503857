"""Fixtures shared by the page tests: an app environment of its own for each test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """The app run from the repository with a fresh data folder (feedback store, images), the
    default bundle and engine: nothing from the developer's environment leaks in."""
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    for name in ("CXR_DB_URL", "CXR_BUNDLE", "CXR_ENGINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(REPO)
    # AppTest installs the page as sys.modules["__main__"] and leaves it there; restore it, or
    # later tests that spawn processes (which re-import __main__) would run a page instead
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    return tmp_path
