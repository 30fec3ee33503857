import numpy as np
import pytest

from cxr_core.modeling.thresholds import choose_thresholds


def test_f1_threshold_separates_perfectly_separable_label():
    y = np.array([[0], [0], [1], [1]])
    p = np.array([[0.1], [0.3], [0.35], [0.9]])
    t = choose_thresholds(y, p, "f1")[0]
    assert 0.3 < t <= 0.35
    assert ((p[:, 0] >= t) == y[:, 0].astype(bool)).all()


def test_youden_and_fixed_and_single_class_default():
    y = np.array([[0, 0], [1, 0], [1, 0], [0, 0]])
    p = np.array([[0.2, 0.1], [0.8, 0.2], [0.6, 0.3], [0.4, 0.4]])
    youden = choose_thresholds(y, p, "youden")
    assert 0.4 < youden[0] <= 0.6 and youden[1] == 0.5
    assert choose_thresholds(y, p, "fixed").tolist() == [0.5, 0.5]
    with pytest.raises(ValueError):
        choose_thresholds(y, p, "magic")


def test_unknown_labels_are_left_out_of_threshold_fitting():
    """Rows whose label is unknown (NaN) neither help nor hurt the threshold of that label."""
    rng = np.random.default_rng(0)
    y = (rng.random((300, 1)) < 0.3).astype(float)
    p = np.clip(0.4 * y + 0.6 * rng.random((300, 1)), 0, 1)
    y_unknown = np.vstack([y, np.full((100, 1), np.nan)])
    p_more = np.vstack([p, rng.random((100, 1))])
    for method in ("f1", "youden"):
        assert choose_thresholds(y_unknown, p_more, method)[0] == pytest.approx(choose_thresholds(y, p, method)[0])
    assert choose_thresholds(np.array([[np.nan], [1.0]]), np.array([[0.2], [0.9]]), "f1")[0] == 0.5
