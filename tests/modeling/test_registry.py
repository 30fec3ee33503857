"""The architecture registry: one consistent record per backbone, looked up by name."""

from __future__ import annotations

import dataclasses
import math

import pytest

from cxr_core.base.errors import CxrError
from cxr_core.modeling.registry import (
    ARCHITECTURES,
    METHOD_ARCHITECTURES,
    ArchSpec,
    UnknownArchitectureError,
    get_arch,
)

#: What each record must say (name: preprocessing, default size, minimum size, feature layer).
EXPECTED = {
    "DenseNet201": ("torch", 224, 32, "relu"),
    "EfficientNetB0": ("raw", 224, 32, "top_activation"),
    "InceptionV3": ("tf", 299, 75, "mixed10"),
    "InceptionResNetV2": ("tf", 299, 75, "conv_7b_ac"),
    "Xception": ("tf", 299, 71, "block14_sepconv2_act"),
    "MobileNetV3Small": ("raw", 224, 32, None),
    "MobileNetV2": ("tf", 224, 32, "out_relu"),
    "MobileNet": ("tf", 224, 32, "conv_pw_13_relu"),
}


def test_method_architectures_registered():
    assert set(METHOD_ARCHITECTURES) <= set(ARCHITECTURES)
    with pytest.raises(UnknownArchitectureError):
        get_arch("ResNet9000")


def test_the_method_uses_five_distinct_architectures_in_its_order():
    assert METHOD_ARCHITECTURES == ("DenseNet201", "EfficientNetB0", "InceptionV3",
                                    "InceptionResNetV2", "Xception")
    assert not any(ARCHITECTURES[name].compact for name in METHOD_ARCHITECTURES)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_architecture_has_a_consistent_record(name):
    spec = ARCHITECTURES[name]
    assert isinstance(spec, ArchSpec) and spec.name == name == spec.constructor
    assert (spec.preprocessing, spec.default_size, spec.min_size, spec.feature_layer) == EXPECTED[name]
    assert spec.min_size <= spec.default_size
    assert spec.weights_file.endswith(".h5") and "notop" in spec.weights_file.replace("_", "")
    assert all(isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
               for pair in spec.kwargs)
    assert spec.compact == name.startswith("MobileNet")


def test_the_registry_lists_exactly_the_known_architectures():
    assert set(ARCHITECTURES) == set(EXPECTED)
    assert len({spec.weights_file for spec in ARCHITECTURES.values()}) == len(ARCHITECTURES)


def test_only_efficientnet_carries_the_imagenet_stem_scale():
    for name, spec in ARCHITECTURES.items():
        if name == "EfficientNetB0":
            assert spec.imagenet_stem_scale == pytest.approx(
                [1 / math.sqrt(s) for s in (0.229, 0.224, 0.225)])
        else:
            assert spec.imagenet_stem_scale is None, name


def test_compact_backbones_are_built_small():
    assert dict(ARCHITECTURES["MobileNetV2"].kwargs) == {"alpha": 0.35}
    assert dict(ARCHITECTURES["MobileNet"].kwargs) == {"alpha": 0.25}
    assert dict(ARCHITECTURES["MobileNetV3Small"].kwargs) == {"include_preprocessing": True,
                                                            "minimalistic": False}


def test_lookup_ignores_case_and_returns_the_registered_record():
    for name, spec in ARCHITECTURES.items():
        assert get_arch(name) is spec
        assert get_arch(name.lower()) is spec and get_arch(name.upper()) is spec


@pytest.mark.parametrize("name", ["ResNet9000", "", "DenseNet", "densenet 201", None])
def test_unknown_names_are_refused_with_the_choices(name):
    with pytest.raises(UnknownArchitectureError) as caught:
        get_arch(name)
    message = str(caught.value)
    assert message.startswith(f"Unknown architecture '{name}'")
    assert all(known in message for known in ARCHITECTURES) and message.endswith(".")
    assert isinstance(caught.value, CxrError)


def test_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ARCHITECTURES["Xception"].default_size = 64  # type: ignore[misc]
