import numpy as np
import pytest

from cxr_core.explain import engines
from cxr_core.base.errors import EngineError
from cxr_core.explain.engines import (
    KerasEngine,
    LiteEngine,
    export_lite,
    resolve_engine,
)
from cxr_core.explain.gradcam import normalise_maps

from ..helpers import LABELS, classifier, input_size_for, xray_batch


@pytest.mark.parametrize("arch", ["MobileNetV3Small", "InceptionV3"])
def test_lite_export_matches_the_tensorflow_graph(arch, tmp_path):
    size = input_size_for(arch)
    built = classifier(arch, size)
    path = export_lite(built, tmp_path / f"{arch}.tflite")
    x = xray_batch(3, size, seed=5)[..., None]
    ref_probs, ref_maps = (np.asarray(v) for v in KerasEngine(built).explain(x))
    probs, maps = LiteEngine(path, arch, size).explain(x)
    assert probs.shape == (3, len(LABELS)) and maps.shape == ref_maps.shape
    assert np.abs(probs - ref_probs).max() < 1e-5
    assert ref_maps.max() > 0  # the comparison is about real maps, not zeros
    for n in range(3):
        ours = normalise_maps(maps[n].transpose(2, 0, 1))
        ref = normalise_maps(ref_maps[n].transpose(2, 0, 1))
        assert np.abs(ours - ref).max() < 1e-4


def test_export_refuses_a_model_that_does_not_match(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "EXPORT_TOLERANCE", {"probabilities": -1.0, "maps": -1.0})
    with pytest.raises(EngineError, match="differs from the model"):
        export_lite(classifier("MobileNetV3Small", 96), tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []  # no half-checked file is left behind


def test_lite_engine_refuses_bad_files(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(EngineError, match="could not be opened"):
        LiteEngine(bad, "MobileNetV3Small", 96)
    good = export_lite(classifier("MobileNetV3Small", 96), tmp_path / "m.tflite")
    with pytest.raises(EngineError, match="expects"):
        LiteEngine(good, "MobileNetV3Small", 128)


def test_engine_choice(monkeypatch):
    monkeypatch.setattr(engines, "gpu_available", lambda: False)
    assert resolve_engine("auto", has_lite=True) == "lite"
    assert resolve_engine("auto", has_lite=False) == "tensorflow"
    assert resolve_engine("tensorflow", has_lite=True) == "tensorflow"
    monkeypatch.setattr(engines, "gpu_available", lambda: True)
    assert resolve_engine("auto", has_lite=True) == "tensorflow"
    with pytest.raises(EngineError, match="no TensorFlow Lite members"):
        resolve_engine("lite", has_lite=False)
    with pytest.raises(EngineError, match="Unknown inference engine"):
        resolve_engine("onnx", has_lite=True)
