"""The active bundle on its test split (stored predictions only): per-label metrics with
bootstrap intervals, calibration, operating points, comparison with another bundle and with the
published method."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cxr_core.base.errors import CxrError
from cxr_core.evaluation.bootstrap import DEFAULT_RESAMPLES
from cxr_core.evaluation.plots import MetricsDisplay, readable
from cxr_core.modeling.bundle import Bundle
from ui.common import available_bundles, demo_banner, get_bundle, load_bundle_or_stop
from ui.glossary import explain, threshold_words

st.set_page_config(page_title="CXR Review: metrics", page_icon="📊", layout="wide")
st.title("Metrics on the test split")
bundle = load_bundle_or_stop()
demo_banner(bundle)


@st.cache_data(show_spinner="Computing metrics and bootstrap intervals...")
def display_for(path: str, stamp: float, method: str, n_resamples: int, seed: int) -> MetricsDisplay | None:
    return MetricsDisplay.from_bundle(Bundle.load(path, verify=False), method, n_resamples, seed)


def manifest_stamp(path) -> float:
    """Changes whenever the manifest is rewritten (a saved threshold method, a calibration)."""
    return Bundle.stamp(path)


def show_table(frame: pd.DataFrame, **kwargs) -> None:
    """A table with readable headers, three decimals, the label column pinned (numbers stay
    visible in a narrow window: the table scrolls sideways instead of squeezing them)."""
    config = {}
    for column in frame.columns:
        name = readable(str(column))
        words = str(column).lower()
        term = next((t for t in ("ECE", "Brier", "CTP", "PTC") if t.lower() in words), None)
        help_text = explain(term) if term else None  # a term's one line, as a header tooltip
        if column == frame.columns[0]:
            config[column] = st.column_config.TextColumn(name, pinned=True, width="medium")
        elif pd.api.types.is_float_dtype(frame[column]):
            config[column] = st.column_config.NumberColumn(name, format="%.3f", help=help_text)
        elif pd.api.types.is_integer_dtype(frame[column]):
            config[column] = st.column_config.NumberColumn(name, format="%d", width="small")
        else:
            config[column] = st.column_config.TextColumn(name, help=help_text)
    st.dataframe(frame, hide_index=True, column_config=config, width="stretch", placeholder="–", **kwargs)


def changed_bundle(message: str) -> None:
    """After writing into the bundle: reload it everywhere and say what happened."""
    get_bundle.clear()
    try:
        from ui.common import get_reviewer

        get_reviewer.clear()
    except ImportError:  # the review pipeline is optional for this page
        pass
    st.session_state["metrics_message"] = message
    st.rerun()


methods = bundle.threshold_methods
method = st.sidebar.selectbox("Thresholds", methods, index=methods.index(bundle.threshold_method),
                              help="Threshold methods stored in the bundle: chosen on validation "
                                   "(f1, youden, fixed), on calibrated probabilities (+temperature, "
                                   "+isotonic) or saved from the operating-point view.")
n_resamples = int(st.sidebar.number_input("Bootstrap resamples", 100, 10000, DEFAULT_RESAMPLES, step=100))
seed = int(st.sidebar.number_input("Bootstrap seed", 0, 2**31 - 1, 0))
try:
    display = display_for(str(bundle.path), manifest_stamp(bundle.path), method, n_resamples, seed)
except CxrError as exc:  # thresholds chosen on the test split: no test figures with them
    st.error(str(exc))
    st.stop()
if display is None:
    st.info("This bundle has no stored test predictions yet: run `python -m cxr_core evaluate` on it.")
    st.stop()
if st.session_state.get("metrics_message"):
    st.success(st.session_state.pop("metrics_message"))
if display.chosen_on == "unknown":
    st.warning(f"Threshold method `{method}` does not record the split it was chosen on; if it was "
               "tuned on the test split, the F1 figures below are optimistic.")

overall = display.tables["overall"].set_index("model")
r = display.resampling
st.caption(f"{display.targets.shape[0]} test images, {len(display.labels)} labels, {len(display.archs)} "
           f"model{'s' if len(display.archs) != 1 else ''}; thresholds `{method}`"
           + (f" on `{display.calibration}`-calibrated probabilities" if display.calibration else "")
           + (f", chosen on the {display.chosen_on} split" if display.chosen_on != "unknown" else
              ", chosen on an unrecorded split (the bundle predates that record)")
           + f". Intervals: 95% percentile bootstrap over {r.get('units')} {r.get('unit')}s, "
           f"{r.get('resamples')} resamples, seed {r.get('seed')}; labels with fewer than "
           f"{r.get('min_class_count')} positives or negatives get none. F1 (macro) averages the F1 of "
           "both classes per label, as the method reports; F1 (positive) is the positive class only.")


def interval_text(row, column: str) -> str:
    low, high = row.get(f"{column}_low", np.nan), row.get(f"{column}_high", np.nan)
    return f"95% interval {low:.3f} to {high:.3f}" if pd.notna(low) and pd.notna(high) else "no interval"


cols = st.columns(4)
ctp = overall.loc["CTP"]
for col, (name, column) in zip(cols, [("AUC (macro, CTP)", "auc_macro"), ("F1 macro (CTP)", "f1_macro"),
                                      ("F1 positive (CTP)", "f1_positive_macro")]):
    col.metric(name, f"{ctp[column]:.3f}", help=explain("CTP"))
    col.caption(interval_text(ctp, column))
cols[3].metric("Hamming loss (CTP)", f"{ctp['hamming_loss']:.3f}",
               help=f"{explain('Hamming loss')} {explain('CTP')}")
st.caption(f"{threshold_words(method).capitalize()}. {explain('CTP')} {explain('PTC')} "
           f"{explain('Hamming loss')}")

tab_labels, tab_calibration, tab_points, tab_compare, tab_paper = st.tabs(
    ["Per label", "Calibration", "Operating points", "Compare bundles", "Published method"])

# --- per label ----------------------------------------------------------------------------------
with tab_labels:
    st.subheader("Members vs ensembles (method layout)")
    table_metric = st.radio("Table metric", ["auc", "f1_macro", "f1_positive"], horizontal=True,
                            format_func=readable)
    table = display.comparison(table_metric)
    query = st.text_input("Filter labels")
    if query:
        table = table[table["label"].str.contains(query, case=False, regex=False)]
    sort_by = st.selectbox("Sort by", list(table.columns), index=0, format_func=readable)
    table = table.sort_values(sort_by, ascending=sort_by == "label")
    show_table(table)
    st.download_button("Download table (CSV)", table.to_csv(index=False).encode(),
                       file_name=f"{bundle.bundle_id}_{table_metric}.csv", mime="text/csv")

    st.subheader("Per-label bars with 95% intervals")
    c1, c2 = st.columns(2)
    model = c1.selectbox("Model or ensemble", display.models, index=display.models.index("CTP"))
    metric = c2.selectbox("Metric", ["auc", "f1_macro", "f1_positive", "precision", "recall"],
                          format_func=readable)
    st.plotly_chart(display.bar_figure(model, metric), width="stretch")

    st.subheader("Curves for one label")
    label = st.selectbox("Label", display.labels)
    c1, c2 = st.columns(2)
    c1.plotly_chart(display.roc_figure(label), width="stretch")
    c2.plotly_chart(display.pr_figure(label), width="stretch")

    st.subheader("Overall")
    show_table(overall.reset_index())
    st.plotly_chart(display.prevalence_figure(), width="stretch")
    ens_t, _ = bundle.thresholds(method)
    per = display.tables["CTP"]
    show_table(pd.DataFrame({"label": display.labels, "images": per["images"], "positives": per["positives"],
                             "threshold": np.asarray(ens_t, float)}))

# --- calibration ----------------------------------------------------------------------------------
with tab_calibration:
    st.markdown("Are the probabilities calibrated? A perfectly calibrated model's points lie on the "
                "diagonal: of the cases given p = 0.3, 30% are positive. ECE is the count-weighted gap "
                "between the points and the diagonal (10 equal-width bins); Brier is the mean squared "
                "error of the probability. PTC ensembles vote and have no probability of their own.")
    show_table(display.calibration_summary())
    c1, c2 = st.columns(2)
    c1.plotly_chart(display.reliability_figure(), width="stretch")
    cal_label = c2.selectbox("Label for the reliability diagram", display.labels, key="cal_label")
    c2.plotly_chart(display.reliability_figure(cal_label), width="stretch")
    cal_model = st.selectbox("Per-label ECE and Brier of", display.probabilistic_models, key="cal_model")
    show_table(display.calibration_by_label(cal_model))
    fitted = list(bundle.calibrations)
    st.markdown(f"**Post-hoc calibration stored in this bundle:** {', '.join(fitted) or 'none'}. "
                "Fitted per member and label on the validation split; it adds threshold methods "
                "`<method>+temperature` / `+isotonic`, chosen again on the calibrated probabilities "
                "(pick one in the sidebar to evaluate it on test, or make it the bundle's default).")
    from cxr_core.evaluation.recalibration import VAL_PREDICTIONS

    if (bundle.path / VAL_PREDICTIONS).is_file():
        c1, c2, c3 = st.columns([2, 2, 1])
        cal_method = c1.selectbox("Fit a calibration", ["temperature", "isotonic"], key="cal_fit")
        make_default = c2.checkbox("Make it the bundle's default", key="cal_default")
        if c3.button("Fit and store"):
            from cxr_core.evaluation.recalibration import calibrate_bundle

            try:
                summary = calibrate_bundle(bundle.path, cal_method, make_default=make_default)
            except CxrError as exc:
                st.error(str(exc))
            else:
                changed_bundle(f"{cal_method} calibration stored; validation ECE (CTP) "
                               f"{summary['val_ece_ctp_before']:.3f} -> {summary['val_ece_ctp_after']:.3f}; "
                               f"threshold methods added: {', '.join(summary['threshold_methods_added'])}.")
    else:
        st.caption("No stored validation predictions: fit one with `python -m cxr_core evaluate "
                   "--calibrate temperature --bundle ... --data ... --split ...`.")

# --- operating points -------------------------------------------------------------------------------
with tab_points:
    st.markdown("Move one label's threshold along its ROC curve (CTP ensemble) on the **validation** "
                "split and read what it means at the validation prevalence (or a prevalence you set). "
                "Thresholds you set here are kept per label; save the set as a named threshold method "
                "of the bundle (recorded as chosen on validation), which the Review page then uses "
                "when it is the default. The test split is never used to choose them.")
    from cxr_core.evaluation.operating_points import operating_data

    try:
        op_data = operating_data(bundle, method)
    except CxrError as exc:
        st.info(str(exc))
        op_data = None
    if op_data is not None:
        ens_t, _ = bundle.thresholds(method)
        key = f"op::{bundle.bundle_id}::{method}"
        chosen = st.session_state.setdefault(key, {lab: float(t) for lab, t in zip(display.labels, ens_t)})
        c1, c2 = st.columns(2)
        op_label = c1.selectbox("Label", display.labels, key="op_label")
        k = display.labels.index(op_label)
        known = np.isfinite(op_data["targets"][:, k])  # images whose source annotates the label
        y = op_data["targets"][known, k].astype(bool)
        scores = op_data["scores"][known, k]
        prevalence = c2.number_input("Prevalence for PPV/NPV", 0.0001, 0.9999, float(max(y.mean(), 1e-4)),
                                     format="%.4f", key=f"op_prev_{op_label}")
        threshold = st.slider(f"Threshold for {op_label}", 0.0, 1.0, float(chosen[op_label]), step=0.001,
                              format="%.3f", key=f"op_slider_{key}_{op_label}")
        chosen[op_label] = float(threshold)
        from cxr_core.evaluation.operating_points import operating_curve, rates_at, save_threshold_method
        from cxr_core.evaluation.plots import operating_figure

        rates = rates_at(y, scores, threshold, prevalence)
        cols = st.columns(4)
        for col, name in zip(cols, ("sensitivity", "specificity", "ppv", "npv")):
            value = rates[name]
            col.metric(name.upper() if len(name) == 3 else name.capitalize(),
                       "n/a" if np.isnan(value) else f"{value:.3f}")
        st.caption(f"At {threshold:.3f}: {rates['tp']} true positives, {rates['fp']} false positives, "
                   f"{rates['fn']} false negatives, {rates['tn']} true negatives of {len(y)} validation images; "
                   f"the method `{method}` uses {ens_t[k]:.3f}.")
        c1, c2 = st.columns(2)
        point = (rates["fp"] / max(1, (~y).sum()), rates["tp"] / max(1, y.sum()))
        validation = MetricsDisplay(display.labels, display.archs, op_data["targets"],
                                    op_data["member_probs"], {})
        c1.plotly_chart(validation.roc_figure(op_label, ["CTP"], point=point), width="stretch")
        curve = operating_curve(y, scores, prevalence)
        if not curve.empty:
            c2.plotly_chart(operating_figure(curve, threshold), width="stretch")
        # one column for the stored thresholds, and one more only for labels moved here
        stored = np.asarray(ens_t, float)
        moved = np.array([chosen[lab] for lab in display.labels], float)
        chosen_frame = pd.DataFrame({"label": display.labels, f"stored ({method})": stored})
        if not np.allclose(moved, stored):
            chosen_frame["chosen here"] = np.where(np.isclose(moved, stored), np.nan, moved)
        show_table(chosen_frame)
        st.caption(threshold_words(method).capitalize() + "; 'chosen here' (when shown) is the "
                   "threshold you moved on this page, not yet saved.")
        with st.form("save_thresholds"):
            name = st.text_input("Save these thresholds as", placeholder="e.g. high-sensitivity")
            default = st.checkbox("Make it the bundle's default threshold method (the Review page uses it)")
            if st.form_submit_button("Save threshold method"):
                try:
                    save_threshold_method(bundle.path, name, [chosen[lab] for lab in display.labels],
                                          make_default=default, note="saved from the Metrics page",
                                          chosen_on="validation")
                except CxrError as exc:
                    st.error(str(exc))
                else:
                    changed_bundle(f"Threshold method '{name.strip()}' saved in {bundle.bundle_id}"
                                   + (" and made the default." if default else "."))

# --- compare ----------------------------------------------------------------------------------------
with tab_compare:
    from cxr_core.evaluation.compare import compare_bundles, lineage_chain
    from cxr_core.evaluation.plots import comparison_figure

    others = []
    for path in available_bundles():
        try:
            other = get_bundle(str(path))
        except CxrError:
            continue
        if other.bundle_id != bundle.bundle_id and (other.path / "test_predictions.npz").is_file():
            others.append(other)
    chain = lineage_chain(bundle, [*others, bundle])
    st.markdown("**Lineage:** " + " → ".join(
        f"`{c['bundle_id']}`" + ("" if c["found"] else " (not found)") for c in chain))
    if not others:
        st.info("No other evaluated bundle found: evaluate a second one (for example a `retrain` "
                "child) to compare it with this one.")
    else:
        parent = bundle.lineage.get("parent_bundle_id")
        ids = [o.bundle_id for o in others]
        a_id = st.selectbox("Compare this bundle (B) with (A)", ids,
                            index=ids.index(parent) if parent in ids else 0)
        a = others[ids.index(a_id)]
        shared_models = ["CTP", *[m for m in bundle.archs if m in a.archs]]
        cmp_model = st.selectbox("Model", shared_models, key="cmp_model")

        @st.cache_data(show_spinner="Paired bootstrap...")
        def comparison_for(a_path: str, b_path: str, stamps: tuple, model: str, n: int, s: int):
            return compare_bundles(Bundle.load(a_path, verify=False), Bundle.load(b_path, verify=False),
                                   model, n, s)

        try:
            result = comparison_for(str(a.path), str(bundle.path),
                                    (manifest_stamp(a.path), manifest_stamp(bundle.path)),
                                    cmp_model, n_resamples, seed)
        except CxrError as exc:
            st.error(str(exc))
        else:
            st.markdown(result.summary())
            st.plotly_chart(comparison_figure(result.table, result.a_id, result.b_id), width="stretch")
            show_table(result.table.rename(columns={"auc_a": "AUC A", "auc_b": "AUC B",
                                                    "difference": "B - A", "low": "B - A low",
                                                    "high": "B - A high", "verdict": "Verdict"}))

# --- published method -------------------------------------------------------------------------------
with tab_paper:
    from cxr_core.evaluation.paper import CITATION, PAPER_MODELS, side_by_side, unmatched_paper_labels
    from cxr_core.evaluation.plots import paper_figure

    label_set = bundle.label_set
    paper_models = [m for m in display.models if m in PAPER_MODELS]
    sides = side_by_side(display.tables["CTP"], label_set, "CTP") if paper_models else None
    if sides is None or (sides["paper_label"] == "").all():
        st.info(f"The published per-label results are for PadChest's 'specific' and 'general' label "
                f"sets; this bundle's label set is '{label_set}' and none of its labels matches one. "
                f"Source: {CITATION}")
    else:
        paper_model = st.selectbox("Model", paper_models, index=paper_models.index("CTP"), key="paper_model")
        sides = side_by_side(display.tables[paper_model], label_set, paper_model)
        c1, c2 = st.columns(2)
        c1.plotly_chart(paper_figure(sides, "auc", paper_model), width="stretch")
        c2.plotly_chart(paper_figure(sides, "f1", paper_model), width="stretch")
        show_table(sides)
        missing = unmatched_paper_labels(display.labels, label_set)
        if missing:
            st.caption("Published labels without a match here: " + ", ".join(missing))
        st.caption(f"Published figures: {CITATION} Read from an OCR text of the paper; cells marked "
                   "uncertain in the transcription are flagged in the `uncertain` columns. F1 is the "
                   "macro F1 over both classes, as the paper reports it. Labels matched by normalised name.")

# --- localisation (only when the bundle carries `localise` results) -------------------------------
from cxr_core.evaluation.localisation import MEASURE_NAMES, SOURCE_NAMES
from cxr_core.review.localise import stored_localisation

try:
    localisation = stored_localisation(bundle)
except CxrError as exc:
    st.error(str(exc))
    localisation = None
if localisation:
    entry = localisation["entry"]
    st.header("Do the maps point at the findings?")
    st.caption(f"`localise` on {entry.get('boxes')} radiologist boxes ({entry.get('images')} X-rays, "
               f"{entry.get('patients')} patients): the maps as the Review page shows them, never masked, "
               "beside a map uniform over the lungs and the bundle's average map. 95% patient-level "
               f"bootstrap intervals ({entry.get('resamples')} resamples).")
    loc_table = localisation["summary"].copy()
    loc_table["measure"] = loc_table["measure"].map(lambda m: MEASURE_NAMES.get(m, m))
    # each source and its interval under one name ("uniform over lungs low", not "uniform_lungs low")
    show_table(loc_table.rename(columns={f"{s}{end}": f"{name}{end.replace('_', ' ')}"
                                         for s, name in SOURCE_NAMES.items() for end in ("", "_low", "_high")}))
    flagged = localisation["sameness"]
    flagged = flagged[flagged["flagged"].astype(bool)]
    if len(flagged):
        st.warning("Map nearly the same on every X-ray (it does not follow the image): "
                   + ", ".join(flagged["label"]) + ".")
    if localisation.get("lung_energy") is not None and len(localisation["lung_energy"]):
        st.subheader("Energy of each lung finding's map on the lung fields")
        st.caption("Share of the map on the lungs (plus the area below them) over every boxed X-ray, "
                   "for every finding that lies on the lungs, beside a map uniform over the crop box "
                   "(what a map that ignores the lungs gets). 95% patient-level intervals.")
        show_table(localisation["lung_energy"].rename(columns={
            "xrays": "X-rays", "energy_on_lungs": "energy on lungs", "low": "95% low",
            "high": "95% high", "uniform_crop": "uniform over the crop"}))
    if entry.get("unknown_findings"):
        st.caption("Boxed findings not in this bundle's labels (skipped): " + ", ".join(entry["unknown_findings"]))
    if localisation["sheet"]:
        st.image(localisation["sheet"], caption="Best and worst boxes: the finding's map with the "
                                                "radiologist's box in white")

# --- shortcut audit (only when the bundle carries one) ----------------------------------------------
audit = bundle.metrics.get("shortcut_audit")
if audit and audit.get("rows"):
    st.header("Shortcut audit: AUC within subgroups")
    st.caption("Test AUC of the CTP ensemble within each view position, sex, age band and source, with "
               f"95% patient-level bootstrap intervals ({audit.get('resamples')} resamples): an AUC that "
               "holds within a subgroup is read from the finding, one that falls was partly read from "
               "the acquisition. Fewer than 10 positives or negatives: no interval.")
    audit_table = pd.DataFrame(audit["rows"]).astype({"auc": float, "auc_low": float, "auc_high": float})
    show_table(audit_table[["label", "attribute", "group", "images", "positives", "auc", "auc_low",
                            "auc_high", "note"]])
