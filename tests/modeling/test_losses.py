import numpy as np
import pytest

from cxr_core.modeling.losses import label_weights, make_weighted_bce


def test_weights_balance_positives_and_negatives():
    y = np.array([[1, 0], [0, 0], [0, 1], [0, 1]])
    w_pos, w_neg = label_weights(y)
    assert w_pos.tolist() == pytest.approx([4 / 2, 4 / 4])
    assert w_neg.tolist() == pytest.approx([4 / 6, 4 / 4])
    # total positive weight equals total negative weight per label
    assert (w_pos * y.sum(0)).tolist() == pytest.approx((w_neg * (4 - y.sum(0))).tolist())


def test_weighted_bce_matches_hand_computation():
    loss = make_weighted_bce(np.array([2.0, 1.0]), np.array([0.5, 1.0]))
    y = np.array([[1.0, 0.0]])
    z = np.array([[0.0, 2.0]])
    expected = (2.0 * np.log(2) + 1.0 * np.log1p(np.exp(2.0))) / 2
    assert float(np.asarray(loss(y, z))[0]) == pytest.approx(expected, rel=1e-5)
    # stable for extreme logits
    assert np.isfinite(np.asarray(loss(np.array([[1.0, 0.0]]), np.array([[-1e4, 1e4]])))).all()



def test_unknown_labels_are_masked_out_of_the_loss_and_the_weights():
    """NaN (a finding the source does not annotate) adds nothing to the loss and is neither a
    positive nor a negative in the label weights."""
    y = np.array([[1, 0], [0, np.nan], [0, 1], [np.nan, 1]])
    w_pos, w_neg = label_weights(y)
    # label 0: 3 known, 1 positive; label 1: 3 known, 2 positives
    assert w_pos.tolist() == pytest.approx([3 / 2, 3 / 4])
    assert w_neg.tolist() == pytest.approx([3 / 4, 3 / 2])
    loss = make_weighted_bce(np.array([2.0, 1.0]), np.array([0.5, 1.0]))
    z = np.array([[0.5, -1.0], [1.0, 3.0], [0.2, 0.1], [-2.0, 0.7]])
    got = np.asarray(loss(y, z))
    assert np.isfinite(got).all()
    known = np.nan_to_num(y)
    full = (np.array([2.0, 1.0]) * known * np.log1p(np.exp(-z))
            + np.array([0.5, 1.0]) * (1 - known) * np.log1p(np.exp(z)))
    expected = np.where(np.isnan(y), 0.0, full).mean(axis=1)
    assert got == pytest.approx(expected, rel=1e-5)


def test_masked_auc_ignores_unknown_labels():
    from sklearn.metrics import roc_auc_score

    from cxr_core.modeling.losses import masked_auc

    rng = np.random.default_rng(0)
    y = (rng.random((300, 2)) < 0.3).astype(np.float32)
    z = rng.normal(size=(300, 2)) + 1.5 * y
    y[:120, 1] = np.nan  # unknown, among them would-be negatives and positives
    metric = masked_auc(multi_label=True, from_logits=True, num_thresholds=2000)
    metric.update_state(y, z)
    expected = np.mean([roc_auc_score(y[:, 0], z[:, 0]), roc_auc_score(y[120:, 1], z[120:, 1])])
    assert float(metric.result()) == pytest.approx(expected, abs=2e-3)
