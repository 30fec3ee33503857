"""The review pipeline on the shipped default bundle and real X-rays."""

from pathlib import Path

import numpy as np
import pytest

from cxr_core.base.config import settings
from cxr_core.explain.ensemble_maps import explain_arrays, resize_maps
from cxr_core.review.pipeline import normal_index

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))


@pytest.fixture(scope="module")
def reviewer():
    from cxr_core.review.pipeline import Reviewer

    return Reviewer.from_paths(settings().default_bundle_path, engine="tensorflow")


def test_review_maps_heatmaps_back_onto_the_original(reviewer):
    review = reviewer.review_one(SAMPLES[0])
    k = len(review.labels)
    assert review.probs.shape == (k,) and review.member_probs.shape == (review.n_members, k)
    assert np.allclose(review.probs, review.member_probs.mean(axis=0))
    called = review.probs >= review.thresholds
    normal = normal_index(review.labels)
    if review.normal_overruled:  # 'normal' is not reported beside another positive finding
        assert called[normal] and not review.findings[normal]
        called[normal] = False
    assert (review.findings == called).all()
    heat = review.heatmap_original(0)
    assert heat.shape == review.image.original_size
    x0, y0, x1, y1 = review.pre.box_original
    outside = heat.copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.max() == 0  # nothing outside the crop box
    assert 0 <= heat.min() and heat.max() <= 1
    assert review.std_maps.shape == review.mean_maps.shape
    assert "models" in review.title(0) and "threshold" in review.title(0)
    table = review.table()
    assert table["positive"].tolist() == sorted(table["positive"], reverse=True)


def test_member_maps_on_demand_average_to_the_ensemble_map(reviewer):
    review = reviewer.review_one(SAMPLES[1])
    size = review.mean_maps.shape[-1]
    for k in range(len(review.labels)):
        members = np.stack([resize_maps(cams[:, :, k], size, grid)
                            for cams, grid in zip(review.member_cams, review.map_grids)])
        assert np.abs(members.mean(axis=0) - review.mean_maps[k]).max() < 1e-4
        assert np.abs(members.std(axis=0) - review.std_maps[k]).max() < 2e-3
        on_original = review.heatmap_original(k, member=0)
        assert on_original.shape == review.image.original_size


def test_batch_review_equals_one_by_one(reviewer):
    images = [reviewer.load(path) for path in SAMPLES[:2]]
    together = reviewer.review(images)
    alone = [reviewer.review([image])[0] for image in images]
    for a, b in zip(together, alone):
        assert np.abs(a.probs - b.probs).max() < 1e-5
        assert np.abs(a.mean_maps - b.mean_maps).max() < 1e-4


def test_warm_up_runs_the_whole_pipeline(reviewer):
    seconds = reviewer.warm_up()
    assert seconds > 0
    crops = np.random.default_rng(0).random((1, 64, 64)).astype("float32")
    direct = explain_arrays(reviewer.engines, crops, 32)
    assert direct.mean_maps.shape == (1, len(reviewer.bundle.labels), 32, 32)


def test_unknown_engine_is_one_clear_error():
    from cxr_core.base.errors import EngineError
    from cxr_core.review.pipeline import Reviewer

    with pytest.raises(EngineError, match="Unknown inference engine"):
        Reviewer.from_paths(settings().default_bundle_path, engine="onnx")


def test_one_hot_pixel_leaves_the_findings_unchanged(reviewer):
    """A 12-bit X-ray in a 16-bit PNG with one pixel at 65535 is reviewed like the clean one."""
    import cv2

    from cxr_core.imaging.image_io import load_image

    arr = cv2.imread(str(SAMPLES[0]), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 16
    hot = arr.copy()
    hot[5, 5] = 65535
    encoded = [cv2.imencode(".png", a)[1].tobytes() for a in (arr, hot)]
    clean, spoiled = reviewer.review([load_image(e, filename="x.png") for e in encoded])
    assert np.abs(clean.probs - spoiled.probs).max() < 0.01
    assert (clean.findings == spoiled.findings).all()
    assert clean.pre.mask.box == spoiled.pre.mask.box


def test_compiled_bundle_reviews_without_importing_tensorflow(tmp_path):
    """The Lite path (compiled members, Lite segmenter, NumPy ensemble) never loads TensorFlow."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from cxr_core.explain.engines import compile_bundle

    bundle = tmp_path / "compiled"
    shutil.copytree(settings().default_bundle_path, bundle)
    compile_bundle(bundle)
    script = (
        "import json, sys\n"
        "from cxr_core.review.pipeline import Reviewer\n"
        f"r = Reviewer.from_paths({str(bundle)!r}, engine='lite')\n"
        f"review = r.review_one({str(SAMPLES[0])!r})\n"
        "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules,"
        " 'engines': [e.kind for e in r.engines], 'seg': type(r.segmenter).__name__,"
        " 'probs': review.probs.tolist()}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["tf"] is False and child["keras"] is False
    assert set(child["engines"]) == {"lite"} and child["seg"] == "LiteSegmenter"
    from cxr_core.review.pipeline import Reviewer

    reference = Reviewer.from_paths(bundle, engine="tensorflow").review_one(SAMPLES[0])
    assert np.abs(np.array(child["probs"]) - reference.probs).max() < 1e-3


def test_reviews_carry_the_input_check(reviewer):
    review = reviewer.review_one(SAMPLES[2])
    check = review.input_check
    assert check is not None and check.passed and not review.refused and "lungs" in check.checks
    assert (check.score is None) == (reviewer.input_model is None)
    row = review.record("x.png")[0]
    assert row["input_check_passed"] is True and row["input_check_reason"] == ""
    assert row["input_check_score"] == check.score


def test_bundle_test_time_flips_reach_the_review_on_both_engines(tmp_path):
    """A bundle with `inference.tta_flip` averages each member over the crop and its mirror in
    the review (TensorFlow and Lite engines alike), as `Bundle.predict` and evaluation do."""
    import json
    import shutil

    from cxr_core.modeling.bundle import Bundle
    from cxr_core.review.pipeline import Reviewer

    flipped = tmp_path / "flipped"
    shutil.copytree(settings().default_bundle_path, flipped)
    manifest = json.loads((flipped / "manifest.json").read_text())
    manifest["inference"] = {"tta_flip": True}
    (flipped / "manifest.json").write_text(json.dumps(manifest))
    plain = Reviewer.from_paths(flipped.parent / "flipped", engine="lite")
    plain.bundle.manifest["inference"] = {"tta_flip": False}
    base = plain.review_one(SAMPLES[0])
    bundle = Bundle.load(flipped)
    assert bundle.tta_flip
    expected = bundle.predict(base.pre.crop[None]).probs[0]
    for engine in ("lite", "tensorflow"):
        review = Reviewer.from_paths(flipped, engine=engine).review_one(SAMPLES[0])
        assert np.abs(review.probs - expected).max() < 1e-3, engine
        assert np.abs(review.probs - base.probs).max() > 1e-3  # the mirror changes them


def test_normal_called_together_with_other_findings_is_named():
    """'normal' excludes every other finding: when the models call both, the review names the
    others (the Review page shows it as a warning); otherwise nothing."""
    from types import SimpleNamespace

    import numpy as np

    from cxr_core.review.pipeline import Review

    study = SimpleNamespace(labels=["pneumonia", "Normal", "effusion", "nodule"],
                            probs=np.array([0.8, 0.6, 0.2, 0.7]))
    study.order = lambda *a, **k: Review.order(study, *a, **k)
    study.normal_overruled = False
    study.findings = np.array([True, True, False, True])
    assert Review.normal_with_findings(study) == ["pneumonia", "nodule"]
    study.findings = np.array([False, True, False, False])
    assert Review.normal_with_findings(study) == []
    study.findings = np.array([True, False, False, False])
    assert Review.normal_with_findings(study) == []


def test_normal_is_never_reported_positive_with_another_finding():
    """'normal' means no other finding: it is reported only when no other finding passes its
    threshold; overruled, it is negative and the review still names what the models said."""
    from types import SimpleNamespace

    from cxr_core.review.pipeline import Review, coherent_findings

    labels = ["pneumonia", "normal", "effusion"]
    calls = np.array([[True, True, False],   # normal with pneumonia: overruled
                      [False, True, False],  # normal alone: reported
                      [False, False, True],  # no normal call: unchanged
                      [False, False, False]])
    findings, overruled = coherent_findings(calls, labels)
    assert findings.tolist() == [[True, False, False], [False, True, False],
                                 [False, False, True], [False, False, False]]
    assert overruled.tolist() == [True, False, False, False]
    assert not (findings[:, 1] & np.delete(findings, 1, axis=1).any(axis=1)).any()
    assert coherent_findings(calls[0], labels)[1]  # one image
    assert coherent_findings(calls, ["a", "b", "c"])[0].tolist() == calls.tolist()  # no normal

    study = SimpleNamespace(labels=labels, probs=np.array([0.8, 0.6, 0.2]),
                            thresholds=np.array([0.5, 0.4, 0.5]), findings=findings[0],
                            normal_overruled=True, agreement=np.array([2, 2, 0]), n_members=2,
                            fmt=Review.fmt)
    for name in ("order", "normal_with_findings", "borderline"):
        setattr(study, name, (lambda f: lambda *a, **k: f(study, *a, **k))(getattr(Review, name)))
    assert Review.normal_with_findings(study) == ["pneumonia"]
    assert Review.normal_note(study) == ("'normal' is not reported: the models gave it 0.600 "
                                         "(threshold 0.400), but pneumonia is positive, and "
                                         "'normal' means no other finding.")
    assert Review.call(study, 1).startswith("negative: above its threshold")
