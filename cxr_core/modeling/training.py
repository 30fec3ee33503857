"""Train one member (`train`) or all five (`train-ensemble`) and gather them into a bundle.

Method settings: weighted BCE on logits, Adam 1e-4, batch 32, 224 px, heavy augmentation,
checkpoint on the best validation loss, early stopping (patience 25, min delta 0.001), at most
350 epochs; CSV + TensorBoard logs; resumable after interruption (Keras BackupAndRestore).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.split_table import cached_paths, read_split
from .datasets import make_dataset
from .losses import label_weights, make_weighted_bce
from .model_building import build_classifier
from .registry import METHOD_ARCHITECTURES, get_arch

log = logging.getLogger(__name__)

BEST_WEIGHTS = "best.weights.h5"


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (stored with the run and in the bundle)."""

    input_size: int = 224
    batch_size: int = 32
    learning_rate: float = 1e-4
    epochs: int = 350
    patience: int = 25
    min_delta: float = 0.001
    weights: str | None = "imagenet"
    augment: bool | str = True  # on/off (the method's), or a name in CLASSIFIER_AUGMENTS
    mixed_precision: bool | None = None  # None: on when a GPU is present
    xla: bool = False
    seed: int = 0
    max_minutes: float | None = None
    #: BatchNormalization momentum; None keeps the architecture's own (0.99-0.999), which suits
    #: ImageNet fine-tuning but leaves the moving statistics near their initial values after the
    #: few hundred steps of a small from-scratch run (inference outputs are then constant).
    bn_momentum: float | None = None
    #: What checkpointing and early stopping watch: the method's "val_loss", or "val_auc"
    #: (macro AUC over labels) for tiny validation sets where the loss favours constant models.
    monitor: str = "val_loss"
    extra: dict = field(default_factory=dict)


def set_batchnorm_momentum(model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer; returns how many."""
    count = 0
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = momentum
            count += 1
    return count


def train_member(arch: str, cache_dir: str | Path, split_csv: str | Path, out_dir: str | Path,
                 config: TrainConfig | None = None, split_table=None,
                 initial_weights: list | None = None, strategy="auto") -> dict:
    """Train one architecture; returns the run record (also written to `out_dir/run.json`).

    `initial_weights` (a Keras weight list) starts from an existing member: fine-tuning.
    `strategy`: a `--strategy` name or a tf.distribute strategy; `config.batch_size` is the
    global batch, split across replicas. Only the chief writes to `out_dir`."""
    import keras

    from .runtime import (all_agree_to_stop, configure, distribution_strategy,
                          replica_sync_callback, shard_by_data, strategy_record, writing_dir)

    config = config or TrainConfig()
    spec = get_arch(arch)
    strategy = distribution_strategy(strategy)  # before any other TensorFlow op (multi-worker)
    runtime = configure(config.mixed_precision, config.xla)
    keras.utils.set_random_seed(config.seed)
    table = split_table or read_split(split_csv)
    out_dir = writing_dir(out_dir, strategy)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val = table.part("train"), table.part("val")
    y_train, y_val = table.targets("train"), table.targets("val")
    w_pos, w_neg = label_weights(y_train)
    train_ds = shard_by_data(make_dataset(cached_paths(cache_dir, train), y_train, config.input_size,
                            config.batch_size, shuffle=True, seed=config.seed))
    val_ds = shard_by_data(make_dataset(cached_paths(cache_dir, val), y_val, config.input_size,
                                        config.batch_size, shuffle=False))
    with strategy.scope():
        classifier = build_classifier(spec.name, table.labels, config.input_size,
                                      weights=config.weights, augment=config.augment)
        model = classifier.model
        if initial_weights is not None:
            model.set_weights(initial_weights)
        momentum = config.bn_momentum if config.bn_momentum is not None else (
            0.9 if config.weights is None else None)
        if momentum is not None:
            set_batchnorm_momentum(model, momentum)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss=make_weighted_bce(w_pos, w_neg),
                      metrics=[keras.metrics.AUC(multi_label=True, from_logits=True, name="auc")],
                      jit_compile=bool(config.xla))
    mode = "max" if "auc" in config.monitor else "min"
    callbacks = [cb for cb in (replica_sync_callback(strategy),) if cb is not None] + [
        keras.callbacks.ModelCheckpoint(str(out_dir / BEST_WEIGHTS), monitor=config.monitor,
                                        mode=mode, save_best_only=True, save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor=config.monitor, mode=mode, patience=config.patience,
                                      min_delta=config.min_delta, restore_best_weights=True),
        keras.callbacks.CSVLogger(str(out_dir / "training_log.csv"), append=True),
        keras.callbacks.TensorBoard(str(out_dir / "tensorboard"), write_graph=False),
        keras.callbacks.BackupAndRestore(str(out_dir / "backup"), delete_checkpoint=True),
    ]
    if config.max_minutes:
        deadline = time.time() + config.max_minutes * 60

        class TimeBudget(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if all_agree_to_stop(strategy, time.time() > deadline):
                    self.model.stop_training = True

        callbacks.append(TimeBudget())
    started = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs,
                        callbacks=callbacks, verbose=2)
    if (out_dir / BEST_WEIGHTS).is_file():
        model.load_weights(str(out_dir / BEST_WEIGHTS))
    record = {
        "arch": spec.name,
        "labels": table.labels,
        "config": asdict(config),
        "runtime": {**runtime, **strategy_record(strategy, config.batch_size)},
        "epochs_run": len(history.history.get("loss", [])),
        "best_val_loss": float(min(history.history.get("val_loss", [np.nan]))),
        "best_monitored": float((max if mode == "max" else min)(history.history.get(config.monitor, [np.nan]))),
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_images": int(len(train)),
        "val_images": int(len(val)),
        "loss_weights": {"w_pos": w_pos.tolist(), "w_neg": w_neg.tolist()},
    }
    (out_dir / "run.json").write_text(json.dumps(record, indent=2))
    record["classifier"] = classifier
    return record


def load_finished_member(member_dir: Path, labels: list[str]) -> dict | None:
    """The record of a member whose run finished (run.json + best weights), with its model."""
    run_file, weights = Path(member_dir) / "run.json", Path(member_dir) / BEST_WEIGHTS
    if not run_file.is_file() or not weights.is_file():
        return None
    record = json.loads(run_file.read_text())
    if record.get("labels") != labels:
        return None
    classifier = build_classifier(record["arch"], labels, record["config"]["input_size"],
                                  weights=None, augment=record["config"].get("augment", True))
    classifier.model.load_weights(str(weights))
    record["classifier"] = classifier
    return record


def train_ensemble(cache_dir: str | Path, split_csv: str | Path, out_dir: str | Path,
                   archs: tuple[str, ...] = METHOD_ARCHITECTURES,
                   config: TrainConfig | None = None, label_set: str = "specific",
                   groups: dict[str, list[str]] | None = None,
                   segmenter_ref: str = "models/segmenter", bundle_id: str | None = None,
                   data_summary: dict | None = None, initial: list | None = None,
                   extra_manifest: dict | None = None, strategy="auto") -> Path:
    """Train every architecture, then write `out_dir/bundle` with validation thresholds
    (on the chief; another worker of a cluster writes to its own scratch folders)."""
    from .bundle import write_bundle
    from .inference import predict_members
    from .runtime import distribution_strategy, writing_dir

    strategy = distribution_strategy(strategy)  # one for all members
    table = read_split(split_csv)
    out_dir = Path(out_dir)
    members = []
    for i, arch in enumerate(archs):
        member_dir = out_dir / get_arch(arch).name
        record = load_finished_member(writing_dir(member_dir, strategy), table.labels)
        if record is not None:  # an interrupted ensemble run does not redo finished members
            log.info("%s already trained in %s; reusing it", arch, member_dir)
        else:
            log.info("training %s", arch)
            record = train_member(arch, cache_dir, split_csv, member_dir, config, split_table=table,
                                  initial_weights=initial[i] if initial is not None else None,
                                  strategy=strategy)
        members.append(record)
    classifiers = [m.pop("classifier") for m in members]
    val = table.part("val")
    val_probs = predict_members(classifiers, cached_paths(cache_dir, val),
                                (config or TrainConfig()).input_size)
    return write_bundle(
        writing_dir(out_dir / "bundle", strategy), classifiers, labels=table.labels, label_set=label_set,
        groups=groups, val_probs=val_probs, val_targets=table.targets("val"),
        training={"members": members, "config": asdict(config or TrainConfig())},
        segmenter_ref=segmenter_ref, bundle_id=bundle_id, data_summary=data_summary,
        extra=extra_manifest,
    )
