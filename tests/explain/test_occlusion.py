"""Occlusion sensitivity (`explain/occlusion.py`): every pixel covered, the map peaks where the
evidence is and is zero where covering changes nothing, the mirrored pass lands back in place,
and the ensemble path gives it to the Review page (`explain_arrays(method="occlusion")`)."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_core.explain.ensemble_maps import explain_arrays
from cxr_core.explain.occlusion import engine_occlusion, occlusion_maps, patch_layout

SIZE = 64
REGION = (slice(10, 22), slice(40, 52))  # rows, columns of the evidence for label 0


def _predict(batch: np.ndarray) -> np.ndarray:
    """Label 0's logit grows with the brightness of REGION, label 1's with the whole image's
    brightness far from REGION (columns < 24)."""
    batch = np.asarray(batch, np.float64)
    z0 = 12 * (batch[:, REGION[0], REGION[1], 0].mean(axis=(1, 2)) - 0.5)
    z1 = 12 * (batch[:, :, :24, 0].mean(axis=(1, 2)) - 0.5)
    return 1 / (1 + np.exp(-np.stack([z0, z1], axis=1)))


class _Engine:
    """A stand-in member: probabilities from `_predict`, flat Grad-CAM maps."""

    kind = "lite"
    arch = "stand-in"
    input_size = SIZE
    map_grid = None

    def explain(self, x):
        x = np.asarray(x, np.float32)
        return _predict(x).astype(np.float32), np.ones((len(x), 4, 4, 2), np.float32)


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = 0.3 + 0.05 * rng.random((SIZE, SIZE, 1))
    image[REGION[0], REGION[1]] = 0.9
    image[:, :24] += 0.3
    return image.astype(np.float32)


def test_patches_cover_every_pixel_and_the_last_one_ends_on_the_edge():
    for size in (64, 96, 224, 299):
        patch, starts = patch_layout(size)
        assert starts[0] == 0 and starts[-1] + patch == size
        assert all(b - a <= patch for a, b in zip(starts, starts[1:]))  # no gap between patches
    assert patch_layout(224) == (48, list(range(0, 177, 16)))


def test_the_map_peaks_on_the_evidence_and_is_zero_where_covering_changes_nothing():
    maps = occlusion_maps(_predict, _image()[None])
    assert maps.shape == (1, SIZE, SIZE, 2) and (maps >= 0).all()
    lesion = maps[0, :, :, 0]
    peak = np.unravel_index(np.argmax(lesion), lesion.shape)
    assert REGION[0].start <= peak[0] < REGION[0].stop and REGION[1].start <= peak[1] < REGION[1].stop
    patch, _ = patch_layout(SIZE)
    far = lesion[REGION[0].stop + patch:, :REGION[1].start - patch]  # no patch there touches REGION
    assert far.size and far.max() == 0
    # label 1's evidence is the left band: its map lies there, not on label 0's region
    band = maps[0, :, :, 1]
    assert band[:, :24].mean() > 5 * band[:, 40:].mean()


def test_the_mirrored_pass_is_put_back_in_place():
    image = _image()[None]
    plain = engine_occlusion(_Engine(), image)
    both = engine_occlusion(_Engine(), image, flip=True)
    for maps in (plain, both):
        lesion = maps[0, :, :, 0]
        peak = np.unravel_index(np.argmax(lesion), lesion.shape)
        assert REGION[1].start <= peak[1] < REGION[1].stop
    # a mirrored image moves the evidence, so the flipped pass alone sees less: both differ
    assert not np.allclose(plain, both)


def test_explain_arrays_gives_occlusion_maps_placed_exactly_and_refuses_unknown_methods():
    crops = np.repeat(_image()[None, :, :, 0], 2, axis=0)  # the crops the pipeline passes
    expl = explain_arrays([_Engine()], crops, SIZE, flip=False, method="occlusion")
    assert expl.mean_maps.shape == (2, 2, SIZE, SIZE) and expl.map_grids == [None]
    lesion = expl.mean_maps[0, 0]
    assert lesion.max() == pytest.approx(1.0)  # scaled to its peak, as Grad-CAM maps are
    peak = np.unravel_index(np.argmax(lesion), lesion.shape)
    assert REGION[0].start <= peak[0] < REGION[0].stop and REGION[1].start <= peak[1] < REGION[1].stop
    gradcam = explain_arrays([_Engine()], crops, SIZE, method="gradcam")
    assert np.allclose(gradcam.member_probs, expl.member_probs)  # the same probabilities
    with pytest.raises(ValueError, match="Unknown map method"):
        explain_arrays([_Engine()], crops, SIZE, method="saliency")
