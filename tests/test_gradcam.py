import numpy as np
import pytest

from cxr_core.gradcam import all_label_cams, gradcam_weights, naive_gradcam, normalise_maps
from cxr_core.registry import ARCHITECTURES

from .helpers import LABELS, classifier, input_size_for, xray_batch


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_all_label_gradcam_equals_naive_per_label(arch):
    size = input_size_for(arch)
    built = classifier(arch, size)
    x = xray_batch(2, size, seed=1)[..., None]
    probs, cams = all_label_cams(built, x)
    assert probs.shape == (2, len(LABELS)) and cams.shape[-1] == len(LABELS)
    features = np.asarray(built.explainer(x)[0])
    weights = gradcam_weights(built, features)
    for k in range(len(LABELS)):
        ref_map, ref_weights = naive_gradcam(built, x, k, return_weights=True)
        # the channel weights are never all zero, so this compares real numbers
        assert np.abs(ref_weights).max() > 0
        scale = np.abs(ref_weights).max()
        assert np.abs(ref_weights - weights[..., k]).max() / scale < 1e-4, (arch, k)
        ref = normalise_maps(ref_map)
        fast = normalise_maps(cams[..., k])
        assert np.abs(ref - fast).max() < 1e-4, (arch, k)


def test_normalise_maps_guards_zero_maps():
    maps = np.zeros((2, 4, 4))
    maps[1, 1, 1] = 3.0
    out = normalise_maps(maps)
    assert out[0].max() == 0 and out[1].max() == 1 and np.isfinite(out).all()
