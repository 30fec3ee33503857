"""The bundled demonstration model: split, training, evaluation and model card from the public
X-rays in `../shared/data`, through the same code path as a PadChest bundle."""

from __future__ import annotations

import logging
from pathlib import Path

from ..data.public_dataset import build_split

log = logging.getLogger(__name__)

DEMO_ARCHITECTURES = ("MobileNetV3Small", "MobileNetV2", "MobileNet")


def build_demo_bundle(data_dir: Path, out_dir: Path, work_dir: Path, segmenter_dir: Path,
                      archs: tuple[str, ...] = DEMO_ARCHITECTURES, config=None,
                      seed: int = 0) -> Path:
    """Split -> preprocess (segment + crop) -> train members -> bundle -> evaluate on test."""
    from ..imaging.batch_preprocess import preprocess_split
    from ..imaging.segmentation import LungSegmenter
    from .bundle import Bundle, publish_bundle
    from .evaluation import evaluate_bundle
    from .model_card import write_model_card
    from .training import TrainConfig, train_ensemble

    work_dir.mkdir(parents=True, exist_ok=True)
    split_csv = work_dir / "split.csv"
    summary = build_split(data_dir, split_csv, seed=seed)
    cache = work_dir / "cache"
    pre = preprocess_split(Path(data_dir), split_csv, cache, LungSegmenter.load(segmenter_dir), workers=1)
    summary["preprocessing"] = {k: v for k, v in pre.items() if k != "failures"}
    config = config or TrainConfig(weights=None, learning_rate=1e-3, patience=10, epochs=60,
                                   seed=seed)
    bundle_dir = train_ensemble(cache, split_csv, work_dir / "runs", archs, config,
                                label_set="cxr-public", groups=summary["groups"],
                                bundle_id=f"cxr-public-demo-v1-seed{seed}", data_summary=summary)
    out_dir = publish_bundle(bundle_dir, out_dir, split_csv,
                             {"demo": True, "preprocessing": {"segmenter": "models/segmenter"}})
    evaluate_bundle(out_dir, cache, split_csv)
    write_model_card(out_dir)
    Bundle.load(out_dir)  # verify what we ship
    return out_dir
