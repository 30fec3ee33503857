import re

import numpy as np
import pytest

from cxr_core.base.errors import WeightsUnavailableError
from cxr_core.modeling.model_building import build_classifier, feature_layer_name
from cxr_core.modeling.registry import ARCHITECTURES, get_arch

from ..conftest import SHARED, require
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
    assert "--imagenet-weights" in message


IMAGENET_MOBILENET = SHARED.parent / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


def _stored_kernel(path, layer: str) -> np.ndarray:
    """A layer's first weight array as stored in a Keras Applications .h5 file."""
    import h5py

    with h5py.File(path, "r") as f:
        names = []
        f[layer].visititems(lambda name, obj: names.append(name) if hasattr(obj, "shape") else None)
        return np.asarray(f[layer][sorted(names)[0]])


@pytest.fixture
def no_named_weights(monkeypatch, tmp_path):
    """An empty Keras cache and no file named with `use_imagenet_weights`."""
    from cxr_core.modeling import model_building

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(model_building, "_IMAGENET_FILES", {})
    return tmp_path / "keras" / "models"


def test_imagenet_weights_load_from_a_named_file_or_keras_cache(no_named_weights):
    import shutil

    from cxr_core.modeling.model_building import imagenet_weights_file, use_imagenet_weights

    source = require(IMAGENET_MOBILENET)
    expected = _stored_kernel(source, "conv_pw_13")
    assert imagenet_weights_file("MobileNet") is None
    use_imagenet_weights("mobilenet", source)  # the CLI's --imagenet-weights
    named = build_classifier("MobileNet", LABELS, 96, weights="imagenet")
    assert np.array_equal(named.model.get_layer("conv_pw_13").get_weights()[0], expected)
    # the head and the other members stay random: only the backbone is ImageNet's
    scratch = build_classifier("MobileNet", LABELS, 96, weights=None)
    assert not np.allclose(scratch.model.get_layer("conv_pw_13").get_weights()[0], expected)

    from cxr_core.modeling import model_building

    model_building._IMAGENET_FILES.clear()
    no_named_weights.mkdir(parents=True)
    shutil.copy(source, no_named_weights / "mobilenet_2_5_224_tf_no_top.h5")  # Keras's own place
    assert imagenet_weights_file("MobileNet") == no_named_weights / "mobilenet_2_5_224_tf_no_top.h5"
    cached = build_classifier("MobileNet", LABELS, 224, weights="imagenet")
    assert np.array_equal(cached.model.get_layer("conv_pw_13").get_weights()[0], expected)


def test_missing_or_unfit_imagenet_file_is_one_clear_sentence(no_named_weights, tmp_path):
    from cxr_core.modeling.model_building import use_imagenet_weights

    with pytest.raises(WeightsUnavailableError, match="No ImageNet weights file at .*missing.h5"):
        use_imagenet_weights("MobileNet", tmp_path / "missing.h5")
    with pytest.raises(WeightsUnavailableError, match="Keras's cache only"):
        use_imagenet_weights("EfficientNetB0", tmp_path / "missing.h5")
    wrong = tmp_path / "not_weights.h5"
    wrong.write_bytes(b"not an HDF5 file")
    use_imagenet_weights("MobileNet", wrong)
    with pytest.raises(WeightsUnavailableError, match="does not fit MobileNet"):
        build_classifier("MobileNet", LABELS, 96, weights="imagenet")


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


def _pretend_imagenet_is_cached(monkeypatch):
    """weights="imagenet" builds Keras's ImageNet graph offline: the download is skipped and
    loading assigns seeded random values (ImageNet-like Normalization statistics included)."""
    import keras
    from keras.src.utils import file_utils

    from cxr_core.modeling.model_building import refresh_layer_state

    monkeypatch.setattr(file_utils, "get_file", lambda *args, **kwargs: "/offline/imagenet.h5")

    def load_weights(self, path, *args, **kwargs):
        rng = np.random.default_rng(len(self.weights))
        values = []
        for variable in self.weights:
            value = np.asarray(variable)
            stem = re.match(r"normalization(_\d+)?/", variable.path)  # Keras's Normalization
            if value.dtype.kind == "f":
                if stem and variable.path.endswith("variance"):
                    value = rng.uniform(0.05, 0.07, value.shape)
                elif stem and variable.path.endswith("mean"):
                    value = rng.uniform(0.4, 0.5, value.shape)
                elif variable.path.endswith("variance"):
                    value = rng.uniform(0.8, 1.2, value.shape)
                else:
                    value = value + rng.normal(0, 0.01, value.shape)
            values.append(value.astype(np.asarray(variable).dtype))
        self.set_weights(values)
        refresh_layer_state(self)

    monkeypatch.setattr(keras.Model, "load_weights", load_weights)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_member_trained_from_imagenet_reloads_as_the_same_model(arch, monkeypatch, tmp_path):
    """Build as training does (ImageNet weights), store it in a bundle, reload: same outputs."""
    import keras

    from cxr_core.modeling.bundle import Bundle, write_bundle
    from cxr_core.modeling.model_building import set_classifier_weights

    _pretend_imagenet_is_cached(monkeypatch)
    spec = get_arch(arch)
    size = max(64, spec.min_size)
    keras.utils.set_random_seed(0)
    trained = build_classifier(arch, LABELS, size, weights="imagenet")
    # what the bundle stores (float16), so that only the graph can make a difference
    set_classifier_weights(trained.model, [w.astype(np.float16).astype(w.dtype) if w.dtype.kind == "f"
                                           else w for w in trained.model.get_weights()])
    x = xray_batch(2, size)[..., None]
    rng = np.random.default_rng(0)
    config = {"weights": "imagenet", "input_size": size}
    bundle_dir = write_bundle(tmp_path / "b", [trained], LABELS, "t", rng.random((1, 6, 4)),
                              rng.integers(0, 2, (6, 4)),
                              training={"members": [{"config": config}], "config": config})
    reloaded = Bundle.load(bundle_dir).classifiers[0]
    # the stem's first convolution (deep random networks wash input scaling out), the
    # Grad-CAM features and the logits must all be those of the trained model
    for before, after in zip(_probe(trained, x), _probe(reloaded, x)):
        assert np.abs(after - before).max() < 1e-4 * (1 + np.abs(before).max())


def _probe(classifier, x):
    import keras

    model = classifier.model
    first_conv = next(l for l in model.layers if type(l).__name__ == "Conv2D")
    probe = keras.Model(model.inputs, [first_conv.output, *classifier.explainer.outputs])
    return [np.asarray(t) for t in probe(x, training=False)]
