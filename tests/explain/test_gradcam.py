import numpy as np
import pytest

from cxr_core.explain.ensemble_maps import explain_arrays, resize_maps
from cxr_core.explain.gradcam import all_label_cams, naive_gradcam, normalise_maps
from cxr_core.modeling.registry import ARCHITECTURES

from ..helpers import LABELS, classifier, input_size_for, xray_batch


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_all_label_gradcam_equals_naive_per_label(arch):
    size = input_size_for(arch)
    built = classifier(arch, size)
    x = xray_batch(2, size, seed=1)[..., None]
    probs, cams, weights = all_label_cams(built, x, return_weights=True)
    assert probs.shape == (2, len(LABELS)) and cams.shape[-1] == len(LABELS)
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


def test_interpolation_matrix_matches_opencv_bilinear():
    import cv2

    raw = np.random.default_rng(2).random((5, 7)).astype("float32")
    ref = cv2.resize(raw, (64, 48), interpolation=cv2.INTER_LINEAR)
    from cxr_core.explain.ensemble_maps import interpolation_matrix

    ours = interpolation_matrix(5, 48) @ raw @ interpolation_matrix(7, 64).T
    assert np.abs(ours - ref).max() < 1e-5
    assert np.allclose(interpolation_matrix(7, 224).sum(axis=1), 1.0)


def test_ensemble_maps_match_numpy_reference():
    """The in-graph resize, normalisation, mean and std equal a plain NumPy/OpenCV computation
    from each member's raw all-label maps; member maps on demand are the same numbers."""
    from scipy.ndimage import map_coordinates

    from cxr_core.imaging.resize import resize_batch

    # two feature-map sizes (3 x 3 and 4 x 4) combined at one map size
    members = [classifier("MobileNetV3Small", 96), classifier("InceptionV3", 139)]
    crops = xray_batch(2, 128, seed=3)
    expl = explain_arrays(members, crops, 64)
    assert expl.mean_maps.shape == expl.std_maps.shape == (2, len(LABELS), 64, 64)
    assert expl.member_probs.shape == (2, 2, len(LABELS))
    for n in range(2):
        refs = []
        for m, member in enumerate(members):
            probs, cams = all_label_cams(member, resize_batch(crops, member.input_size))
            np.testing.assert_allclose(expl.member_probs[m], probs, atol=1e-6)
            # an independent reference: SciPy samples each cell where the member's grid says it
            # looks (centre of cell 0 and stride in input pixels, scaled to the 64 px map)
            first, stride, pixels = expl.map_grids[m]
            q = ((np.arange(64) + 0.5) * pixels / 64 - 0.5 - first) / stride
            coords = np.stack(np.meshgrid(q, q, indexing="ij"))
            resized = np.stack([map_coordinates(cams[n][:, :, k].astype(np.float64), coords, order=1,
                                                mode="nearest") for k in range(len(LABELS))])
            resized = resized.astype(np.float32)
            refs.append(normalise_maps(resized))
        refs = np.stack(refs)  # (M, K, 64, 64)
        for k in range(len(LABELS)):
            on_demand = np.stack([resize_maps(cams[n, :, :, k], 64, grid)
                                  for cams, grid in zip(expl.member_cams, expl.map_grids)])
            assert np.abs(on_demand - refs[:, k]).max() < 1e-4
        peaks = refs.max(axis=(2, 3))
        assert np.all(np.isclose(peaks, 1.0, atol=1e-5) | (peaks == 0.0)) and (peaks > 0).any()
        assert np.abs(expl.mean_maps[n] - refs.mean(axis=0)).max() < 1e-4
        assert np.abs(expl.std_maps[n] - refs.std(axis=0)).max() < 2e-3
        assert expl.std_maps[n].max() > 0.01  # the two members disagree somewhere
