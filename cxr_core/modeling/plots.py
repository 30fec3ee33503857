"""Plotly figures for the dashboards: compute once (a `MetricsDisplay`), plot many."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sklearn.metrics import auc as area
from sklearn.metrics import precision_recall_curve, roc_curve

from .evaluation import ENSEMBLES, comparison_table, evaluate_predictions


@dataclass
class MetricsDisplay:
    """Per-label metrics of every member and ensemble from stored test predictions."""

    labels: list[str]
    archs: list[str]
    targets: np.ndarray  # (N, K)
    member_probs: np.ndarray  # (M, N, K)
    tables: dict[str, pd.DataFrame]

    @classmethod
    def from_bundle(cls, bundle, method: str | None = None) -> "MetricsDisplay | None":
        stored = bundle.test_predictions()
        if stored is None:
            return None
        ens_t, mem_t = bundle.thresholds(method)
        tables = evaluate_predictions(stored["member_probs"], stored["targets"], bundle.labels,
                                      bundle.archs, ens_t, mem_t)
        return cls(bundle.labels, bundle.archs, stored["targets"], stored["member_probs"], tables)

    @property
    def models(self) -> list[str]:
        return [*self.archs, *ENSEMBLES]

    def scores(self, model: str) -> np.ndarray:
        """Scores used for curves: a member's or the CTP mean probability."""
        if model in self.archs:
            return self.member_probs[self.archs.index(model)]
        return self.member_probs.mean(axis=0)

    def comparison(self, metric: str) -> pd.DataFrame:
        return comparison_table(self.tables, self.archs, metric)

    def bar_figure(self, model: str, metric: str = "auc") -> go.Figure:
        table = self.tables[model].sort_values(metric, ascending=True, na_position="first")
        fig = go.Figure(go.Bar(
            x=table[metric], y=table["label"], orientation="h",
            text=[f"{v:.2f} (n+={n})" if pd.notna(v) else f"n/a (n+={n})"
                  for v, n in zip(table[metric], table["positives"])],
            textposition="auto",
            hovertemplate="%{y}<br>" + metric + " %{x:.3f}<extra></extra>"))
        fig.update_layout(title=f"{metric.upper()} per label: {model}", xaxis_range=[0, 1],
                          height=max(300, 28 * len(table) + 120), margin=dict(l=10, r=10, t=50, b=10))
        return fig

    def roc_figure(self, label: str, models: list[str] | None = None) -> go.Figure:
        k = self.labels.index(label)
        y = self.targets[:, k]
        fig = go.Figure()
        fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="gray"))
        if y.min() != y.max():
            for model in models or ["CTP", *self.archs]:
                fpr, tpr, _ = roc_curve(y, self.scores(model)[:, k])
                fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines",
                                         name=f"{model} (AUC {area(fpr, tpr):.2f})"))
        fig.update_layout(title=f"ROC: {label}", xaxis_title="false positive rate",
                          yaxis_title="true positive rate", height=420)
        return fig

    def pr_figure(self, label: str, models: list[str] | None = None) -> go.Figure:
        k = self.labels.index(label)
        y = self.targets[:, k]
        fig = go.Figure()
        if y.max() > 0:
            for model in models or ["CTP", *self.archs]:
                precision, recall, _ = precision_recall_curve(y, self.scores(model)[:, k])
                fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", name=model))
            fig.add_hline(y=float(y.mean()), line_dash="dot", annotation_text="prevalence")
        fig.update_layout(title=f"Precision-recall: {label}", xaxis_title="recall",
                          yaxis_title="precision", height=420)
        return fig

    def prevalence_figure(self) -> go.Figure:
        counts = self.targets.sum(axis=0)
        order = np.argsort(counts)
        fig = go.Figure(go.Bar(x=counts[order], y=np.asarray(self.labels)[order], orientation="h"))
        fig.update_layout(title="Positives per label on the test split (imbalance)",
                          height=max(300, 28 * len(self.labels) + 120), margin=dict(l=10, r=10, t=50, b=10))
        return fig
