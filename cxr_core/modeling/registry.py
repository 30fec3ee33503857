"""Model registry: the one place that knows each architecture (constructor, input sizes,
ImageNet preprocessing, last convolutional feature layer, cached weights file)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..base.errors import CxrError


@dataclass(frozen=True)
class ArchSpec:
    """What the rest of the code needs to know about one `keras.applications` backbone."""

    name: str
    constructor: str  # attribute of keras.applications
    preprocessing: str  # "torch" (mean/std), "tf" ([-1, 1]) or "raw" (model rescales itself)
    default_size: int
    min_size: int
    feature_layer: str | None  # last conv feature map (None: the backbone output, auto-named)
    weights_file: str  # ImageNet no-top weights file name in Keras's cache (~/.keras/models)
    kwargs: tuple = ()  # extra constructor keyword arguments, as (key, value) pairs
    compact: bool = False  # small enough to ship in git
    #: Per-channel factor Keras applies after the stem's Normalization only when it builds the
    #: backbone with weights="imagenet" (EfficientNet); we fold it into the Normalization
    #: variance instead, so the graph never depends on how the weights were initialised.
    imagenet_stem_scale: tuple[float, ...] | None = None


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec("DenseNet201", "DenseNet201", "torch", 224, 32, "relu",
                 "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ArchSpec("EfficientNetB0", "EfficientNetB0", "raw", 224, 32, "top_activation",
                 "efficientnetb0_notop.h5",
                 imagenet_stem_scale=tuple(1 / math.sqrt(s) for s in (0.229, 0.224, 0.225))),
        ArchSpec("InceptionV3", "InceptionV3", "tf", 299, 75, "mixed10",
                 "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ArchSpec("InceptionResNetV2", "InceptionResNetV2", "tf", 299, 75, "conv_7b_ac",
                 "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ArchSpec("Xception", "Xception", "tf", 299, 71, "block14_sepconv2_act",
                 "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ArchSpec("MobileNetV3Small", "MobileNetV3Small", "raw", 224, 32, None,
                 "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                 (("include_preprocessing", True), ("minimalistic", False)), compact=True),
        ArchSpec("MobileNetV2", "MobileNetV2", "tf", 224, 32, "out_relu",
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
                 (("alpha", 0.35),), compact=True),
        ArchSpec("MobileNet", "MobileNet", "tf", 224, 32, "conv_pw_13_relu",
                 "mobilenet_2_5_224_tf_no_top.h5", (("alpha", 0.25),), compact=True),
    )
}

#: The five architectures of the method, in its order.
METHOD_ARCHITECTURES = ("DenseNet201", "EfficientNetB0", "InceptionV3", "InceptionResNetV2",
                        "Xception")


class UnknownArchitectureError(CxrError):
    """An architecture name that is not in the registry."""


def get_arch(name: str) -> ArchSpec:
    """Look an architecture up by name (case-insensitive)."""
    for key, spec in ARCHITECTURES.items():
        if key.lower() == str(name).lower():
            return spec
    raise UnknownArchitectureError(
        f"Unknown architecture '{name}'; choose one of: {', '.join(ARCHITECTURES)}."
    )
