"""Synthetic bundles with known predictions (no trained weights) for the research-dashboard
tests: the pages and the comparison read only the manifest and the stored predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.modeling.bundle import write_manifest
from cxr_core.modeling.thresholds import threshold_table

ARCHS = ["DenseNet201", "Xception"]


def binormal(rng, targets: np.ndarray, separation: float) -> np.ndarray:
    """Probabilities whose logits are N(0, 1) for negatives and N(separation, 1) for positives
    (true AUC = Phi(separation / sqrt(2)))."""
    z = rng.normal(size=targets.shape) + separation * targets - 1.5
    return 1 / (1 + np.exp(-z))


def make_split(n_patients: int, labels: list[str], prevalence, seed: int = 0) -> pd.DataFrame:
    """Patients with 1-3 images each over train/val/test; one 0/1 column per label."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        split = rng.choice(["train", "val", "test"], p=[0.4, 0.3, 0.3])
        for i in range(int(rng.integers(1, 4))):
            rows.append({"ImageID": f"img_{p:05d}_{i}.png", "ImageDir": "images",
                         "PatientID": f"p{p:05d}", "split": split})
    frame = pd.DataFrame(rows)
    for label, prev in zip(labels, prevalence):
        frame[label] = (rng.random(len(frame)) < prev).astype(int)
    return frame


def write_synthetic_bundle(out_dir: Path, split: pd.DataFrame, labels: list[str], separations,
                           seed: int = 0, bundle_id: str = "synthetic", label_set: str = "specific",
                           lineage: dict | None = None, val: bool = True,
                           distort: float = 1.0) -> Path:
    """A bundle folder whose members score test and val images with binormal probabilities
    (`separations[k]` per label); `distort` raises the probabilities to a power (1: unchanged)."""
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    (out_dir / "members").mkdir(parents=True, exist_ok=True)
    members = []
    for arch in ARCHS:
        np.savez(out_dir / "members" / f"{arch}.npz", placeholder=np.zeros(1))
        members.append({"arch": arch, "weights": f"members/{arch}.npz", "input_size": 96})
    sep = np.asarray(separations, float)

    def predict(part: str):
        rows = split[split["split"] == part]
        targets = rows[labels].to_numpy(np.float64)
        probs = np.stack([binormal(rng, targets, sep) ** distort for _ in ARCHS])
        return rows, targets, probs

    val_rows, val_targets, val_probs = predict("val")
    test_rows, test_targets, test_probs = predict("test")
    manifest = {
        "schema_version": 1, "bundle_id": bundle_id, "created": "2026-01-01T00:00:00Z",
        "label_set": label_set, "labels": [{"name": lab, "groups": [lab]} for lab in labels],
        "members": members, "input_size": 96, "preprocessing": {"segmenter": "models/segmenter"},
        "threshold_method": "f1", "thresholds": threshold_table(val_probs, val_targets),
        "training": {}, "data": {}, "metrics": {}, "lineage": lineage or {}, "demo": False,
    }
    split.to_csv(out_dir / "split.csv", index=False)
    np.savez_compressed(out_dir / "test_predictions.npz", image_ids=test_rows["ImageID"].to_numpy(str),
                        targets=test_targets.astype(np.uint8), member_probs=test_probs.astype(np.float32))
    if val:
        np.savez_compressed(out_dir / "val_predictions.npz", image_ids=val_rows["ImageID"].to_numpy(str),
                            targets=val_targets.astype(np.uint8), member_probs=val_probs.astype(np.float32))
    write_manifest(out_dir, manifest)
    return out_dir


def split_with_empty_cache(tmp_path, n: int, labels: list[str], prevalences: list[float], seed: int):
    """A synthetic split written to tmp_path/split.csv and a crop cache of empty files (for
    stand-in members that never read the crops): (split, split_csv, cache)."""
    split = make_split(n, labels, prevalences, seed=seed)
    split_csv = tmp_path / "split.csv"
    split.to_csv(split_csv, index=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    for image_id in split["ImageID"]:
        (cache / image_id).write_bytes(b"")
    return split, split_csv, cache
