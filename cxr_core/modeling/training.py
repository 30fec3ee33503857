"""Train one member (`train`) or all five (`train-ensemble`) and gather them into a bundle.

Method settings: weighted BCE on logits, Adam 1e-4, batch 32, 224 px, heavy augmentation,
checkpoint on the best validation loss, early stopping (patience 25, min delta 0.001), at most
350 epochs; CSV + TensorBoard logs; resumable after interruption (Keras BackupAndRestore).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..base.config import DEFAULT_SEGMENTER
from ..data.label_sets import in_lungs
from ..data.split_table import cached_lung_paths, cached_paths, read_split
from ..imaging.batch_preprocess import cache_identity
from .datasets import make_dataset
from .losses import label_weights, make_weighted_bce, masked_auc
from .model_building import GRAPH, build_classifier, set_classifier_weights
from .registry import METHOD_ARCHITECTURES, get_arch

log = logging.getLogger(__name__)

BEST_WEIGHTS = "best.weights.h5"
TRAINING_LOG = "training_log.csv"
BACKUP_DIR = "backup"
CALLBACK_STATE = "callbacks.json"  # inside BACKUP_DIR: deleted with it when the run ends
FINGERPRINT = "fingerprint.json"
#: what checkpointing and early stopping can watch (`TrainConfig.monitor`)
MONITORS = ("val_loss", "val_auc")
#: Config fields that change how fast a run goes, not what it learns.
_RUNTIME_FIELDS = ("mixed_precision", "xla", "max_minutes", "deterministic")


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
    #: TensorFlow op determinism: the same seed gives the same weights (slower; the demo uses it)
    deterministic: bool = False
    seed: int = 0
    max_minutes: float | None = None
    #: BatchNormalization momentum; None keeps the architecture's own (0.99-0.999), which suits
    #: ImageNet fine-tuning but leaves the moving statistics near their initial values after the
    #: few hundred steps of a small from-scratch run (inference outputs are then constant).
    bn_momentum: float | None = None
    #: What checkpointing and early stopping watch: the method's "val_loss", or "val_auc"
    #: (macro AUC over labels) for tiny validation sets where the loss favours constant models.
    monitor: str = "val_loss"
    #: Share of training images whose region outside the lung fields is swapped with another
    #: X-ray's (`imaging.augment.swap_outside_lungs`): 0 (the method) to 1. Needs the crop
    #: cache's lung masks; labels that do not lie on the lungs count as unknown on those images.
    outside_lungs: float = 0.0
    extra: dict = field(default_factory=dict)


def set_batchnorm_momentum(model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer; returns how many."""
    count = 0
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = momentum
            count += 1
    return count


def run_fingerprint(arch: str, table, config: TrainConfig, initial_weights: list | None,
                    crops: dict | None = None) -> str:
    """sha256 of what a member's training depends on: architecture, the train/val rows with their
    labels (so the feedback set of a retrain too), the configuration, the initial weights and
    the crop cache's identity (`batch_preprocess.cache_identity`: segmenter checksum and
    preprocessing version; None for a cache that does not record it)."""
    digest = hashlib.sha256()
    rows = table.frame[table.frame["split"].isin(["train", "val"])]
    digest.update(get_arch(arch).name.encode())
    if crops is not None:
        digest.update(json.dumps(crops, sort_keys=True).encode())
    digest.update(rows[["ImageID", "split", *table.labels]].to_csv(index=False).encode())
    settings_ = {k: v for k, v in asdict(config).items() if k not in _RUNTIME_FIELDS}
    digest.update(json.dumps(settings_, sort_keys=True, default=str).encode())
    digest.update(GRAPH.encode())
    for weights in initial_weights or []:
        array = np.ascontiguousarray(weights)
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _prepare_run_dir(out_dir: Path, fingerprint: str) -> None:
    """Keep an interrupted run (a backup) of the same fingerprint, to resume it; otherwise
    remove what an earlier run left (backup, checkpoint, logs), so nothing of it is mixed in."""
    marker = out_dir / FINGERPRINT
    recorded = json.loads(marker.read_text()).get("fingerprint") if marker.is_file() else None
    if recorded == fingerprint and (out_dir / BACKUP_DIR).is_dir():
        log.info("resuming the interrupted run in %s", out_dir)
    else:
        for name in (BACKUP_DIR, BEST_WEIGHTS, TRAINING_LOG, "run.json", "tensorboard"):
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    marker.write_text(json.dumps({"fingerprint": fingerprint}))


def _callback_state_class():
    import keras

    class CallbackState(keras.callbacks.Callback):
        """Persist the best-checkpoint and early-stopping state next to BackupAndRestore's backup
        (which restores weights, optimizer and epoch only), and restore it on resume. Must come
        after both callbacks in the list: Keras resets EarlyStopping in its on_train_begin."""

        def __init__(self, path: Path, checkpoint, stopping):
            super().__init__()
            self.path, self.checkpoint, self.stopping = Path(path), checkpoint, stopping

        def on_train_begin(self, logs=None):
            if not self.path.is_file():
                return
            state = json.loads(self.path.read_text())
            self.checkpoint.best = state["checkpoint_best"]
            self.stopping.best = state["stopping_best"]
            self.stopping.wait = state["stopping_wait"]
            self.stopping.best_epoch = state["stopping_best_epoch"]
            log.info("resuming after epoch %d: best %s = %s", state["epoch"] + 1,
                     self.stopping.monitor, state["checkpoint_best"])

        def on_epoch_end(self, epoch, logs=None):
            def plain(value):
                return None if value is None else float(value)

            state = {"epoch": int(epoch), "checkpoint_best": plain(self.checkpoint.best),
                     "stopping_best": plain(self.stopping.best),
                     "stopping_wait": int(self.stopping.wait),
                     "stopping_best_epoch": int(self.stopping.best_epoch)}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(self.path)

    return CallbackState


def _epoch_seeds_class():
    import keras

    class EpochSeeds(keras.callbacks.Callback):
        """At each epoch's start, set the data order's epoch and every random generator of the
        model (augmentation, dropout) from (seed, epoch): an epoch draws the same whether the
        run was interrupted before it or not, so a resumed run continues the uninterrupted one
        instead of replaying epoch 0's shuffle and augmentation."""

        def __init__(self, seed: int, epoch_variable):
            super().__init__()
            self.seed, self.epoch_variable = int(seed), epoch_variable

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_variable.assign(epoch)
            index = 0
            for layer in self.model._flatten_layers():
                for generator in getattr(layer, "_seed_generators", []):
                    dtype = keras.backend.standardize_dtype(generator.state.dtype)
                    start = (self.seed * 7919 + index) % 2**31
                    generator.state.assign(np.array([start, epoch], dtype=dtype))
                    index += 1

    return EpochSeeds


def _epoch_log(out_dir: Path):
    """The whole run's per-epoch log (all sessions of a resumed run), one row per epoch."""
    import pandas as pd

    path = out_dir / TRAINING_LOG
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    frame = pd.read_csv(path)
    return frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def train_member(arch: str, cache_dir: str | Path, split_csv: str | Path, out_dir: str | Path,
                 config: TrainConfig | None = None, split_table=None,
                 initial_weights: list | None = None, strategy="auto",
                 callbacks: list | None = None) -> dict:
    """Train one architecture; returns the run record (also written to `out_dir/run.json`).

    `initial_weights` (a Keras weight list) starts from an existing member: fine-tuning.
    `strategy`: a `--strategy` name or a tf.distribute strategy; `config.batch_size` is the
    global batch, split across replicas. Only the chief writes to `out_dir`. An interrupted run
    of the same fingerprint resumes (`run_fingerprint`); `callbacks` are added after the
    built-in ones."""
    import keras

    from .runtime import (all_agree_to_stop, configure, distribution_strategy,
                          replica_sync_callback, shard_by_data, strategy_record, writing_dir)

    config = config or TrainConfig()
    spec = get_arch(arch)
    strategy = distribution_strategy(strategy)  # before any other TensorFlow op (multi-worker)
    runtime = configure(config.mixed_precision, config.xla, config.deterministic)
    keras.utils.set_random_seed(config.seed)
    table = split_table or read_split(split_csv)
    out_dir = writing_dir(out_dir, strategy)
    out_dir.mkdir(parents=True, exist_ok=True)
    crops = cache_identity(cache_dir)
    fingerprint = run_fingerprint(spec.name, table, config, initial_weights, crops)
    _prepare_run_dir(out_dir, fingerprint)
    train, val = table.part("train"), table.part("val")
    y_train, y_val = table.targets("train"), table.targets("val")
    w_pos, w_neg = label_weights(y_train)
    # XLA cannot compile the augmentation's image warp, so under --xla the same augmentation
    # runs in the input pipeline and the compiled training step gets augmented batches
    pipeline_augment = config.augment if config.xla else False
    import tensorflow as tf

    # the epoch whose data order the pipeline draws; set by EpochSeeds at each epoch's start
    epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False)
    swap = {}
    if config.outside_lungs:
        if not 0 < config.outside_lungs <= 1:
            raise ValueError("outside_lungs is a share of the training images, from 0 to 1.")
        swap = dict(outside_lungs=config.outside_lungs,
                    lung_paths=cached_lung_paths(cache_dir, train),
                    lung_labels=np.array([in_lungs(label) for label in table.labels]))
        log.info("swapping outside the lung fields on %.0f%% of training images; labels kept "
                 "there: %s", 100 * config.outside_lungs,
                 ", ".join(l for l, k in zip(table.labels, swap["lung_labels"]) if k) or "none")
    train_ds = shard_by_data(make_dataset(cached_paths(cache_dir, train), y_train, config.input_size,
                            config.batch_size, shuffle=True, seed=config.seed,
                            augment=pipeline_augment, epoch=epoch_variable, **swap))
    val_ds = shard_by_data(make_dataset(cached_paths(cache_dir, val), y_val, config.input_size,
                                        config.batch_size, shuffle=False))
    with strategy.scope():
        classifier = build_classifier(spec.name, table.labels, config.input_size,
                                      weights=config.weights,
                                      augment=False if config.xla else config.augment)
        model = classifier.model
        if initial_weights is not None:
            set_classifier_weights(model, initial_weights)
        # the fast from-scratch momentum only for a run from random weights; fine-tuning from
        # ImageNet or from a member's weights keeps the architecture's own
        from_scratch = config.weights is None and initial_weights is None
        momentum = config.bn_momentum if config.bn_momentum is not None else (
            0.9 if from_scratch else None)
        if momentum is not None:
            set_batchnorm_momentum(model, momentum)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss=make_weighted_bce(w_pos, w_neg),
                      metrics=[masked_auc(multi_label=True, from_logits=True, name="auc")],
                      jit_compile=bool(config.xla))
    mode = "max" if "auc" in config.monitor else "min"
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(out_dir / BEST_WEIGHTS), monitor=config.monitor, mode=mode, save_best_only=True,
        save_weights_only=True)
    # no restore_best_weights: the best checkpoint is loaded after fit, resumed or not
    stopping = keras.callbacks.EarlyStopping(
        monitor=config.monitor, mode=mode, patience=config.patience, min_delta=config.min_delta)
    sync = replica_sync_callback(strategy)
    callbacks = ([sync] if sync is not None else []) + [
        checkpoint,
        stopping,
        keras.callbacks.CSVLogger(str(out_dir / TRAINING_LOG), append=True),
        keras.callbacks.TensorBoard(str(out_dir / "tensorboard"), write_graph=False),
        keras.callbacks.BackupAndRestore(str(out_dir / BACKUP_DIR), delete_checkpoint=True),
        _callback_state_class()(out_dir / BACKUP_DIR / CALLBACK_STATE, checkpoint, stopping),
        _epoch_seeds_class()(config.seed, epoch_variable),
        *(callbacks or []),
    ]
    if config.max_minutes:
        deadline = time.time() + config.max_minutes * 60

        class TimeBudget(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if all_agree_to_stop(strategy, time.time() > deadline):
                    self.model.stop_training = True

        callbacks.append(TimeBudget())
    started = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
              verbose=2)
    if (out_dir / BEST_WEIGHTS).is_file():
        model.load_weights(str(out_dir / BEST_WEIGHTS))
    epochs = _epoch_log(out_dir)  # every epoch of the run, before and after any resume

    def best(column: str, pick) -> float:
        return float(pick(epochs[column])) if column in epochs else float("nan")

    record = {
        "arch": spec.name,
        "labels": table.labels,
        "config": asdict(config),
        "runtime": {**runtime, **strategy_record(strategy, config.batch_size)},
        "graph": GRAPH,
        "fingerprint": fingerprint,
        "crops": crops,
        "epochs_run": int(len(epochs)),
        "best_val_loss": best("val_loss", min),
        "best_monitored": best(config.monitor, max if mode == "max" else min),
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_images": int(len(train)),
        "val_images": int(len(val)),
        "loss_weights": {"w_pos": w_pos.tolist(), "w_neg": w_neg.tolist()},
    }
    (out_dir / "run.json").write_text(json.dumps(record, indent=2))
    record["classifier"] = classifier
    return record


def load_finished_member(member_dir: Path, labels: list[str], fingerprint: str) -> dict | None:
    """The record of a member whose run finished (run.json + best weights) with the same
    fingerprint (`run_fingerprint`), with its model; None when there is no such run."""
    run_file, weights = Path(member_dir) / "run.json", Path(member_dir) / BEST_WEIGHTS
    if not run_file.is_file() or not weights.is_file():
        return None
    record = json.loads(run_file.read_text())
    if record.get("labels") != labels or record.get("fingerprint") != fingerprint \
            or record.get("graph") != GRAPH:
        return None
    classifier = build_classifier(record["arch"], labels, record["config"]["input_size"],
                                  weights=None, augment=record["config"].get("augment", True))
    classifier.model.load_weights(str(weights))  # also refreshes Normalization state
    record["classifier"] = classifier
    return record


def served_copies(classifiers: list) -> list:
    """The members as a bundle serves them: float32 compute (the app and the CLI run float32,
    whatever policy training ran under) on the float16-rounded weights the bundle stores; what
    thresholds are chosen on must be what is deployed."""
    import keras

    from .bundle import as_deployed

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copies = []
        for classifier in classifiers:
            copy = build_classifier(classifier.arch.name, classifier.labels, classifier.input_size,
                                    weights=None, augment=False)
            set_classifier_weights(copy.model, classifier.model.get_weights())
            as_deployed(copy.model)
            copies.append(copy)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return copies


def train_ensemble(cache_dir: str | Path, split_csv: str | Path, out_dir: str | Path,
                   archs: tuple[str, ...] = METHOD_ARCHITECTURES,
                   config: TrainConfig | None = None, label_set: str = "specific",
                   groups: dict[str, list[str]] | None = None,
                   segmenter_ref: str = DEFAULT_SEGMENTER, bundle_id: str | None = None,
                   data_summary: dict | None = None, initial: list | None = None,
                   extra_manifest: dict | None = None, strategy="auto") -> Path:
    """Train every architecture, then write `out_dir/bundle` with validation thresholds
    (on the chief; another worker of a cluster writes to its own scratch folders)."""
    from .bundle import as_deployed, write_bundle
    from .inference import predict_members
    from .runtime import distribution_strategy, writing_dir

    strategy = distribution_strategy(strategy)  # one for all members
    table = read_split(split_csv)
    out_dir = Path(out_dir)
    members = []
    for i, arch in enumerate(archs):
        member_dir = out_dir / get_arch(arch).name
        start = initial[i] if initial is not None else None
        fingerprint = run_fingerprint(arch, table, config or TrainConfig(), start,
                                      cache_identity(cache_dir))
        record = load_finished_member(writing_dir(member_dir, strategy), table.labels, fingerprint)
        if record is not None:  # an interrupted ensemble run does not redo finished members
            log.info("%s already trained in %s with the same data, settings and start; reusing it",
                     arch, member_dir)
        else:
            log.info("training %s", arch)
            record = train_member(arch, cache_dir, split_csv, member_dir, config, split_table=table,
                                  initial_weights=start, strategy=strategy)
        members.append(record)
    classifiers = [m.pop("classifier") for m in members]
    for classifier in classifiers:  # thresholds are chosen on the float16 weights the bundle ships
        as_deployed(classifier.model)
    val = table.part("val")
    # under float32, as deployed, even when training ran under mixed_float16
    val_probs = predict_members(served_copies(classifiers), cached_paths(cache_dir, val),
                                (config or TrainConfig()).input_size)
    return write_bundle(
        writing_dir(out_dir / "bundle", strategy), classifiers, labels=table.labels, label_set=label_set,
        groups=groups, val_probs=val_probs, val_targets=table.targets("val"),
        training={"members": members, "config": asdict(config or TrainConfig())},
        segmenter_ref=segmenter_ref, bundle_id=bundle_id, data_summary=data_summary,
        extra=extra_manifest,
    )
