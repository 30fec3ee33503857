"""Build classifiers from the registry: flat functional Keras, grayscale in, logits out.

grayscale [0, 1] -> 3 channels in the backbone's own ImageNet preprocessing -> backbone ->
global average pooling -> Dense(512, ReLU) -> Dropout(0.2) -> Dense(K) logits.
The backbone is built on our input tensor, so its layers sit at the top level of the model and
the feature layer stays reachable after save and load.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import CxrError, WeightsUnavailableError
from .registry import ArchSpec, get_arch

log = logging.getLogger(__name__)

HEAD_UNITS = 512
DROPOUT = 0.2
FREEZE_FRACTION = 0.1
_CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")


def _register_layers():
    import keras

    @keras.saving.register_keras_serializable(package="cxr_core")
    class GrayToBackboneInput(keras.layers.Layer):
        """[0, 1] grayscale (H, W, 1) -> 3-channel input in the backbone's preprocessing."""

        MEAN = (0.485, 0.456, 0.406)
        STD = (0.229, 0.224, 0.225)

        def __init__(self, mode: str = "tf", **kwargs):
            super().__init__(**kwargs)
            self.mode = mode

        def call(self, x):
            from keras import ops

            x = ops.concatenate([x, x, x], axis=-1)
            if self.mode == "torch":
                return (x - ops.array(self.MEAN, dtype=x.dtype)) / ops.array(self.STD, dtype=x.dtype)
            if self.mode == "tf":
                return x * 2.0 - 1.0
            return x * 255.0  # "raw": the backbone rescales 0..255 itself

        def compute_output_shape(self, input_shape):
            return (*input_shape[:-1], 3)

        def get_config(self):
            return {**super().get_config(), "mode": self.mode}

    @keras.saving.register_keras_serializable(package="cxr_core")
    class XrayAugment(keras.layers.Layer):
        """The method's random augmentation, active only in training (identity at inference),
        so it runs inside the training step, on the accelerator when there is one."""

        def __init__(self, enabled: bool = True, preset: str = "method", **kwargs):
            super().__init__(**kwargs)
            self.enabled = enabled
            self.preset = preset
            # its draws come from a state training sets at every epoch (training.EpochSeeds),
            # so that a resumed run augments as the uninterrupted one would; not a weight
            self.seed_generator = keras.random.SeedGenerator(0)

        def call(self, x, training=None):
            if training and self.enabled:
                from ..imaging.augment import CLASSIFIER_AUGMENTS, augment_images

                return augment_images(x, CLASSIFIER_AUGMENTS[self.preset], seed=self.seed_generator)
            return x

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "enabled": self.enabled, "preset": self.preset}

    return GrayToBackboneInput, XrayAugment


_CUSTOM_LAYERS = None


def gray_layer_class():
    """The registered grayscale-to-backbone preprocessing layer class."""
    global _CUSTOM_LAYERS
    if _CUSTOM_LAYERS is None:
        _CUSTOM_LAYERS = _register_layers()
    return _CUSTOM_LAYERS[0]


def augment_layer_class():
    """The registered training-only augmentation layer class."""
    gray_layer_class()
    return _CUSTOM_LAYERS[1]


def keras_cache_dir() -> Path:
    """Where Keras looks for downloaded weights: $KERAS_HOME/models or ~/.keras/models."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models"


@dataclass
class Classifier:
    """A built classifier: `model` maps images to logits, `explainer` to (features, logits)."""

    arch: ArchSpec
    model: object  # keras.Model: (N, S, S, 1) -> (N, K) logits
    explainer: object  # keras.Model: (N, S, S, 1) -> [(N, h, w, C) features, (N, K) logits]
    input_size: int
    labels: list[str]
    # compiled graphs (here and in gradcam.py), kept with the model they close over
    graphs: dict = field(default_factory=dict, repr=False)

    def features_and_logits(self, x):
        """Inference through a compiled graph (eager Keras calls cost seconds per image for
        the large backbones): returns numpy (features, logits)."""
        import numpy as np
        import tensorflow as tf

        if "features" not in self.graphs:
            explainer = self.explainer
            self.graphs["features"] = tf.function(lambda t: explainer(t, training=False),
                                                  reduce_retracing=True)
        features, logits = self.graphs["features"](tf.convert_to_tensor(x, tf.float32))
        return np.asarray(features, np.float32), np.asarray(logits, np.float32)


#: Recorded with every member (run.json, bundle manifest): the backbone is Keras's weights=None
#: graph, with any ImageNet-only stem rescaling folded into the weights, so a rebuild with
#: weights=None reproduces the trained model exactly.
GRAPH = "plain"


def refresh_layer_state(model) -> None:
    """Make layers that cache tensors derived from their weights (Keras's Normalization keeps its
    mean and variance as constants) pick up weights assigned with `set_weights`."""
    for layer in model.layers:
        if layer.built and type(layer).__name__ == "Normalization":
            layer.finalize_state()


def set_classifier_weights(model, weights: list) -> None:
    """`model.set_weights` that also refreshes the cached layer state (`refresh_layer_state`)."""
    model.set_weights(weights)
    refresh_layer_state(model)


def fold_stem_scale(model, scale) -> None:
    """Fold a per-channel factor applied after the stem's Normalization into its variance:
    c * (x - mean) / sqrt(var) == (x - mean) / sqrt(var / c**2)."""
    import numpy as np

    norm = next(layer for layer in model.layers if type(layer).__name__ == "Normalization")
    factor = np.asarray(scale, np.float32)
    norm.adapt_variance.assign(np.asarray(norm.adapt_variance.numpy()) / factor ** 2)
    norm.finalize_state()


def _check_stem_scale(pretrained, spec: ArchSpec) -> None:
    """The ImageNet graph must differ from ours only by the registered stem rescaling."""
    import numpy as np

    extra = [layer for layer in pretrained.layers if type(layer).__name__ == "Rescaling"
             and np.ndim(layer.scale) == 1]
    if len(extra) != 1 or not np.allclose(extra[0].scale, spec.imagenet_stem_scale, rtol=1e-6):
        raise CxrError(f"This Keras version builds {spec.name}'s ImageNet stem differently from "
                       "what the registry expects; update ArchSpec.imagenet_stem_scale.")


#: ImageNet weights files named explicitly (`use_imagenet_weights`), by architecture name;
#: they take precedence over Keras's cache.
_IMAGENET_FILES: dict[str, Path] = {}


def use_imagenet_weights(arch: str, path: str | Path) -> Path:
    """Load `arch`'s ImageNet weights from this file instead of Keras's cache (the CLI's
    `--imagenet-weights`); a missing file is refused at once, before any training starts."""
    spec = get_arch(arch)
    file = Path(path).expanduser()
    if spec.imagenet_stem_scale is not None:  # Keras adds its stem only for weights="imagenet"
        raise WeightsUnavailableError(
            f"{spec.name} reads its ImageNet weights from Keras's cache only; put "
            f"'{spec.weights_file}' in {keras_cache_dir()}.")
    if not file.is_file():
        raise WeightsUnavailableError(
            f"No ImageNet weights file at {file}; pass the path of '{spec.weights_file}'.")
    _IMAGENET_FILES[spec.name] = file
    return file


def imagenet_weights_file(arch: str) -> Path | None:
    """The local ImageNet weights file of `arch`: the one named with `use_imagenet_weights`,
    else Keras's cached copy (~/.keras/models/<stock name>); None when neither exists."""
    spec = get_arch(arch)
    if spec.name in _IMAGENET_FILES:
        return _IMAGENET_FILES[spec.name]
    cached = keras_cache_dir() / spec.weights_file
    return cached if cached.is_file() else None


def _construct(spec: ArchSpec, weights: str | None, **kwargs):
    import keras

    ctor = getattr(keras.applications, spec.constructor)
    # a local file is loaded by path (no download is ever tried); Keras builds an ImageNet stem
    # rescaling (EfficientNet) only for weights="imagenet", and finds its cached file itself
    local = (imagenet_weights_file(spec.name)
             if weights == "imagenet" and spec.imagenet_stem_scale is None else None)
    try:
        return ctor(include_top=False, weights=str(local) if local else weights,
                    **dict(spec.kwargs), **kwargs)
    except Exception as exc:  # keras raises a bare Exception("URL fetch failure ...") offline
        if weights != "imagenet":
            raise
        cached = keras_cache_dir() / spec.weights_file
        if local is not None:
            raise WeightsUnavailableError(
                f"The ImageNet weights file {local} does not fit {spec.name} "
                f"({spec.weights_file} is expected).") from exc
        raise WeightsUnavailableError(
            f"ImageNet weights for {spec.name} could not be loaded or downloaded; put "
            f"'{spec.weights_file}' in {cached.parent} or pass --imagenet-weights PATH "
            "(or connect to the internet)."
        ) from exc


def _backbone(spec: ArchSpec, tensor, weights: str | None):
    """The backbone on our input tensor, always as Keras's weights=None graph (see GRAPH)."""
    if weights != "imagenet" or spec.imagenet_stem_scale is None:
        return _construct(spec, weights, input_tensor=tensor)
    backbone = _construct(spec, None, input_tensor=tensor)
    pretrained = _construct(spec, "imagenet", input_shape=tuple(tensor.shape[1:]))
    _check_stem_scale(pretrained, spec)
    set_classifier_weights(backbone, pretrained.get_weights())
    fold_stem_scale(backbone, spec.imagenet_stem_scale)
    return backbone


def freeze_first_convs(model, fraction: float = FREEZE_FRACTION) -> int:
    """Freeze the first `fraction` of convolutional layers (in graph order); returns how many."""
    convs = [layer for layer in model.layers if type(layer).__name__ in _CONV_TYPES]
    count = math.ceil(fraction * len(convs)) if fraction > 0 else 0
    for layer in convs[:count]:
        layer.trainable = False
    return count


def build_classifier(arch: str, labels: list[str], input_size: int | None = None,
                     weights: str | None = None, freeze_fraction: float = FREEZE_FRACTION,
                     augment: bool | str = True) -> Classifier:
    """Build one flat classifier for `labels` (see module docstring); `augment` is on/off
    (the method's augmentation) or the name of a classifier augmentation ("method", "mild")."""
    import keras
    from keras import layers

    from ..imaging.augment import CLASSIFIER_AUGMENTS

    spec = get_arch(arch)
    preset = augment if isinstance(augment, str) else "method"
    if preset not in CLASSIFIER_AUGMENTS:
        raise ValueError(f"Unknown augmentation '{preset}'; choose one of: "
                         f"{', '.join(CLASSIFIER_AUGMENTS)}.")
    size = int(input_size or spec.default_size)
    if size < spec.min_size:
        raise ValueError(f"{spec.name} needs an input of at least {spec.min_size} px, not {size}")
    inputs = keras.Input((size, size, 1), name="image")
    # float32 even under mixed_float16: the random transforms are float32 tensors
    x = augment_layer_class()(enabled=bool(augment), preset=preset, name="augment",
                              dtype="float32")(inputs)
    x = gray_layer_class()(mode=spec.preprocessing, name="to_backbone_input")(x)
    backbone = _backbone(spec, x, weights)
    features = backbone.output
    pooled = layers.GlobalAveragePooling2D(name="head_pool")(features)
    hidden = layers.Dense(HEAD_UNITS, activation="relu", name="head_dense")(pooled)
    hidden = layers.Dropout(DROPOUT, name="head_dropout")(hidden)
    logits = layers.Dense(len(labels), name="logits", dtype="float32")(hidden)
    model = keras.Model(inputs, logits, name=spec.name)
    frozen = freeze_first_convs(model, freeze_fraction)
    log.debug("%s: %d layers, %d conv layers frozen", spec.name, len(model.layers), frozen)
    explainer = keras.Model(inputs, [features, logits], name=f"{spec.name}_explainer")
    return Classifier(spec, model, explainer, size, list(labels))


def feature_layer_name(classifier: Classifier) -> str:
    """Name of the layer whose output feeds the head's pooling (the Grad-CAM layer)."""
    return classifier.model.get_layer("head_pool")._inbound_nodes[0].input_tensors[0]._keras_history[0].name
