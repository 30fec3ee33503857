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

