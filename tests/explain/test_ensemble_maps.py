"""The NumPy ensemble (Lite engines) computes what the compiled TensorFlow graph computes."""

import numpy as np

from cxr_core.explain.ensemble_maps import _ensemble_graph, ensemble_numpy


def test_numpy_ensemble_equals_the_graph():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    raws = [np.maximum(rng.normal(size=(2, h, h, 5)), 0).astype(np.float32) for h in (7, 5, 9)]
    raws[1][:, :, :, 2] = 0  # an all-zero map stays zero
    mean, std = ensemble_numpy(raws, 64)
    ref_mean, ref_std = (np.asarray(v) for v in _ensemble_graph(64)(tuple(tf.constant(r) for r in raws)))
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
