"""The active bundle's model card, its lineage, and switching between the bundles found."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from cxr_core.base.config import settings
from cxr_core.base.errors import CxrError
from cxr_core.evaluation.compare import lineage_chain
from cxr_core.evaluation.model_card import render_model_card
from cxr_core.modeling.bundle import Bundle
from ui.common import available_bundles, demo_banner, get_bundle, load_bundle_or_stop

st.set_page_config(page_title="CXR Review: models", page_icon="🧠", layout="wide")
st.title("Models")

PICKER = "models_bundle_picker"


def bundle_names(paths: list[Path]) -> dict[str, Path]:
    """A display name per bundle folder: its id (the folder too when ids repeat, or when the
    manifest cannot be read)."""
    models_dir = settings().models_dir
    ids = {}
    for path in (p.resolve() for p in paths):
        try:
            ids[path] = Bundle.load(path, verify=False).bundle_id
        except CxrError:
            ids[path] = None
    names = {}
    for path, bundle_id in ids.items():
        try:
            folder = str(path.relative_to(models_dir))
        except ValueError:
            folder = path.name
        if bundle_id is None:
            names[f"{folder} (unreadable manifest)"] = path
        elif list(ids.values()).count(bundle_id) > 1:
            names[f"{bundle_id} ({folder})"] = path
        else:
            names[bundle_id] = path
    return names


def switch_bundle(names: dict[str, Path], current: str) -> None:
    """Picker callback: load the chosen bundle; on failure keep the active one selected."""
    choice = st.session_state[PICKER]
    try:
        get_bundle(str(names[choice]))
    except CxrError as exc:
        st.session_state["models_switch_error"] = (f"Could not switch to {choice}: {exc} "
                                                   f"Still using {current}.")
        st.session_state[PICKER] = current
    else:
        st.session_state["bundle_path"] = str(names[choice])
        st.session_state.pop("models_switch_error", None)


found = available_bundles()
bundle = load_bundle_or_stop()
if found:
    names = bundle_names(found)
    active = bundle.path.resolve()
    if active not in names.values():
        names = {f"{bundle.bundle_id} (active)": active, **names}
    current = next(name for name, path in names.items() if path == active)
    if st.session_state.get(PICKER) not in names or names[st.session_state[PICKER]] != active:
        st.session_state[PICKER] = current  # the picker always shows the bundle in use
    st.selectbox(f"Bundles in {settings().models_dir}", list(names), key=PICKER,
                 on_change=switch_bundle, args=(names, current))
    if st.session_state.get("models_switch_error"):
        st.error(st.session_state["models_switch_error"])

demo_banner(bundle)
st.subheader(bundle.bundle_id)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Findings", len(bundle.labels))
c2.metric("Models", len(bundle.archs))
c3.metric("Input size", f"{bundle.input_size} px")
c4.metric("Thresholds", bundle.threshold_method)
st.markdown(f"**Label set:** {bundle.label_set} | **Created:** {bundle.created} | "
            f"**Members:** {', '.join(bundle.archs)} | **TensorFlow Lite members:** "
            f"{'yes (fast start)' if bundle.has_lite else 'no (python -m cxr_core compile-bundle adds them)'}")

known = []
for path in found:
    try:
        known.append(get_bundle(str(path)))
    except CxrError:
        continue
chain = lineage_chain(bundle, known)
st.markdown("**Lineage:** " + " → ".join(
    f"**{c['bundle_id']}**" if c["bundle_id"] == bundle.bundle_id
    else f"`{c['bundle_id']}`" + ("" if c["found"] else " (not on disk)") for c in chain))
for step in chain[1:]:
    if step["step"]:
        st.caption(f"{step['bundle_id']}: {step['step']}")

ens_t, _ = bundle.thresholds()
labels = pd.DataFrame({"label": bundle.labels,
                       "general group": [", ".join(bundle.groups[lab]) for lab in bundle.labels],
                       "threshold": ens_t.astype(float)})
metrics = bundle.metrics.get("per_label", {}).get("CTP")
if metrics:
    per = pd.DataFrame(metrics).set_index("label")
    labels["test AUC (CTP)"] = labels["label"].map(per["auc"]).astype(float)
    labels["test positives"] = labels["label"].map(per["positives"])
    if "auc_low" in per.columns:
        labels["AUC low"] = labels["label"].map(per["auc_low"]).astype(float)
        labels["AUC high"] = labels["label"].map(per["auc_high"]).astype(float)
st.dataframe(labels, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                            for c in labels.columns if labels[c].dtype.kind == "f"})

threshold_methods = pd.DataFrame([
    {"method": name, "calibration": entry.get("calibration") or "none",
     "source": entry.get("source", "validation split"), "default": name == bundle.threshold_method}
    for name, entry in ((n, bundle.threshold_entry(n)) for n in bundle.threshold_methods)])
with st.expander(f"Threshold methods ({len(threshold_methods)})"):
    st.dataframe(threshold_methods, hide_index=True, width="stretch")

card_path = bundle.path / "MODEL_CARD.md"
with st.expander("Model card", expanded=True):
    st.markdown(card_path.read_text() if card_path.is_file() else render_model_card(bundle))
    if not card_path.is_file():
        st.caption("Rendered from the manifest (the bundle has no MODEL_CARD.md).")
