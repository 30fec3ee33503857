"""The NumPy ensemble (Lite engines) computes what the compiled TensorFlow graph computes."""

import numpy as np

from cxr_core.explain.ensemble_maps import _ensemble_graph, ensemble_numpy


def test_numpy_ensemble_equals_the_graph():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    raws = [np.maximum(rng.normal(size=(2, h, h, 5)), 0).astype(np.float32) for h in (7, 5, 9)]
    raws[1][:, :, :, 2] = 0  # an all-zero map stays zero
    mean, std = ensemble_numpy(raws, 64)
    grids = (None, (3.5, 12.0, 60), None)  # one member placed by its grid
    mean, std = ensemble_numpy(raws, 64, grids)
    ref_mean, ref_std = (np.asarray(v) for v in _ensemble_graph(64, grids)(tuple(tf.constant(r) for r in raws)))
    assert mean.shape == (2, 5, 64, 64)
    assert np.abs(mean - ref_mean).max() < 1e-5
    assert np.abs(std - ref_std).max() < 1e-4
    assert np.isclose(mean.max(), 1.0) or mean.max() <= 1.0


class _HalfReader:
    """A fake Lite engine: the probability of every label is the mean of the image's left half,
    and its raw map is the image itself (so a map that is not flipped back would show)."""

    kind, input_size = "lite", 16

    def explain(self, x):
        x = np.asarray(x, np.float32).reshape(len(x), 16, 16)
        probs = np.repeat(x[:, :, :8].mean(axis=(1, 2))[:, None], 3, axis=1)
        return probs, np.repeat(x[..., None], 3, axis=3)


def test_test_time_flips_average_both_views_and_keep_the_maps_in_place():
    from cxr_core.explain.ensemble_maps import explain_arrays

    crop = np.zeros((1, 16, 16), np.float32)
    crop[0, 4:12, 2:6] = 1.0  # something bright on the left only
    plain = explain_arrays([_HalfReader()], crop, 16)
    flipped = explain_arrays([_HalfReader()], crop, 16, flip=True)
    assert np.allclose(plain.member_probs, crop[0, :, :8].mean())
    assert np.allclose(flipped.member_probs, 0.5 * crop[0, :, :8].mean())  # the mirror sees nothing left
    assert np.allclose(flipped.member_cams[0], plain.member_cams[0])  # mirrored map flipped back
    assert np.allclose(flipped.mean_maps, plain.mean_maps)


class _StridedEngine:
    """A real strided network as a Lite-style engine: its raw map is the mean brightness each
    cell sees (all-ones kernels, padding below and right as Keras's MobileNets pad), so the
    map's peak is wherever the image's bright spot is, if the maps are placed right."""

    kind = "lite"

    def __init__(self, size: int = 64):
        from cxr_core.modeling.feature_geometry import feature_grid
        from tests.modeling.test_feature_geometry import _strided_net

        self.model = _strided_net(size)
        self.input_size = size
        self.map_grid = tuple(feature_grid(self.model, self.model.outputs[0]).as_record())

    def explain(self, x):
        maps = np.asarray(self.model(np.asarray(x, np.float32)), np.float32)
        return np.ones((len(x), 1), np.float32), maps


def _peak(m: np.ndarray) -> np.ndarray:
    return np.array(np.unravel_index(np.argmax(m), m.shape))


def test_maps_are_placed_where_their_cells_look_also_after_test_time_flips():
    """A bright spot anywhere in the crop: the ensemble map peaks on it (within 2 px of 64),
    with and without test-time flips. The naive placement (cells as equal strips) puts the
    peak up and left of it, and the naive flip-back smears it sideways."""
    from cxr_core.explain.ensemble_maps import explain_arrays, interpolation_matrix, mirror_back

    engine = _StridedEngine(64)
    rng = np.random.default_rng(3)
    errors, flip_errors, naive_errors = [], [], []
    for _ in range(12):
        y, x = rng.integers(10, 54, size=2)
        crop = np.zeros((1, 64, 64), np.float32)
        crop[0, y - 2:y + 3, x - 2:x + 3] = 1.0
        errors.append(np.abs(_peak(explain_arrays([engine], crop, 64).mean_maps[0, 0]) - (y, x)).max())
        flip_errors.append(np.abs(_peak(explain_arrays([engine], crop, 64, flip=True).mean_maps[0, 0])
                                  - (y, x)).max())
        raw = engine.explain(crop[..., None])[1][0, :, :, 0]
        naive = interpolation_matrix(16, 64) @ raw @ interpolation_matrix(16, 64).T
        naive_errors.append(np.max(np.array((y, x)) - _peak(naive)))
    assert max(errors) <= 2 and max(flip_errors) <= 2, (errors, flip_errors)
    assert min(naive_errors) >= 1  # the naive drawing sits up / left: the bug this fixes
    # the mirrored pass, put back, matches the plain pass on a spot away from the borders
    crop = np.zeros((1, 64, 64, 1), np.float32)
    crop[0, 28:33, 20:25] = 1.0
    plain = engine.explain(crop)[1]
    back = mirror_back(engine.explain(crop[:, :, ::-1].copy())[1], engine.map_grid)
    naive_back = engine.explain(crop[:, :, ::-1].copy())[1][:, :, ::-1]
    assert np.abs(back - plain).max() < 0.5 * np.abs(naive_back - plain).max()
