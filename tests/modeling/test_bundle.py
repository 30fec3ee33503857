import json

import numpy as np
import pytest

from cxr_core.base.errors import BundleError
from cxr_core.modeling.bundle import Bundle, find_bundles, write_bundle

from ..helpers import LABELS, classifier, xray_batch


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    members = [classifier("MobileNetV2", 96), classifier("MobileNetV3Small", 96)]
    rng = np.random.default_rng(0)
    val_targets = rng.integers(0, 2, (30, len(LABELS)))
    val_probs = np.clip(val_targets[None] * 0.3 + rng.random((2, 30, len(LABELS))) * 0.7, 0, 1)
    path = tmp_path_factory.mktemp("bundles") / "b"
    write_bundle(path, members, LABELS, "toy", val_probs, val_targets, training={"note": "test"},
                 groups={"effusion": ["pleural"]}, bundle_id="toy-1")
    return path, members


def test_round_trip_predictions_match_the_saved_members(small_bundle):
    path, members = small_bundle
    bundle = Bundle.load(path)
    assert bundle.labels == LABELS and bundle.archs == ["MobileNetV2", "MobileNetV3Small"]
    assert bundle.groups["effusion"] == ["pleural"] and bundle.groups["nodule"] == ["nodule"]
    crops = xray_batch(3, 128)
    pred = bundle.predict(crops)
    assert pred.member_probs.shape == (2, 3, len(LABELS))
    from cxr_core.modeling.inference import predict_arrays

    original = predict_arrays(members, crops)
    # float16 storage: probabilities agree to ~1e-3
    assert np.abs(pred.member_probs - original).max() < 5e-3
    ens_t, mem_t = bundle.thresholds()
    assert (pred.findings == (pred.probs >= ens_t)).all()
    assert (pred.agreement == (pred.member_probs >= mem_t[:, None, :]).sum(0)).all()
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["thresholds"]) == {"f1", "youden", "fixed"}
    assert find_bundles(path.parent) == [path]


def test_corrupted_or_missing_files_are_refused(small_bundle, tmp_path):
    import shutil

    path, _ = small_bundle
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    weights = broken / "members" / "MobileNetV2.npz"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupted"):
        Bundle.load(broken)
    weights.unlink()
    with pytest.raises(BundleError, match="missing"):
        Bundle.load(broken)
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Bundle.load(tmp_path / "nowhere")


def test_inconsistent_manifest_is_refused(small_bundle, tmp_path):
    import shutil

    path, _ = small_bundle
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["thresholds"]["f1"]["ensemble"] = [0.5]
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="thresholds"):
        Bundle.load(bad)
    manifest["schema_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema version"):
        Bundle.load(bad)


def test_bundle_explanations_equal_naive_gradcam(small_bundle):
    from cxr_core.explain.gradcam import all_label_cams, naive_gradcam, normalise_maps

    bundle = Bundle.load(small_bundle[0])
    member = bundle.classifiers[0]
    x = xray_batch(2, member.input_size, seed=3)[..., None]
    _, cams = all_label_cams(member, x)
    for k in range(len(LABELS)):
        ref = normalise_maps(naive_gradcam(member, x, k))
        assert np.abs(ref - normalise_maps(cams[..., k])).max() < 1e-4


def test_model_card_written_and_checksummed(small_bundle, tmp_path):
    import shutil

    from cxr_core.evaluation.model_card import write_model_card

    copy = tmp_path / "card"
    shutil.copytree(small_bundle[0], copy)
    path = write_model_card(copy)
    text = path.read_text()
    assert text.startswith("# Model card: toy-1") and "MobileNetV2 (96 px)" in text
    assert "MODEL_CARD.md" in Bundle.load(copy).manifest["files"]


def test_compiled_bundle_runs_lite_members_with_the_same_results(small_bundle, tmp_path, monkeypatch):
    import shutil

    from cxr_core.explain.engines import KerasEngine, LiteEngine, bundle_engines, compile_bundle
    from cxr_core.explain.ensemble_maps import explain_arrays

    monkeypatch.setenv("CXR_ENGINE", "auto")
    monkeypatch.setattr("cxr_core.explain.engines.gpu_available", lambda: False)
    path, _ = small_bundle
    copy = tmp_path / "compiled"
    shutil.copytree(path, copy)
    assert not Bundle.load(copy).has_lite
    bundle = compile_bundle(copy)
    assert bundle.has_lite
    manifest = json.loads((copy / "manifest.json").read_text())
    for member in manifest["members"]:
        assert member["lite"] in manifest["files"] and (copy / member["lite"]).is_file()
    lite, keras_engines = bundle_engines(bundle), bundle_engines(bundle, "tensorflow")
    assert all(isinstance(e, LiteEngine) for e in lite)
    assert all(isinstance(e, KerasEngine) for e in keras_engines)
    assert bundle_engines(bundle) is lite  # opened once, reused
    crops = xray_batch(2, 128, seed=4)
    a, b = explain_arrays(lite, crops, 96), explain_arrays(keras_engines, crops, 96)
    assert np.abs(a.member_probs - b.member_probs).max() < 1e-5
    assert np.abs(a.mean_maps - b.mean_maps).max() < 1e-4
    assert np.abs(a.std_maps - b.std_maps).max() < 1e-3
    # a tampered Lite file is refused like tampered weights
    lite_file = copy / manifest["members"][0]["lite"]
    data = bytearray(lite_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lite_file.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupted"):
        Bundle.load(copy)
