"""Browse expert reviews, agreement with the model and between experts, export them as CSV."""

from __future__ import annotations

import streamlit as st

from cxr_core.base.errors import CxrError
from cxr_core.review.feedback_table import (
    agreement_table,
    export_frame,
    mark_latest,
    review_rows,
    thumbnail_data_url,
)
from ui.common import demo_banner, feedback_store, load_bundle_or_stop

st.set_page_config(page_title="CXR Review: feedback", page_icon="📝", layout="wide")
st.title("Expert feedback")
bundle = load_bundle_or_stop()
demo_banner(bundle)
try:
    store = feedback_store()
    frame = store.reviews_frame()
except CxrError as exc:
    st.error(str(exc))
    st.stop()

if frame.empty:
    st.info("No reviews yet. Submit one from the Review page.")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=2000)
def thumbnail(path: str) -> str | None:
    from pathlib import Path

    return thumbnail_data_url(Path(path))


latest = mark_latest(frame)  # on every row, so a filter never makes an old version "latest"
c1, c2, c3, c4 = st.columns(4)
reviewers = c1.multiselect("Reviewer", sorted(frame["reviewer"].unique()))
bundles = c2.multiselect("Model", sorted(frame["bundle_id"].unique()))
label = c3.selectbox("Expert findings include", ["(any)"] + bundle.labels)
only_latest = c4.toggle("Latest version only", value=False,
                        help="each reviewer's last answer per image; earlier versions are kept")
view = frame
if reviewers:
    view = view[view["reviewer"].isin(reviewers)]
if bundles:
    view = view[view["bundle_id"].isin(bundles)]
if label != "(any)":
    view = view[view["expert_labels"].map(lambda v: label in v)]
if only_latest:
    view = view[latest.loc[view.index]]

thumbs = {}
for sha in view.loc[view["image_stored"].astype(bool), "image_sha256"].unique():
    path = store.image_path(sha)
    url = thumbnail(str(path)) if path is not None else None
    if url:
        thumbs[sha] = url
st.caption(f"Showing {len(view)} of {len(frame)} review rows (every revision is kept).")
rows = review_rows(view, latest, thumbs)
# every column wide enough for its text (the table scrolls sideways instead of cutting it)
widths = {column: min(max(int(rows[column].astype(str).str.len().max() * 7.5),
                          len(column) * 8) + 24, 900)
          for column in rows.columns if column != "Image"}
st.dataframe(rows, hide_index=True, width="stretch", row_height=64 if thumbs else None,
             column_config={"Image": st.column_config.ImageColumn("Image", width=70),
                            **{c: st.column_config.Column(c, width=w) for c, w in widths.items()}})

st.subheader("Agreement per finding")
scope = st.radio("Computed on", ["all reviews", "the filtered reviews"], horizontal=True,
                 help="always the latest version of each reviewer's answer per image")
basis = frame if scope == "all reviews" else view
st.caption(f"Agreement on {'all' if basis is frame else 'the filtered'} reviews, computed on "
           f"{int(mark_latest(basis).sum())} answer(s): each reviewer's latest version per image, "
           f"out of {len(basis)} review row(s).")
st.dataframe(agreement_table(basis, bundle.labels), hide_index=True, width="stretch")

st.subheader("Export")
export = export_frame(view, latest)
st.download_button(f"Download the {len(view)} shown rows (CSV)", export.to_csv(index=False).encode(),
                   file_name="cxr_review_feedback.csv", mime="text/csv",
                   help="with decisions, probabilities, comments and a 'latest' column")
