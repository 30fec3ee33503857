"""Demo-bundle helpers: the recipe and test AUC within each source collection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.data.public_dataset import COHEN, NIH
from cxr_core.evaluation.demo import auc_by_source, demo_train_config
from cxr_core.modeling.bundle import Bundle


def test_collection_detector_is_exposed_by_within_source_auc():
    rng = np.random.default_rng(0)
    n = 80
    dirs = pd.Series([f"{NIH}/images"] * n + [f"{COHEN}/images"] * n)
    finding = np.r_[rng.integers(0, 2, n), np.ones(n, int)]
    source_only = np.r_[np.full(n, 0.2), np.full(n, 0.9)]  # says only where the image came from
    real = np.r_[finding[:n] * 0.6 + rng.random(n) * 0.5, rng.random(n)]
    targets = np.stack([finding, finding], axis=1)
    table = auc_by_source(dirs, targets, np.stack([source_only, real], axis=1), ["source", "real"])
    by = table.set_index("label")
    assert by.loc["source", "all AUC"] > 0.75
    assert by.loc["source", f"{NIH} AUC"] == 0.5  # within NIH it cannot rank anything
    assert by.loc["real", f"{NIH} AUC"] > 0.85
    assert np.isnan(by.loc["real", f"{COHEN} AUC"])  # one class only there
    mean = table.iloc[-1]
    assert mean[f"{NIH} positives"] == 2  # both labels have >= 10 positives and negatives in NIH
    assert mean[f"{NIH} AUC"] == (by.loc["source", f"{NIH} AUC"] + by.loc["real", f"{NIH} AUC"]) / 2
    assert mean[f"{COHEN} positives"] == 0


def test_recipe_overrides_only_what_is_given():
    base = demo_train_config(seed=3)
    # fine-tuned from ImageNet at 224 px (7 x 7 maps), as chosen in docs/explanations.md
    assert base.weights == "imagenet" and base.input_size == 224 and base.bn_momentum == 0.9
    assert base.seed == 3 and base.monitor == "val_auc" and base.deterministic
    assert base.augment == "mild"
    changed = demo_train_config(seed=3, epochs=2, learning_rate=None)
    assert changed.epochs == 2 and changed.learning_rate == base.learning_rate


def test_model_card_shows_auc_per_source():
    from cxr_core.evaluation.model_card import render_model_card

    manifest = {"bundle_id": "b", "demo": True, "label_set": "x", "labels": [], "members": [],
                "threshold_method": "f1", "preprocessing": {},
                "data": {"per_source": {NIH: {"images": 8, "patients": 5,
                                              "images_per_split": {"train": 6}}}},
                "metrics": {"by_source": {"model": "CTP", "min_test_positives": 10, "rows": [
                    {"label": "pneumonia", "all positives": 30, "all AUC": 0.81,
                     f"{NIH} positives": 20, f"{NIH} AUC": 0.7123}]}}}
    card = render_model_card(Bundle(Path("."), manifest))
    assert "## Test AUC per source (CTP ensemble)" in card
    assert f"| label | all positives | all AUC | {NIH} positives | {NIH} AUC |" in card
    assert "| pneumonia | 30 | 0.810 | 20 | 0.712 |" in card
    assert f"- {NIH}: 8 images of 5 patients" in card


def test_the_shipped_bundle_is_what_build_demo_trains():
    """The shipped members were trained by today's recipe on the bundle's own split: each
    member's recorded configuration is `demo_train_config(seed)` (deterministic on) and its run
    fingerprint (architecture, split rows and labels, configuration) matches a rebuild's."""
    from dataclasses import asdict

    from cxr_core.data.split_table import read_split
    from cxr_core.modeling.bundle import Bundle
    from cxr_core.evaluation.demo import DEMO_ARCHITECTURES
    from cxr_core.imaging.batch_preprocess import crop_identity
    from cxr_core.imaging.segmentation import LungSegmenter
    from cxr_core.modeling.training import TrainConfig, run_fingerprint

    bundle = Bundle.load(Path(__file__).resolve().parents[2] / "models" / "cxr-demo")
    assert bundle.manifest["demo"] and "revision" not in bundle.manifest
    runs = bundle.manifest["training"]["members"]
    assert tuple(run["arch"] for run in runs) == DEMO_ARCHITECTURES
    seed = runs[0]["config"]["seed"]
    expected = asdict(demo_train_config(seed))
    table = read_split(bundle.path / "split.csv")
    for run in runs:
        assert run["config"] == expected and run["config"]["deterministic"]
        # the crop cache's identity (segmenter and preprocessing version) as the run recorded
        # it; a bundle trained before runs recorded it has none
        crops = run.get("crops")
        if crops is not None:
            assert crops == crop_identity(LungSegmenter.load())
        assert run["fingerprint"] == run_fingerprint(run["arch"], table, TrainConfig(**expected),
                                                     None, crops)


def test_the_shipped_bundle_never_trained_on_the_boxed_x_rays():
    """Every X-ray with a radiologist's box, and every other X-ray of its patient, is in the
    shipped bundle's test split: `localise` measures its maps on X-rays it never saw."""
    from cxr_core.data.split_table import read_split
    from cxr_core.evaluation.demo import boxed_images
    from tests.conftest import SHARED, require

    require(SHARED / "nih-sample" / "boxes.csv")
    boxed = boxed_images(SHARED)
    frame = read_split(Path(__file__).resolve().parents[2] / "models" / "cxr-demo" / "split.csv").frame
    names = frame["ImageID"].map(lambda i: Path(str(i)).name)
    patients = set(frame.loc[names.isin(boxed), "PatientID"])
    assert len(boxed) >= 30 and names.isin(boxed).sum() == len(boxed)
    assert (frame.loc[frame["PatientID"].isin(patients), "split"] == "test").all()
