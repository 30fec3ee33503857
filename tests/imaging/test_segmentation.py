import json

import numpy as np
import pytest

from cxr_core.base.errors import BundleError
from cxr_core.imaging.segmentation import (
    DEFAULT_SEGMENTER_DIR,
    WEIGHTS_NAME,
    LungSegmenter,
    build_unet,
)
from cxr_core.imaging.segmenter_training import evaluate_segmenter, load_pairs, patient_holdout


def test_shipped_segmenter_is_small_and_documented():
    weights = DEFAULT_SEGMENTER_DIR / WEIGHTS_NAME
    assert weights.stat().st_size <= 10 * 1024 * 1024
    card = json.loads((DEFAULT_SEGMENTER_DIR / "model_card.json").read_text())
    assert card["heldout_dice_mean"] >= 0.93 and card["heldout_pairs"] > 0
    assert (DEFAULT_SEGMENTER_DIR / "MODEL_CARD.md").is_file()


def test_segmenter_output_shape_and_range():
    seg = LungSegmenter.load()
    probs = seg.predict(np.random.default_rng(0).random((2, 300, 280)).astype("float32"))
    assert probs.shape == (2, 300, 280) and probs.min() >= 0 and probs.max() <= 1
    single = seg.predict(np.zeros((128, 128), "float32"))
    assert single.shape == (128, 128)


def test_missing_segmenter_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BundleError, match="No lung segmenter"):
        LungSegmenter.load(tmp_path)


def test_unet_builds_at_256():
    model = build_unet(256, 8, 5)
    assert model.output_shape == (None, 256, 256, 1)


def test_shipped_segmenter_quality_on_real_heldout_pairs(cxr_public):
    pairs = load_pairs(cxr_public)
    card = json.loads((DEFAULT_SEGMENTER_DIR / "model_card.json").read_text())
    heldout = pairs[pairs["image"].isin(card["heldout_images"])]
    assert patient_holdout(pairs["patient_id"], seed=card["seed"]).sum() == len(heldout)
    scores = evaluate_segmenter(LungSegmenter.load(), heldout.head(12))
    assert scores["dice"].median() >= 0.9, scores.describe()


def test_test_time_flip_averages_the_mirrored_prediction():
    class LeftLeaning(LungSegmenter):
        def forward(self, batch):  # "lung" only in the left half of whatever it is shown
            out = np.zeros(batch.shape[:3], np.float32)
            out[:, :, : batch.shape[2] // 2] = 1.0
            return out

    seg = LeftLeaning(model=None, size=32, info={})
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    plain = seg.predict(image, output_size=32)
    seg.info["tta_flip"] = True
    flipped = seg.predict(image, output_size=32)
    assert plain[:, :16].min() == 1.0 and plain[:, 16:].max() == 0.0
    assert np.allclose(flipped, 0.5)  # its own half and the mirrored half average out
