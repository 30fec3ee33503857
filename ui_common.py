"""Streamlit glue shared by the pages: cached loaders and the bundle picker. No model logic."""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from cxr_core.base.config import settings
from cxr_core.base.errors import CxrError
from cxr_core.modeling.bundle import Bundle, find_bundles
from cxr_core.review.feedback import FeedbackStore
from cxr_core.review.pipeline import Reviewer

log = logging.getLogger("cxr_app")
DEMO_BANNER = ("Demonstration model trained on a few hundred public X-rays: not for clinical use. "
               "Findings and heatmaps illustrate the tool, not a diagnosis.")


@st.cache_resource(show_spinner="Loading the models (first time only)...")
def get_reviewer(bundle_path: str) -> Reviewer:
    """One Reviewer (bundle + segmenter, models built) per bundle and process."""
    cfg = settings()
    reviewer = Reviewer.from_paths(bundle_path, max_pixels=cfg.max_pixels)
    reviewer.warm_up()  # compile the graphs now, while the user picks a file
    return reviewer


@st.cache_resource
def get_store(db_url: str, image_dir: str | None) -> FeedbackStore:
    return FeedbackStore(db_url, Path(image_dir) if image_dir else None)


def feedback_store() -> FeedbackStore:
    cfg = settings()
    return get_store(cfg.db_url, str(cfg.data_dir / "images") if cfg.store_images else None)


def available_bundles() -> list[Path]:
    return find_bundles(settings().models_dir)


def active_bundle_path() -> Path | None:
    """The bundle chosen on the Models page, else the configured default, else the first found."""
    chosen = st.session_state.get("bundle_path")
    if chosen and Path(chosen).is_dir():
        return Path(chosen)
    default = settings().default_bundle_path
    if (default / "manifest.json").is_file():
        return default
    found = available_bundles()
    return found[0] if found else None


def load_bundle_or_stop() -> Bundle:
    """The active bundle, or a clear message and a stopped page."""
    path = active_bundle_path()
    if path is None:
        st.error(f"No model bundle found in {settings().models_dir}. Set CXR_MODELS_DIR or "
                 "train one (see README.md).")
        st.stop()
    try:
        return get_bundle(str(path))
    except CxrError as exc:
        st.error(str(exc))
        st.stop()


@st.cache_resource
def get_bundle(path: str) -> Bundle:
    return Bundle.load(path)


def demo_banner(bundle: Bundle) -> None:
    if bundle.is_demo:
        st.warning(DEMO_BANNER, icon="⚠️")


def current_user_name() -> str | None:
    """The logged-in user's name/e-mail when Streamlit's login is configured, else None."""
    try:
        user = st.user
        if user.get("is_logged_in"):
            return str(user.get("email") or user.get("name"))
    except Exception:  # no identity provider configured
        return None
    return None
