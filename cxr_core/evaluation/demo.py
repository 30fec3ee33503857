"""The bundled demonstration model: split, training, evaluation and model card from the public
X-rays in `../shared/data` (NIH sample + cxr-public), through the same code path as a PadChest
bundle, plus test AUC within each source collection (a model can learn the collection)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.config import DEFAULT_SEGMENTER
from ..data.public_dataset import SOURCES, build_split, source_of
from ..data.split_table import read_split
from ..data.term_tree import load_term_tree
from ..modeling.ensemble import ctp
from .metrics import label_metrics

log = logging.getLogger(__name__)

DEMO_BUNDLE_NAME = "cxr-demo"
#: One member fine-tuned from ImageNet (Keras Applications MobileNet alpha 0.25, Apache-2.0):
#: the only ImageNet weights obtainable here (docs/explanations.md, "Why the maps did not
#: point at the findings").
DEMO_ARCHITECTURES = ("MobileNet",)
#: Test AUCs are averaged over labels with at least this many test positives (and negatives).
MIN_TEST_POSITIVES = 10


def demo_train_config(seed: int = 0, **overrides):
    """The demo recipe (chosen on the validation split; docs/demo-model.md)."""
    from ..modeling.training import TrainConfig

    settings = dict(weights="imagenet", input_size=224, learning_rate=3e-4, epochs=15, patience=5,
                    batch_size=32, augment="mild", monitor="val_auc", seed=seed,
                    deterministic=True, bn_momentum=0.9, outside_lungs=0.5)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**settings)


def auc_by_source(image_dirs: pd.Series, targets: np.ndarray, probs: np.ndarray,
                  labels: list[str], min_positives: int = MIN_TEST_POSITIVES) -> pd.DataFrame:
    """Per label: test positives and AUC on all images and within each source collection, and
    a last 'mean' row over labels with >= `min_positives` positives and negatives there."""
    sources = source_of(pd.Series(list(image_dirs))).to_numpy()
    rows: dict[str, dict] = {label: {"label": label} for label in labels}
    means = {"label": f"mean (labels with >= {min_positives} positives)"}
    for name, rows_mask in (("all", np.ones(len(sources), bool)),
                            *((s, sources == s) for s in SOURCES)):
        y, p = np.asarray(targets)[rows_mask], np.asarray(probs)[rows_mask]
        table = label_metrics(y, p, p >= 0.5, labels) if len(y) else None
        kept = []
        for k, label in enumerate(labels):
            known = int(np.isfinite(y[:, k].astype(float)).sum()) if len(y) else 0  # annotated here
            positives = int(np.nansum(y[:, k])) if len(y) else 0
            auc = float(table["auc"].iloc[k]) if table is not None else float("nan")
            rows[label][f"{name} positives"] = positives
            rows[label][f"{name} AUC"] = auc
            if positives >= min_positives and known - positives >= min_positives and not np.isnan(auc):
                kept.append(auc)
        means[f"{name} positives"] = len(kept)  # how many labels the mean covers
        means[f"{name} AUC"] = float(np.mean(kept)) if kept else float("nan")
    return pd.DataFrame([*rows.values(), means])


def evaluate_by_source(bundle_dir: str | Path, split_csv: str | Path) -> pd.DataFrame:
    """CTP test AUC per label and per source from the bundle's stored test predictions;
    written to `metrics/auc_by_source.csv` and into the manifest for the model card."""
    from ..modeling.bundle import Bundle

    bundle = Bundle.load(bundle_dir)
    stored = bundle.test_predictions()
    if stored is None:
        raise ValueError("evaluate the bundle on its test split first")
    test = read_split(split_csv).part("test").set_index("ImageID").loc[list(stored["image_ids"])]
    ens_t, _ = bundle.thresholds()
    probs, _ = ctp(stored["member_probs"], ens_t)
    table = auc_by_source(test["ImageDir"], stored["targets"], probs, bundle.labels)
    table.to_csv(Path(bundle_dir) / "metrics" / "auc_by_source.csv", index=False)
    bundle.update(metrics={"by_source": {
        "model": "CTP", "min_test_positives": MIN_TEST_POSITIVES,
        "rows": table.replace({np.nan: None}).to_dict(orient="records")}}).save()
    return table


#: Radiologists' boxes shipped with the NIH sample (`localise`): their patients are kept out of
#: training and validation, so the maps are checked on X-rays the model never saw.
BOXES_CSV = Path("nih-sample") / "boxes.csv"


def boxed_images(data_root: Path) -> set[str]:
    """File names of the X-rays that carry a radiologist's box under `data_root` (none when the
    boxes file is absent)."""
    path = Path(data_root) / BOXES_CSV
    if not path.is_file():
        return set()
    return {Path(str(name)).name for name in pd.read_csv(path)["image"]}


def build_demo_bundle(data_root: Path, out_dir: Path, work_dir: Path, segmenter_dir: Path,
                      archs: tuple[str, ...] = DEMO_ARCHITECTURES, config=None,
                      seed: int = 0, term_tree: Path | None = None) -> Path:
    """Split -> preprocess (segment + crop) -> train members -> bundle -> test-time flips and
    thresholds chosen on validation -> evaluate on test (overall and per source)
    -> input check -> model card -> Lite members (the app's fast start). Seeded and
    deterministic: the same data and seed give the same members bit for bit."""
    from ..explain.engines import compile_bundle
    from ..imaging.batch_preprocess import preprocess_split
    from ..imaging.segmentation import LungSegmenter
    from ..modeling.bundle import Bundle, publish_bundle
    from ..modeling.input_model import fit_input_check
    from ..modeling.training import train_ensemble
    from .evaluation import choose_test_time_flips, evaluate_bundle
    from .model_card import write_model_card
    from .reading_points import fit_reading_points

    data_root, work_dir = Path(data_root), Path(work_dir)
    tree = load_term_tree(term_tree or data_root / "padchest" / "term_tree.txt")
    work_dir.mkdir(parents=True, exist_ok=True)
    split_csv = work_dir / "split.csv"
    boxed = boxed_images(data_root)
    summary = build_split(data_root, split_csv, tree, seed=seed, test_images=boxed)
    log.info("%d X-rays with radiologists' boxes: their patients are kept for the test split",
             len(boxed))
    cache = work_dir / "cache"
    segmenter = LungSegmenter.load(segmenter_dir)
    pre = preprocess_split(data_root, split_csv, cache, segmenter, workers=1)
    summary["preprocessing"] = {k: v for k, v in pre.items() if k != "failures"}
    config = config or demo_train_config(seed)
    bundle_dir = train_ensemble(cache, split_csv, work_dir / "runs", archs, config,
                                label_set="public-padchest-terms", groups=summary["groups"],
                                bundle_id=f"{DEMO_BUNDLE_NAME}-v5-seed{seed}", data_summary=summary)
    out_dir = publish_bundle(bundle_dir, out_dir, split_csv,
                             {"demo": True, "preprocessing": {"segmenter": DEFAULT_SEGMENTER}})
    choose_test_time_flips(out_dir, cache, split_csv)  # decided on validation
    evaluate_bundle(out_dir, cache, split_csv, refit_thresholds=True)
    evaluate_by_source(out_dir, split_csv)
    fit_input_check(out_dir, data_root, segmenter, seed=seed)  # "is this a chest X-ray?"
    # the reader's operating points and the calibration, on validation (after the flips)
    fit_reading_points(out_dir, cache, split_csv)
    write_model_card(out_dir)
    compile_bundle(out_dir)  # Lite members: the app's fast start
    Bundle.load(out_dir)  # verify what we ship
    return out_dir
