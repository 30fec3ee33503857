import numpy as np
import pytest

from cxr_core.base.errors import WeightsUnavailableError
from cxr_core.modeling.model_building import build_classifier, feature_layer_name
from cxr_core.modeling.registry import (
    ARCHITECTURES,
    METHOD_ARCHITECTURES,
    UnknownArchitectureError,
    get_arch,
)

from ..helpers import LABELS, classifier, input_size_for, xray_batch


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_builds_flat_at_min_size_and_runs(arch):
    spec = get_arch(arch)
    size = input_size_for(arch)
    assert size >= spec.min_size
    built = classifier(arch, size)
    logits = np.asarray(built.model(xray_batch(2, size)[..., None]))
    assert logits.shape == (2, len(LABELS)) and np.isfinite(logits).all()
    # flat: backbone layers sit at the top level, the feature layer is reachable by name
    assert not any(type(layer).__name__ == "Functional" for layer in built.model.layers)
    if spec.feature_layer:
        assert feature_layer_name(built) == spec.feature_layer
        built.model.get_layer(spec.feature_layer)
    names = [layer.name for layer in built.model.layers]
    assert names[-4:] == ["head_pool", "head_dense", "head_dropout", "logits"]


def test_first_ten_percent_of_convs_frozen():
    built = classifier("EfficientNetB0", input_size_for("EfficientNetB0"))
    convs = [l for l in built.model.layers
             if type(l).__name__ in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")]
    frozen = [l for l in convs if not l.trainable]
    assert len(frozen) == int(np.ceil(0.1 * len(convs)))
    assert frozen == convs[: len(frozen)]


def test_method_architectures_registered():
    assert set(METHOD_ARCHITECTURES) <= set(ARCHITECTURES)
    with pytest.raises(UnknownArchitectureError):
        get_arch("ResNet9000")


def test_imagenet_weights_offline_fail_with_clear_message(monkeypatch, tmp_path):
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid: None -- no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(WeightsUnavailableError) as exc:
        build_classifier("MobileNetV2", LABELS, 96, weights="imagenet")
    message = str(exc.value)
    assert "mobilenet_v2_weights" in message and str(tmp_path) in message


def test_save_and_load_keeps_feature_layer(tmp_path):
    import keras

    built = classifier("MobileNetV2", input_size_for("MobileNetV2"))
    path = tmp_path / "m.keras"
    built.model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    loaded.get_layer("out_relu")
    x = xray_batch(1, 96)[..., None]
    assert np.allclose(np.asarray(loaded(x)), np.asarray(built.model(x)), atol=1e-5)


def test_named_augmentation_is_a_training_only_layer_setting():
    import numpy as np
    import pytest
    import tensorflow as tf

    from cxr_core.imaging.augment import CLASSIFIER_AUGMENTS, augment_images
    from cxr_core.modeling.model_building import build_classifier

    mild = build_classifier("MobileNet", ["a", "b"], 64, augment="mild")
    layer = mild.model.get_layer("augment")
    assert layer.get_config()["preset"] == "mild" and layer.enabled
    assert not build_classifier("MobileNet", ["a"], 64, augment=False).model.get_layer("augment").enabled
    with pytest.raises(ValueError, match="Unknown augmentation"):
        build_classifier("MobileNet", ["a"], 64, augment="wild")
    # a vertical bar: the method's up-to-45-degree rotations move it much more than the mild one
    image = np.zeros((64, 64, 64, 1), np.float32)
    image[:, 8:56, 30:34] = 1.0
    tf.random.set_seed(0)
    moved = {name: float(tf.reduce_mean(tf.abs(augment_images(image, cfg) - image)))
             for name, cfg in CLASSIFIER_AUGMENTS.items()}
    assert moved["mild"] < 0.8 * moved["method"]
    x = tf.constant(image[:2])
    assert np.array_equal(layer(x, training=False).numpy(), image[:2])  # identity at inference
