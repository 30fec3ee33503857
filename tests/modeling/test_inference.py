"""Member probabilities for arrays and for cached crops, with and without test-time flips."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from cxr_core.imaging.resize import resize_batch
from cxr_core.modeling.inference import predict_arrays, predict_members, sigmoid

from ..helpers import xray_batch

LABELS = ["left_brighter", "overall_brightness"]


@pytest.fixture(scope="module")
def tiny_classifier():
    """A real (tiny) Keras classifier with fixed weights: logit 0 is 8 x (left half mean - right
    half mean), logit 1 is 4 x (mean - 0.5); the 'features' are the pixels themselves."""
    import keras

    from cxr_core.modeling.model_building import Classifier
    from cxr_core.modeling.registry import get_arch

    size = 16
    inputs = keras.Input((size, size, 1))
    features = keras.layers.Identity(name="features")(inputs)
    flat = keras.layers.Flatten()(features)
    logits = keras.layers.Dense(2, name="logits")(flat)
    model = keras.Model(inputs, logits)
    sign = np.where(np.arange(size) < size // 2, 1.0, -1.0)
    kernel = np.stack([np.tile(sign, size) * 8 / (size * size / 2),
                       np.full(size * size, 4 / (size * size))], axis=1)
    model.get_layer("logits").set_weights([kernel.astype(np.float32),
                                           np.array([0.0, -2.0], np.float32)])
    explainer = keras.Model(inputs, [features, logits])
    return Classifier(get_arch("MobileNet"), model, explainer, size, LABELS)


def _expected(crops: np.ndarray, size: int = 16, flip: bool = False) -> np.ndarray:
    x = resize_batch(crops, size)[..., 0]
    half = size // 2
    left, right = x[:, :, :half].mean(axis=(1, 2)), x[:, :, half:].mean(axis=(1, 2))
    brightness = 1 / (1 + np.exp(-(4 * x.mean(axis=(1, 2)) - 2)))
    if flip:  # the mirror swaps left and right: the first logit averages with its negative
        side = 0.5 * (1 / (1 + np.exp(-8 * (left - right))) + 1 / (1 + np.exp(8 * (left - right))))
    else:
        side = 1 / (1 + np.exp(-8 * (left - right)))
    return np.stack([side, brightness], axis=1)


def _lopsided(n: int, size: int, seed: int = 0) -> np.ndarray:
    crops = xray_batch(n, size, seed)
    crops[:, :, : size // 2] = np.clip(crops[:, :, : size // 2] + 0.3, 0, 1)  # brighter left half
    return crops


def test_sigmoid_is_the_logistic_function_without_overflow():
    assert sigmoid(np.array([0.0]))[0] == 0.5
    np.testing.assert_allclose(sigmoid(np.array([-2.0, 2.0])), [1 / (1 + np.e ** 2), 1 / (1 + np.e ** -2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would raise here
        out = sigmoid(np.array([-1e6, 1e6]))
    assert out[0] < 1e-25 and out[1] == 1.0


def test_predict_arrays_gives_member_probabilities(tiny_classifier):
    crops = _lopsided(5, 40)
    probs = predict_arrays([tiny_classifier], crops)
    assert probs.shape == (1, 5, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[0], _expected(crops), atol=1e-5)
    assert (probs[0, :, 0] > 0.7).all()  # brighter on the left, as drawn


def test_flips_average_each_crop_with_its_mirror(tiny_classifier):
    crops = _lopsided(3, 40)
    plain = predict_arrays([tiny_classifier], crops)
    flipped = predict_arrays([tiny_classifier], crops, flip=True)
    np.testing.assert_allclose(flipped[0], _expected(crops, flip=True), atol=1e-5)
    np.testing.assert_allclose(flipped[0, :, 0], 0.5, atol=1e-5)  # left-right evidence cancels
    np.testing.assert_allclose(flipped[0, :, 1], plain[0, :, 1], atol=1e-5)  # symmetric finding kept
    mirrored = predict_arrays([tiny_classifier], np.ascontiguousarray(crops[:, :, ::-1]), flip=True)
    np.testing.assert_allclose(mirrored, flipped, atol=1e-5)  # flips make the output mirror-invariant


def test_batching_members_and_input_forms_do_not_change_the_result(tiny_classifier):
    crops = _lopsided(7, 16, seed=2)
    whole = predict_arrays([tiny_classifier], crops, batch_size=16)
    pieces = predict_arrays([tiny_classifier], crops, batch_size=3)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)
    two = predict_arrays([tiny_classifier, tiny_classifier], crops)
    assert two.shape == (2, 7, 2)
    np.testing.assert_allclose(two[1], two[0])
    single = predict_arrays([tiny_classifier], crops[0])  # one (H, W) crop
    np.testing.assert_allclose(single, whole[:, :1], atol=1e-6)


def test_predict_members_reads_cached_crops_like_predict_arrays(tiny_classifier, tmp_path):
    crops = _lopsided(5, 16, seed=3)
    paths = []
    for i, crop in enumerate(crops):
        paths.append(str(tmp_path / f"c{i}.png"))
        cv2.imwrite(paths[-1], np.round(crop * 65535).astype(np.uint16))
    stored = np.stack([cv2.imread(p, cv2.IMREAD_UNCHANGED) / 65535.0 for p in paths])
    for flip in (False, True):
        from_files = predict_members([tiny_classifier], paths, 16, batch_size=2, flip=flip)
        from_arrays = predict_arrays([tiny_classifier], stored, flip=flip)
        assert from_files.shape == (1, 5, 2)
        np.testing.assert_allclose(from_files, from_arrays, atol=1e-5)
