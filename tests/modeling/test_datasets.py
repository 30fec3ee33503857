"""The tf.data input pipeline over the crop cache: decoding, batch shapes and dtypes, pairing
of images and targets, seeded shuffling, augmentation in the pipeline."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxr_core.data.split_table import cached_paths, read_split
from cxr_core.modeling.datasets import augment_batches, decode_cached, make_dataset

from ..helpers import tiny_cache

N_IMAGES = 10


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Ten 32 px 16-bit crops, each with its own flat grey level, and 0/1 targets that encode
    the image number, so pairing can be checked after shuffling."""
    root = tmp_path_factory.mktemp("datasets")
    paths, targets = [], []
    for i in range(N_IMAGES):
        level = (i + 1) / (N_IMAGES + 1)
        image = np.full((32, 32), level, np.float32)
        image[8:24, 8:24] += 0.05 * np.sin(np.arange(16) / 3.0)[None]
        path = root / f"img{i}.png"
        cv2.imwrite(str(path), (np.clip(image, 0, 1) * 65535).astype(np.uint16))
        paths.append(str(path))
        targets.append([i & 1, (i >> 1) & 1, (i >> 2) & 1, (i >> 3) & 1])
    return paths, np.asarray(targets)


def _batches(ds):
    return [(np.asarray(x), np.asarray(y)) for x, y in ds]


def _order(ds) -> list[int]:
    """Image numbers in the order the pipeline yields them, read back from the targets."""
    return [int(y @ [1, 2, 4, 8]) for _, ys in _batches(ds) for y in ys]


def test_decode_reads_a_16_bit_crop_into_the_unit_range(cache):
    paths, _ = cache
    decoded = np.asarray(decode_cached(paths[3], 32))
    stored = cv2.imread(paths[3], cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (32, 32, 1) and decoded.dtype == np.float32
    np.testing.assert_allclose(decoded[..., 0], stored / 65535.0, atol=1e-6)
    small = np.asarray(decode_cached(paths[3], 16))
    assert small.shape == (16, 16, 1)
    np.testing.assert_allclose(small.mean(), decoded.mean(), atol=1e-4)  # area: means are kept


def test_decode_scales_an_8_bit_crop_to_the_same_range(tmp_path):
    image = np.zeros((32, 32), np.uint8)
    image[:, 16:] = 255
    cv2.imwrite(str(tmp_path / "eight.png"), image)
    decoded = np.asarray(decode_cached(str(tmp_path / "eight.png"), 32))[..., 0]
    np.testing.assert_allclose(decoded[:, :16], 0.0, atol=1e-6)
    np.testing.assert_allclose(decoded[:, 16:], 1.0, atol=1e-6)


def test_batches_have_the_model_input_shape_and_dtype(cache):
    paths, targets = cache
    batches = _batches(make_dataset(paths, targets, 24, 4, shuffle=False))
    assert [x.shape for x, _ in batches] == [(4, 24, 24, 1), (4, 24, 24, 1), (2, 24, 24, 1)]
    assert [y.shape for _, y in batches] == [(4, 4), (4, 4), (2, 4)]
    assert all(x.dtype == np.float32 and y.dtype == np.float32 for x, y in batches)
    assert all(0.0 <= x.min() and x.max() <= 1.0 for x, _ in batches)


def test_without_shuffling_the_order_is_the_table_order_and_pairs_hold(cache):
    paths, targets = cache
    ds = make_dataset(paths, targets, 32, 3, shuffle=False)
    assert _order(ds) == list(range(N_IMAGES))
    for x, y in _batches(ds):
        for image, target in zip(x, y):
            i = int(target @ [1, 2, 4, 8])
            assert abs(float(np.median(image)) - (i + 1) / (N_IMAGES + 1)) < 1e-3


def test_shuffling_is_seeded_and_keeps_images_with_their_targets(cache):
    paths, targets = cache
    first = _order(make_dataset(paths, targets, 32, 4, shuffle=True, seed=7))
    again = _order(make_dataset(paths, targets, 32, 4, shuffle=True, seed=7))
    other = _order(make_dataset(paths, targets, 32, 4, shuffle=True, seed=8))
    assert first == again and sorted(first) == list(range(N_IMAGES))
    assert first != list(range(N_IMAGES)) and other != first
    for x, y in _batches(make_dataset(paths, targets, 32, 4, shuffle=True, seed=7)):
        levels = [float(np.median(im)) for im in x]
        numbers = [int(t @ [1, 2, 4, 8]) for t in y]
        np.testing.assert_allclose(levels, [(i + 1) / (N_IMAGES + 1) for i in numbers], atol=1e-3)


def test_every_epoch_is_shuffled_again(cache):
    paths, targets = cache
    ds = make_dataset(paths, targets, 32, N_IMAGES, shuffle=True, seed=1)
    epochs = [_order(ds) for _ in range(3)]
    assert all(sorted(e) == list(range(N_IMAGES)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1


def test_augmentation_changes_pixels_not_shapes_and_off_is_identity(cache):
    paths, targets = cache
    plain = _batches(make_dataset(paths, targets, 32, 5, shuffle=False))
    for augment in (True, "mild"):
        augmented = _batches(make_dataset(paths, targets, 32, 5, shuffle=False, augment=augment))
        assert [x.shape for x, _ in augmented] == [x.shape for x, _ in plain]
        assert all(x.dtype == np.float32 for x, _ in augmented)
        for (xa, ya), (xp, yp) in zip(augmented, plain):
            np.testing.assert_array_equal(ya, yp)  # targets untouched
        assert not all(np.allclose(xa, xp) for (xa, _), (xp, _) in zip(augmented, plain))
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 8, 8, 1), np.float32), np.zeros((2, 1))))
    assert augment_batches(ds, False) is ds
    with pytest.raises(KeyError):
        augment_batches(ds.batch(2), "no-such-augmentation")


def test_the_pipeline_reads_a_split_through_the_cache(tmp_path):
    cache_dir, split_csv = tiny_cache(tmp_path, n_train=6, n_val=2, n_test=2, size=32)
    table = read_split(split_csv)
    ds = make_dataset(cached_paths(cache_dir, table.part("train")), table.targets("train"), 32, 4,
                      shuffle=False)
    batches = _batches(ds)
    assert sum(len(x) for x, _ in batches) == 6
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), table.targets("train"))


def _lung_masks(paths, root):
    """A lung-field mask per crop: the central block (rows 8-24, columns 4-28), 0/255 8-bit."""
    masks = []
    for path in paths:
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 4:28] = 255
        target = root / ("lungs_" + path.split("/")[-1])
        cv2.imwrite(str(target), mask)
        masks.append(str(target))
    return masks


def test_outside_the_lungs_comes_from_another_image_and_other_labels_become_unknown(cache, tmp_path):
    """With every image swapped: the lungs keep the image's own grey level (its targets travel
    with it through the shuffle), the corner holds another image's, the labels that lie on the
    lungs stay and the others are unknown. Drawn from (seed, epoch): the same twice, not the
    same for another epoch."""
    import tensorflow as tf

    paths, targets = cache
    masks = _lung_masks(paths, tmp_path)
    keep = np.array([True, False, True, False])
    epoch = tf.Variable(0, dtype=tf.int64)

    def run(share):
        ds = make_dataset(paths, targets, 32, 5, shuffle=True, seed=3, epoch=epoch,
                          outside_lungs=share, lung_paths=masks, lung_labels=keep)
        return _batches(ds)

    batches = run(1.0)
    for x, y in batches:
        assert np.isnan(y[:, ~keep]).all() and np.isfinite(y[:, keep]).all()
        assert not np.allclose(x[:, 0, 0, 0], x[:, 16, 16, 0], atol=0.02)
    # the lungs' grey identifies the image, whose kept labels match
    for x, y in batches:
        numbers = np.round(x[:, 16, 16, 0] * (N_IMAGES + 1) - 1).astype(int)
        for number, row in zip(numbers, y):
            assert np.array_equal(row[keep], targets[number][keep])
    again = run(1.0)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))
    none = run(0.0)
    assert all(np.isfinite(y).all() for _, y in none)
    half = [np.isnan(y[:, 1]) for _, y in run(0.5)]
    epoch.assign(1)
    other = [np.isnan(y[:, 1]) for _, y in run(0.5)]
    assert 0 < np.concatenate(half).sum() < N_IMAGES
    assert not all(np.array_equal(a, b) for a, b in zip(half, other))


def test_swapping_without_masks_is_refused(cache):
    paths, targets = cache
    with pytest.raises(ValueError, match="lung mask"):
        make_dataset(paths, targets, 32, 5, shuffle=False, outside_lungs=0.5)
