"""Train the lung U-Net on real image/mask pairs (`segmenter train`) and write its model card."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..base.errors import DataError
from ..base.weights_io import load_member_weights, save_member_weights
from .augment import augment_image_and_mask
from .image_io import load_image
from .preprocessing import WORK_SIZE
from .resize import resize_to
from .segmentation import (
    CONFIG_NAME,
    SEGMENTER_SIZE,
    WEIGHTS_NAME,
    LungSegmenter,
    build_unet,
)

log = logging.getLogger(__name__)


def load_pairs(data_dir: str | Path) -> pd.DataFrame:
    """Rows of `metadata.csv` that have a lung mask, with absolute paths."""
    data_dir = Path(data_dir)
    meta_path = data_dir / "metadata.csv"
    if not meta_path.is_file():
        raise DataError(f"No metadata.csv in {data_dir}.")
    meta = pd.read_csv(meta_path, dtype={"patient_id": str})
    pairs = meta[meta["lung_mask"].notna() & (meta["lung_mask"].astype(str).str.len() > 0)].copy()
    if pairs.empty:
        raise DataError(f"{meta_path} lists no image with a lung mask.")
    pairs["image_path"] = [str(data_dir / p) for p in pairs["image"]]
    pairs["mask_path"] = [str(data_dir / p) for p in pairs["lung_mask"]]
    return pairs.reset_index(drop=True)


def patient_holdout(patients: pd.Series, fraction: float = 0.15, seed: int = 0) -> np.ndarray:
    """Boolean 'is validation' per row, whole patients held out, deterministic for a seed."""
    unique = np.array(sorted(patients.astype(str).unique()))
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(unique, max(1, int(round(fraction * len(unique)))), replace=False))
    return patients.astype(str).isin(chosen).to_numpy()


def _read_mask(path: str) -> np.ndarray:
    mask = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DataError(f"Mask {path} could not be read.")
    return (mask > 127).astype(np.float32)


def load_arrays(pairs: pd.DataFrame, size: int = SEGMENTER_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Images through the shared loader and 512 px resize, then to the U-Net size; masks alike."""
    images, masks = [], []
    for image_path, mask_path in zip(pairs["image_path"], pairs["mask_path"]):
        work = resize_to(load_image(image_path).pixels, WORK_SIZE)
        images.append(resize_to(work, size))
        masks.append((resize_to(_read_mask(mask_path), size) > 0.5).astype(np.float32))
    return np.stack(images)[..., None], np.stack(masks)[..., None]


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two binary masks (1.0 when both are empty)."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    inter = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    union = np.logical_or(pred, truth).sum()
    return (1.0 if total == 0 else 2 * inter / total), (1.0 if union == 0 else inter / union)


def evaluate_segmenter(segmenter: LungSegmenter, pairs: pd.DataFrame) -> pd.DataFrame:
    """Dice/IoU of the raw thresholded prediction at each mask's own resolution."""
    rows = []
    for image_path, mask_path in zip(pairs["image_path"], pairs["mask_path"]):
        image = load_image(image_path)
        probs = segmenter.predict(resize_to(image.pixels, WORK_SIZE))
        truth = _read_mask(mask_path)
        pred = resize_to(probs, truth.shape) >= 0.5
        dice, iou = dice_iou(pred, truth)
        rows.append({"image": Path(image_path).name, "dice": dice, "iou": iou})
    return pd.DataFrame(rows)


def clahe(images: np.ndarray) -> np.ndarray:
    """CLAHE (clip 2, 8 x 8 tiles) of (N, H, W, 1) [0, 1] images: the local-contrast look some
    archives store, drawn on or off per training sample."""
    tool = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    out = [tool.apply((np.clip(im[..., 0], 0, 1) * 255).astype(np.uint8)) for im in images]
    return (np.stack(out).astype(np.float32) / 255.0)[..., None]


def worst_decile(dice: np.ndarray) -> float:
    """Mean Dice of the worst tenth of the images (at least one): the selection score, because
    a segmenter is judged by the X-rays it gets wrong, not by the easy majority."""
    dice = np.sort(np.asarray(dice, dtype=float))
    return float(dice[:max(1, int(round(0.1 * len(dice))))].mean())


def _dice_per_image(probs: np.ndarray, masks: np.ndarray) -> np.ndarray:
    pred, truth = probs >= 0.5, masks >= 0.5
    inter = (pred & truth).sum(axis=(1, 2, 3))
    total = pred.sum(axis=(1, 2, 3)) + truth.sum(axis=(1, 2, 3))
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))


def flips_pay(plain: tuple[float, float], flipped: tuple[float, float]) -> bool:
    """Average test-time left-right flips only when they raise the worst-decile validation Dice
    without lowering the mean: they double the segmentation time."""
    return bool(flipped[0] > plain[0] and flipped[1] >= plain[1])


def split_pairs(patients: pd.Series, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(is_test, is_val): whole patients. The test patients are `patient_holdout`'s (the same
    images every earlier segmenter was scored on); validation, used to pick the epoch and
    test-time flips, is another 15 % of the remaining patients."""
    is_test = patient_holdout(patients, seed=seed)
    rest = patients[~is_test]
    is_val = np.zeros(len(patients), bool)
    is_val[np.flatnonzero(~is_test)] = patient_holdout(rest, fraction=0.15 / 0.85, seed=seed + 1)
    return is_test, is_val


def train_segmenter(data_dir: str | Path, out_dir: str | Path, epochs: int = 60,
                    batch_size: int = 8, base_filters: int = 8, depth: int = 5,
                    max_minutes: float = 25.0, seed: int = 0, resume: bool = False,
                    learning_rate: float = 1e-3) -> dict:
    """Train with strong augmentation, keep the epoch with the best worst-decile validation
    Dice, decide test-time flips on validation, score the held-out test patients, write the card."""
    import keras
    import tensorflow as tf

    from .augment import SEGMENTER_AUGMENT

    keras.utils.set_random_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = load_pairs(data_dir)
    is_test, is_val = split_pairs(pairs["patient_id"], seed=seed)
    is_train = ~is_test & ~is_val
    t0 = time.perf_counter()
    images, masks = load_arrays(pairs)
    log.info("loaded %d pairs (%d train, %d validation, %d test) in %.1f s", len(pairs),
             is_train.sum(), is_val.sum(), is_test.sum(), time.perf_counter() - t0)
    train_images = images[is_train]

    def draw(image, local, mask):  # CLAHE on or off, then the shared augmentation
        chosen = tf.where(tf.random.uniform([]) < 0.5, local, image)
        return augment_image_and_mask(chosen, mask)

    train_ds = (tf.data.Dataset.from_tensor_slices((train_images, clahe(train_images), masks[is_train]))
                .shuffle(int(is_train.sum()), seed=seed)
                .map(draw, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    val_images, val_masks = images[is_val], masks[is_val]

    def soft_dice_loss(y_true, y_pred):
        inter = tf.reduce_sum(y_true * y_pred, axis=[1, 2, 3])
        total = tf.reduce_sum(y_true + y_pred, axis=[1, 2, 3])
        return 1.0 - (2 * inter + 1.0) / (total + 1.0)

    def loss(y_true, y_pred):
        return keras.losses.binary_crossentropy(y_true, y_pred) + soft_dice_loss(y_true, y_pred)[:, None, None]

    model = build_unet(SEGMENTER_SIZE, base_filters, depth)
    weights_path = out_dir / WEIGHTS_NAME
    previous_epochs, previous_seconds = 0, 0.0
    if resume and weights_path.is_file():
        load_member_weights(model, weights_path)
        old = json.loads((out_dir / "model_card.json").read_text()) if (out_dir / "model_card.json").is_file() else {}
        previous_epochs, previous_seconds = old.get("epochs_run", 0), old.get("train_seconds", 0.0)
        log.info("resuming from %s (%d epochs so far)", weights_path, previous_epochs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    deadline = time.time() + max_minutes * 60

    class SelectWorstDecile(keras.callbacks.Callback):
        """Keep the weights of the epoch with the best (worst-decile, mean) validation Dice;
        lower the learning rate, then stop, when it no longer improves."""

        def __init__(self):
            super().__init__()
            self.best, self.best_weights, self.best_epoch, self.wait = (-1.0, -1.0), None, 0, 0
            self.history: list[dict] = []

        def on_epoch_end(self, epoch, logs=None):
            probs = self.model.predict(val_images, batch_size=batch_size, verbose=0)
            dice = _dice_per_image(probs, val_masks)
            score = (worst_decile(dice), float(dice.mean()))
            self.history.append({"epoch": epoch + 1, "val_worst_decile": round(score[0], 4),
                                 "val_mean": round(score[1], 4), "loss": round(float(logs["loss"]), 4)})
            log.info("epoch %d: validation Dice mean %.4f, worst decile %.4f", epoch + 1,
                     score[1], score[0])
            if score > self.best:
                self.best, self.best_weights, self.best_epoch, self.wait = score, self.model.get_weights(), epoch + 1, 0
            else:
                self.wait += 1
                if self.wait % 4 == 0:
                    lr = self.model.optimizer.learning_rate
                    lr.assign(lr * 0.5)
                if self.wait >= 12:
                    self.model.stop_training = True
            if time.time() > deadline:
                log.info("time budget reached after epoch %d", epoch + 1)
                self.model.stop_training = True

    select = SelectWorstDecile()
    model.fit(train_ds, epochs=epochs, verbose=2, callbacks=[select])
    train_seconds = time.perf_counter() - t0
    model.set_weights(select.best_weights)
    info = {"size": SEGMENTER_SIZE, "base_filters": base_filters, "depth": depth,
            "params": int(model.count_params())}
    save_member_weights(model, weights_path)
    (out_dir / CONFIG_NAME).write_text(json.dumps(info, indent=2))
    segmenter = LungSegmenter.load(out_dir)  # evaluate exactly what ships (float16 weights)
    flip = {}
    for tta in (False, True):
        segmenter.info["tta_flip"] = tta
        scores = evaluate_segmenter(segmenter, pairs[is_val])
        flip[tta] = (worst_decile(scores["dice"]), float(scores["dice"].mean()))
    info["tta_flip"] = flips_pay(flip[False], flip[True])  # chosen on validation, never on test
    (out_dir / CONFIG_NAME).write_text(json.dumps(info, indent=2))
    segmenter.info["tta_flip"] = info["tta_flip"]
    scores = evaluate_segmenter(segmenter, pairs[is_test])
    scores.to_csv(out_dir / "heldout_dice.csv", index=False)
    licences = pairs["license"].fillna("not stated").value_counts().to_dict()
    card = {
        **info,
        "data": str(Path(data_dir).name),
        "pairs": int(len(pairs)),
        "train_pairs": int(is_train.sum()),
        "val_pairs": int(is_val.sum()),
        "heldout_pairs": int(is_test.sum()),
        "heldout_patients": int(pairs.loc[is_test, "patient_id"].nunique()),
        "heldout_images": sorted(pairs.loc[is_test, "image"].tolist()),
        "augmentation": {k: v for k, v in SEGMENTER_AUGMENT.__dict__.items()} | {"clahe": "on/off"},
        "selection": "epoch with the best worst-decile validation Dice (then mean)",
        "best_epoch": select.best_epoch,
        "val_worst_decile": round(select.best[0], 4),
        "val_dice_mean": round(select.best[1], 4),
        "val_tta_flip": {"off": [round(v, 4) for v in flip[False]], "on": [round(v, 4) for v in flip[True]]},
        "epoch_history": select.history,
        "epochs_run": previous_epochs + len(select.history),
        "train_seconds": round(previous_seconds + train_seconds, 1),
        "heldout_dice_mean": round(float(scores["dice"].mean()), 4),
        "heldout_dice_median": round(float(scores["dice"].median()), 4),
        "heldout_dice_min": round(float(scores["dice"].min()), 4),
        "heldout_dice_worst_decile": round(worst_decile(scores["dice"]), 4),
        "heldout_iou_mean": round(float(scores["iou"].mean()), 4),
        "image_licences": {str(k): int(v) for k, v in licences.items()},
        "weights_bytes": weights_path.stat().st_size,
        "seed": seed,
    }
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    _write_card_markdown(out_dir / "MODEL_CARD.md", card)
    return card


def _write_card_markdown(path: Path, card: dict) -> None:
    lic = "\n".join(f"| {k} | {v} |" for k, v in card["image_licences"].items())
    path.write_text(f"""# Lung segmenter (U-Net) model card

- Architecture: U-Net, {card['depth']} levels, {card['base_filters']} base filters,
  {card['params']:,} parameters, input {card['size']} x {card['size']} grayscale in [0, 1].
- Data: {card['pairs']} real chest X-rays with lung masks from the public COVID-19 image data
  collection (Cohen et al.), masks drawn by V7 Labs annotators (CC BY 4.0; they include the lung
  behind the heart). {card['train_pairs']} pairs trained, {card.get('val_pairs', 0)} validation
  pairs, {card['heldout_pairs']} test pairs of {card['heldout_patients']} held-out patients (no
  patient in two of them).
- Training: Adam, BCE + soft Dice, batch 8, augmentation (rotation +-15 deg, scale +-15 %,
  shift +-8 %, shear +-4 deg, exposure, gamma, contrast, blur, noise, CLAHE on/off; no
  left-right flip), {card['epochs_run']} epochs, {card['train_seconds'] / 60:.1f} min on 2 CPU
  cores; {card.get('val_pairs', 0)} validation pairs of other patients pick the epoch with the
  best worst-decile Dice (epoch {card.get('best_epoch', '?')}) and whether test-time left-right
  flips are averaged ({'yes' if card.get('tta_flip') else 'no'}).
- Held-out test quality ({card['heldout_pairs']} pairs, threshold 0.5, at each mask's own
  resolution, before post-processing): mean Dice {card['heldout_dice_mean']}, median
  {card['heldout_dice_median']}, worst decile {card.get('heldout_dice_worst_decile', 'n/a')},
  min {card['heldout_dice_min']}, mean IoU {card['heldout_iou_mean']}.
- Intended use: cropping the lung region before classification in CXR Review. Not a diagnostic
  device.

Image licences of the training pairs (as stated by the source, per image):

| licence | images |
|---|---|
{lic}
""")
