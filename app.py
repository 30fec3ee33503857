"""CXR Review: upload a chest X-ray, review findings with their heatmaps, correct them.

This page only lays out the UI; everything it shows comes from `cxr_core`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import streamlit as st

from cxr_core.base.config import REPO_ROOT, settings
from cxr_core.base.errors import CxrError
from cxr_core.explain.overlay import DEFAULT_ALPHA, mask_outline, overlay
from cxr_core.explain.report import report_pdf, report_png
from cxr_core.review.feedback import Submission
from ui_common import (
    current_user_name,
    demo_banner,
    feedback_store,
    get_reviewer,
    load_bundle_or_stop,
)
from ui_input_check import input_check_record, render_input_check

log = logging.getLogger("cxr_app")
SAMPLES_DIR = REPO_ROOT / "assets" / "samples"

st.set_page_config(page_title="CXR Review", page_icon="🩻", layout="wide")
st.title("CXR Review: findings and heatmaps")

bundle = load_bundle_or_stop()
demo_banner(bundle)
cfg = settings()

with st.sidebar:
    st.caption(f"Model: {bundle.bundle_id} ({len(bundle.labels)} findings, {len(bundle.archs)} models)")
    alpha = st.slider("Heatmap opacity", 0.0, 1.0, DEFAULT_ALPHA, 0.05)
    show_all = st.toggle("Show all findings", value=False, help="a heatmap for every label, not only positives")
    show_uncertainty = st.toggle("Uncertainty maps", value=False,
                                 help="standard deviation of the models' heatmaps")
    show_members = st.toggle("Each model's map", value=False)

# --- input -----------------------------------------------------------------------------------
upload_col, sample_col = st.columns([3, 2])
with upload_col:
    uploaded = st.file_uploader("Chest X-ray (PNG, JPEG or DICOM)",
                                type=["png", "jpg", "jpeg", "dcm", "dicom"],
                                help=f"Up to {cfg.max_upload_mb} MB; PA view preferred.")
samples = sorted(SAMPLES_DIR.glob("*.png")) if SAMPLES_DIR.is_dir() else []
with sample_col:
    sample_name = st.selectbox("...or try a sample", ["(none)"] + [p.name for p in samples])

data, filename = None, None
if uploaded is not None:
    data, filename = uploaded.getvalue(), uploaded.name
elif sample_name != "(none)":
    data, filename = (SAMPLES_DIR / sample_name).read_bytes(), sample_name

if data is None:
    st.info("Upload an X-ray or pick a sample to see the findings.")
    st.stop()
if len(data) > cfg.max_upload_mb * 1024 * 1024:
    st.error(f"The file is {len(data) / 1e6:.1f} MB; the limit is {cfg.max_upload_mb} MB.")
    st.stop()

try:
    reviewer = get_reviewer(str(bundle.path))
except CxrError as exc:  # e.g. an unknown CXR_ENGINE or a damaged TensorFlow Lite member
    st.error(f"The models could not be loaded: {exc}")
    st.stop()
key = (bundle.bundle_id, filename, len(data), hash(data))
if st.session_state.get("review_key") != key:
    try:
        with st.spinner("Segmenting the lungs, running the models and computing heatmaps..."):
            review = reviewer.review_one(data, filename=filename)
    except CxrError as exc:
        st.error(f"This file cannot be reviewed: {exc}")
        st.stop()
    except Exception:  # never show a traceback to the user
        log.exception("unexpected error while reviewing %s", filename)
        st.error("Something went wrong while analysing this image. Please try another file.")
        st.stop()
    st.session_state.update(review_key=key, review=review, reports={}, image_bytes=data)
review = st.session_state["review"]

# --- input check: is this a frontal chest X-ray? (findings hidden unless shown anyway) --------
if not render_input_check(review):
    st.stop()

# --- overview --------------------------------------------------------------------------------
left, right = st.columns([2, 3])
with left:
    st.subheader("X-ray")
    import cv2

    height, width = review.image.original_size
    mask = cv2.resize(review.pre.mask.full.astype(np.uint8), (width, height),
                      interpolation=cv2.INTER_NEAREST)
    st.image(mask_outline(review.image.pixels, mask, review.pre.box_original, review.pre.fallback),
             caption="lung outline (cyan) and crop box (yellow)", width="stretch")
    if review.pre.fallback:
        st.warning(f"Lung segmentation fell back to the whole image ({review.pre.mask.reason}); "
                   "findings may be less reliable.", icon="⚠️")
with right:
    st.subheader("Findings")
    positives = int(review.findings.sum())
    st.markdown(f"**{positives}** positive finding(s) of {len(review.labels)} "
                f"(thresholds: {review.threshold_method}, chosen on validation).")
    st.dataframe(review.table(), hide_index=True, width="stretch",
                 column_config={"probability": st.column_config.ProgressColumn(
                     "probability", min_value=0.0, max_value=1.0, format="%.2f")})

# --- heatmaps --------------------------------------------------------------------------------
st.subheader("Heatmaps")
order = review.order(include_all=show_all)
if not order:
    st.info("No finding passes its threshold. Turn on 'Show all findings' to see every heatmap.")
for k in order:
    st.markdown(f"**{review.title(k)}**")
    panels = [("ensemble mean", review.heatmap_original(k))]
    if show_uncertainty:
        panels.append(("uncertainty (std)", review.heatmap_original(k, "std")))
    if show_members:
        panels += [(arch, review.heatmap_original(k, member=m)) for m, arch in enumerate(review.archs)]
    columns = st.columns(3)  # at most three panels a row, so one map never fills the page
    for i, (caption, heat) in enumerate(panels):
        with columns[i % len(columns)]:
            st.image(overlay(review.image.pixels, heat, alpha), caption=caption,
                     width="stretch")

# --- report ----------------------------------------------------------------------------------
st.subheader("Report")
report_key = (show_all, show_uncertainty, round(alpha, 2))
reports = st.session_state.setdefault("reports", {})
if report_key not in reports:
    with st.spinner("Preparing the report..."):
        options = dict(include_all=show_all, uncertainty=show_uncertainty, alpha=alpha)
        reports[report_key] = (report_png(review, **options), report_pdf(review, **options))
png, pdf = reports[report_key]
stem = Path(filename).stem if filename else "xray"
c1, c2 = st.columns(2)
c1.download_button("Download report (PNG)", png, file_name=f"{stem}_report.png", mime="image/png")
c2.download_button("Download report (PDF)", pdf, file_name=f"{stem}_report.pdf", mime="application/pdf")

# --- feedback --------------------------------------------------------------------------------
st.subheader("Expert feedback")
user = current_user_name()
with st.form("feedback"):
    shown = order if order else []
    decisions = {}
    for k in shown:
        label = review.labels[k]
        verdict = "present" if review.findings[k] else "absent"
        decisions[label] = st.radio(
            f"{label} (model: {verdict}, p={review.probs[k]:.2f})", ["agree", "disagree"],
            horizontal=True, key=f"decision_{k}")
    missing_options = [lab for k, lab in enumerate(review.labels)
                       if not review.findings[k] and lab not in decisions]
    added = st.multiselect("Findings the model missed", missing_options)
    comment = st.text_area("Comment", max_chars=2000)
    if user:
        st.caption(f"Reviewer: {user} (logged in)")
        name = user
    else:
        name = st.text_input("Reviewer name")
    submitted = st.form_submit_button("Submit feedback")
if submitted:
    try:
        row = feedback_store().submit(Submission(
            image_sha256=review.image.sha256, bundle_id=review.bundle_id,
            label_set=review.label_set, reviewer=name, labels=review.labels,
            probabilities=review.probs.tolist(), thresholds=review.thresholds.tolist(),
            model_positive=review.findings.tolist(), agreement=review.agreement.tolist(),
            decisions=decisions, added_labels=added, comment=comment,
            input_check=input_check_record(review),
        ), image_bytes=st.session_state.get("image_bytes"))
        st.success(f"Feedback saved (version {row['version']} for this reviewer and image). "
                   f"Final labels: {', '.join(row['expert_labels']) or 'none'}.")
    except CxrError as exc:
        st.error(str(exc))
