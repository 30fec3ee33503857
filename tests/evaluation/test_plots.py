"""Dashboard figures: zero values stay visible, curves are not clipped, legends name AP."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr_core.evaluation.evaluation import evaluate_predictions
from cxr_core.evaluation.plots import MetricsDisplay, comparison_figure, readable


def display(n_resamples: int = 100) -> MetricsDisplay:
    rng = np.random.default_rng(0)
    targets = np.zeros((400, 3))
    targets[:, 0] = rng.random(400) < 0.3
    targets[:, 1] = rng.random(400) < 0.2
    # label 2 has no positive at all: AUC undefined, F1 (positive) zero
    probs = np.clip(rng.random((2, 400, 3)) * 0.6 + 0.3 * targets, 0, 1)
    tables = evaluate_predictions(probs, targets, ["a", "b", "none"], ["m1", "m2"],
                                  np.full(3, 0.5), np.full((2, 3), 0.5), n_resamples=n_resamples)
    return MetricsDisplay(["a", "b", "none"], ["m1", "m2"], targets, probs, tables)


def test_a_zero_value_still_draws_a_marker_and_counts_show_images_and_positives():
    fig = display().bar_figure("CTP", "f1_positive")
    bars, markers, labels = fig.data
    zero = list(markers.y).index("none")
    assert markers.x[zero] == 0 and markers.mode == "markers"
    assert "0 positive of 400" in labels.text[zero] and labels.mode == "text"
    # each label's numbers start right of its interval's upper end (not across the error bar)
    upper = np.asarray(markers.x) + np.asarray(markers.error_x.array)
    assert (np.asarray(labels.x) > upper).all()
    assert fig.layout.xaxis.range[0] == 0
    prevalence = display().prevalence_figure()
    assert 0 in list(prevalence.data[1].x)  # the label without positives has a marker


def test_curves_are_not_hidden_on_the_edge_and_the_pr_legend_names_average_precision():
    d = display()
    roc = d.roc_figure("a")
    assert roc.layout.xaxis.range[0] < 0 and roc.layout.yaxis.range[1] > 1
    pr = d.pr_figure("a")
    assert all("(AP " in trace.name for trace in pr.data)
    assert pr.layout.legend.orientation == "h" and pr.layout.legend.y < 0
    assert len(d.reliability_figure().data) == 3 and len(d.reliability_figure("b", ["CTP"]).data) == 1
    summary = d.calibration_summary()
    assert summary["model"].tolist() == ["CTP", "m1", "m2"] and summary["ece"].between(0, 1).all()


def test_comparison_figure_colours_verdicts_and_readable_names():
    table = pd.DataFrame({"label": ["a", "b"], "positives": [50, 3], "difference": [0.05, -0.1],
                          "low": [0.01, np.nan], "high": [0.09, np.nan], "verdict": ["B better", ""]})
    fig = comparison_figure(table, "A", "B")
    assert list(fig.data[0].y) == ["b", "a"]  # sorted by difference
    assert readable("auc_low") == "AUC low" and readable("best_member") == "Best member"
