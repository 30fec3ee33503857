"""Streamlit glue shared by the pages: cached loaders, the bundle picker, the models warmed up
in the background as soon as a page renders, the session's worklist, the feedback form.
No model logic."""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import streamlit as st

from cxr_core.base.config import settings
from cxr_core.base.errors import CxrError
from cxr_core.explain.report import DEMO_DISCLAIMER
from cxr_core.modeling.bundle import Bundle, find_bundles
from cxr_core.review.feedback import FeedbackStore, Submission, save_feedback
from cxr_core.review.pipeline import Reviewer
from cxr_core.review.worklist import Worklist

log = logging.getLogger("cxr_app")
DEMO_BANNER = DEMO_DISCLAIMER  # one text: the app and the report say the same


_WARM_LOCK = threading.Lock()
_WARMING: dict[tuple, Future] = {}
_WARM_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxr-warm-up")
MAX_WORKLISTS = 16  # worklists kept per server process (least recently used dropped)


def _build_reviewer(bundle_path: str, max_pixels: int) -> Reviewer:
    reviewer = Reviewer.from_paths(bundle_path, max_pixels=max_pixels)
    reviewer.warm_up()  # compile the graphs now, while the user picks a file
    return reviewer


def warm_up_in_background(bundle_path: str) -> Future:
    """Start loading and warming the bundle's Reviewer (once per bundle, engine setting and
    process) without blocking the page; a failed load is forgotten so the next call retries."""
    cfg = settings()
    key = (str(bundle_path), cfg.engine, cfg.max_pixels)
    with _WARM_LOCK:
        future = _WARMING.get(key)
        if future is None or (future.done() and future.exception() is not None):
            future = _WARM_POOL.submit(_build_reviewer, str(bundle_path), cfg.max_pixels)
            _WARMING[key] = future
    return future


def get_reviewer(bundle_path: str) -> Reviewer:
    """One Reviewer (bundle + segmenter, models built and warmed) per bundle and process;
    waits for the background warm-up when it is still running."""
    future = warm_up_in_background(bundle_path)
    if not future.done():
        with st.spinner("Loading the models (first time only)..."):
            return future.result()
    return future.result()


def _forget_reviewers() -> None:
    with _WARM_LOCK:
        _WARMING.clear()


get_reviewer.clear = _forget_reviewers  # type: ignore[attr-defined]


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
        bundle = get_bundle(str(path))
    except CxrError as exc:
        st.error(str(exc))
        st.stop()
    warm_up_in_background(str(path))  # the models are ready before the first upload
    return bundle


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


@st.cache_resource
def _worklists() -> OrderedDict:
    return OrderedDict()


def worklist_by_token(token: str) -> Worklist | None:
    """The worklist a URL token names (None when this process has none by that token)."""
    return _worklists().get(token)


def session_worklist() -> Worklist:
    """This browser session's worklist; its token sits in the URL (?worklist=...), so the list
    survives a page reload, and in the session state, so it survives moving between pages."""
    store = _worklists()
    token = st.query_params.get("worklist") or st.session_state.get("worklist_token")
    if token not in store:
        token = secrets.token_urlsafe(16)
        store[token] = Worklist()
        while len(store) > MAX_WORKLISTS:
            store.popitem(last=False)
    store.move_to_end(token)
    st.session_state["worklist_token"] = token
    if st.query_params.get("worklist") != token:
        st.query_params["worklist"] = token
    return store[token]


def feedback_form(review, image_bytes: bytes | None, key: str = "feedback") -> dict | None:
    """Agree/disagree per shown finding, missed findings, comment, reviewer; stores a new
    feedback version and returns its row, or None when not (yet) submitted or refused."""
    user = current_user_name()
    shown = review.order(extra=0)
    with st.form(key):
        decisions = {}
        for k in shown:
            verdict = "present" if review.findings[k] else "absent"
            decisions[review.labels[k]] = st.radio(  # no default answer: an unread submit is refused
                f"{review.labels[k]} (model: {verdict}, p={review.probs[k]:.3f})",
                ["agree", "disagree"], horizontal=True, index=None, key=f"{key}_decision_{k}")
        missing = [lab for k, lab in enumerate(review.labels)
                   if not review.findings[k] and lab not in decisions]
        added = st.multiselect("Findings the model missed", missing, key=f"{key}_added")
        comment = st.text_area("Comment", max_chars=2000, key=f"{key}_comment")
        if user:
            st.caption(f"Reviewer: {user} (logged in)")
            name = user
        else:
            name = st.text_input("Reviewer name", key=f"{key}_reviewer")
        submitted = st.form_submit_button("Submit feedback")
    if not submitted:
        return None
    unanswered = [label for label, answer in decisions.items() if answer is None]
    if unanswered:
        st.error(f"Answer every finding before submitting ({len(unanswered)} unanswered: "
                 f"{', '.join(unanswered[:5])}{'...' if len(unanswered) > 5 else ''}).")
        return None
    result = save_feedback(feedback_store, Submission(
        image_sha256=review.image.sha256, bundle_id=review.bundle_id,
        label_set=review.label_set, reviewer=name, labels=review.labels,
        probabilities=review.probs.tolist(), thresholds=review.thresholds.tolist(),
        model_positive=review.findings.tolist(), agreement=review.agreement.tolist(),
        decisions=decisions, added_labels=added, comment=comment,
        input_check=review.input_check.record() if review.input_check is not None else None,
    ), image_bytes=image_bytes)
    if not result.saved:
        st.error(result.message)
        return None
    (st.info if result.unchanged else st.success)(result.message)
    return result.row
