"""The active bundle's model card, and switching between the bundles found."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cxr_core.base.config import settings
from cxr_core.base.errors import CxrError
from ui_common import available_bundles, demo_banner, get_bundle, load_bundle_or_stop

st.set_page_config(page_title="CXR Review: models", page_icon="🧠", layout="wide")
st.title("Models")

found = available_bundles()
bundle = load_bundle_or_stop()
if found:
    names = [str(p) for p in found]
    current = str(bundle.path) if str(bundle.path) in names else names[0]
    choice = st.selectbox(f"Bundles in {settings().models_dir}", names, index=names.index(current))
    if choice != str(bundle.path):
        try:
            get_bundle(choice)
            st.session_state["bundle_path"] = choice
            st.rerun()
        except CxrError as exc:
            st.error(str(exc))

demo_banner(bundle)
m = bundle.manifest
st.subheader(m["bundle_id"])
c1, c2, c3, c4 = st.columns(4)
c1.metric("Findings", len(bundle.labels))
c2.metric("Models", len(bundle.archs))
c3.metric("Input size", f"{bundle.input_size} px")
c4.metric("Thresholds", m["threshold_method"])
st.markdown(f"**Label set:** {m['label_set']} | **Created:** {m['created']} | "
            f"**Members:** {', '.join(bundle.archs)} | **TensorFlow Lite members:** "
            f"{'yes (fast start)' if bundle.has_lite else 'no (python -m cxr_core compile-bundle adds them)'}")
if m.get("lineage"):
    st.markdown("**Lineage:** " + ", ".join(f"{k}: {v}" for k, v in m["lineage"].items()
                                            if not isinstance(v, dict)))

ens_t, _ = bundle.thresholds()
labels = pd.DataFrame({"label": bundle.labels,
                       "general group": [", ".join(bundle.groups[lab]) for lab in bundle.labels],
                       "threshold": ens_t.round(3)})
metrics = m.get("metrics", {}).get("per_label", {}).get("CTP")
if metrics:
    per = pd.DataFrame(metrics).set_index("label")
    labels["test AUC (CTP)"] = labels["label"].map(per["auc"]).round(3)
    labels["test positives"] = labels["label"].map(per["positives"])
st.dataframe(labels, hide_index=True, width="stretch")

with st.expander("Data"):
    st.json(m.get("data", {}))
with st.expander("Training configuration"):
    st.json(m.get("training", {}).get("config", {}))
with st.expander("Overall test metrics"):
    st.json(m.get("metrics", {}).get("overall", {}))
with st.expander("Preprocessing"):
    st.json(m.get("preprocessing", {}))
