"""Lung segmentation: a compact Keras U-Net and the wrapper that runs it on 512 px images."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np

from ..base.config import REPO_ROOT
from ..base.errors import BundleError

log = logging.getLogger(__name__)

SEGMENTER_SIZE = 256
DEFAULT_SEGMENTER_DIR = REPO_ROOT / "models" / "segmenter"
WEIGHTS_NAME = "segmenter.weights.npz"  # float16 archive, no optimizer state
CONFIG_NAME = "segmenter.json"


def build_unet(size: int = SEGMENTER_SIZE, base_filters: int = 16, depth: int = 4):
    """A plain functional U-Net (conv-BN-ReLU pairs, max-pool down, transposed conv up)."""
    import keras
    from keras import layers

    def block(x, filters: int, name: str):
        for i in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
            x = layers.ReLU(name=f"{name}_relu{i}")(x)
        return x

    inputs = keras.Input((size, size, 1), name="image")
    x, skips = inputs, []
    for level in range(depth):
        x = block(x, base_filters * 2**level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"pool{level}")(x)
    x = block(x, base_filters * 2**depth, "bottleneck")
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(base_filters * 2**level, 2, strides=2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = block(x, base_filters * 2**level, f"dec{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="lung_prob")(x)
    return keras.Model(inputs, outputs, name="lung_unet")


class LungSegmenter:
    """Runs the U-Net on 512 px [0, 1] images and returns lung probabilities at 512 px."""

    def __init__(self, model, size: int = SEGMENTER_SIZE, info: dict | None = None):
        self.model = model
        self.size = size
        self.info = info or {}
        self._predict = None

    @classmethod
    def load(cls, directory: str | Path = DEFAULT_SEGMENTER_DIR) -> "LungSegmenter":
        """Load the shipped (or a given) segmenter folder: config JSON + weights."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise BundleError(f"No lung segmenter found in {directory} (expected {CONFIG_NAME} "
                              f"and {WEIGHTS_NAME}); train one with 'segmenter train'.")
        from ..base.weights_io import load_member_weights

        info = json.loads(config_path.read_text())
        model = build_unet(info["size"], info["base_filters"], info["depth"])
        load_member_weights(model, weights_path)
        return cls(model, info["size"], info)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """U-Net probabilities (n, size, size) for a batch (n, size, size, 1) at its own size."""
        import tensorflow as tf

        if self._predict is None:
            # XLA: measured 45 ms instead of 52 ms per 256 px image on 2 CPU cores
            self._predict = tf.function(lambda x: self.model(x, training=False),
                                        reduce_retracing=True, jit_compile=True)
        return np.asarray(self._predict(tf.constant(batch)))[..., 0]

    def predict(self, images: np.ndarray, batch_size: int = 8,
                output_size: int | None = None) -> np.ndarray:
        """Lung probability maps for N grayscale images (N x H x W in [0, 1]): at the input size,
        or `output_size` x `output_size` (the U-Net's own size avoids a resize round trip)."""
        images = np.asarray(images, dtype=np.float32)
        single = images.ndim == 2
        if single:
            images = images[None]
        height, width = images.shape[1:3]
        small = np.stack([cv2.resize(im, (self.size, self.size), interpolation=cv2.INTER_AREA)
                          for im in images])[..., None]
        out = [self.forward(small[start:start + batch_size])
               for start in range(0, len(small), batch_size)]
        probs = np.concatenate(out)
        if self.info.get("tta_flip"):  # test-time flip, chosen on validation (segmenter.json)
            mirrored = [self.forward(np.ascontiguousarray(small[start:start + batch_size, :, ::-1]))
                        for start in range(0, len(small), batch_size)]
            probs = 0.5 * (probs + np.concatenate(mirrored)[:, :, ::-1])
        out_h, out_w = (output_size, output_size) if output_size else (height, width)
        if (out_h, out_w) != (self.size, self.size):
            probs = np.stack([cv2.resize(p, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
                              for p in probs])
        return probs[0] if single else probs
