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
