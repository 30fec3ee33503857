"""Browse expert reviews, agreement with the model and between experts, export for retraining."""

from __future__ import annotations

import streamlit as st

from cxr_core.base.errors import CxrError
from cxr_core.review.feedback import agreement_stats
from ui_common import feedback_store, load_bundle_or_stop

st.set_page_config(page_title="CXR Review: feedback", page_icon="📝", layout="wide")
st.title("Expert feedback")
bundle = load_bundle_or_stop()
try:
    store = feedback_store()
    frame = store.reviews_frame()
except CxrError as exc:
    st.error(str(exc))
    st.stop()

if frame.empty:
    st.info("No reviews yet. Submit one from the Review page.")
    st.stop()

c1, c2, c3 = st.columns(3)
reviewers = c1.multiselect("Reviewer", sorted(frame["reviewer"].unique()))
bundles = c2.multiselect("Bundle", sorted(frame["bundle_id"].unique()))
label = c3.selectbox("Expert label contains", ["(any)"] + bundle.labels)
view = frame
if reviewers:
    view = view[view["reviewer"].isin(reviewers)]
if bundles:
    view = view[view["bundle_id"].isin(bundles)]
if label != "(any)":
    view = view[view["expert_labels"].map(lambda v: label in v)]

shown = view[["created_at", "reviewer", "version", "bundle_id", "image_sha256", "model_labels",
              "expert_labels", "added_labels", "comment"]].copy()
for col in ("model_labels", "expert_labels", "added_labels"):
    shown[col] = shown[col].map(lambda v: ", ".join(v))
shown["image_sha256"] = shown["image_sha256"].str[:12]
st.caption(f"{len(view)} of {len(frame)} review rows (every revision is kept).")
st.dataframe(shown, hide_index=True, width="stretch")  # comments are shown as plain text

st.subheader("Agreement per label (latest version of each review)")
labels = bundle.labels
st.dataframe(agreement_stats(view, labels), hide_index=True, width="stretch")

st.subheader("Export for retraining")
export = store.export_for_retraining()
st.download_button("Download reviews (CSV)", export.to_csv(index=False).encode(),
                   file_name="cxr_review_feedback.csv", mime="text/csv")
