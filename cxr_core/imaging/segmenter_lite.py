"""The lung U-Net as a float32 TensorFlow Lite model: the same masks without importing
TensorFlow, so a compiled bundle's review path opens in about a second.

`export_segmenter_lite` writes `segmenter.tflite` beside the segmenter's weights and checks it
against the Keras U-Net; `load_segmenter` picks it when asked for the Lite path.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..base.errors import BundleError
from .segmentation import CONFIG_NAME, DEFAULT_SEGMENTER_DIR, LungSegmenter

log = logging.getLogger(__name__)

LITE_NAME = "segmenter.tflite"
#: Keras vs Lite lung probabilities on the export check (float32 both; XNNPACK sums in another order)
EXPORT_TOLERANCE = 1e-3


class LiteSegmenter(LungSegmenter):
    """`LungSegmenter` whose forward pass runs the exported Lite model (one image per call;
    calls are serialised because one interpreter is not thread-safe)."""

    def __init__(self, path: str | Path, info: dict, threads: int | None = None):
        super().__init__(model=None, size=int(info["size"]), info=info)
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        try:
            self._interpreter = Interpreter(model_path=str(self.path),
                                            num_threads=threads or os.cpu_count() or 1)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"The lung segmenter {self.path.name} could not be opened; "
                              "export it again with 'python -m cxr_core compile-bundle'.") from exc
        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1 or list(inputs[0]["shape"][1:]) != [self.size, self.size, 1]:
            raise BundleError(f"{self.path.name} does not fit a {self.size} px lung segmenter.")
        self._input = inputs[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._lock = threading.Lock()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        out = []
        with self._lock:
            for image in np.asarray(batch, np.float32):
                self._interpreter.set_tensor(self._input, image[None])
                self._interpreter.invoke()
                out.append(self._interpreter.get_tensor(self._output)[0, ..., 0].copy())
        return np.stack(out)


def export_segmenter_lite(directory: str | Path = DEFAULT_SEGMENTER_DIR, check_seed: int = 0) -> Path:
    """Write `segmenter.tflite` into a segmenter folder and check it against the Keras U-Net."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    directory = Path(directory)
    keras_segmenter = LungSegmenter.load(directory)
    size = keras_segmenter.size
    spec = tf.TensorSpec((1, size, size, 1), tf.float32)
    graph = tf.function(lambda x: keras_segmenter.model(x, training=False), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(graph.get_concrete_function())
    target = directory / LITE_NAME
    tmp = target.with_suffix(".tflite.tmp")
    # float32 throughout: float16 constants halve the file but let XNNPACK compute in float16,
    # which moved lung probabilities by 7e-3 on the check image
    tmp.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert())
    x = np.random.default_rng(check_seed).random((1, size, size, 1)).astype(np.float32)
    reference = keras_segmenter.forward(x)
    error = float(np.abs(LiteSegmenter(tmp, keras_segmenter.info, threads=1).forward(x) - reference).max())
    if error > EXPORT_TOLERANCE:
        tmp.unlink()
        raise BundleError(f"The TensorFlow Lite export of the lung segmenter differs from it "
                          f"by {error:.1e}.")
    os.replace(tmp, target)
    log.info("lung segmenter exported to %s (%.1f MB; max difference %.1e)", target,
             target.stat().st_size / 1e6, error)
    return target


def load_segmenter(directory: str | Path = DEFAULT_SEGMENTER_DIR, lite: bool = False) -> LungSegmenter:
    """The segmenter of a folder: its Lite export when `lite` and one exists, else the U-Net."""
    directory = Path(directory)
    if lite and (directory / LITE_NAME).is_file() and (directory / CONFIG_NAME).is_file():
        return LiteSegmenter(directory / LITE_NAME, json.loads((directory / CONFIG_NAME).read_text()))
    return LungSegmenter.load(directory)
