"""Exact Grad-CAM for every label from one forward pass of a member.

Grad-CAM weight of channel c for label k is the spatial mean of d logit_k / d A_c. The head
starts with global average pooling p = mean_ij A_ij, so d logit_k / d A_ijc = (1 / hw) *
d logit_k / d p_c for every position: the weights are the head's Jacobian with respect to the
pooled features, divided by h*w. For Dense(512, ReLU) -> Dropout (identity at inference) ->
Dense(K), that Jacobian is  W1 diag(1[z > 0]) W2  with z the hidden pre-activation: a closed
form for all K labels at once, about the cost of the forward pass.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each map (over its two spatial axes 1 and 2) to max 1; all-zero maps stay zero.

    The one normalisation used everywhere (members, ensembles, naive reference); the graph
    version `_normalise` below computes the same thing on tensors."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = maps.max(axis=(1, 2), keepdims=True)
    scale = np.where(peak > EPS, 1.0 / np.maximum(peak, EPS), 0.0).astype(np.float32)
    return maps * scale


def normalise_tensor(maps, axes=(1, 2)):
    """Tensor twin of `normalise_maps`: per-map peak scaled to 1, all-zero maps stay zero."""
    import tensorflow as tf

    peak = tf.reduce_max(maps, axis=axes, keepdims=True)
    return tf.where(peak > EPS, maps / tf.maximum(peak, EPS), tf.zeros_like(maps))


def closed_form_maps(features, logits, w1, b1, w2):
    """Tensors -> (probabilities (N, K), raw ReLU'd Grad-CAM maps (N, h, w, K), channel weights
    (N, C, K)) from the last feature map and the head's kernels (module docstring). The one
    implementation, used by the TensorFlow graph and by the exported TensorFlow Lite model."""
    import tensorflow as tf

    features = tf.cast(features, tf.float32)
    w1, b1, w2 = (tf.cast(v, tf.float32) for v in (w1, b1, w2))
    h, w, c = features.shape[1:]
    active = tf.cast(tf.matmul(tf.reduce_mean(features, axis=(1, 2)), w1) + b1 > 0, tf.float32)
    gated = active[:, None, :] * w1[None]  # (N, C, 512): W1 diag(1[z > 0]) per image
    weights = tf.matmul(gated, w2[None]) / float(h * w)  # (N, C, K)
    maps = tf.nn.relu(tf.matmul(tf.reshape(features, (-1, h * w, c)), weights))
    return tf.sigmoid(tf.cast(logits, tf.float32)), tf.reshape(maps, (-1, h, w, w2.shape[-1])), weights


def member_graph(classifier):
    """Compiled images (N, S, S, 1) -> `closed_form_maps` outputs from one forward pass of a
    Keras member; cached on the classifier (one trace serves every batch size)."""
    if "member" in classifier.graphs:
        return classifier.graphs["member"]
    import tensorflow as tf

    explainer = classifier.explainer
    dense = classifier.model.get_layer("head_dense")
    out = classifier.model.get_layer("logits")
    spec = tf.TensorSpec((None, classifier.input_size, classifier.input_size, 1), tf.float32,
                         name="image")

    @tf.function(input_signature=[spec])
    def run(images):
        features, logits = explainer(images, training=False)
        return closed_form_maps(features, logits, dense.kernel, dense.bias, out.kernel)

    classifier.graphs["member"] = run
    return run


def all_label_cams(classifier, x: np.ndarray, return_weights: bool = False):
    """(probabilities (N, K), raw Grad-CAM maps (N, h, w, K) at feature resolution[, channel
    weights (N, C, K)]) from one forward pass."""
    import tensorflow as tf

    probs, cams, weights = member_graph(classifier)(tf.convert_to_tensor(x, tf.float32))
    result = (np.asarray(probs), np.asarray(cams))
    return (*result, np.asarray(weights)) if return_weights else result


def naive_gradcam(classifier, x: np.ndarray, label: int,
                  return_weights: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Textbook Grad-CAM for one label: a forward and a backward pass through a GradientTape
    (compiled once per model, the label passed as a tensor) - the reference for tests and the
    baseline of the benchmark."""
    import tensorflow as tf

    if "naive" not in classifier.graphs:
        explainer = classifier.explainer

        @tf.function(reduce_retracing=True)
        def one_label(images, k):
            with tf.GradientTape() as tape:
                features, logits = explainer(images, training=False)
                target = tf.gather(logits, k, axis=1)
            grads = tape.gradient(target, features)
            # summed in float32: under mixed precision a float16 sum over ~1,000 channels
            # cancels to noise (the closed form sums in float32 too)
            features = tf.cast(features, tf.float32)
            weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2), keepdims=True)
            return tf.reduce_sum(weights * features, axis=-1), weights[:, 0, 0, :]

        classifier.graphs["naive"] = one_label
    cam, weights = classifier.graphs["naive"](tf.convert_to_tensor(x, tf.float32), tf.constant(label))
    cam = np.maximum(np.asarray(cam), 0.0)
    return (cam, np.asarray(weights)) if return_weights else cam
