"""Random geometric and intensity augmentation of X-ray batches in TensorFlow.

One affine sampler serves the segmenter (small, no flips) and the classifiers (the method's
heavy augmentation). It samples like Keras's ImageDataGenerator: rotation and shear in degrees,
x and y zoom drawn independently from [1 - zoom, 1 + zoom], shifts as fractions of the size.
Everything is tensor ops, so it runs on the accelerator when there is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transform, as ImageDataGenerator reads them."""

    rotation: float = 45.0  # degrees
    zoom: float = 0.1  # x and y zoom factors, each uniform in [1 - zoom, 1 + zoom]
    shift: float = 0.1  # fraction of the width / height
    shear: float = 0.1  # degrees (ImageDataGenerator's shear_range)
    horizontal_flip: bool = True
    brightness: tuple[float, float] = (0.7, 1.1)
    channel_shift: float = 0.05
    gamma: float = 0.0  # log-gamma range; 0 disables
    contrast: float = 0.0  # contrast factor range around 1; 0 disables
    noise: float = 0.0  # std of additive Gaussian noise
    blur: float = 0.0  # largest Gaussian blur sigma in pixels (half the draws stay sharp); 0 disables
    fill_mode: str = "NEAREST"


#: The method's classifier augmentation (Keras ImageDataGenerator settings of the paper).
METHOD_AUGMENT = AugmentConfig()
#: Milder classifier augmentation for small from-scratch training (the demo bundle): the
#: method's 45-degree rotations cost 0.06 validation AUC there (docs/demo-model.md).
MILD_AUGMENT = AugmentConfig(rotation=10.0, zoom=0.1, shift=0.05, shear=0.05,
                             brightness=(0.85, 1.15), channel_shift=0.03)
#: Classifier augmentations by name (a training setting, stored with each run).
CLASSIFIER_AUGMENTS = {"method": METHOD_AUGMENT, "mild": MILD_AUGMENT}
#: Lung segmentation: what differs between hospitals, scanners and views (exposure, gamma,
#: contrast, blur, noise, patient position and framing), never a left-right flip (the heart
#: stays on its side). CLAHE on/off is drawn by the segmenter's training data pipeline.
SEGMENTER_AUGMENT = AugmentConfig(rotation=15.0, zoom=0.15, shift=0.08, shear=4.0,
                                  horizontal_flip=False, brightness=(0.8, 1.2),
                                  channel_shift=0.04, gamma=0.5, contrast=0.4, noise=0.02,
                                  blur=1.5)


def _uniform(shape, low=0.0, high=1.0, seed=None):
    """Uniform draws: TensorFlow's stateful generator, or `keras.random.uniform` from `seed` (a
    Keras SeedGenerator, whose state training sets at each epoch so that a resumed run draws
    what an uninterrupted one would)."""
    import tensorflow as tf

    if seed is None:
        return tf.random.uniform(shape, low, high)
    import keras

    return keras.random.uniform(shape, low, high, seed=seed)


def _normal(shape, stddev: float, seed=None):
    """Normal draws with mean 0, from the same source as `_uniform`."""
    import tensorflow as tf

    if seed is None:
        return tf.random.normal(shape, stddev=stddev)
    import keras

    return keras.random.normal(shape, stddev=stddev, seed=seed)


def random_affine(batch: int, height, width, cfg: AugmentConfig, seed=None):
    """(batch, 8) projective transforms mapping output to input pixels, about the image centre:
    input = Rotation(angle) Shear(shear) Zoom(zx, zy) Flip (output - centre) + centre - shift,
    the matrices of ImageDataGenerator.apply_affine_transform. `seed`: see `_uniform`."""
    import tensorflow as tf

    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    degrees = math.pi / 180
    angle = _uniform([batch], -cfg.rotation, cfg.rotation, seed) * degrees
    zoom_x = _uniform([batch], 1 - cfg.zoom, 1 + cfg.zoom, seed)
    zoom_y = _uniform([batch], 1 - cfg.zoom, 1 + cfg.zoom, seed)
    shear = _uniform([batch], -cfg.shear, cfg.shear, seed) * degrees
    tx = _uniform([batch], -cfg.shift, cfg.shift, seed) * w
    ty = _uniform([batch], -cfg.shift, cfg.shift, seed) * h
    flip = (tf.cast(_uniform([batch], seed=seed) < 0.5, tf.float32) * 2 - 1
            if cfg.horizontal_flip else tf.ones([batch]))
    # [[cos a, -sin a], [sin a, cos a]] @ [[1, -sin s], [0, cos s]] @ diag(zx * flip, zy)
    a0 = tf.cos(angle) * zoom_x * flip
    a1 = -tf.sin(angle + shear) * zoom_y
    b0 = tf.sin(angle) * zoom_x * flip
    b1 = tf.cos(angle + shear) * zoom_y
    cx, cy = w / 2, h / 2
    a2 = cx - a0 * cx - a1 * cy - tx
    b2 = cy - b0 * cx - b1 * cy - ty
    zeros = tf.zeros([batch])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def warp(images, transforms, fill_mode: str = "NEAREST", interpolation: str = "BILINEAR"):
    """Apply per-image projective transforms to a (N, H, W, C) float batch."""
    import tensorflow as tf

    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation=interpolation, fill_mode=fill_mode)


def intensity(images, cfg: AugmentConfig, seed=None):
    """Brightness, channel shift, gamma, contrast and noise on [0, 1] images; clipped."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    if cfg.gamma:
        gamma = tf.exp(_uniform([n, 1, 1, 1], -cfg.gamma, cfg.gamma, seed))
        images = tf.clip_by_value(images, 0.0, 1.0) ** gamma
    if cfg.contrast:
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        factor = _uniform([n, 1, 1, 1], 1 - cfg.contrast, 1 + cfg.contrast, seed)
        images = (images - mean) * factor + mean
    low, high = cfg.brightness
    images = images * _uniform([n, 1, 1, 1], low, high, seed)
    if cfg.channel_shift:
        images = images + _uniform([n, 1, 1, 1], -cfg.channel_shift, cfg.channel_shift, seed)
    if cfg.blur:
        images = random_blur(images, cfg.blur, seed)
    if cfg.noise:
        images = images + _normal(tf.shape(images), cfg.noise, seed)
    return tf.clip_by_value(images, 0.0, 1.0)


def random_blur(images, max_sigma: float, seed=None):
    """Separable Gaussian blur of a (N, H, W, 1) batch with one random sigma in (0, max_sigma]
    for half the calls (the other half unchanged); reflected edges, so borders keep their level."""
    import tensorflow as tf

    radius = max(1, int(math.ceil(3 * max_sigma)))
    sigma = _uniform([], 0.05, max_sigma, seed)
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    blurred = tf.nn.conv2d(padded, tf.reshape(kernel, [1, -1, 1, 1]), 1, "VALID")
    blurred = tf.nn.conv2d(blurred, tf.reshape(kernel, [-1, 1, 1, 1]), 1, "VALID")
    return tf.where(_uniform([], seed=seed) < 0.5, blurred, images)


def augment_images(images, cfg: AugmentConfig = METHOD_AUGMENT, seed=None):
    """Augment a (N, H, W, 1) batch of [0, 1] X-rays; `seed`: a Keras SeedGenerator to draw
    from (see `_uniform`), or None for TensorFlow's stateful generator."""
    import tensorflow as tf

    shape = tf.shape(images)
    transforms = random_affine(shape[0], shape[1], shape[2], cfg, seed)
    return intensity(warp(images, transforms, cfg.fill_mode), cfg, seed)


def augment_image_and_mask(image, mask, cfg: AugmentConfig = SEGMENTER_AUGMENT):
    """Augment one (H, W, 1) image with its mask: same geometry, intensity on the image only."""
    import tensorflow as tf

    stacked = tf.concat([image, mask], axis=-1)[None]
    shape = tf.shape(stacked)
    warped = warp(stacked, random_affine(1, shape[1], shape[2], cfg), cfg.fill_mode)[0]
    new_image = intensity(warped[None, ..., :1], cfg)[0]
    return new_image, tf.cast(warped[..., 1:] > 0.5, tf.float32)


def swap_outside_lungs(images, lungs, chosen, margin: float = 0.02):
    """Replace what lies outside the lung fields of the `chosen` images of a (N, H, W, 1) batch
    by the same region of the next image in the batch (a rolled batch; the batch is shuffled).

    What a model sees outside the lungs (tubes, markers, collimation, the neck) then no longer
    goes with the lung findings of the image, so it cannot stand in for them. `lungs` is the
    (N, H, W, 1) lung-field mask in [0, 1]; it is grown by `margin` of the width and feathered
    over as much again so the seam is soft and the lungs' borders stay the image's own."""
    import tensorflow as tf

    radius = max(1, int(round(margin * int(images.shape[2] or 224))))
    window = 2 * radius + 1
    grown = tf.nn.max_pool2d(lungs, window, 1, "SAME")
    soft = tf.nn.avg_pool2d(grown, window, 1, "SAME")
    donors = tf.roll(images, shift=1, axis=0)
    swapped = soft * images + (1.0 - soft) * donors
    return tf.where(tf.reshape(chosen, (-1, 1, 1, 1)), swapped, images)
