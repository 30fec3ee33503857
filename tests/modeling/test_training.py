"""End-to-end: preprocess real X-rays, train two members briefly, bundle, evaluate."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_core.base.errors import DataError
from cxr_core.data.split_table import cached_paths, read_split
from cxr_core.imaging.batch_preprocess import preprocess_split
from cxr_core.imaging.segmentation import LungSegmenter
from cxr_core.modeling.bundle import Bundle
from cxr_core.modeling.datasets import make_dataset
from cxr_core.evaluation.evaluation import evaluate_bundle
from cxr_core.modeling.training import TrainConfig, train_ensemble

from ..helpers import TINY_ARCH, register_tiny_arch


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


# --- small runs on synthetic crops (seconds each) -------------------------------------------
# These tests are about training mechanics (resume, fingerprints, precision, determinism,
# thresholds), which hold for any backbone: they train TinyNet, a three-convolution stand-in
# registered for the test (tests/helpers.py), whose training step traces in seconds where the
# smallest registered architecture (MobileNet) took about a minute on 2 cores. Real
# architectures are trained above (MobileNetV3Small and MobileNetV2 on real crops) and in
# test_distributed.py (MobileNet).

ARCH = TINY_ARCH
TINY = dict(input_size=32, batch_size=4, epochs=1, weights=None, patience=5, learning_rate=1e-3,
            augment=True)


@pytest.fixture(autouse=True)
def tiny_arch(monkeypatch):
    """TinyNet, registered for each test's duration."""
    assert register_tiny_arch(monkeypatch) == ARCH


@pytest.fixture
def synthetic(tmp_path):
    from ..helpers import tiny_cache

    return tiny_cache(tmp_path / "data")


@pytest.fixture
def mixed_float16():
    """Train as `--mixed-precision auto` does on a GPU; the global policy is restored after."""
    import keras

    yield TrainConfig(**{**TINY, "mixed_precision": True})
    keras.mixed_precision.set_global_policy("float32")


def _finite_float32(record, tmp_dir):
    import keras

    assert np.isfinite(pd.read_csv(tmp_dir / "training_log.csv")["loss"]).all()
    classifier = record["classifier"] if isinstance(record, dict) else record
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    out = classifier.model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    features, logits = classifier.features_and_logits(x)
    assert logits.dtype == np.float32 and np.isfinite(logits).all() and np.isfinite(features).all()


def test_every_training_entry_point_runs_under_mixed_float16(synthetic, mixed_float16, tmp_path):
    from cxr_core.modeling.training import train_member
    from cxr_core.review.retrain import fine_tune_config

    cache, split = synthetic
    record = train_member(ARCH, cache, split, tmp_path / "one", mixed_float16)
    _finite_float32(record, tmp_path / "one")
    bundle_dir = train_ensemble(cache, split, tmp_path / "ens", (ARCH,), mixed_float16,
                                label_set="tiny")
    _finite_float32(Bundle.load(bundle_dir).classifiers[0], tmp_path / "ens" / ARCH)
    # retrain's call: fine-tuning from the parent's members with its configuration
    parent = Bundle.load(bundle_dir)
    config = fine_tune_config(parent, epochs=1, learning_rate=1e-4)
    config.mixed_precision, config.batch_size = True, 4
    child = train_ensemble(cache, split, tmp_path / "ft", (ARCH,), config, label_set="tiny",
                           initial=[c.model.get_weights() for c in parent.classifiers])
    _finite_float32(Bundle.load(child).classifiers[0], tmp_path / "ft" / ARCH)


def _bn_momenta(model):
    return {l.momentum for l in model.layers if type(l).__name__ == "BatchNormalization"}


def test_fine_tuning_keeps_the_architectures_batchnorm_momentum(synthetic, tmp_path):
    from cxr_core.modeling.model_building import build_classifier
    from cxr_core.modeling.training import train_member

    cache, split = synthetic
    scratch = train_member(ARCH, cache, split, tmp_path / "scratch", TrainConfig(**TINY))
    assert _bn_momenta(scratch["classifier"].model) == {0.9}  # from random weights: fast
    start = scratch["classifier"].model.get_weights()
    tuned = train_member(ARCH, cache, split, tmp_path / "tuned", TrainConfig(**TINY),
                         initial_weights=start)
    own = _bn_momenta(build_classifier(ARCH, ["a", "b"], 32, weights=None).model)
    assert own == {0.99}  # the architecture's own (Keras's default, as MobileNet's)
    assert _bn_momenta(tuned["classifier"].model) == own


def test_finished_members_are_reused_only_with_the_same_fingerprint(synthetic, tmp_path):
    cache, split = synthetic
    out = tmp_path / "ens"
    config = TrainConfig(**TINY)
    log_file = out / ARCH / "training_log.csv"

    def run(cfg=config, split_csv=split, initial=None):
        before = log_file.read_text() if log_file.is_file() else None
        train_ensemble(cache, split_csv, out, (ARCH,), cfg, label_set="tiny", initial=initial)
        return log_file.read_text() != before  # True: trained anew

    assert run()
    assert not run()  # the same run again: reused
    assert run(TrainConfig(**{**TINY, "learning_rate": 5e-4}))  # other configuration
    frame = pd.read_csv(split)
    frame.loc[frame["split"] == "train", "a"] = 1 - frame.loc[frame["split"] == "train", "a"]
    relabelled = tmp_path / "relabelled.csv"  # other labels (e.g. a new feedback set)
    frame.to_csv(relabelled, index=False)
    assert run(TrainConfig(**{**TINY, "learning_rate": 5e-4}), relabelled)
    weights = Bundle.load(out / "bundle").classifiers[0].model.get_weights()
    assert run(TrainConfig(**{**TINY, "learning_rate": 5e-4}), relabelled, [weights])  # other start
    assert not run(TrainConfig(**{**TINY, "learning_rate": 5e-4}), relabelled, [weights])


def test_thresholds_are_chosen_on_the_deployed_float16_weights(synthetic, tmp_path):
    from cxr_core.modeling.inference import predict_members
    from cxr_core.modeling.thresholds import threshold_table

    cache, split = synthetic
    bundle = Bundle.load(train_ensemble(cache, split, tmp_path / "ens", (ARCH,),
                                        TrainConfig(**TINY), label_set="tiny"))
    table = read_split(split)
    val_probs = predict_members(bundle.classifiers, cached_paths(cache, table.part("val")), 32)
    expected = threshold_table(val_probs, table.targets("val"))
    for method, entry in bundle.manifest["thresholds"].items():
        assert np.allclose(entry["ensemble"], expected[method]["ensemble"], rtol=0, atol=1e-7)




class _Interrupted(Exception):
    pass


def test_resumed_run_matches_the_uninterrupted_run(synthetic, tmp_path):
    """Interrupt after epoch k, resume: the checkpoint, early stopping and run.json carry on as
    in one uninterrupted run of the same seed."""
    import keras

    from cxr_core.modeling.training import train_member

    cache, split = synthetic
    # one batch per epoch, no augmentation: the run is deterministic enough to compare
    # at 3e-2 the validation loss turns up after a best epoch and early stopping ends the run
    # before its last epoch (seeded: best at epoch 5 of 8 run), which this test needs
    config = TrainConfig(**{**TINY, "epochs": 10, "patience": 2, "batch_size": 8, "augment": False,
                            "learning_rate": 3e-2})
    full = train_member(ARCH, cache, split, tmp_path / "full", config)
    full_log = pd.read_csv(tmp_path / "full" / "training_log.csv")
    losses = full_log["val_loss"].to_numpy()
    # interrupt right after the best epoch: every later epoch is worse, so a reset checkpoint
    # would overwrite the best weights and a reset patience would run longer
    k = int(np.argmin(losses))
    assert k + 1 < len(losses), f"the run must go on after its best epoch: {losses}"
    assert len(losses) < config.epochs, f"early stopping must end the run: {losses}"

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == k:
                raise _Interrupted

    with pytest.raises(_Interrupted):
        train_member(ARCH, cache, split, tmp_path / "cut", config, callbacks=[Interrupt()])
    assert (tmp_path / "cut" / "backup").is_dir()
    resumed = train_member(ARCH, cache, split, tmp_path / "cut", config)
    resumed_log = pd.read_csv(tmp_path / "cut" / "training_log.csv")
    assert resumed_log["epoch"].tolist() == full_log["epoch"].tolist()  # stopped at the same epoch
    assert np.allclose(resumed_log["val_loss"], full_log["val_loss"], rtol=1e-3, atol=1e-5)
    for key in ("epochs_run", "best_val_loss", "best_monitored"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-3), key
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    best_full = np.asarray(full["classifier"].model(x, training=False))
    best_resumed = np.asarray(resumed["classifier"].model(x, training=False))
    assert np.allclose(best_full, best_resumed, rtol=1e-3, atol=1e-5)  # the same best checkpoint
    assert not (tmp_path / "cut" / "backup").exists()


def test_training_with_xla_augments_in_the_input_pipeline(synthetic, tmp_path):
    """`--xla`: the image warp XLA cannot compile moves to the input pipeline; training runs,
    and the training batches are augmented (different from the cached crops)."""
    from cxr_core.modeling.training import train_member

    import tensorflow as tf

    cache, split = synthetic
    try:
        record = train_member(ARCH, cache, split, tmp_path / "xla",
                              TrainConfig(**{**TINY, "xla": True}))
    finally:
        tf.config.optimizer.set_jit(False)  # --xla sets it process-wide; later tests run without
    _finite_float32(record, tmp_path / "xla")
    table = read_split(split)
    paths = cached_paths(cache, table.part("train"))
    targets = table.targets("train")
    plain = next(iter(make_dataset(paths, targets, 32, 4, shuffle=False)))[0].numpy()
    warped = next(iter(make_dataset(paths, targets, 32, 4, shuffle=False, augment="mild")))[0].numpy()
    assert plain.shape == warped.shape and not np.allclose(plain, warped)


def test_deterministic_runs_give_identical_weights(synthetic, tmp_path):
    """`deterministic` (the demo recipe's setting): two runs of the same seed, augmentation on,
    give the same weights bit for bit, so `build-demo` rebuilds the shipped members exactly."""
    from cxr_core.modeling.training import train_member

    cache, split = synthetic
    config = TrainConfig(**{**TINY, "epochs": 2, "augment": "mild", "deterministic": True})
    first = train_member(ARCH, cache, split, tmp_path / "a", config)
    second = train_member(ARCH, cache, split, tmp_path / "b", config)
    assert first["runtime"]["deterministic"] is True
    weights = [first["classifier"].model.get_weights(), second["classifier"].model.get_weights()]
    assert len(weights[0]) == len(weights[1]) > 0
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
    other = train_member(ARCH, cache, split, tmp_path / "c",
                         TrainConfig(**{**TINY, "epochs": 2, "augment": "mild",
                                        "deterministic": True, "seed": 1}))
    assert not all(np.array_equal(a, b) for a, b in
                   zip(weights[0], other["classifier"].model.get_weights()))


def test_crops_of_another_segmenter_or_preprocessing_train_anew(synthetic, tmp_path):
    """The run fingerprint includes the cache's identity: after re-preprocessing with another
    segmenter (or preprocessing version), finished members are not reused."""
    from cxr_core.imaging.batch_preprocess import CACHE_IDENTITY

    cache, split = synthetic
    out, log_file = tmp_path / "ens", tmp_path / "ens" / ARCH / "training_log.csv"

    def run(identity):
        (cache / CACHE_IDENTITY).write_text(json.dumps(identity))
        before = log_file.stat().st_mtime_ns if log_file.is_file() else None
        train_ensemble(cache, split, out, (ARCH,), TrainConfig(**TINY), label_set="tiny")
        return log_file.stat().st_mtime_ns != before  # True: trained anew

    first = {"segmenter_sha256": "a" * 64, "crop_version": 1}
    assert run(first)
    assert not run(first)  # the same crops: reused
    assert json.loads((out / ARCH / "run.json").read_text())["crops"] == first
    assert run({**first, "segmenter_sha256": "b" * 64})  # another segmenter
    assert json.loads((out / ARCH / "run.json").read_text())["crops"]["segmenter_sha256"] == "b" * 64
    assert run({"segmenter_sha256": "b" * 64, "crop_version": 2})  # another preprocessing


def test_unknown_labels_train_with_a_finite_loss_and_validation_auc(tmp_path):
    """A label the source does not annotate (empty in split.csv) is masked out of the loss and
    of the validation AUC that early stopping watches: both stay finite, as do the thresholds."""
    from ..helpers import tiny_cache

    cache, split_csv = tiny_cache(tmp_path / "data", n_train=10, n_val=6)
    frame = pd.read_csv(split_csv)
    frame["b"] = frame["b"].astype("Int64")
    frame.loc[[3, 4, 12, 13], "b"] = pd.NA  # unknown in train and in val
    frame.to_csv(split_csv, index=False)
    config = TrainConfig(**{**TINY, "epochs": 2, "monitor": "val_auc", "augment": False})
    bundle = Bundle.load(train_ensemble(cache, split_csv, tmp_path / "ens", (ARCH,), config,
                                        label_set="tiny"))
    log = pd.read_csv(next((tmp_path / "ens").rglob("training_log.csv")))
    assert np.isfinite(log[["loss", "val_loss", "auc", "val_auc"]].to_numpy()).all()
    for entry in bundle.manifest["thresholds"].values():
        assert np.isfinite(entry["ensemble"]).all()


def test_thresholds_are_chosen_on_float32_predictions_after_mixed_float16_training(
        synthetic, mixed_float16, tmp_path):
    """Members trained under mixed_float16 (a GPU's default) are served in float32: the
    validation probabilities that thresholds are chosen on are computed in float32 too."""
    import keras

    from cxr_core.modeling.inference import predict_members
    from cxr_core.modeling.thresholds import threshold_table

    cache, split = synthetic
    bundle_dir = train_ensemble(cache, split, tmp_path / "ens", (ARCH,), mixed_float16,
                                label_set="tiny")
    keras.mixed_precision.set_global_policy("float32")  # as the app and the CLI load a bundle
    bundle = Bundle.load(bundle_dir)
    table = read_split(split)
    val_probs = predict_members(bundle.classifiers, cached_paths(cache, table.part("val")), 32)
    expected = threshold_table(val_probs, table.targets("val"))
    for method, entry in bundle.manifest["thresholds"].items():
        assert np.allclose(entry["ensemble"], expected[method]["ensemble"], rtol=0, atol=1e-7), method


def test_a_resumed_run_with_augmentation_and_several_batches_is_bit_identical(synthetic, tmp_path):
    """Op determinism on, augmentation on, two batches per epoch: interrupted after its first
    epoch and resumed, a run ends bit for bit as the uninterrupted one (the resumed epochs draw
    their own data order, augmentation and dropout, not epoch 0's again)."""
    import keras

    from cxr_core.modeling.training import train_member

    cache, split = synthetic
    config = TrainConfig(**{**TINY, "epochs": 3, "patience": 10, "augment": "mild",
                            "deterministic": True})
    assert config.batch_size * 2 == len(read_split(split).part("train"))  # two batches an epoch
    full = train_member(ARCH, cache, split, tmp_path / "full", config)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise _Interrupted

    with pytest.raises(_Interrupted):
        train_member(ARCH, cache, split, tmp_path / "cut", config, callbacks=[Interrupt()])
    resumed = train_member(ARCH, cache, split, tmp_path / "cut", config)
    logs = [pd.read_csv(tmp_path / run / "training_log.csv") for run in ("full", "cut")]
    assert logs[0]["epoch"].tolist() == logs[1]["epoch"].tolist() == [0, 1, 2]
    for column in ("loss", "val_loss"):
        assert logs[0][column].tolist() == logs[1][column].tolist(), column
    weights = [full["classifier"].model.get_weights(), resumed["classifier"].model.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


def _lung_masks(cache):
    """A lung-field mask for every crop of a tiny cache: two side-by-side blocks, 0/255."""
    import cv2

    from cxr_core.data.split_table import lungs_cache_path

    for crop in sorted(Path(cache).glob("*.png")):
        mask = np.zeros((32, 32), np.uint8)
        mask[6:28, 3:14] = mask[6:28, 18:29] = 255
        target = lungs_cache_path(cache, crop.name)
        target.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(target), mask)


def test_swapping_outside_the_lungs_trains_deterministically_and_needs_the_masks(synthetic, tmp_path):
    """`outside_lungs` (the demo recipe's 0.5): refused without the cache's lung masks and
    outside 0-1; with them two runs of the same seed give the same weights, and not those of a
    run without the swap; the share is part of the run's fingerprint."""
    from cxr_core.base.errors import DataError
    from cxr_core.modeling.training import train_member

    cache, split = synthetic
    config = TrainConfig(**{**TINY, "epochs": 2, "augment": "mild", "deterministic": True,
                            "outside_lungs": 0.5})
    with pytest.raises(DataError, match="no lung mask"):
        train_member(ARCH, cache, split, tmp_path / "none", config)
    _lung_masks(cache)
    with pytest.raises(ValueError, match="share of the training images"):
        train_member(ARCH, cache, split, tmp_path / "bad", TrainConfig(**{**TINY, "outside_lungs": 1.5}))
    first = train_member(ARCH, cache, split, tmp_path / "a", config)
    second = train_member(ARCH, cache, split, tmp_path / "b", config)
    plain = train_member(ARCH, cache, split, tmp_path / "c",
                         TrainConfig(**{**TINY, "epochs": 2, "augment": "mild", "deterministic": True}))
    weights = [r["classifier"].model.get_weights() for r in (first, second, plain)]
    assert all(np.array_equal(a, b) for a, b in zip(weights[0], weights[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(weights[0], weights[2]))
    assert first["config"]["outside_lungs"] == 0.5 and first["fingerprint"] != plain["fingerprint"]
    assert np.isfinite(pd.read_csv(tmp_path / "a" / "training_log.csv")["loss"]).all()
