"""`retrain`: fine-tune a bundle's members with the experts' final labels.

Policy for the labels of an image: each reviewer's latest review of it (across bundles) counts
once; per label, the majority of those reviewers decides, and a tie counts as present (an expert
saw it). Reviewed images of the bundle's validation or test split are never trained on, so the
thresholds and the before/after comparison on the untouched test split stay fair: an image is
held out when its bytes match a held-out image, when the split knows its patient (by content or
file name) and that patient has held-out images, or when its pixels match a held-out image
(`perceptual_hash`: catches re-encoded or resized copies). A reviewed image that is also an
original training image (same bytes) takes the experts' labels instead of the original ones.

The child is at least as safe as its parent: it carries the parent's test-time flips decision
(so the before/after comparison is made under one flips policy) and its input check (fitted on
the X-rays, not on the classifier), refits its thresholds and calibrations on validation with
those flips, and records each decision under `lineage.kept_from_parent`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.errors import CxrError, DataError
from ..data.split_table import read_split
from ..explain.engines import compile_bundle
from ..imaging.batch_preprocess import list_images, preprocess_split
from ..imaging.image_io import load_image, perceptual_hash, same_pixels
from ..modeling.bundle import Bundle, publish_bundle
from ..evaluation.model_card import write_model_card
from .feedback import FeedbackStore, latest_reviews

log = logging.getLogger(__name__)


def consensus_labels(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """One row per image sha256: 0/1 per label by the policy in the module docstring."""
    latest = latest_reviews(frame)
    rows = []
    for sha, group in latest.groupby("image_sha256"):
        votes = np.array([[lab in final for lab in labels] for final in group["expert_labels"]])
        rows.append({"image_sha256": sha, "reviewers": len(group),
                     **{lab: int(2 * votes[:, k].sum() >= len(group)) for k, lab in enumerate(labels)}})
    return pd.DataFrame(rows, columns=["image_sha256", "reviewers", *labels])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _original_path(root: Path, image_id: str, image_dir) -> Path:
    nested = root / str(image_dir) / image_id if isinstance(image_dir, str) and image_dir else None
    return nested if nested is not None and nested.is_file() else root / image_id


def fine_tune_config(parent: Bundle, epochs: int, learning_rate: float):
    """The training configuration of a retrain: from the parent's weights, at its input size."""
    from ..modeling.training import TrainConfig

    return TrainConfig(weights=None, learning_rate=learning_rate, epochs=epochs,
                       patience=max(2, epochs), seed=0, input_size=parent.input_size)


def held_out_part(path: Path, sha: str, frame: pd.DataFrame, held_out_hashes: dict) -> str | None:
    """'val' or 'test' when a reviewed image belongs to the split's held-out parts (rules in the
    module docstring); None when it may be trained on. `frame` has a `sha256` column;
    `held_out_hashes` maps 'val'/'test' to the perceptual hashes of their images."""
    rows = frame[(frame["sha256"] == sha) | (frame["ImageID"].astype(str) == path.name)]
    patients = set(rows["PatientID"].astype(str))
    for part in ("test", "val"):
        held = frame[frame["split"] == part]
        if sha in set(held["sha256"]) or patients & set(held["PatientID"].astype(str)):
            return part
    pixels = perceptual_hash(load_image(path).pixels)
    for part in ("test", "val"):
        if any(same_pixels(pixels, other) for other in held_out_hashes[part]):
            return part
    return None


def carry_parent_decisions(parent: Bundle, child: Bundle) -> dict:
    """Copy the parent's test-time flips decision and input check into the child (in memory;
    `save()` writes them); returns what was carried, for the lineage."""
    kept = {"test_time_flips": {"decision": "carried", "tta_flip": parent.tta_flip}}
    child.replace(inference={**parent.inference, "carried_from": parent.bundle_id})
    check = parent.input_check
    if check:
        shutil.copyfile(parent.path / check["file"], child.path / check["file"])
        child.replace(input_check={**check, "carried_from": parent.bundle_id})
        kept["input_check"] = {"decision": "carried", "threshold": check["threshold"]}
    else:
        kept["input_check"] = {"decision": "none: the parent has no input check"}
    return kept


def refit_on_validation(parent: Bundle, child_dir: Path, cache: Path, split_csv: Path) -> dict:
    """Choose the child's built-in thresholds and the parent's calibrations again on the
    validation split, with the child's flips; the default threshold method follows the
    parent's when it can. Returns what was refitted, for the lineage."""
    from ..evaluation.recalibration import calibrate_bundle, predict_validation
    from ..modeling.thresholds import THRESHOLD_METHODS, threshold_table

    child = Bundle.load(child_dir)
    stored = predict_validation(child, cache, split_csv)
    for name, entry in threshold_table(stored["member_probs"], stored["targets"].astype(float)).items():
        child.set_thresholds(name, entry)
    child.save()
    for name in parent.calibrations:
        calibrate_bundle(child_dir, name)
    child = Bundle.load(child_dir)
    wanted = parent.threshold_method
    if wanted not in child.threshold_methods:  # a saved operating point: its base method instead
        wanted = parent.threshold_entry().get("derived_from", "f1")
        wanted = wanted if wanted in child.threshold_methods else THRESHOLD_METHODS[0]
    child.update(threshold_method=wanted).save()
    return {"thresholds": {"decision": "refitted on validation", "default": wanted},
            "calibrations": {"decision": "refitted on validation", "names": sorted(parent.calibrations)}}


def retrain(bundle_dir: str | Path, feedback_url: str, images_dir: str | Path, out_dir: str | Path,
            epochs: int = 5, data_root: str | Path | None = None, learning_rate: float = 1e-4,
            work_dir: str | Path | None = None) -> dict:
    """Merge feedback into the training data, fine-tune, re-evaluate, write a new bundle."""
    from ..imaging.segmentation import LungSegmenter
    from ..evaluation.evaluation import evaluate_bundle
    from ..modeling.training import train_ensemble
    from .pipeline import resolve_segmenter

    parent = Bundle.load(bundle_dir)
    split_path = Path(bundle_dir) / "split.csv"
    if not split_path.is_file():
        raise DataError(f"Bundle {bundle_dir} has no split.csv, so its training data is unknown.")
    table = read_split(split_path)
    if table.labels != parent.labels:
        raise DataError("The bundle's split.csv does not match its labels.")
    root = Path(data_root or parent.data_summary.get("images_root", ""))
    if not root.is_dir():
        raise DataError(f"The bundle's original images are not at {root}; pass data_root.")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"Image folder not found: {images_dir}")

    store = FeedbackStore(feedback_url)
    reviews = store.reviews_frame()
    reviews = reviews[reviews["label_set"] == parent.label_set] if not reviews.empty else reviews
    if reviews.empty:
        raise CxrError("The feedback store holds no review for this bundle's label set.")
    consensus = consensus_labels(reviews, parent.labels).set_index("image_sha256")

    frame = table.frame.copy()
    originals = [_original_path(root, i, d) for i, d in zip(frame["ImageID"], frame["ImageDir"])]
    frame["sha256"] = [_sha256(path) for path in originals]
    held_out_hashes = {part: [perceptual_hash(load_image(path).pixels)
                              for path, split in zip(originals, frame["split"]) if split == part]
                       for part in ("val", "test")}
    reviewed = {}
    for path in list_images(images_dir):
        sha = _sha256(path)
        if sha in consensus.index:
            reviewed[sha] = path
    parts = {sha: held_out_part(path, sha, frame, held_out_hashes) for sha, path in reviewed.items()}
    used = [s for s in reviewed if parts[s] is None]
    excluded_test = [s for s in reviewed if parts[s] == "test"]
    excluded_val = [s for s in reviewed if parts[s] == "val"]

    work = Path(work_dir or Path(out_dir).with_name(Path(out_dir).name + "_work"))
    staging = work / "feedback_images"
    staging.mkdir(parents=True, exist_ok=True)
    new_rows = []
    for sha in used:
        in_train = frame.index[(frame["sha256"] == sha) & (frame["split"] == "train")]
        if len(in_train):  # a training image re-labelled by experts
            frame.loc[in_train, parent.labels] = consensus.loc[sha, parent.labels].to_numpy()
            continue
        target = staging / f"fb_{sha[:16]}{reviewed[sha].suffix.lower()}"
        shutil.copyfile(reviewed[sha], target)
        new_rows.append({"ImageID": target.name, "ImageDir": "",
                         "PatientID": f"feedback-{sha[:16]}", "split": "train",
                         **{lab: int(consensus.loc[sha, lab]) for lab in parent.labels}})
    merged = pd.concat([frame.drop(columns=["sha256"]), pd.DataFrame(new_rows)], ignore_index=True)
    merged_split = work / "split.csv"
    merged.to_csv(merged_split, index=False)

    segmenter = LungSegmenter.load(resolve_segmenter(parent))
    cache = work / "cache"
    original_part = merged[~merged["ImageID"].astype(str).str.startswith("fb_")]
    original_part.to_csv(work / "split_original.csv", index=False)
    preprocess_split(root, work / "split_original.csv", cache, segmenter, workers=1)
    if new_rows:
        pd.DataFrame(new_rows).to_csv(work / "split_feedback.csv", index=False)
        preprocess_split(staging, work / "split_feedback.csv", cache, segmenter, workers=1)

    config = fine_tune_config(parent, epochs, learning_rate)
    lineage = {"parent_bundle_id": parent.bundle_id, "reviews_used": int(len(latest_reviews(reviews))),
               "images_used": len(used), "new_training_images": len(new_rows),
               "relabelled_training_images": len(used) - len(new_rows),
               "excluded_test_images": len(excluded_test),
               "excluded_validation_images": len(excluded_val),
               "before": parent.metrics.get("overall", {})}
    initial = [c.model.get_weights() for c in parent.classifiers]
    run_bundle = train_ensemble(cache, merged_split, work / "runs", tuple(parent.archs), config,
                                label_set=parent.label_set, groups=parent.groups,
                                bundle_id=f"{parent.bundle_id}-ft{len(used)}",
                                data_summary=parent.data_summary, initial=initial,
                                extra_manifest={"demo": parent.is_demo})
    out_dir = publish_bundle(run_bundle, out_dir, merged_split, {
        "lineage": lineage,
        "preprocessing": {"segmenter": parent.segmenter_ref}})
    child = Bundle.load(out_dir)
    kept = carry_parent_decisions(parent, child)
    child.save()
    kept.update(refit_on_validation(parent, out_dir, cache, merged_split))
    metrics = evaluate_bundle(out_dir, cache, merged_split)
    child = Bundle.load(out_dir)
    # 'before' is the parent's stored evaluation: the same flips and threshold method as 'after'
    comparison = {"tta_flip": child.tta_flip, "threshold_method": child.threshold_method}
    if child.threshold_method != parent.threshold_method:
        comparison["parent_threshold_method"] = parent.threshold_method
    child.update(lineage={"after": metrics["overall"], "kept_from_parent": kept,
                          "comparison": comparison}).save()
    write_model_card(out_dir)
    if parent.has_lite:  # keep the parent's fast start
        compile_bundle(out_dir)
    summary = {**{k: v for k, v in lineage.items() if k != "before"},
               "bundle": str(out_dir),
               "test_auc_ctp_before": lineage["before"].get("CTP", {}).get("auc_macro"),
               "test_auc_ctp_after": metrics["overall"]["CTP"]["auc_macro"],
               "kept_from_parent": kept, "comparison": comparison}
    return {"summary": summary, "bundle": out_dir}
