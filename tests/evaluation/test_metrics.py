import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from cxr_core.evaluation.metrics import label_metrics, overall_metrics


def test_metrics_match_sklearn_and_hand_values():
    y = np.array([[1, 0], [0, 0], [1, 1], [0, 1]])
    p = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.8], [0.7, 0.4]])
    b = p >= 0.5
    table = label_metrics(y, p, b, ["a", "b"])
    assert table.loc[0, "auc"] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    assert table.loc[0, "auc"] == pytest.approx(0.75)  # 3 of 4 pairs ordered
    # label a: TP=2, FP=1, FN=0 -> F1 = 0.8; negative class: TN=1, FN=0, FP=1 -> 2/3
    assert table.loc[0, "f1_positive"] == pytest.approx(0.8)
    assert table.loc[0, "f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert table.loc[1, "f1_macro"] == pytest.approx(f1_score(y[:, 1], b[:, 1], average="macro"))
    overall = overall_metrics(y, p, b)
    assert overall["hamming_loss"] == pytest.approx(2 / 8)


def test_label_without_positives_is_reported_not_crashing():
    y = np.array([[0], [0], [0]])
    p = np.array([[0.1], [0.7], [0.2]])
    table = label_metrics(y, p, p >= 0.5, ["rare"])
    assert np.isnan(table.loc[0, "auc"]) and table.loc[0, "note"] == "no positives in this split"
    assert overall_metrics(y, p, p >= 0.5)["labels_without_auc"] == 1


def test_unknown_labels_are_left_out_of_every_metric_of_their_label():
    """NaN targets (not annotated) count in no AUC, F1, precision, recall or Hamming loss."""
    rng = np.random.default_rng(1)
    y = (rng.random((200, 2)) < 0.4).astype(float)
    p = np.clip(0.3 * y + 0.7 * rng.random((200, 2)), 0, 1)
    b = p >= 0.5
    y_unknown = y.copy()
    y_unknown[:50, 1] = np.nan
    table = label_metrics(y_unknown, p, b, ["a", "b"])
    known = slice(50, None)
    assert table.loc[1, "images"] == 150 and table.loc[1, "unknown"] == 50
    assert table.loc[1, "positives"] == int(y[known, 1].sum())
    assert table.loc[1, "auc"] == pytest.approx(roc_auc_score(y[known, 1], p[known, 1]))
    assert table.loc[1, "f1_positive"] == pytest.approx(f1_score(y[known, 1], b[known, 1]))
    assert table.loc[0, "auc"] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    overall = overall_metrics(y_unknown, p, b)
    wrong = (y[:, 0] != b[:, 0]).sum() + (y[known, 1] != b[known, 1]).sum()
    assert overall["hamming_loss"] == pytest.approx(wrong / 350)
