import numpy as np

from cxr_core.modeling.ensemble import agreement, combine, ctp, ptc_labelwise, ptc_mode


def test_ctp_is_mean_then_threshold():
    probs = np.array([[[0.2, 0.9]], [[0.6, 0.5]], [[0.7, 0.1]]])  # M=3, N=1, K=2
    mean, binary = ctp(probs, np.array([0.5, 0.5]))
    assert np.allclose(mean, [[0.5, 0.5]])
    assert binary.tolist() == [[True, True]]


def test_ptc_labelwise_majority_and_tie_rule():
    votes = np.array([[[1, 0, 1]], [[1, 1, 0]], [[0, 0, 1]], [[0, 1, 0]]], bool)  # M=4
    # label 0: 2/4 tie, label 1: 2/4 tie, label 2: 2/4 tie
    tie_break = np.array([[True, False, True]])
    assert ptc_labelwise(votes, tie_break).tolist() == [[True, False, True]]
    assert ptc_labelwise(votes).tolist() == [[False, False, False]]
    odd = votes[:3]
    assert ptc_labelwise(odd).tolist() == [[True, False, True]]


def test_ptc_mode_most_frequent_label_set():
    votes = np.array([[[1, 0]], [[1, 0]], [[0, 1]]], bool)
    assert ptc_mode(votes).tolist() == [[True, False]]


def test_ptc_mode_tie_prefers_set_closest_to_labelwise_then_earliest_member():
    # four members, two sets twice each -> tie; label-wise majority ties too (no tie_break -> 0)
    votes = np.array([[[1, 1, 0]], [[1, 1, 0]], [[0, 0, 0]], [[0, 0, 0]]], bool)
    # label-wise (ties -> negative) = [0,0,0] -> closest is the all-negative set
    assert ptc_mode(votes).tolist() == [[False, False, False]]
    # all sets distinct and equally far -> earliest member wins
    votes = np.array([[[1, 0]], [[0, 1]]], bool)
    labelwise = np.array([[False, False]])
    assert ptc_mode(votes, labelwise).tolist() == [[True, False]]


def test_agreement_and_combine_use_member_thresholds():
    probs = np.array([[[0.4, 0.9]], [[0.6, 0.2]], [[0.8, 0.3]]])
    pred = combine(probs, np.array([0.5, 0.5]), np.array([[0.3, 0.5], [0.7, 0.5], [0.5, 0.5]]))
    assert pred.member_findings[:, 0, 0].tolist() == [True, False, True]
    assert pred.agreement.tolist() == [[2, 1]]
    assert agreement(pred.member_findings).tolist() == [[2, 1]]
    assert pred.findings.tolist() == [[True, False]]
