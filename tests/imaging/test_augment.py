"""The augmentation samples transforms as Keras's ImageDataGenerator reads its settings."""

import math

import numpy as np

from cxr_core.imaging.augment import METHOD_AUGMENT, AugmentConfig, augment_images, random_affine


def _matrices(cfg, n=4000):
    import tensorflow as tf

    tf.random.set_seed(0)
    t = np.asarray(random_affine(n, 64, 64, cfg))
    return t[:, [0, 1, 3, 4]].reshape(n, 2, 2)  # [[a0, a1], [b0, b1]]


def test_zoom_is_drawn_independently_for_x_and_y():
    m = _matrices(AugmentConfig(rotation=0, shear=0, shift=0, horizontal_flip=False, zoom=0.1))
    zx, zy = m[:, 0, 0], m[:, 1, 1]
    assert zx.min() >= 0.9 - 1e-6 and zx.max() <= 1.1 + 1e-6
    assert np.abs(zx - zy).max() > 0.1  # isotropic zoom would keep them equal
    assert abs(np.corrcoef(zx, zy)[0, 1]) < 0.1


def test_shear_range_is_in_degrees():
    m = _matrices(AugmentConfig(rotation=0, zoom=0, shift=0, horizontal_flip=False, shear=10.0))
    shear = np.arcsin(-m[:, 0, 1]) * 180 / math.pi  # a1 = -sin(shear) without rotation or zoom
    assert np.abs(shear).max() <= 10.0 + 1e-3 and np.abs(shear).max() > 9.0
    method = _matrices(METHOD_AUGMENT)
    det = np.linalg.det(method)  # |zx * zy * cos(shear)|: the method's 0.1 degrees barely shears
    assert np.abs(det).min() > 0.8 ** 2 and np.abs(det).max() < 1.1 ** 2 + 1e-5


def test_augmented_batch_stays_in_unit_range():
    import tensorflow as tf

    tf.random.set_seed(0)
    x = tf.random.uniform([3, 32, 32, 1])
    y = augment_images(x)
    assert y.shape == x.shape and float(tf.reduce_min(y)) >= 0 and float(tf.reduce_max(y)) <= 1


def test_random_blur_smooths_sometimes_and_keeps_the_level():
    import tensorflow as tf

    from cxr_core.imaging.augment import random_blur

    tf.random.set_seed(3)
    rng = np.random.default_rng(0)
    image = tf.constant(rng.random((1, 64, 64, 1)).astype(np.float32))
    outcomes = [random_blur(image, 1.5).numpy() for _ in range(20)]
    blurred = [o for o in outcomes if not np.array_equal(o, image.numpy())]
    assert 0 < len(blurred) < 20  # about half the draws blur, the rest leave the image as is
    for out in blurred:
        assert out.std() < image.numpy().std()  # smoother
        assert abs(out.mean() - image.numpy().mean()) < 0.01  # reflected edges: same level


def test_swap_outside_lungs_keeps_the_lungs_and_takes_the_rest_from_the_next_image():
    """Inside the lung fields the chosen image is its own; well outside them it is the next
    image of the batch (rolled); the seam is soft; an image not chosen is untouched."""
    import tensorflow as tf

    from cxr_core.imaging.augment import swap_outside_lungs

    images = np.stack([np.full((64, 64, 1), v, np.float32) for v in (0.1, 0.5, 0.9)])
    lungs = np.zeros_like(images)
    lungs[:, 16:48, 8:56] = 1.0
    chosen = tf.constant([True, True, False])
    out = swap_outside_lungs(tf.constant(images), tf.constant(lungs), chosen).numpy()
    assert np.allclose(out[0, 20:44, 12:52], 0.1) and np.allclose(out[1, 20:44, 12:52], 0.5)
    assert np.allclose(out[0, :5, :5], 0.9)  # image 0's donor is the last image (roll by 1)
    assert np.allclose(out[1, -5:, -5:], 0.1)
    assert np.array_equal(out[2], images[2])
    seam = out[0, 15, 30]  # on the grown, feathered border (1 px at 64 px): a mix of both
    assert 0.1 < seam < 0.9
