"""End-to-end: preprocess real X-rays, train two members briefly, bundle, evaluate."""

import json

import numpy as np
import pandas as pd
import pytest

from cxr_core.base.errors import DataError
from cxr_core.data.split_table import cached_paths, read_split
from cxr_core.imaging.batch_preprocess import preprocess_split
from cxr_core.imaging.segmentation import LungSegmenter
from cxr_core.modeling.bundle import Bundle
from cxr_core.modeling.datasets import make_dataset
from cxr_core.modeling.evaluation import evaluate_bundle
from cxr_core.modeling.training import TrainConfig, train_ensemble


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from ..conftest import SHARED, require

    nih = require(SHARED / "nih-sample")
    meta = pd.read_csv(require(nih / "metadata.csv")).sample(36, random_state=3).reset_index(drop=True)
    split = np.array(["train"] * 20 + ["val"] * 8 + ["test"] * 8)
    table = pd.DataFrame({"ImageID": meta["image"].str.split("/").str[-1], "ImageDir": "images",
                          "PatientID": meta["patient_id"].astype(str), "split": split,
                          "pneumonia": meta["pneumonia"].astype(int),
                          "infiltrates": meta["infiltrates"].astype(int)})
    root = tmp_path_factory.mktemp("tiny")
    table.to_csv(root / "split.csv", index=False)
    summary = preprocess_split(nih, root / "split.csv", root / "cache", LungSegmenter.load(),
                               workers=1)
    assert summary["failed"] == 0
    return root


def test_input_pipeline_yields_batches(tiny_data):
    table = read_split(tiny_data / "split.csv")
    ds = make_dataset(cached_paths(tiny_data / "cache", table.part("train")),
                      table.targets("train"), 64, 8, shuffle=True, augment=True)
    x, y = next(iter(ds))
    assert tuple(x.shape) == (8, 64, 64, 1) and tuple(y.shape) == (8, 2)
    assert 0 <= float(np.min(x)) and float(np.max(x)) <= 1


def test_missing_cache_is_a_clear_error(tiny_data, tmp_path):
    table = read_split(tiny_data / "split.csv")
    with pytest.raises(DataError, match="missing from the cache"):
        cached_paths(tmp_path, table.part("train"))


def test_train_bundle_evaluate_end_to_end(tiny_data):
    config = TrainConfig(input_size=64, batch_size=8, epochs=2, weights=None, patience=5,
                         learning_rate=1e-3)
    bundle_dir = train_ensemble(tiny_data / "cache", tiny_data / "split.csv", tiny_data / "run",
                                ("MobileNetV3Small", "MobileNetV2"), config, label_set="tiny")
    assert (tiny_data / "run" / "MobileNetV2" / "training_log.csv").is_file()
    assert (tiny_data / "run" / "MobileNetV2" / "best.weights.h5").is_file()
    metrics = evaluate_bundle(bundle_dir, tiny_data / "cache", tiny_data / "split.csv")
    assert set(metrics["overall"]) == {"MobileNetV3Small", "MobileNetV2", "CTP",
                                       "PTC label-wise", "PTC mode"}
    bundle = Bundle.load(bundle_dir)
    stored = bundle.test_predictions()
    assert stored["member_probs"].shape == (2, 8, 2) and stored["targets"].shape == (8, 2)
    assert bundle.manifest["metrics"]["images"] == 8
    table = pd.read_csv(bundle_dir / "metrics" / "auc_by_label.csv")
    assert list(table.columns[:2]) == ["label", "images"] and "best_member" in table.columns
    assert (bundle_dir / "metrics" / "f1_macro_by_label.md").read_text().startswith("| label |")
    run = json.loads((tiny_data / "run" / "MobileNetV2" / "run.json").read_text())
    assert run["config"]["learning_rate"] == 1e-3 and len(run["loss_weights"]["w_pos"]) == 2
    # a re-run (e.g. after an interruption) reuses finished members instead of training again
    log_before = (tiny_data / "run" / "MobileNetV2" / "training_log.csv").read_text()
    again = train_ensemble(tiny_data / "cache", tiny_data / "split.csv", tiny_data / "run",
                           ("MobileNetV3Small", "MobileNetV2"), config, label_set="tiny")
    assert (tiny_data / "run" / "MobileNetV2" / "training_log.csv").read_text() == log_before
    assert Bundle.load(again).thresholds()[0].shape == (2,)


def test_batchnorm_momentum_is_set_on_every_bn_layer():
    from cxr_core.modeling.training import set_batchnorm_momentum

    from ..helpers import classifier

    model = classifier("MobileNetV2", 96).model
    count = set_batchnorm_momentum(model, 0.9)
    bns = [l for l in model.layers if type(l).__name__ == "BatchNormalization"]
    assert count == len(bns) > 0 and all(l.momentum == 0.9 for l in bns)
    set_batchnorm_momentum(model, 0.999)
