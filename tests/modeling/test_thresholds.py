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
