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


def train_segmenter(data_dir: str | Path, out_dir: str | Path, epochs: int = 60,
                    batch_size: int = 8, base_filters: int = 8, depth: int = 5,
                    max_minutes: float = 25.0, seed: int = 0, resume: bool = False,
                    learning_rate: float = 1e-3) -> dict:
    """Train, keep the best validation weights, evaluate held-out pairs, write the model card."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = load_pairs(data_dir)
    is_val = patient_holdout(pairs["patient_id"], seed=seed)
    t0 = time.perf_counter()
    images, masks = load_arrays(pairs)
    log.info("loaded %d pairs (%d held out) in %.1f s", len(pairs), is_val.sum(),
             time.perf_counter() - t0)
    train_ds = (tf.data.Dataset.from_tensor_slices((images[~is_val], masks[~is_val]))
                .shuffle(len(images), seed=seed)
                .map(augment_image_and_mask, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((images[is_val], masks[is_val])).batch(batch_size)

    def soft_dice_loss(y_true, y_pred):
        inter = tf.reduce_sum(y_true * y_pred, axis=[1, 2, 3])
        total = tf.reduce_sum(y_true + y_pred, axis=[1, 2, 3])
        return 1.0 - (2 * inter + 1.0) / (total + 1.0)

    def loss(y_true, y_pred):
        return keras.losses.binary_crossentropy(y_true, y_pred) + soft_dice_loss(y_true, y_pred)[:, None, None]

    model = build_unet(SEGMENTER_SIZE, base_filters, depth)
    weights_path = out_dir / WEIGHTS_NAME
    checkpoint = out_dir / "checkpoint.weights.h5"  # full precision, with optimizer; not shipped
    previous_epochs, previous_seconds = 0, 0.0
    if resume and weights_path.is_file():
        load_member_weights(model, weights_path)
        old = json.loads((out_dir / "model_card.json").read_text()) if (out_dir / "model_card.json").is_file() else {}
        previous_epochs, previous_seconds = old.get("epochs_run", 0), old.get("train_seconds", 0.0)
        log.info("resuming from %s (%d epochs so far)", weights_path, previous_epochs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                  metrics=[keras.metrics.BinaryIoU(target_class_ids=[1], name="iou")])
    deadline = time.time() + max_minutes * 60

    class TimeBudget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if time.time() > deadline:
                log.info("time budget reached after epoch %d", epoch + 1)
                self.model.stop_training = True

    history = model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, verbose=2,
        callbacks=[
            keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_iou", mode="max",
                                            save_best_only=True, save_weights_only=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=4),
            keras.callbacks.EarlyStopping(monitor="val_iou", mode="max", patience=10),
            TimeBudget(),
        ],
    )
    train_seconds = time.perf_counter() - t0
    info = {"size": SEGMENTER_SIZE, "base_filters": base_filters, "depth": depth,
            "params": int(model.count_params())}
    (out_dir / CONFIG_NAME).write_text(json.dumps(info, indent=2))
    model.load_weights(str(checkpoint))
    save_member_weights(model, weights_path)
    checkpoint.unlink()
    segmenter = LungSegmenter.load(out_dir)  # evaluate exactly what ships (float16 weights)
    scores = evaluate_segmenter(segmenter, pairs[is_val])
    licences = pairs["license"].fillna("not stated").value_counts().to_dict()
    card = {
        **info,
        "data": str(Path(data_dir).name),
        "pairs": int(len(pairs)),
        "train_pairs": int((~is_val).sum()),
        "heldout_pairs": int(is_val.sum()),
        "heldout_patients": int(pairs.loc[is_val, "patient_id"].nunique()),
        "heldout_images": sorted(pairs.loc[is_val, "image"].tolist()),
        "epochs_run": previous_epochs + len(history.history["loss"]),
        "train_seconds": round(previous_seconds + train_seconds, 1),
        "heldout_dice_mean": round(float(scores["dice"].mean()), 4),
        "heldout_dice_median": round(float(scores["dice"].median()), 4),
        "heldout_dice_min": round(float(scores["dice"].min()), 4),
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
  behind the heart). {card['train_pairs']} pairs trained, {card['heldout_pairs']} pairs of
  {card['heldout_patients']} held-out patients for validation (no patient in both).
- Training: Adam 1e-3, BCE + soft Dice, batch 8, augmentation (rotation +-10 deg, scale +-10 %,
  shift +-5 %, gamma, contrast, brightness, noise; no left-right flip), {card['epochs_run']} epochs,
  {card['train_seconds'] / 60:.1f} min on 2 CPU cores.
- Held-out quality (threshold 0.5, at each mask's own resolution, before post-processing):
  mean Dice {card['heldout_dice_mean']}, median {card['heldout_dice_median']},
  min {card['heldout_dice_min']}, mean IoU {card['heldout_iou_mean']}.
- Intended use: cropping the lung region before classification in CXR Review. Not a diagnostic
  device.

Image licences of the training pairs (as stated by the source, per image):

| licence | images |
|---|---|
{lic}
""")
