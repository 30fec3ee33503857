import numpy as np

from cxr_core.data.split import split_quality, stratified_patient_split


def _data(seed=0, n_patients=600, n_labels=6):
    rng = np.random.default_rng(seed)
    images_per_patient = rng.integers(1, 5, n_patients)
    pids = np.repeat([f"p{i}" for i in range(n_patients)], images_per_patient)
    prevalence = np.linspace(0.05, 0.4, n_labels)
    matrix = (rng.random((len(pids), n_labels)) < prevalence).astype(np.uint8)
    return pids, matrix


def test_no_patient_in_two_splits_and_shares_near_target():
    pids, matrix = _data()
    split = stratified_patient_split(pids, matrix, seed=0)
    for pid in np.unique(pids):
        assert len(set(split[pids == pid])) == 1
    shares = {s: np.mean(split == s) for s in ("train", "val", "test")}
    assert abs(shares["train"] - 0.7) < 0.02 and abs(shares["val"] - 0.1) < 0.02
    q = split_quality(split, pids, matrix, [f"l{j}" for j in range(matrix.shape[1])])
    assert q.worst_deviation < 0.02
    assert sum(q.images.values()) == len(pids)


def test_split_is_deterministic_per_seed_and_differs_across_seeds():
    pids, matrix = _data()
    a = stratified_patient_split(pids, matrix, seed=1)
    b = stratified_patient_split(pids, matrix, seed=1)
    c = stratified_patient_split(pids, matrix, seed=2)
    assert (a == b).all()
    assert (a != c).any()


def test_refinement_beats_plain_iterative_stratification():
    pids, matrix = _data(seed=3)
    labels = [f"l{j}" for j in range(matrix.shape[1])]
    plain = stratified_patient_split(pids, matrix, seed=0, max_moves=0)
    refined = stratified_patient_split(pids, matrix, seed=0)
    assert (split_quality(refined, pids, matrix, labels).worst_deviation
            < split_quality(plain, pids, matrix, labels).worst_deviation)


def test_tiny_input_still_splits_without_leakage():
    pids = np.array(["a", "a", "b", "c"])
    matrix = np.array([[1], [1], [0], [1]], dtype=np.uint8)
    split = stratified_patient_split(pids, matrix, seed=0)
    assert split[0] == split[1]
