"""Review: upload a chest X-ray, review findings with their heatmaps, correct them. The page only
lays out the UI; everything it shows comes from `cxr_core`. What the user chose (the image, the
toggles, the draft feedback) is kept for the browser tab: across pages and across a reload.
"""

from __future__ import annotations

import hashlib
import logging
import re

import cv2
import pandas as pd
import streamlit as st

from cxr_core.base.config import REPO_ROOT
from cxr_core.base.errors import CxrError
from cxr_core.explain.attention import OUTSIDE_LUNGS_NOTE
from cxr_core.explain.occlusion import MAP_METHOD_DESCRIPTIONS, MAP_METHOD_NAMES, MAP_METHODS
from cxr_core.imaging.laterality import MIRROR_WARNING
from cxr_core.explain.overlay import (
    DEFAULT_ALPHA,
    DEFAULT_CUTOFF,
    OUTLINE_LEGEND,
    colorbar_png,
    overlay,
)
from cxr_core.explain.report import (
    ReportOptions,
    no_finding_message,
    report_name,
    report_pdf,
    report_png,
)
from cxr_core.review.pipeline import normal_index
from ui.common import (
    demo_banner,
    fallback_warning,
    feedback_form,
    get_reviewer,
    load_bundle_or_stop,
    normal_warning,
    reader_name,
)
from ui.glossary import threshold_words
from ui.input_check import render_input_check
from ui.shortcuts import keyboard_shortcuts
from ui.reading import at_chosen_point, reading_caption, validation_rates
from ui.tab_state import kept_key, remember, tab_state
from ui.uploads import IMAGE_TYPES, too_large, upload_limit_mb

log = logging.getLogger("cxr_app")
SAMPLES_DIR = REPO_ROOT / "assets" / "samples"
NO_SAMPLE = "(none)"
KEPT_STUDIES = 6  # images of this tab the next/previous control walks through (held in memory)

st.set_page_config(page_title="CXR Review", page_icon="🩻", layout="wide")


def _choose_sample() -> None:
    """A sample was picked: it becomes the one source; the uploader is cleared."""
    kept = tab_state()
    name = st.session_state["w_sample"]
    remember("sample")
    if name == NO_SAMPLE:
        kept["source"] = None
    else:
        data = (SAMPLES_DIR / name).read_bytes()
        kept["source"] = {"kind": "sample", "name": name, "data": data,
                          "digest": hashlib.sha256(data).hexdigest()}


def _take_upload(uploaded) -> None:
    """A file the uploader holds that this tab has not taken yet replaces the current image (and
    any sample). Read from the uploader's value in the page body, under one fixed widget key:
    a key that changed after each upload let a second file chosen while the first was being
    reviewed land on a widget the next run no longer had, and that file was silently lost."""
    kept = tab_state()
    if uploaded is None or kept.get("upload_id") == uploaded.file_id:
        return
    data = uploaded.getvalue()
    kept["source"] = {"kind": "upload", "name": uploaded.name, "data": data,
                      "digest": hashlib.sha256(data).hexdigest()}
    kept["upload_id"] = uploaded.file_id
    st.session_state["w_sample"] = NO_SAMPLE
    remember("sample")


def _remember_study(source: dict) -> None:
    """Add an image to this tab's studies (the next/previous control), once, newest last."""
    studies = tab_state().setdefault("studies", [])
    if all(study["digest"] != source["digest"] for study in studies):
        studies.append(source)
        del studies[:-KEPT_STUDIES]


def _step_study(step: int) -> None:
    """Open the previous (-1) or next (+1) image this tab has reviewed."""
    kept = tab_state()
    studies, source = kept.get("studies", []), kept.get("source")
    digests = [study["digest"] for study in studies]
    if source is None or source["digest"] not in digests:
        return
    index = digests.index(source["digest"]) + step
    if 0 <= index < len(studies):
        kept["source"] = studies[index]


def _clear_source() -> None:
    tab_state()["source"] = None
    st.session_state["w_sample"] = NO_SAMPLE
    remember("sample")


# --- the Review page -------------------------------------------------------------------------
def review_page() -> None:
    st.title("CXR Review: findings and heatmaps")
    bundle = load_bundle_or_stop()
    demo_banner(bundle)
    kept = tab_state()
    limit = upload_limit_mb()

    with st.sidebar:
        n_models = len(bundle.archs)
        st.caption(f"Model: {bundle.bundle_id} ({len(bundle.labels)} findings, {n_models} "
                   f"model{'s' if n_models != 1 else ''})")
        methods = [bundle.map_method] + [m for m in MAP_METHODS if m != bundle.map_method]
        map_method = st.radio("Heatmaps", methods, key=kept_key("map_method", bundle.map_method),
                              format_func=lambda m: _first_upper(MAP_METHOD_NAMES[m]) + (
                                  " (this model's choice)" if m == bundle.map_method else ""),
                              help="Occlusion: how much covering each part of the X-ray lowers the "
                                   "finding's probability. Grad-CAM (the published method): read "
                                   "off the last 7 x 7 feature map. docs/explanations.md compares "
                                   "them on radiologists' boxes.")
        remember("map_method")

    # --- input: one source at a time ----------------------------------------------------------
    upload_col, sample_col = st.columns([3, 2])
    with upload_col:
        _take_upload(st.file_uploader("Chest X-ray (PNG, JPEG or DICOM)", type=IMAGE_TYPES,
                                      max_upload_size=limit, key="upload",
                                      help=f"Up to {limit} MB; PA view preferred."))
    samples = sorted(SAMPLES_DIR.glob("*.png")) if SAMPLES_DIR.is_dir() else []
    with sample_col:
        st.selectbox("...or try a sample", [NO_SAMPLE] + [p.name for p in samples],
                     key=kept_key("sample", NO_SAMPLE), on_change=_choose_sample)

    source = kept["source"]
    if source is None:
        st.info("Upload an X-ray or pick a sample to see the findings.")
        st.stop()
    data = source["data"]
    _remember_study(source)
    studies = [study["digest"] for study in kept["studies"]]
    position = studies.index(source["digest"])
    # the name on its own line, the buttons below it: five columns in one row cut their labels
    # at 1400 px ("◀ Previo…", "⌨ Ke…")
    st.markdown(f"Reviewing **{_escape(source['name'])}** ({source['kind']}, "
                f"SHA-256 `{source['digest'][:12]}`)")
    prev_col, next_col, keys_col, clear_col, _ = st.columns([2, 2, 3, 2, 3], vertical_alignment="bottom")
    prev_col.button("◀ Previous study", on_click=_step_study, args=(-1,), disabled=position == 0,
                    help=f"study {position + 1} of the {len(studies)} this tab has reviewed")
    next_col.button("Next study ▶", on_click=_step_study, args=(1,),
                    disabled=position == len(studies) - 1,
                    help=f"study {position + 1} of the {len(studies)} this tab has reviewed")
    with keys_col:
        keyboard_shortcuts()
    clear_col.button("Clear image", on_click=_clear_source)
    refusal = too_large(len(data), limit)
    if refusal:
        st.error(refusal)
        st.stop()

    try:
        reviewer = get_reviewer(str(bundle.path))
    except CxrError as exc:  # e.g. an unknown CXR_ENGINE or a damaged TensorFlow Lite member
        st.error(f"The models could not be loaded: {exc}")
        st.stop()
    # everything below draws into one slot, so that a new image replaces the previous image's
    # results at once (a "working" notice) instead of leaving them on screen while it runs
    slot = st.empty()
    key = (bundle.bundle_id, source["digest"], map_method)
    if st.session_state.get("review_key") != key:
        # the previous review goes first: a run stopped half-way never leaves it paired with
        # this source
        for name in ("review_key", "review", "images"):
            st.session_state.pop(name, None)
        # this image's reviews by heatmap method: switching back shows the kept one at once
        kept_reviews = {k: v for k, v in st.session_state.get("reviews_by_method", {}).items()
                        if k[:2] == key[:2]}
        review = kept_reviews.get(key)
        if review is None:
            try:
                with slot.container():
                    st.info(f"Working on **{_escape(source['name'])}** (SHA-256 `{source['digest'][:12]}`)...")
                    with st.spinner("Segmenting the lungs, running the models and computing heatmaps..."):
                        review = reviewer.review_one(data, filename=source["name"], map_method=map_method)
            except CxrError as exc:
                slot.error(f"This file cannot be reviewed: {exc}")
                st.stop()
            except Exception:  # never show a traceback to the user
                log.exception("unexpected error while reviewing an upload")
                slot.error("Something went wrong while analysing this image. Please try another file.")
                st.stop()
        kept_reviews[key] = review
        st.session_state.update(review_key=key, review=review, images={}, reviews_by_method=kept_reviews)
    review = st.session_state.get("review")
    if not belongs_to(review, source):  # never draw one image's findings under another's name
        slot.info(f"Still working on **{_escape(source['name'])}**: the page updates when its "
                  "review is ready.")
        st.stop()
    with slot.container():
        show_review(review, data)


def belongs_to(review, source: dict) -> bool:
    """Whether `review` is the review of `source` (the SHA-256 of the bytes it was made from)."""
    return review is not None and review.image.sha256 == source["digest"]


def show_review(review, data: bytes) -> None:
    """The review of one image: its input check, findings, viewer, heatmaps, report, feedback."""
    review = at_chosen_point(review)  # the reader's operating point (sidebar)
    st.session_state["review"] = review
    # --- input check: is this a frontal chest X-ray? (findings hidden unless shown anyway) ----
    if not render_input_check(review):
        return
    if review.likely_mirrored():
        st.warning(MIRROR_WARNING)

    show_findings(review, show_overview(review))
    if st.session_state["w_viewer"]:
        from ui.viewer import show_viewer  # Plotly is imported only when the viewer is opened

        st.subheader("Viewer")
        show_viewer(review, key="review_viewer")
    heatmaps_and_report(review)
    st.subheader("Expert feedback")
    feedback_form(review, data, key="review", key_for=kept_key, keep=remember)


def _first_upper(text: str) -> str:
    """Capitalised at its first letter only ("Grad-CAM" stays as written, str.capitalize made it
    "Grad-cam")."""
    return text[:1].upper() + text[1:]


def _escape(text: str) -> str:
    """Markdown-safe file name (it comes from the user's computer)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!<>|~])", r"\\\1", text)


def _image(kind: tuple, draw, fmt: str = "JPEG") -> bytes:
    """An encoded picture for this review, drawn once per kind (a toggle reuses it). Encoded in
    the format st.image sends, so Streamlit passes the bytes on without re-encoding them."""
    images = st.session_state.setdefault("images", {})
    if kind not in images:
        bgr = cv2.cvtColor(draw(), cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_JPEG_QUALITY, 92] if fmt == "JPEG" else []
        images[kind] = cv2.imencode(".jpg" if fmt == "JPEG" else ".png", bgr, params)[1].tobytes()
    return images[kind]


@st.cache_data(show_spinner=False, max_entries=64)
def _colorbar(alpha: float, cutoff: float) -> bytes:
    return colorbar_png(alpha, cutoff)


def show_overview(review):
    """The X-ray with lungs and crop box on the left; returns the column for the findings."""
    left, right = st.columns([1, 2])
    with left:
        st.subheader("X-ray")
        if review.pre.fallback:
            caption = "whole-image box (red): segmentation fell back"
        else:
            caption = OUTLINE_LEGEND
        st.image(_image(("outline",), review.outline_display, "PNG"), caption=caption,
                 width="stretch", output_format="PNG")
        if review.pre.fallback:
            fallback_warning(review)
        st.toggle("Zoomable viewer", key=kept_key("viewer", False),
                  help="the X-ray at full resolution with zoom, pan, window/level and one "
                       "finding's heatmap; stays open for the next image")
        remember("viewer")
    with right:
        st.subheader("Findings")
        positives = int(review.findings.sum())
        st.markdown(f"**{positives}** positive finding(s) of {len(review.labels)} "
                    f"(thresholds: {review.threshold_method}, chosen on validation) for the image "
                    f"with SHA-256 `{review.image.sha256[:12]}`.",
                    help=threshold_words(review.threshold_method))
        normal_warning(review)
        if no_finding_message(review):  # the Worklist's words for it too
            st.info(no_finding_message(review))
        reading_caption(review)
    return right


def findings_frame(review) -> pd.DataFrame:
    """The findings table as shown: positives first, one precision, the call in words."""
    table = review.table()
    # an overruled 'normal' says so in two words here (the note above the table says why)
    calls = {lab: ("negative, overruled" if review.normal_overruled and k == normal_index(review.labels)
                   else review.call(k)) for k, lab in enumerate(review.labels)}
    table["call"] = table["finding"].map(calls)
    columns = ["finding", "group", "probability", "threshold", "models positive", "call"]
    rates = validation_rates(review)
    if rates is not None:  # the operating point's sensitivity / specificity on validation
        table["sens. / spec. (val)"] = table["finding"].map(dict(zip(review.labels, rates)))
        columns.insert(4, "sens. / spec. (val)")
    return table[columns]


def show_findings(review, column) -> None:
    frame = findings_frame(review)

    def colour(row):
        if row["call"].startswith("positive"):
            style = "background-color: rgba(230, 60, 60, 0.16); color: #8b0000"
        else:
            style = "color: #555"
        return [style] * len(row)

    styled = frame.style.apply(colour, axis=1).format(precision=3)
    # a label set whose groups are the findings themselves (the specific set) shows no group
    columns = [c for c in frame.columns if c != "group" or not (frame["group"] == frame["finding"]).all()]
    with column:
        st.dataframe(styled, hide_index=True, width="stretch", column_order=columns,
                     column_config=findings_columns(review))


#: the findings table fits the Findings column of a 1400 px wide window (two thirds of the page
#: beside the sidebar, about 600 px): short headers whose help says the rest, fixed widths
FINDINGS_WIDTHS = {"finding": 125, "group": 80, "probability": 118, "sens. / spec. (val)": 80,
                   "threshold": 68, "models positive": 60}


def findings_columns(review) -> dict:
    """The findings table's column settings: short headers, their meaning in the help."""
    calibrated = review.calibration
    if review.operating_point:
        prob_label = "p (calibrated)" if calibrated else "p (not calibrated)"
    else:
        prob_label = "probability"
    widths = FINDINGS_WIDTHS
    return {
        "finding": st.column_config.TextColumn("finding", width=widths["finding"]),
        "group": st.column_config.TextColumn("group", width=widths["group"],
                                             help="PadChest's general group of the finding"),
        "probability": st.column_config.ProgressColumn(
            prob_label, min_value=0.0, max_value=1.0, format="%.3f", width=widths["probability"],
            help="ensemble probability" + (f", calibrated on validation ({calibrated})" if calibrated
                                           else ", not calibrated")),
        "sens. / spec. (val)": st.column_config.TextColumn(
            "sens/spec", width=widths["sens. / spec. (val)"],
            help="sensitivity / specificity of this threshold on the validation split"),
        "threshold": st.column_config.NumberColumn(
            "thresh.", format="%.3f", width=widths["threshold"],
            help="operating threshold, chosen on validation"),
        "models positive": st.column_config.TextColumn(
            "models", width=widths["models positive"],
            help="models positive: how many of the models call this finding positive, each "
                 "at its own threshold; the ensemble's call is in 'call'"),
        # no width: the call takes the rest of the row
        "call": st.column_config.TextColumn(
            "call", help="the ensemble's decision; borderline: within 0.05 of the threshold, "
            "or the models disagree; overruled: 'normal' above its threshold while other "
            "findings are positive ('normal' means no other finding)"),
    }


@st.fragment
def heatmaps_and_report(review) -> None:
    """The display controls, the maps and the report buttons: a control reruns this part only
    (the table, the X-ray and the feedback form stay as they are)."""
    st.subheader("Heatmaps")
    c1, c2, c3 = st.columns([2, 2, 3])
    alpha = c1.slider("Heatmap opacity", 0.1, 1.0, step=0.05, key=kept_key("alpha", DEFAULT_ALPHA),
                      help="opacity of the hottest value; lower values are more transparent")
    cutoff = c2.slider("Hide values below", 0.0, 0.9, step=0.05, key=kept_key("cutoff", DEFAULT_CUTOFF),
                       help="heatmap values at or below this are not drawn")
    show_all = c3.toggle("Show all findings", key=kept_key("show_all", False),
                         help="a heatmap for every label, not only positives")
    uncertainty = c3.toggle("Uncertainty maps", key=kept_key("uncertainty", False),
                            help="standard deviation of the models' heatmaps")
    members = c3.toggle("Each model's map", key=kept_key("members", False))
    for name in ("alpha", "cutoff", "show_all", "uncertainty", "members"):
        remember(name)
    st.caption(MAP_METHOD_DESCRIPTIONS[review.map_method])
    show_heatmaps(review, review.order(include_all=show_all), alpha, cutoff, uncertainty, members)
    show_report(review, ReportOptions(include_all=show_all, uncertainty=uncertainty,
                                      members=members, alpha=alpha, cutoff=cutoff,
                                      reader=reader_name()))


def show_heatmaps(review, order: list[int], alpha: float, cutoff: float, uncertainty: bool,
                  members: bool) -> None:
    if not order:
        st.info(f"{no_finding_message(review)} Turn on 'Show all findings' to see every heatmap.")
        return
    st.image(_colorbar(round(alpha, 2), round(cutoff, 2)), width=480, output_format="PNG")
    for k in order:
        color = "red" if review.findings[k] else "gray"
        st.markdown(f"**:{color}[{review.title(k)}]**")
        if review.attention_outside_lungs(k):
            st.caption(f":orange[Note: {OUTSIDE_LUNGS_NOTE}.]")
        panels = [("ensemble mean", "mean", None)]
        if uncertainty:
            panels.append(("uncertainty (std)", "std", None))
        if members:
            panels += [(arch, "mean", m) for m, arch in enumerate(review.archs)]
        # three columns, so that one map never fills the page; four when that keeps a finding's
        # panels on one row (mean, uncertainty and two models)
        columns = st.columns(max(3, min(len(panels), 4)))
        for i, (caption, kind, member) in enumerate(panels):
            with columns[i % len(columns)]:
                picture = _image(("map", k, kind, member, round(alpha, 2), round(cutoff, 2)),
                                 lambda: overlay(review.display_pixels(),
                                                 review.heatmap_display(k, kind, member), alpha, cutoff))
                st.image(picture, caption=caption, width="stretch", output_format="JPEG")


def show_report(review, options: ReportOptions) -> None:
    """Download buttons; a report is built only when its button is clicked."""
    st.subheader("Report")
    st.caption("An A4 document: for a DICOM file the patient and study it names (for you only: "
               "the report is built when you download it and is not kept), the impression, the "
               "reader, image hash, date, bundle, operating point and calibration, the findings "
               "table, the heatmaps shown above with their colour scale, and the disclaimer. The "
               "file is named by the image hash, never by the uploaded file name.")
    c1, c2 = st.columns(2)
    c1.download_button("Download report (PDF)", lambda: report_pdf(review, options),
                       file_name=report_name(review, "pdf"), mime="application/pdf", on_click="ignore")
    c2.download_button("Download report (PNG)", lambda: report_png(review, options),
                       file_name=report_name(review, "png"), mime="image/png", on_click="ignore")


review_page()
