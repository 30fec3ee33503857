"""Per-label metrics of the active bundle on its test split (from stored predictions only)."""

from __future__ import annotations

import streamlit as st

from cxr_core.modeling.plots import MetricsDisplay
from ui_common import demo_banner, load_bundle_or_stop

st.set_page_config(page_title="CXR Review: metrics", page_icon="📊", layout="wide")
st.title("Metrics on the test split")
bundle = load_bundle_or_stop()
demo_banner(bundle)


@st.cache_data(show_spinner=False)
def display_for(path: str, bundle_id: str, method: str) -> MetricsDisplay | None:
    from cxr_core.modeling.bundle import Bundle

    return MetricsDisplay.from_bundle(Bundle.load(path, verify=False), method)


method = st.sidebar.selectbox("Thresholds", list(bundle.manifest["thresholds"]),
                              index=list(bundle.manifest["thresholds"]).index(bundle.manifest["threshold_method"]))
display = display_for(str(bundle.path), bundle.bundle_id, method)
if display is None:
    st.info("This bundle has no stored test predictions yet: run `python -m cxr_core evaluate` on it.")
    st.stop()

overall = display.tables["overall"].set_index("model")
st.caption(f"{display.targets.shape[0]} test images, {len(display.labels)} labels, "
           f"{len(display.archs)} models. F1 (macro) averages the F1 of both classes per label, "
           "as the method reports; F1 (positive) is the positive class only.")
cols = st.columns(4)
ctp = overall.loc["CTP"]
cols[0].metric("AUC (macro, CTP)", f"{ctp['auc_macro']:.3f}")
cols[1].metric("F1 macro (CTP)", f"{ctp['f1_macro']:.3f}")
cols[2].metric("F1 positive (CTP)", f"{ctp['f1_positive_macro']:.3f}")
cols[3].metric("Hamming loss (CTP)", f"{ctp['hamming_loss']:.4f}")

st.subheader("Per-label bars")
c1, c2 = st.columns(2)
model = c1.selectbox("Model or ensemble", display.models, index=display.models.index("CTP"))
metric = c2.selectbox("Metric", ["auc", "f1_macro", "f1_positive", "precision", "recall"])
st.plotly_chart(display.bar_figure(model, metric), width="stretch")

st.subheader("Curves for one label")
label = st.selectbox("Label", display.labels)
c1, c2 = st.columns(2)
c1.plotly_chart(display.roc_figure(label), width="stretch")
c2.plotly_chart(display.pr_figure(label), width="stretch")

st.subheader("Members vs ensembles (method layout)")
table_metric = st.radio("Table metric", ["auc", "f1_macro", "f1_positive"], horizontal=True)
table = display.comparison(table_metric)
query = st.text_input("Filter labels")
if query:
    table = table[table["label"].str.contains(query, case=False, regex=False)]
sort_by = st.selectbox("Sort by", list(table.columns), index=1)
table = table.sort_values(sort_by, ascending=sort_by == "label")
st.dataframe(table, hide_index=True, width="stretch")
st.download_button("Download table (CSV)", table.to_csv(index=False).encode(),
                   file_name=f"{bundle.bundle_id}_{table_metric}.csv", mime="text/csv")

st.subheader("Overall")
st.dataframe(overall, width="stretch")

c1, c2 = st.columns(2)
c1.plotly_chart(display.prevalence_figure(), width="stretch")
ens_t, _ = bundle.thresholds(method)
import pandas as pd

c2.dataframe(pd.DataFrame({"label": bundle.labels, "threshold": ens_t.round(3)}),
             hide_index=True, width="stretch")
