"""Training/evaluation data: the split table and a tf.data pipeline over the preprocessed cache."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

def decode_cached(path, size: int):
    """Read one cached crop PNG (8 or 16 bit) as (size, size, 1) float32 in [0, 1]."""
    import tensorflow as tf

    raw = tf.io.read_file(path)
    image = tf.io.decode_png(raw, channels=1, dtype=tf.uint16)
    image = tf.cast(image, tf.float32) / 65535.0
    return tf.image.resize(image, (size, size), method="area", antialias=True)


def make_dataset(paths: list[str], targets: np.ndarray, size: int, batch_size: int,
                 shuffle: bool, seed: int = 0, augment: bool | str = False):
    """Parallel decode, optional shuffle and input-pipeline augmentation (on/off for the
    method's, or a name in CLASSIFIER_AUGMENTS), batch, prefetch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((paths, targets.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda p, y: (decode_cached(p, size), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = augment_batches(ds.batch(batch_size), augment)
    return ds.prefetch(tf.data.AUTOTUNE)


def augment_batches(ds, augment: bool | str):
    """`ds` of (images, targets) batches with the classifier augmentation applied in the input
    pipeline (how training runs it under XLA, which cannot compile the image warp); unchanged
    when `augment` is off."""
    if not augment:
        return ds
    import tensorflow as tf

    from ..imaging.augment import CLASSIFIER_AUGMENTS, augment_images

    cfg = CLASSIFIER_AUGMENTS[augment if isinstance(augment, str) else "method"]
    return ds.map(lambda x, y: (augment_images(x, cfg), y), num_parallel_calls=tf.data.AUTOTUNE)
