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
                 shuffle: bool, seed: int = 0, augment: bool | str = False, epoch=None):
    """Parallel decode, optional shuffle and input-pipeline augmentation (on/off for the
    method's, or a name in CLASSIFIER_AUGMENTS), batch, prefetch.

    With `epoch` (an integer tf.Variable that training sets at each epoch's start), each pass
    is shuffled in an order that depends on `seed` and the epoch alone, so a resumed run sees
    the order the uninterrupted run would have (not epoch 0's again)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((paths, targets.astype(np.float32)))
    if shuffle and epoch is not None and len(paths):
        ds = _epoch_shuffled(paths, targets.astype(np.float32), seed, epoch)
    elif shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda p, y: (decode_cached(p, size), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = augment_batches(ds.batch(batch_size), augment)
    return ds.prefetch(tf.data.AUTOTUNE)


def _epoch_shuffled(paths: list[str], targets: np.ndarray, seed: int, epoch):
    """(path, target) elements in a permutation drawn statelessly from (seed, epoch), the
    epoch read when each pass over the data begins."""
    import tensorflow as tf

    paths_t, targets_t = tf.constant(paths), tf.constant(targets)
    n = len(paths)

    def one_pass(_):
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch.read_value(), tf.int64)])
        order = tf.argsort(tf.random.stateless_uniform([n], seed=key))
        return tf.data.Dataset.from_tensor_slices(order)

    ds = tf.data.Dataset.range(1).flat_map(one_pass)
    return ds.map(lambda i: (tf.gather(paths_t, i), tf.gather(targets_t, i)))


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
