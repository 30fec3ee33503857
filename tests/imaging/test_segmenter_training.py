"""Segmenter training: image/mask pairs, patient-level splits, Dice/IoU scoring, the
selection rules (worst decile, test-time flips) and a short real training run."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from cxr_core.base.errors import DataError
from cxr_core.imaging.segmentation import LungSegmenter
from cxr_core.imaging.segmenter_training import (
    clahe,
    dice_iou,
    evaluate_segmenter,
    load_arrays,
    load_pairs,
    patient_holdout,
)


def test_dice_iou_hand_values():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    dice, iou = dice_iou(a, b)
    assert dice == pytest.approx(0.5) and iou == pytest.approx(1 / 3)
    assert dice_iou(np.zeros((2, 2)), np.zeros((2, 2))) == (1.0, 1.0)


def test_split_pairs_keeps_patients_apart_and_the_test_set_fixed():
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


def test_flips_are_used_only_when_they_help_the_worst_and_the_mean():
    from cxr_core.imaging.segmenter_training import flips_pay

    assert flips_pay((0.88, 0.94), (0.89, 0.945))
    assert not flips_pay((0.8876, 0.9468), (0.8912, 0.9442))  # better worst decile, lower mean
    assert not flips_pay((0.88, 0.94), (0.87, 0.95))


def test_patient_holdout_is_whole_patients_a_fraction_and_seeded():
    patients = pd.Series([f"p{i % 40}" for i in range(200)])  # 40 patients, 5 images each
    held = patient_holdout(patients, fraction=0.25, seed=3)
    assert held.dtype == bool and held.shape == (200,)
    assert patients[held].nunique() == 10 and held.sum() == 50
    assert not set(patients[held]) & set(patients[~held])
    assert np.array_equal(held, patient_holdout(patients, fraction=0.25, seed=3))
    assert not np.array_equal(held, patient_holdout(patients, fraction=0.25, seed=4))
    # the choice depends on the set of patients, not on the row order
    shuffled = patients.sample(frac=1, random_state=0).reset_index(drop=True)
    assert set(shuffled[patient_holdout(shuffled, 0.25, seed=3)]) == set(patients[held])
    assert patient_holdout(pd.Series(["a", "b"]), fraction=0.01).sum() == 1  # at least one


def test_clahe_keeps_shape_and_range_and_raises_local_contrast():
    yy = np.linspace(0.4, 0.6, 64, dtype=np.float32)[:, None]
    low_contrast = np.broadcast_to(yy + 0.02 * np.sin(np.arange(64) / 2.0), (64, 64))
    images = np.stack([low_contrast, np.zeros((64, 64), np.float32)])[..., None]
    out = clahe(images)
    assert out.shape == images.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    row_detail = lambda im: im[16:48, :, 0].std(axis=1).mean()  # noqa: E731 - within-row texture
    assert row_detail(out[0]) > 2 * row_detail(images[0])
    assert out[1].min() == out[1].max() < 0.05  # a black image stays a flat, dark field


def _pairs_folder(root, n: int = 3, size: int = 96):
    """metadata.csv with n image/mask pairs (bright ellipses on the mask) and one image without
    a mask; returns the folder."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        cv2.ellipse(mask, (size // 2, size // 2), (size // 4 + 4 * i, size // 3), 0, 0, 360, 255, -1)
        image = (0.2 + 0.6 * (mask > 0) + rng.normal(0, 0.02, mask.shape)).clip(0, 1)
        cv2.imwrite(str(root / "images" / f"x{i}.png"), (image * 255).astype(np.uint8))
        cv2.imwrite(str(root / "masks" / f"x{i}.png"), mask)
        rows.append({"image": f"images/x{i}.png", "lung_mask": f"masks/x{i}.png",
                     "patient_id": f"{i:03d}"})
    cv2.imwrite(str(root / "images" / "nomask.png"), (rng.random((size, size)) * 255).astype(np.uint8))
    rows.append({"image": "images/nomask.png", "lung_mask": "", "patient_id": "999"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def test_load_pairs_keeps_rows_with_a_mask_and_makes_paths_absolute(tmp_path):
    pairs = load_pairs(_pairs_folder(tmp_path / "d"))
    assert pairs["image"].tolist() == ["images/x0.png", "images/x1.png", "images/x2.png"]
    assert pairs["patient_id"].tolist() == ["000", "001", "002"]  # ids stay text
    assert pairs["image_path"].tolist() == [str(tmp_path / "d" / p) for p in pairs["image"]]
    assert pairs["mask_path"].tolist() == [str(tmp_path / "d" / p) for p in pairs["lung_mask"]]
    assert pairs.index.tolist() == [0, 1, 2]


def test_load_pairs_refuses_a_folder_without_metadata_or_masks(tmp_path):
    with pytest.raises(DataError, match="No metadata.csv"):
        load_pairs(tmp_path)
    pd.DataFrame({"image": ["a.png"], "lung_mask": [""], "patient_id": ["1"]}).to_csv(
        tmp_path / "metadata.csv", index=False)
    with pytest.raises(DataError, match="no image with a lung mask"):
        load_pairs(tmp_path)


def test_load_arrays_gives_unet_input_and_binary_masks(tmp_path):
    pairs = load_pairs(_pairs_folder(tmp_path / "d"))
    images, masks = load_arrays(pairs, size=32)
    assert images.shape == masks.shape == (3, 32, 32, 1)
    assert images.dtype == masks.dtype == np.float32
    assert set(np.unique(masks)) == {0.0, 1.0}
    assert images[masks == 1].mean() > images[masks == 0].mean() + 0.3  # the same geometry


class _Thresholding(LungSegmenter):
    """A stand-in network: 'lung' wherever the image is bright (or nowhere)."""

    def __init__(self, blind: bool = False):
        super().__init__(model=None, size=64)
        self.blind = blind

    def forward(self, batch):
        return np.zeros(batch.shape[:3], np.float32) if self.blind else \
            (batch[..., 0] > 0.5).astype(np.float32)


def test_evaluate_segmenter_scores_each_image_at_its_mask_resolution(tmp_path):
    pairs = load_pairs(_pairs_folder(tmp_path / "d"))
    good = evaluate_segmenter(_Thresholding(), pairs)
    assert good.columns.tolist() == ["image", "dice", "iou"]
    assert good["image"].tolist() == ["x0.png", "x1.png", "x2.png"]
    assert (good["dice"] > 0.95).all() and (good["iou"] <= good["dice"]).all()
    blind = evaluate_segmenter(_Thresholding(blind=True), pairs)
    assert (blind["dice"] == 0).all() and (blind["iou"] == 0).all()


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
