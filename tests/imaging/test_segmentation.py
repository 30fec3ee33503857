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
from cxr_core.imaging.segmenter_training import (
    dice_iou,
    evaluate_segmenter,
    load_pairs,
    patient_holdout,
)


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


def test_dice_iou_hand_values():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    dice, iou = dice_iou(a, b)
    assert dice == pytest.approx(0.5) and iou == pytest.approx(1 / 3)
    assert dice_iou(np.zeros((2, 2)), np.zeros((2, 2))) == (1.0, 1.0)


def test_shipped_segmenter_quality_on_real_heldout_pairs(cxr_public):
    pairs = load_pairs(cxr_public)
    card = json.loads((DEFAULT_SEGMENTER_DIR / "model_card.json").read_text())
    heldout = pairs[pairs["image"].isin(card["heldout_images"])]
    assert patient_holdout(pairs["patient_id"], seed=card["seed"]).sum() == len(heldout)
    scores = evaluate_segmenter(LungSegmenter.load(), heldout.head(12))
    assert scores["dice"].median() >= 0.9, scores.describe()


def test_split_pairs_keeps_patients_apart_and_the_test_set_fixed():
    import pandas as pd

    from cxr_core.imaging.segmenter_training import split_pairs

    patients = pd.Series([f"p{i // 3}" for i in range(300)])
    is_test, is_val = split_pairs(patients, seed=0)
    assert np.array_equal(is_test, patient_holdout(patients, seed=0))  # earlier cards' test images
    assert not (is_test & is_val).any() and is_val.sum() > 0
    train = ~is_test & ~is_val
    for a, b in ((is_test, is_val), (is_test, train), (is_val, train)):
        assert not set(patients[a]) & set(patients[b])


def test_worst_decile_is_the_mean_of_the_lowest_tenth():
    from cxr_core.imaging.segmenter_training import worst_decile

    dice = np.r_[np.full(18, 0.95), 0.5, 0.7]
    assert worst_decile(dice) == pytest.approx(0.6)
    assert worst_decile([0.9, 0.8]) == pytest.approx(0.8)  # at least one image


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


def test_segmenter_training_end_to_end_on_a_few_real_pairs(cxr_public, tmp_path):
    """Train one tiny epoch on real pairs: validation picks the epoch and the flips, the test
    patients are scored, the card says so, and the folder loads as a segmenter."""
    import pandas as pd

    from cxr_core.imaging.segmenter_training import train_segmenter

    pairs = load_pairs(cxr_public)
    keep = pairs[pairs["patient_id"].isin(sorted(pairs["patient_id"].unique())[:40])]
    data = tmp_path / "data"
    data.mkdir()
    meta = pd.read_csv(cxr_public / "metadata.csv", dtype={"patient_id": str})
    meta[meta["image"].isin(keep["image"])].to_csv(data / "metadata.csv", index=False)
    for column in ("image", "lung_mask"):
        for rel in keep[column]:
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            (data / rel).symlink_to(cxr_public / rel)
    card = train_segmenter(data, tmp_path / "seg", epochs=2, batch_size=8, base_filters=2, depth=2,
                           max_minutes=5)
    assert card["train_pairs"] + card["val_pairs"] + card["heldout_pairs"] == len(keep)
    assert 1 <= card["best_epoch"] <= 2 and len(card["epoch_history"]) == 2
    assert isinstance(card["tta_flip"], bool) and set(card["val_tta_flip"]) == {"off", "on"}
    assert 0 <= card["heldout_dice_worst_decile"] <= card["heldout_dice_mean"] <= 1
    seg = LungSegmenter.load(tmp_path / "seg")
    assert seg.info["tta_flip"] == card["tta_flip"]
    assert "worst-decile" in (tmp_path / "seg" / "MODEL_CARD.md").read_text()


def test_flips_are_used_only_when_they_help_the_worst_and_the_mean():
    from cxr_core.imaging.segmenter_training import flips_pay

    assert flips_pay((0.88, 0.94), (0.89, 0.945))
    assert not flips_pay((0.8876, 0.9468), (0.8912, 0.9442))  # better worst decile, lower mean
    assert not flips_pay((0.88, 0.94), (0.87, 0.95))
