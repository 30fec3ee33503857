"""Worklist: upload many X-rays (or zips of them), review them in the background, read them
most abnormal first in the viewer, send feedback and download results (DICOM for DICOM input).

This page only lays out the UI; everything it shows comes from `cxr_core`.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

import numpy as np
import streamlit as st

from cxr_core.base.errors import CxrError
from cxr_core.explain.report import (
    ReportOptions,
    no_finding_message,
    report_name,
    report_pages,
    report_pdf,
    report_png,
)
from cxr_core.review.dicom_out import dicom_results
from cxr_core.review.worklist import CRITICAL_WEIGHT, OPENABLE
from ui.common import (
    demo_banner,
    feedback_form,
    get_reviewer,
    load_bundle_or_stop,
    normal_warning,
    reader_name,
    session_worklist,
)
from ui.input_check import render_input_check
from ui.shortcuts import keyboard_shortcuts
from ui.reading import at_point, chosen_point, reading_caption
from ui.pacs import node_queue_panel, pacs_source, pacs_store_buttons
from ui.uploads import ARCHIVE_TYPES, IMAGE_TYPES, too_large, upload_limit_mb
from ui.viewer import show_viewer

log = logging.getLogger("cxr_app")
BATCH_SIZE = 4

st.set_page_config(page_title="Worklist · CXR Review", page_icon="🩻", layout="wide")
st.title("Worklist")
bundle = load_bundle_or_stop()
demo_banner(bundle)
limit = upload_limit_mb()
worklist = session_worklist()

# --- input -----------------------------------------------------------------------------------
uploads = st.file_uploader(
    "X-rays (PNG, JPEG, DICOM) or zip archives of them", type=IMAGE_TYPES + ARCHIVE_TYPES,
    accept_multiple_files=True, key="worklist_upload", max_upload_size=limit,
    help=f"Up to {limit} MB a file; a zip may hold folders of images.")
new, refused = [], []
for upload in uploads or []:
    if upload.file_id in worklist.uploads_seen:
        continue
    worklist.uploads_seen.add(upload.file_id)
    sentence = too_large(upload.size, limit)
    if sentence and not upload.name.lower().endswith(".zip"):
        refused.append((upload.name, sentence))
        continue
    new.append((upload.name, upload.getvalue()))
if new or refused:
    worklist.add(new, refused)
pacs_source(worklist)  # "From PACS" (DICOMweb), when a server is configured
node_queue_panel()  # the DICOM node's queue, when a node keeps one here
if worklist.counts["queued"] and not worklist.running:
    try:
        worklist.start(get_reviewer(str(bundle.path)), batch_size=BATCH_SIZE)
    except CxrError as exc:  # e.g. an unknown CXR_ENGINE or a damaged TensorFlow Lite member
        st.error(f"The models could not be loaded: {exc}")
        st.stop()

if not worklist.items:
    st.info("Upload X-rays (or a zip of them) to start a worklist. They are reviewed in the "
            "background and listed most abnormal first.")
    st.stop()


@st.fragment(run_every=1.0 if worklist.running else None)
def progress() -> None:
    """Progress of the background review; the whole page refreshes when a batch lands."""
    counts = worklist.counts
    done = counts["ready"] + counts["refused"] + counts["failed"]
    if counts["queued"]:
        st.progress(done / max(counts["total"], 1),
                    text=f"Reviewing: {done} of {counts['total']} done ({counts['failed']} failed)")
    else:
        st.caption(f"{counts['ready']} analysed, {counts['refused']} refused by the input check, "
                   f"{counts['failed']} failed, "
                   f"{int((worklist.table()['read'] == 'reported').sum())} reported by a reader "
                   f"(feedback sent), {int((worklist.table()['read'] == 'seen').sum())} seen without "
                   f"a report.")
    if (done, counts["total"]) != st.session_state.get("worklist_progress_seen"):
        st.session_state["worklist_progress_seen"] = (done, counts["total"])
        if st.session_state.get("worklist_progress_shown"):
            st.rerun()
    st.session_state["worklist_progress_shown"] = True


progress()

# --- the list --------------------------------------------------------------------------------
# every study read where the Review page reads it (the sidebar's operating point, calibrated
# when the bundle can): the same probabilities, calls and no-finding sentence on both pages
point = chosen_point(bundle)
worklist.read_at(bundle, point)
table = worklist.table()
ready_names = table.loc[table["status"].isin(OPENABLE), "file"].tolist()
if worklist.current not in ready_names:
    worklist.current = ready_names[0] if ready_names else None


# the table's key follows the open study, so that a click selects a row only until another
# study opens ("next", the picker); the open study is marked in its own column instead
table_key = f"worklist_table_{ready_names.index(worklist.current) if worklist.current else 'none'}"


def open_from_table() -> None:
    rows = st.session_state[table_key].selection.rows
    if rows and table.iloc[rows[0]]["status"] in OPENABLE:
        worklist.current = table.iloc[rows[0]]["file"]


def open_from_picker() -> None:
    worklist.current = st.session_state["worklist_open"]


def next_study() -> None:
    if worklist.current:
        worklist.mark_seen(worklist.current)  # moving on is not a report
    following = worklist.next_name(worklist.current)
    if following:
        worklist.current = following


score_help = ("the largest margin of a finding over its threshold (0 to 1 above it, counted "
              f"{CRITICAL_WEIGHT}x for a critical finding; below 0 when nothing passes); "
              "'normal' is left out")
shown = table.copy()
shown.insert(0, "open", np.where(shown["file"] == worklist.current, "▶", ""))
st.dataframe(
    shown, hide_index=True, width="stretch", key=table_key, on_select=open_from_table,
    selection_mode="single-row", placeholder="–",  # a failed file has no triage score
    column_config={"open": st.column_config.TextColumn("open", width=50, help="the study shown below"),
                   "file": st.column_config.TextColumn("file", width="medium"),
                   "status": st.column_config.TextColumn("status", width=70),
                   "top findings": st.column_config.TextColumn("top findings", width="medium"),
                   "triage score": st.column_config.NumberColumn("triage score", format="%.3f",
                                                                 width=95, help=score_help),
                   "why": st.column_config.TextColumn(
                       "why", width="medium", help="the finding that sets the study's place in the list"),
                   "segmentation fallback": st.column_config.CheckboxColumn(
                       "segmentation fallback", width=160,
                       help="the lung segmentation failed and the whole image was used"),
                   "read": st.column_config.TextColumn(
                       "read", width=80, help="reported: feedback sent; seen: moved past with "
                       "'Reviewed, next' without a report")})
caption = (f"Strongest finding that matters first. Triage score: {score_help}. Click a row to "
           "open the study.")
if worklist.duplicates:
    caption += (f" {len(worklist.duplicates)} file(s) skipped: the same image is already listed "
                f"({', '.join(worklist.duplicates[:3])}{'...' if len(worklist.duplicates) > 3 else ''}).")
st.caption(caption)

if worklist.current is None:
    st.info("No study is ready yet.")
    st.stop()

# --- the open study ----------------------------------------------------------------------------
st.session_state["worklist_open"] = worklist.current
pick_col, next_col, keys_col = st.columns([4, 1, 1])
pick_col.selectbox("Open study", ready_names, key="worklist_open", on_change=open_from_picker)
with keys_col:
    keyboard_shortcuts()
next_col.button("Reviewed, next ▶", on_click=next_study, width="stretch",
                help="mark this study as seen (a report needs the feedback below) and open the "
                     "next one down the list")
item = worklist.item(worklist.current)
review = item.review
st.subheader(PurePosixPath(item.name).name)
if not item.owns(review):  # never draw one file's findings under another file's name
    st.info("Still working on this study: the page updates when its review is ready.")
    st.stop()
st.caption(f"SHA-256 `{review.image.sha256[:12]}` (the image these findings were computed from)")
if not render_input_check(review):  # refused: its sentence, no findings unless shown anyway
    st.stop()
review = at_point(review, point)  # the reader's operating point (sidebar), as on the Review page
normal_warning(review)
if no_finding_message(review):
    st.info(no_finding_message(review))
reading_caption(review)
show_viewer(review, key="worklist_viewer")

results_col, feedback_col = st.columns([2, 3])
with results_col:
    st.markdown("**Results**")
    reports = st.session_state.setdefault("worklist_reports", {})
    if st.button("Prepare report" + (" and DICOM results" if review.image.dicom_ref else ""),
                 key="worklist_prepare"):
        with st.spinner("Preparing the report..."):
            options = ReportOptions(reader=reader_name())
            pages = report_pages(review, options)
            png = report_png(review, pages=pages)
            files = {"png": png, "pdf": report_pdf(review, options)}
            if review.image.dicom_ref is not None:
                try:
                    results = dicom_results(review, pages)  # no SC for a refused image
                    files.update(sr=results.sr, **({"sc": results.sc} if results.sc else {}))
                except CxrError as exc:
                    st.error(str(exc))
            reports[item.name] = files
    files = reports.get(item.name, {})
    # downloads are named by the image hash, never by the uploaded file name (which may name
    # the patient)
    if files:
        st.download_button("Report (PNG)", files["png"], file_name=report_name(review, "png"),
                           mime="image/png")
        st.download_button("Report (PDF)", files["pdf"], file_name=report_name(review, "pdf"),
                           mime="application/pdf")
    if "sr" in files:
        st.download_button("Findings (DICOM SR)", files["sr"],
                           file_name=f"cxr_findings_sr_{review.image.sha256[:12]}.dcm",
                           mime="application/dicom")
    if "sc" in files:
        st.download_button("Report (DICOM Secondary Capture)", files["sc"],
                           file_name=f"cxr_report_sc_{review.image.sha256[:12]}.dcm",
                           mime="application/dicom")
    pacs_store_buttons(worklist, item)  # studies retrieved from the PACS: results back by STOW-RS
with feedback_col:
    st.markdown("**Expert feedback**")
    if feedback_form(review, item.data, key=f"worklist_feedback_{review.image.sha256[:12]}"):
        worklist.mark_reported(item.name)
