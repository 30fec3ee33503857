"""Exact Grad-CAM for every label from one forward pass, and ensemble/uncertainty maps.

Grad-CAM weight of channel c for label k is the spatial mean of d logit_k / d A_c. The head
starts with global average pooling p = mean_ij A_ij, so d logit_k / d A_ijc = (1 / hw) *
d logit_k / d p_c for every position: the weights are the head's Jacobian with respect to the
pooled features, divided by h*w. For Dense(512, ReLU) -> Dropout (identity at inference) ->
Dense(K), that Jacobian is  W1 diag(1[z > 0]) W2  with z the hidden pre-activation: a closed
form for all K labels at once, about the cost of the forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

EPS = 1e-8


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each map (over its two spatial axes 1 and 2) to max 1; all-zero maps stay zero.

    The one normalisation used everywhere (members, ensembles, naive reference)."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = maps.max(axis=(1, 2), keepdims=True)
    scale = np.where(peak > EPS, 1.0 / np.maximum(peak, EPS), 0.0).astype(np.float32)
    return maps * scale


def _head_weights(classifier):
    dense = classifier.model.get_layer("head_dense")
    out = classifier.model.get_layer("logits")
    w1, b1 = (np.asarray(v, np.float32) for v in dense.get_weights())
    w2, _ = (np.asarray(v, np.float32) for v in out.get_weights())
    return w1, b1, w2


def gradcam_weights(classifier, features: np.ndarray) -> np.ndarray:
    """Grad-CAM channel weights (N, C, K) of every label, in closed form (module docstring)."""
    w1, b1, w2 = _head_weights(classifier)
    pooled = features.mean(axis=(1, 2))  # (N, C)
    active = ((pooled @ w1 + b1) > 0).astype(np.float32)  # (N, 512)
    h, w = features.shape[1:3]
    # (W1 * active_n) @ W2 per image: two BLAS matmuls instead of a three-operand einsum
    return np.stack([(w1 * a) @ w2 for a in active]) / (h * w)


def all_label_cams(classifier, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, K), raw Grad-CAM maps (N, h, w, K) at feature resolution)."""
    features, logits = classifier.features_and_logits(x)
    weights = gradcam_weights(classifier, features)
    cams = np.matmul(features.reshape(features.shape[0], -1, features.shape[-1]), weights)
    cams = cams.reshape(*features.shape[:3], weights.shape[-1])
    probs = 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))
    return probs, np.maximum(cams, 0.0)


_NAIVE_GRAPHS: dict = {}


def naive_gradcam(classifier, x: np.ndarray, label: int,
                  return_weights: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Textbook Grad-CAM for one label: a forward and a backward pass through a GradientTape
    (compiled once per model, the label passed as a tensor) - the reference for tests and the
    baseline of the benchmark."""
    import tensorflow as tf

    key = id(classifier.explainer)
    if key not in _NAIVE_GRAPHS:
        explainer = classifier.explainer

        @tf.function(reduce_retracing=True)
        def one_label(images, k):
            with tf.GradientTape() as tape:
                features, logits = explainer(images, training=False)
                target = tf.gather(logits, k, axis=1)
            grads = tape.gradient(target, features)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            return tf.reduce_sum(weights * features, axis=-1), weights[:, 0, 0, :]

        _NAIVE_GRAPHS[key] = one_label
    cam, weights = _NAIVE_GRAPHS[key](tf.convert_to_tensor(x, tf.float32), tf.constant(label))
    cam = np.maximum(np.asarray(cam), 0.0)
    return (cam, np.asarray(weights)) if return_weights else cam


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w, K) -> (N, K, size, size) bilinear, then normalised per map."""
    n, _, _, k = maps.shape
    out = np.empty((n, k, size, size), np.float32)
    for i in range(n):
        for start in range(0, k, 256):  # OpenCV resizes up to 512 channels in one call
            chunk = np.ascontiguousarray(maps[i, :, :, start:start + 256], dtype=np.float32)
            resized = cv2.resize(chunk, (size, size), interpolation=cv2.INTER_LINEAR)
            out[i, start:start + 256] = (resized[..., None] if resized.ndim == 2 else resized).transpose(2, 0, 1)
    return normalise_maps(out.reshape(n * k, size, size)).reshape(n, k, size, size)


@dataclass
class Explanation:
    """Ensemble output with one heatmap per label, for N images."""

    member_probs: np.ndarray  # (M, N, K)
    member_maps: np.ndarray  # (M, N, K, S, S), each normalised to [0, 1]
    mean_maps: np.ndarray  # (N, K, S, S): mean of the member maps
    std_maps: np.ndarray  # (N, K, S, S): standard deviation across members (uncertainty)


def explain_arrays(classifiers: list, crops: np.ndarray, size: int) -> Explanation:
    """Probabilities and all-label maps of every member; maps resized to `size` and combined."""
    from .evaluation import _resize_batch

    probs, member_maps = [], None
    for m, classifier in enumerate(classifiers):
        x = _resize_batch(crops, classifier.input_size)
        p, cams = all_label_cams(classifier, x)
        probs.append(p)
        maps = upsample(cams, size)
        if member_maps is None:  # filled in place: no stacking copies of the largest array
            member_maps = np.empty((len(classifiers), *maps.shape), np.float32)
        member_maps[m] = maps
    mean = member_maps.mean(axis=0, dtype=np.float32)
    # one-pass variance in float32 (E[x^2] - E[x]^2), clipped at 0 against rounding
    second = np.square(member_maps).mean(axis=0, dtype=np.float32)
    std = np.sqrt(np.maximum(second - np.square(mean), 0.0, dtype=np.float32))
    return Explanation(np.stack(probs), member_maps, mean, std)
