"""TensorFlow/Keras runtime set-up in one place: quiet logs, GPU features when present."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
_CONFIGURED = False


def configure(mixed_precision: bool | None = None, xla: bool = False) -> dict:
    """Import TensorFlow quietly and enable GPU memory growth, mixed precision and XLA on request.

    Mixed precision defaults to on when a GPU is present and off on CPU (where it is slower).
    Returns a description of the devices for logs and benchmark records.
    """
    global _CONFIGURED
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not _CONFIGURED:
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised
                pass
        _CONFIGURED = True
    if mixed_precision is None:
        mixed_precision = bool(gpus)
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if xla:
        tf.config.optimizer.set_jit(True)
    return {"gpus": len(gpus), "mixed_precision": bool(mixed_precision), "xla": bool(xla),
            "tensorflow": tf.__version__, "keras": keras.__version__}


def distribution_strategy():
    """MirroredStrategy over all local GPUs when there are several, else the default strategy."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        log.info("training on %d GPUs with MirroredStrategy", len(gpus))
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
