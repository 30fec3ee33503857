"""Plotly figures for the dashboards: compute once (a `MetricsDisplay`), plot many."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sklearn.metrics import auc as area
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

from .bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from ..modeling.calibration import calibration_table, reliability_curve
from .evaluation import ENSEMBLES, comparison_table, evaluate_predictions, threshold_origin

READABLE = {
    "label": "Label", "images": "Images", "positives": "Positives", "auc": "AUC",
    "f1_macro": "F1 (macro)", "f1_positive": "F1 (positive)", "precision": "Precision",
    "recall": "Recall", "note": "Note", "ci_note": "Interval", "best_member": "Best member",
    "ensembles_beating_all_members": "Ensembles above every member",
    "auc_macro": "AUC (macro)", "f1_positive_macro": "F1 positive (macro)",
    "hamming_loss": "Hamming loss", "labels_without_auc": "Labels without AUC",
    "labels_with_interval": "Labels with an interval", "ece": "ECE", "brier": "Brier",
    "mean_probability": "Mean probability", "prevalence": "Prevalence", "threshold": "Threshold",
    "model": "Model", "f1": "F1 (macro)", "paper_label": "Published label",
    "paper_samples": "Published samples", "paper_auc": "Published AUC", "paper_f1": "Published F1",
    "auc_difference": "AUC difference", "f1_difference": "F1 difference",
    "auc_versus_paper": "AUC versus published", "f1_versus_paper": "F1 versus published",
    "paper_auc_uncertain": "Published AUC uncertain", "paper_f1_uncertain": "Published F1 uncertain",
}
METRIC_NAMES = {"auc": "AUC", "f1_macro": "F1 (macro, both classes)", "f1_positive": "F1 (positive class)",
                "precision": "precision", "recall": "recall"}
_AXIS = dict(range=[-0.02, 1.02], constrain="domain")  # curves on the edge stay visible
_LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0)


def readable(column: str) -> str:
    """Display name of a table column: 'auc_low' -> 'AUC low', 'CTP high' stays."""
    for suffix in ("_low", "_high"):
        if column.endswith(suffix):
            return f"{readable(column[:-len(suffix)])} {suffix[1:]}"
    return READABLE.get(column, column)


@dataclass
class MetricsDisplay:
    """Per-label metrics of every member and ensemble from stored test predictions."""

    labels: list[str]
    archs: list[str]
    targets: np.ndarray  # (N, K)
    member_probs: np.ndarray  # (M, N, K) as the threshold method sees them (calibrated or raw)
    tables: dict[str, pd.DataFrame]
    method: str = ""
    calibration: str | None = None
    resampling: dict = field(default_factory=dict)
    chosen_on: str = "unknown"  # the split the thresholds were chosen on

    @classmethod
    def from_bundle(cls, bundle, method: str | None = None, n_resamples: int = DEFAULT_RESAMPLES,
                    seed: int = DEFAULT_SEED) -> "MetricsDisplay | None":
        from .compare import patients_of

        stored = bundle.test_predictions()
        if stored is None:
            return None
        method = method or bundle.threshold_method
        chosen_on = threshold_origin(bundle, method)  # refuses thresholds chosen on test
        ens_t, mem_t = bundle.thresholds(method)
        probs = bundle.calibrate(stored["member_probs"], method)
        groups, _ = patients_of(bundle, stored["image_ids"])
        tables = evaluate_predictions(probs, stored["targets"], bundle.labels, bundle.archs, ens_t,
                                      mem_t, groups=groups, n_resamples=n_resamples, seed=seed)
        return cls(bundle.labels, bundle.archs, stored["targets"], probs, tables, method,
                   bundle.calibration_name(method), tables["overall"].attrs.get("resampling", {}),
                   chosen_on)

    @property
    def models(self) -> list[str]:
        return [*self.archs, *ENSEMBLES]

    @property
    def probabilistic_models(self) -> list[str]:
        """Models with a probability of their own (members and CTP), for calibration."""
        return ["CTP", *self.archs]

    def known(self, k: int) -> np.ndarray:
        """Images whose label k is known (not NaN: annotated by their source)."""
        return np.isfinite(np.asarray(self.targets[:, k], dtype=np.float64))

    def scores(self, model: str) -> np.ndarray:
        """Scores used for curves: a member's or the CTP mean probability."""
        if model in self.archs:
            return self.member_probs[self.archs.index(model)]
        return self.member_probs.mean(axis=0)

    def comparison(self, metric: str) -> pd.DataFrame:
        return comparison_table(self.tables, self.archs, metric)

    # --- per-label bars with intervals ------------------------------------------------------
    def bar_figure(self, model: str, metric: str = "auc") -> go.Figure:
        """Horizontal bars with bootstrap error bars; a marker at every value, so a zero shows."""
        table = self.tables[model].sort_values(metric, ascending=True, na_position="first")
        values = table[metric].to_numpy(dtype=float)
        shown = np.nan_to_num(values, nan=0.0)
        has_ci = f"{metric}_low" in table.columns
        low = table[f"{metric}_low"].to_numpy(float) if has_ci else np.full(len(table), np.nan)
        high = table[f"{metric}_high"].to_numpy(float) if has_ci else np.full(len(table), np.nan)
        notes = table["ci_note"].tolist() if "ci_note" in table.columns else [""] * len(table)
        text = []
        for v, lo, hi, n, total, note in zip(values, low, high, table["positives"], table["images"], notes):
            value = "n/a" if np.isnan(v) else f"{v:.2f}"
            interval = f" [{lo:.2f}, {hi:.2f}]" if not np.isnan(lo) else (" (too few cases for an interval)"
                                                                          if note else "")
            text.append(f"{value}{interval}  ({n} positive of {total})")
        fig = go.Figure()
        fig.add_trace(go.Bar(x=shown, y=table["label"], orientation="h", name=METRIC_NAMES.get(metric, metric),
                             marker_color="#7aa6d6", hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(
            x=shown, y=table["label"], mode="markers", text=text,
            marker=dict(symbol="line-ns-open", size=14, color="#1f3b73", line_width=2),
            error_x=dict(type="data", symmetric=False, array=np.nan_to_num(high - shown),
                         arrayminus=np.nan_to_num(shown - low), color="#1f3b73", thickness=1.5, width=5),
            hovertemplate="%{y}<br>%{text}<extra></extra>", showlegend=False))
        # the numbers start right of the interval's upper end, never across the error bar
        text_x = np.fmax(shown, np.nan_to_num(high, nan=0.0)) + 0.02
        fig.add_trace(go.Scatter(x=text_x, y=table["label"], mode="text", text=text,
                                 textposition="middle right", hoverinfo="skip", showlegend=False))
        fig.update_layout(title=f"{METRIC_NAMES.get(metric, metric)} per label: {model} "
                                f"(bars: 95% bootstrap interval)",
                          xaxis=dict(range=[0, 1.6], tickvals=[0, 0.25, 0.5, 0.75, 1.0]),
                          height=max(300, 30 * len(table) + 120), margin=dict(l=10, r=10, t=50, b=10))
        return fig

    # --- curves -------------------------------------------------------------------------------
    def roc_figure(self, label: str, models: list[str] | None = None,
                   point: tuple[float, float] | None = None) -> go.Figure:
        """ROC curves of one label; `point` (fpr, tpr) marks a chosen operating point."""
        k = self.labels.index(label)
        known = self.known(k)
        y = self.targets[known, k]
        fig = go.Figure()
        fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="gray"))
        if len(y) and y.min() != y.max():
            for model in models or ["CTP", *self.archs]:
                fpr, tpr, _ = roc_curve(y, self.scores(model)[known, k])
                fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", line=dict(width=2),
                                         name=f"{model} (AUC {area(fpr, tpr):.2f})"))
        if point is not None:
            fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name="chosen threshold",
                                     marker=dict(size=13, color="crimson", symbol="x")))
        fig.update_layout(title=f"ROC: {label}", xaxis_title="false positive rate (1 - specificity)",
                          yaxis_title="true positive rate (sensitivity)", height=460,
                          xaxis=_AXIS, yaxis=_AXIS, legend=_LEGEND_BELOW, margin=dict(b=10))
        return fig

    def pr_figure(self, label: str, models: list[str] | None = None) -> go.Figure:
        """Precision-recall curves with average precision in the legend, legend below the plot."""
        k = self.labels.index(label)
        known = self.known(k)
        y = self.targets[known, k]
        fig = go.Figure()
        if len(y) and y.max() > 0:
            for model in models or ["CTP", *self.archs]:
                scores = self.scores(model)[known, k]
                precision, recall, _ = precision_recall_curve(y, scores)
                ap = average_precision_score(y, scores)
                fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", line=dict(width=2),
                                         name=f"{model} (AP {ap:.2f})"))
            fig.add_hline(y=float(y.mean()), line_dash="dot", line_color="gray",
                          annotation_text=f"prevalence {y.mean():.2f}", annotation_position="bottom right")
        fig.update_layout(title=f"Precision-recall: {label}", xaxis_title="recall",
                          yaxis_title="precision", height=460, xaxis=_AXIS, yaxis=_AXIS,
                          legend=_LEGEND_BELOW, margin=dict(b=10))
        return fig

    def prevalence_figure(self) -> go.Figure:
        """Positives per label (a marker at zero too), out of the test images."""
        counts = np.nansum(self.targets, axis=0)  # unknown labels are not positives
        order = np.argsort(counts)
        labels = np.asarray(self.labels)[order]
        fig = go.Figure(go.Bar(x=counts[order], y=labels, orientation="h", marker_color="#7aa6d6",
                               text=[f"{int(c)}" for c in counts[order]], textposition="outside",
                               hovertemplate="%{y}: %{x} positive<extra></extra>"))
        fig.add_trace(go.Scatter(x=counts[order], y=labels, mode="markers", showlegend=False,
                                 marker=dict(symbol="line-ns-open", size=12, color="#1f3b73"),
                                 hoverinfo="skip"))
        fig.update_layout(title=f"Positives per label of {self.targets.shape[0]} test images",
                          height=max(300, 30 * len(self.labels) + 120), showlegend=False,
                          xaxis=dict(range=[0, max(1.0, float(counts.max())) * 1.2]),
                          margin=dict(l=10, r=10, t=50, b=10))
        return fig

    # --- calibration --------------------------------------------------------------------------
    def calibration_summary(self, models: list[str] | None = None) -> pd.DataFrame:
        """ECE and Brier over all labels, one row per member and the CTP ensemble."""
        rows = []
        for model in models or self.probabilistic_models:
            pooled = calibration_table(self.targets, self.scores(model), self.labels).iloc[-1]
            rows.append({"model": model, "ece": pooled["ece"], "brier": pooled["brier"],
                         "mean_probability": pooled["mean_probability"], "prevalence": pooled["prevalence"]})
        return pd.DataFrame(rows)

    def calibration_by_label(self, model: str) -> pd.DataFrame:
        return calibration_table(self.targets, self.scores(model), self.labels)

    def reliability_figure(self, label: str | None = None, models: list[str] | None = None,
                           n_bins: int = 10) -> go.Figure:
        """Observed frequency against mean probability per bin (all labels pooled when
        `label` is None); marker size grows with the images in the bin."""
        fig = go.Figure()
        fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="gray"))
        for model in models or self.probabilistic_models:
            scores = self.scores(model)
            if label is None:
                y, p = self.targets, scores
            else:
                k = self.labels.index(label)
                y, p = self.targets[:, k], scores[:, k]
            curve = reliability_curve(y, p, n_bins)
            curve = curve[curve["count"] > 0]
            size = 6 + 14 * np.sqrt(curve["count"] / curve["count"].max())
            fig.add_trace(go.Scatter(
                x=curve["mean_predicted"], y=curve["observed"], mode="lines+markers", name=model,
                marker=dict(size=size), customdata=curve["count"],
                hovertemplate="mean p %{x:.2f}<br>observed %{y:.2f}<br>%{customdata} cases<extra></extra>"))
        fig.update_layout(title=f"Reliability: {label or 'all labels'}", xaxis_title="mean predicted probability",
                          yaxis_title="observed frequency", height=460, xaxis=_AXIS, yaxis=_AXIS,
                          legend=_LEGEND_BELOW, margin=dict(b=10))
        return fig


def comparison_figure(table: pd.DataFrame, a_id: str, b_id: str) -> go.Figure:
    """Forest plot of the per-label AUC difference (B - A) with its paired interval."""
    table = table.sort_values("difference", na_position="first")
    diff = table["difference"].to_numpy(float)
    low, high = table["low"].to_numpy(float), table["high"].to_numpy(float)
    colour = ["#2a9d8f" if v == "B better" else "#e76f51" if v == "A better" else "#555"
              for v in table["verdict"]]
    fig = go.Figure(go.Scatter(
        x=np.nan_to_num(diff), y=table["label"], mode="markers", marker=dict(size=10, color=colour),
        error_x=dict(type="data", symmetric=False, array=np.nan_to_num(high - diff),
                     arrayminus=np.nan_to_num(diff - low), thickness=1.5),
        customdata=np.stack([table["verdict"].replace("", "no interval"), table["positives"]], axis=1),
        hovertemplate="%{y}: %{x:+.3f}<br>%{customdata[0]}, %{customdata[1]} positives<extra></extra>"))
    fig.add_vline(x=0, line_dash="dot", line_color="gray")
    fig.update_layout(title=f"AUC difference per label: {b_id} minus {a_id}",
                      xaxis_title="AUC difference (B - A), 95% paired bootstrap interval",
                      height=max(300, 30 * len(table) + 120), margin=dict(l=10, r=10, t=50, b=10))
    return fig


def paper_figure(table: pd.DataFrame, metric: str = "auc", model: str = "CTP") -> go.Figure:
    """This bundle's per-label value (with its interval) next to the published one."""
    table = table[table["paper_label"] != ""].sort_values(f"paper_{metric}")
    value = table[metric].to_numpy(float)
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=np.nan_to_num(value), y=table["label"], mode="markers", name="this bundle",
        marker=dict(size=10, color="#1f3b73"),
        error_x=dict(type="data", symmetric=False,
                     array=np.nan_to_num(table[f"{metric}_high"].to_numpy(float) - value),
                     arrayminus=np.nan_to_num(value - table[f"{metric}_low"].to_numpy(float)))))
    fig.add_trace(go.Scatter(x=table[f"paper_{metric}"], y=table["label"], mode="markers",
                             name="published (Liz et al. 2022)",
                             marker=dict(size=11, symbol="diamond-open", color="#e76f51", line_width=2)))
    name = "AUC" if metric == "auc" else "F1 (macro)"
    fig.update_layout(title=f"{name} per label, {model}: this bundle and the published method",
                      xaxis=dict(range=[0, 1.02], title=name), legend=_LEGEND_BELOW,
                      height=max(320, 30 * len(table) + 160), margin=dict(l=10, r=10, t=50, b=10))
    return fig


def operating_figure(curve: pd.DataFrame, threshold: float) -> go.Figure:
    """Sensitivity, specificity, PPV and NPV against the threshold, the chosen one marked."""
    fig = go.Figure()
    for column, colour in (("sensitivity", "#1f77b4"), ("specificity", "#2ca02c"),
                           ("ppv", "#d62728"), ("npv", "#9467bd")):
        fig.add_trace(go.Scatter(x=curve["threshold"], y=curve[column], mode="lines",
                                 name=column.upper() if len(column) == 3 else column,
                                 line=dict(color=colour, width=2, shape="hv")))
    fig.add_vline(x=threshold, line_color="black", line_dash="dash")
    fig.update_layout(title="What each threshold means (test prevalence)", xaxis_title="threshold",
                      yaxis_title="rate", height=420, xaxis=_AXIS, yaxis=_AXIS, legend=_LEGEND_BELOW,
                      margin=dict(b=10))
    return fig
