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
                 shuffle: bool, seed: int = 0, augment: bool | str = False, epoch=None,
                 outside_lungs: float = 0.0, lung_paths: list[str] | None = None,
                 lung_labels: np.ndarray | None = None):
    """Parallel decode, optional shuffle and input-pipeline augmentation (on/off for the
    method's, or a name in CLASSIFIER_AUGMENTS), batch, prefetch.

    With `epoch` (an integer tf.Variable that training sets at each epoch's start), each pass
    is shuffled in an order that depends on `seed` and the epoch alone, so a resumed run sees
    the order the uninterrupted run would have (not epoch 0's again).

    `outside_lungs` > 0: that share of the images gets what lies outside its lung fields
    (`lung_paths`, the cache's masks) from another image of the batch (`swap_outside_lungs`),
    and on those images the labels not marked in `lung_labels` become unknown (NaN)."""
    import tensorflow as tf

    targets = targets.astype(np.float32)
    swapping = outside_lungs > 0 and len(paths) > 0
    if swapping and (lung_paths is None or len(lung_paths) != len(paths) or lung_labels is None):
        raise ValueError("swapping outside the lungs needs each image's lung mask and the "
                         "labels that lie on the lungs")
    # the mask path travels with its image through the shuffle
    items = [f"{p}\n{m}" for p, m in zip(paths, lung_paths)] if swapping else list(paths)
    ds = tf.data.Dataset.from_tensor_slices((items, targets))
    if shuffle and epoch is not None and len(paths):
        ds = _epoch_shuffled(items, targets, seed, epoch)
    elif shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if swapping:
        def decode_pair(item, y):
            parts = tf.strings.split(item, "\n")
            return (decode_cached(parts[0], size), decode_cached(parts[1], size)), y

        ds = ds.map(decode_pair, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
        ds = _swapped_outside_lungs(ds, outside_lungs, np.asarray(lung_labels, bool), seed, epoch)
    else:
        ds = ds.map(lambda p, y: (decode_cached(p, size), y), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size)
    ds = augment_batches(ds, augment)
    return ds.prefetch(tf.data.AUTOTUNE)


def _swapped_outside_lungs(ds, probability: float, lung_labels: np.ndarray, seed: int, epoch):
    """Batches of ((images, lungs), targets) -> (images, targets) with `swap_outside_lungs`
    applied to a `probability` share of the images, drawn statelessly from (seed, epoch, batch
    index) so that a resumed run draws what the uninterrupted one would."""
    import tensorflow as tf

    from ..imaging.augment import swap_outside_lungs

    keep = tf.constant(lung_labels.reshape(1, -1))

    def swap(index, batch):
        (images, lungs), y = batch
        epoch_now = tf.cast(epoch.read_value(), tf.int64) if epoch is not None else tf.constant(0, tf.int64)
        key = tf.stack([tf.constant(seed, tf.int64) * 7919 + 17, epoch_now * 1_000_003 + index])
        chosen = tf.random.stateless_uniform([tf.shape(images)[0]], seed=key) < probability
        images = swap_outside_lungs(images, lungs, chosen)
        unknown = tf.logical_and(chosen[:, None], tf.logical_not(keep))
        return images, tf.where(unknown, tf.fill(tf.shape(y), float("nan")), y)

    return ds.enumerate().map(swap, num_parallel_calls=tf.data.AUTOTUNE)


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
