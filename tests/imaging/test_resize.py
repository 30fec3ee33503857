"""The shared resize: output shape and dtype, area averaging when shrinking, bilinear when
enlarging, and the batch helper that makes model input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxr_core.imaging.resize import resize_batch, resize_to


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width)).astype(np.float32)


@pytest.mark.parametrize("size,shape", [(64, (64, 64)), ((30, 50), (30, 50)), ((50, 30), (50, 30)),
                                        (200, (200, 200))])
def test_output_shape_is_height_by_width_and_float32(size, shape):
    for source in (_image(120, 90), (_image(120, 90) * 255).astype(np.uint8),
                   _image(120, 90).astype(np.float64)):
        out = resize_to(source, size)
        assert out.shape == shape and out.dtype == np.float32


def test_the_aspect_ratio_is_not_kept_the_frame_is_stretched():
    ramp = np.tile(np.linspace(0, 1, 100, dtype=np.float32), (40, 1))  # 40 x 100, left to right
    out = resize_to(ramp, 64)
    assert out.shape == (64, 64)
    np.testing.assert_allclose(out[0], out[-1])  # every row is the same ramp, now 64 wide
    assert out[0, 0] < 0.02 and out[0, -1] > 0.98 and np.all(np.diff(out[0]) > 0)


def test_shrinking_averages_areas():
    image = _image(64, 48, seed=1)
    out = resize_to(image, (16, 12))  # exact 4 x 4 blocks
    block_means = image.reshape(16, 4, 12, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(out, block_means, atol=1e-6)
    # a one-pixel checkerboard shrinks to its mean grey, not to an aliased pattern
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)
    np.testing.assert_allclose(resize_to(checker, 16), 0.5, atol=1e-6)


def test_enlarging_is_bilinear():
    small = _image(8, 6, seed=2)
    out = resize_to(small, (32, 24))
    expected = cv2.resize(small, (24, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out, expected)
    assert not np.allclose(out, cv2.resize(small, (24, 32), interpolation=cv2.INTER_AREA))
    # bilinear never overshoots the source range (a cubic kernel would)
    assert small.min() - 1e-6 <= out.min() and out.max() <= small.max() + 1e-6


def test_shrinking_along_one_side_uses_area_interpolation():
    image = _image(40, 10, seed=3)  # taller than the target, narrower than it
    out = resize_to(image, (20, 20))
    expected = cv2.resize(image, (20, 20), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)
    assert not np.allclose(out, cv2.resize(image, (20, 20), interpolation=cv2.INTER_LINEAR))


def test_a_constant_image_stays_constant_at_any_size():
    flat = np.full((37, 53), 0.25, np.float32)
    for size in (8, 37, (53, 37), 300):
        np.testing.assert_allclose(resize_to(flat, size), 0.25, atol=1e-6)


def test_resize_batch_makes_model_input():
    crops = np.stack([_image(50, 40, seed=s) for s in range(3)])
    batch = resize_batch(crops, 32)
    assert batch.shape == (3, 32, 32, 1) and batch.dtype == np.float32
    for n in range(3):
        np.testing.assert_array_equal(batch[n, ..., 0], resize_to(crops[n], 32))
    single = resize_batch(crops[0], 32)
    assert single.shape == (1, 32, 32, 1)
    np.testing.assert_array_equal(single, batch[:1])


def test_resize_batch_leaves_crops_of_the_right_size_untouched():
    crops = np.stack([_image(32, 32, seed=s) for s in range(2)]).astype(np.float64)
    batch = resize_batch(crops, 32)
    assert batch.shape == (2, 32, 32, 1) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[..., 0], crops.astype(np.float32))
