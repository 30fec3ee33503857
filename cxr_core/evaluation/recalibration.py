"""Fit a post-hoc calibration of a bundle on its validation split and store it in the bundle,
with threshold methods chosen again on the calibrated probabilities (`<method>+<calibration>`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..base.errors import BundleError
from ..modeling.bundle import Bundle, stored_targets
from ..modeling.calibration import apply_calibration, expected_calibration_error, fit_calibration
from ..modeling.thresholds import threshold_table

log = logging.getLogger(__name__)

VAL_PREDICTIONS = "val_predictions.npz"


def store_val_predictions(bundle: Bundle, image_ids, targets: np.ndarray,
                          member_probs: np.ndarray) -> None:
    """Keep the validation predictions in the bundle, so calibrations and thresholds can be
    fitted again without the image cache."""
    np.savez_compressed(bundle.path / VAL_PREDICTIONS, image_ids=np.asarray(image_ids).astype(str),
                        targets=stored_targets(targets),
                        member_probs=np.asarray(member_probs, np.float32))
    bundle.save()


def val_predictions(bundle: Bundle) -> dict | None:
    """The stored validation predictions, or None."""
    path = bundle.path / VAL_PREDICTIONS
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def predict_validation(bundle: Bundle, cache_dir: str | Path, split_csv: str | Path) -> dict:
    """Run the members on the cached validation crops and store the predictions."""
    from ..data.split_table import cached_paths, read_split
    from ..modeling.inference import predict_members

    table = read_split(split_csv)
    if table.labels != bundle.labels:
        raise BundleError("The split's label columns differ from the bundle's labels; "
                          "use the split the bundle was trained on.")
    val = table.part("val")
    probs = predict_members(bundle.classifiers, cached_paths(cache_dir, val), bundle.input_size,
                            flip=bundle.tta_flip)
    store_val_predictions(bundle, val["ImageID"].tolist(), table.targets("val"), probs)
    return val_predictions(bundle)


def calibrate_bundle(bundle_path: str | Path, method: str, cache_dir: str | Path | None = None,
                     split_csv: str | Path | None = None, make_default: bool = False) -> dict:
    """Fit `method` ('temperature' or 'isotonic') per member and label on validation, store it
    and the threshold methods chosen on the calibrated probabilities; returns a summary."""
    bundle = Bundle.load(bundle_path)
    stored = val_predictions(bundle)
    if stored is None:
        if cache_dir is None or split_csv is None:
            raise BundleError(f"Bundle {bundle.path} stores no validation predictions: give the "
                              "image cache and split (--data, --split) to compute them.")
        stored = predict_validation(bundle, cache_dir, split_csv)
    targets, raw = stored["targets"].astype(np.float64), stored["member_probs"]
    calibration = fit_calibration(method, targets, raw)
    calibrated = apply_calibration(calibration, raw)
    bundle.set_calibration(method, calibration)
    added = []
    for base, entry in threshold_table(calibrated, targets).items():
        name = f"{base}+{method}"
        bundle.set_thresholds(name, {**entry, "calibration": method})
        added.append(name)
    if make_default:
        bundle.set_default_threshold_method(f"{bundle.threshold_method.split('+')[0]}+{method}")
    bundle.save()
    summary = {"method": method, "validation_images": int(targets.shape[0]),
               "threshold_methods_added": added, "default_threshold_method": bundle.threshold_method,
               "val_ece_ctp_before": expected_calibration_error(targets, raw.mean(axis=0)),
               "val_ece_ctp_after": expected_calibration_error(targets, calibrated.mean(axis=0))}
    log.info("calibration %s stored in %s", method, bundle.path)
    return summary
