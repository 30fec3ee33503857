"""The review pipeline on the shipped default bundle and real X-rays."""

from pathlib import Path

import numpy as np
import pytest

from cxr_core.base.config import settings
from cxr_core.explain.ensemble_maps import explain_arrays, resize_maps

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
    assert (review.findings == (review.probs >= review.thresholds)).all()
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
        members = np.stack([resize_maps(cams[:, :, k], size) for cams in review.member_cams])
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
