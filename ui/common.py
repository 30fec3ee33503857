"""Streamlit glue shared by the pages: cached loaders, the bundle picker, the models warmed up
in the background as soon as a page renders, the session's worklist, the feedback form.
No model logic."""

from __future__ import annotations

import gc
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import streamlit as st

from cxr_core.base.config import REPO_ROOT, settings
from cxr_core.base.errors import CxrError, DataError
from cxr_core.explain.report import DEMO_DISCLAIMER
from cxr_core.modeling.bundle import Bundle, find_bundles
from cxr_core.modeling.input_model import load_input_model
from cxr_core.review.feedback import FeedbackStore, Submission, save_feedback
from cxr_core.review.pipeline import Reviewer
from cxr_core.review.worklist import Worklist
from ui.input_check import input_check_record

log = logging.getLogger("cxr_app")
DEMO_BANNER = DEMO_DISCLAIMER  # one text: the app and the report say the same


_WARM_LOCK = threading.Lock()
_WARMING: dict[tuple, Future] = {}
_WARM_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxr-warm-up")
MAX_WORKLISTS = 16  # worklists kept per server process (least recently used dropped)


def _build_reviewer(bundle: Bundle, input_model, max_pixels: int) -> Reviewer:
    reviewer = Reviewer.from_paths(bundle, max_pixels=max_pixels, input_model=input_model)
    reviewer.warm_up()  # compile the graphs now, while the user picks a file
    # what is alive now (libraries, models) lives as long as the server: keep it out of the
    # garbage collector's scans, which otherwise walk it again during later reviews
    gc.collect()
    gc.freeze()
    return reviewer


def warm_up_in_background(bundle_path: str) -> Future:
    """Start loading and warming the bundle's Reviewer (once per bundle, engine setting and
    process) without blocking the page; a failed load is forgotten so the next call retries."""
    cfg = settings()
    key = (str(bundle_path), cfg.engine, cfg.max_pixels)
    with _WARM_LOCK:
        future = _WARMING.get(key)
        if future is None or (future.done() and future.exception() is not None):
            # the bundle and its input check (NumPy files) are read here, in the page's thread:
            # reading a .npy header parses it with the ast module, and CPython 3.11 can fail a
            # script's compile with "AST constructor recursion depth mismatch" when another
            # thread does that at the same moment; the warm-up thread then only opens the
            # engines and runs them
            try:
                bundle = Bundle.load(bundle_path)
                future = _WARM_POOL.submit(_build_reviewer, bundle, load_input_model(bundle),
                                           cfg.max_pixels)
            except Exception as exc:  # kept in the future: get_reviewer reports it on the page
                future = Future()
                future.set_exception(exc)
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
    if Bundle.exists(default):
        return default
    found = available_bundles()
    return found[0] if found else None


def load_bundle_or_stop() -> Bundle:
    """The active bundle, or a clear message and a stopped page."""
    path = active_bundle_path()
    if path is None:
        st.error(f"No model bundle found in {settings().models_dir}. Set CXR_MODELS_DIR or "
                 "train one (see docs/training.md).")
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


def fallback_warning(review) -> None:
    """Say so when lung segmentation fell back to the whole image (overview and viewer)."""
    st.warning(f"Lung segmentation fell back to the whole image ({review.pre.mask.reason}); "
               "findings may be less reliable.", icon="⚠️")


def normal_warning(review) -> None:
    """Say so when the models call 'normal' together with findings it excludes (both pages;
    the report prints the same sentence)."""
    from cxr_core.explain.report import normal_contradiction

    sentence = normal_contradiction(review)
    if sentence:
        st.warning(sentence, icon="⚠️")


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
def padchest_terms() -> list[str]:
    """The PadChest term tree's findings and diagnoses (CXR_TERM_TREE, else the shared data
    beside the checkout); empty when the tree is not there (it is not shipped)."""
    from cxr_core.data.term_tree import finding_terms, load_term_tree

    path = Path(os.environ.get("CXR_TERM_TREE", REPO_ROOT.parent / "shared" / "data" / "padchest"
                               / "term_tree.txt"))
    try:
        return finding_terms(load_term_tree(path))
    except DataError as exc:
        log.info("no PadChest terms for added findings: %s", exc)
        return []


def reader_name() -> str:
    """Who is reading, for the report: the signed-in user, else the reviewer name typed in the
    feedback form of this tab; '' when neither is known."""
    typed = st.session_state.get("w_reviewer") or st.session_state.get("reviewer") or ""
    return current_user_name() or str(typed).strip()


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


DECISION_WORDS = {True: {"agree": "agree: present", "disagree": "disagree: absent"},
                  False: {"agree": "agree: absent", "disagree": "disagree: present"}}


def _plain_key(name: str, default):
    """Session-state key of a form widget (the Review page passes its tab-kept keys instead)."""
    key = f"w_{name}"
    st.session_state.setdefault(key, default)
    return key


def feedback_form(review, image_bytes: bytes | None, key: str = "feedback",
                  key_for: Callable[[str, object], str] = _plain_key,
                  keep: Callable[[str], None] | None = None) -> dict | None:
    """The one expert-feedback form (Review page and Worklist): one answer per finding, none
    pre-selected and independent of display toggles, an explicit "agree with the rest" button,
    comment and reviewer. Stores a new version and returns its row; None when not submitted,
    refused, or when saving failed (the typed text stays). `key_for(name, default)` gives a
    widget's state key and `keep(name)` is called after it is drawn (how a page keeps drafts).
    Answers are keyed by `key` and finding, not by study: a form kept under one key for study
    after study updates its radios in place (the browser redraws them several times faster than
    it replaces them) and clears them when the study changes; comments are kept per study."""
    drafts_kept = keep is not None
    keep = keep or (lambda name: None)
    tag = review.image.sha256[:16]
    order = review.order(include_all=True)
    names = {k: f"{key}_decision_{review.labels[k]}" for k in order}
    keys = {k: key_for(name, None) for k, name in names.items()}
    owner = key_for(f"{key}_answers_for", "")
    if st.session_state[owner] != tag:  # another study: its answers start empty
        for k, state_key in keys.items():
            st.session_state[state_key] = None
            keep(names[k])
        st.session_state[owner] = tag
        keep(f"{key}_answers_for")

    def agree_rest() -> None:
        for k, state_key in keys.items():
            if st.session_state.get(state_key) is None:
                st.session_state[state_key] = "agree"
                keep(names[k])

    for k in order:
        verdict = "present" if review.findings[k] else "absent"
        st.radio(f"{review.labels[k]} (model: {verdict}, p={review.fmt(review.probs[k])})",
                 ["agree", "disagree"], horizontal=True, key=keys[k],
                 format_func=DECISION_WORDS[bool(review.findings[k])].__getitem__)
        keep(names[k])
    unanswered = [review.labels[k] for k, state_key in keys.items() if st.session_state[state_key] is None]
    if unanswered:
        st.button(f"Agree with the model on the {len(unanswered)} unanswered finding(s)",
                  on_click=agree_rest, key=f"{key}_agree_rest")
    comment = st.text_area("Comment", max_chars=2000, key=key_for(f"{key}_{tag}_comment", ""))
    keep(f"{key}_{tag}_comment")
    if comment and drafts_kept:
        st.caption(f"Draft kept for this tab ({len(comment)} characters), across pages and reloads.")
    user = current_user_name()
    if user:
        st.caption(f"Reviewer: {user} (logged in)")
        name = user
    else:
        name = st.text_input("Reviewer name", key=key_for("reviewer", ""))
        keep("reviewer")
    terms = padchest_terms()
    picked = st.multiselect(
        "Other findings (PadChest terms)", terms, key=key_for(f"{key}_{tag}_terms", []),
        disabled=not terms, placeholder="Choose findings the model does not list" if terms
        else "PadChest term tree not found: use the free-text box",
        help="findings you see that are not among the model's findings, from the PadChest term tree")
    keep(f"{key}_{tag}_terms")
    typed = st.text_input("Other findings (free text, separated by ';')",
                          key=key_for(f"{key}_{tag}_free", ""), max_chars=1000,
                          help="findings the model does not list, in your own words")
    keep(f"{key}_{tag}_free")
    others = ([{"finding": t, "source": "padchest"} for t in picked]
              + [{"finding": t, "source": "free text"} for t in typed.split(";") if t.strip()])
    if not st.button("Submit feedback", type="primary", key=f"{key}_submit"):
        return None
    if unanswered:
        st.error(f"Answer every finding before submitting ({len(unanswered)} unanswered: "
                 f"{', '.join(unanswered[:5])}{'...' if len(unanswered) > 5 else ''}).")
        return None
    decisions = {review.labels[k]: st.session_state[state_key] for k, state_key in keys.items()}
    result = save_feedback(feedback_store, Submission.from_review(
        review, name or "", decisions, comment=comment, input_check=input_check_record(review),
        other_findings=others), image_bytes=image_bytes)
    if not result.saved:
        st.error(result.message)  # the form keeps what was typed; the review stays on screen
        return None
    (st.info if result.unchanged else st.success)(result.message)
    return result.row
