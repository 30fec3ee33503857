"""TensorFlow/Keras runtime set-up in one place: quiet logs, GPU features, tf.distribute strategy.

`--strategy auto|default|mirrored|multi-worker` picks how training is spread over devices and
machines; the helpers here decide which worker writes what, so training code stays the same on
one CPU and on a cluster.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import CxrError

log = logging.getLogger(__name__)
_CONFIGURED = False
_MULTI_WORKER = None

#: The accepted `--strategy` values.
STRATEGIES = ("auto", "default", "mirrored", "multi-worker")


class StrategyError(CxrError):
    """A distribution strategy that cannot be set up as asked."""


def configure(mixed_precision: bool | None = None, xla: bool = False,
              deterministic: bool = False) -> dict:
    """Import TensorFlow quietly and enable GPU memory growth, mixed precision and XLA on request.

    Mixed precision defaults to on when a GPU is present and off on CPU (where it is slower).
    `deterministic` turns on TensorFlow's op determinism for the rest of the process: with the
    same seed a run gives the same weights bit for bit, at some cost in speed.
    Returns a description of the devices for logs and benchmark records.
    """
    global _CONFIGURED
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not _CONFIGURED:
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised
                pass
        _CONFIGURED = True
    if mixed_precision is None:
        mixed_precision = bool(gpus)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    if xla:
        tf.config.optimizer.set_jit(True)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    return {"gpus": len(gpus), "mixed_precision": bool(mixed_precision), "xla": bool(xla),
            "deterministic": bool(deterministic), "tensorflow": tf.__version__,
            "keras": keras.__version__}


def tf_config() -> dict:
    """The parsed `TF_CONFIG` environment variable ({} when unset)."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StrategyError(f"TF_CONFIG is not valid JSON ({exc.msg}).") from exc
    return value if isinstance(value, dict) else {}


def cluster_size() -> int:
    """Number of tasks that TF_CONFIG's cluster names (0 without a cluster)."""
    cluster = tf_config().get("cluster") or {}
    return sum(len(tasks) for kind, tasks in cluster.items() if kind in ("chief", "worker"))


def resolve_strategy_name(name: str = "auto") -> str:
    """What `auto` means here: multi-worker under a TF_CONFIG cluster, mirrored on several GPUs."""
    if name not in STRATEGIES:
        raise StrategyError(f"Unknown strategy '{name}'; choose one of: {', '.join(STRATEGIES)}.")
    if name != "auto":
        return name
    if cluster_size() > 1:
        return "multi-worker"
    import tensorflow as tf

    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"


def make_strategy(name: str | None = "auto"):
    """Build the tf.distribute strategy for `--strategy NAME` (see module docstring).

    `mirrored` uses every local GPU, or every logical CPU device on a machine without one.
    `multi-worker` needs TF_CONFIG on every worker (same cluster, its own task)."""
    import tensorflow as tf

    resolved = resolve_strategy_name(name or "auto")
    if resolved == "multi-worker":
        if not tf_config().get("cluster"):
            raise StrategyError("--strategy multi-worker needs TF_CONFIG with the cluster and "
                                "this worker's task on every worker.")
        global _MULTI_WORKER
        if _MULTI_WORKER is None:  # one per process: it starts this worker's collective server
            _MULTI_WORKER = _multi_worker_class()()
        strategy = _MULTI_WORKER
    elif resolved == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        strategy = tf.distribute.get_strategy()
    log.info("distribution strategy %s: %d replica(s)%s", type(strategy).__name__,
             strategy.num_replicas_in_sync,
             f", worker {worker_role(strategy).label}" if resolved == "multi-worker" else "")
    return strategy


def _multi_worker_class():
    """MultiWorkerMirroredStrategy with the `reduce` that Keras 3's fit() expects of it.

    Keras reduces the first (images, targets) batch in one call to build the model, and the
    scalar per-step logs with `axis=0`; the stock class takes one tensor at a time and needs
    `axis=None` for scalars. Each leaf is reduced on its own, scalars across replicas only."""
    import tensorflow as tf

    def rank(value) -> int | None:
        local = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
        return getattr(getattr(local, "shape", None), "rank", None)

    class NestedReduceMultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis=None):
            parent = super()

            def one(leaf):
                return parent.reduce(reduce_op, leaf, None if rank(leaf) == 0 else axis)

            return tf.nest.map_structure(one, value)

    return NestedReduceMultiWorker


def distribution_strategy(strategy="auto"):
    """A strategy object from a `--strategy` name, or the object itself when already built."""
    return make_strategy(strategy) if strategy is None or isinstance(strategy, str) else strategy


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in a (possibly one-process) training cluster."""

    chief: bool
    task_type: str
    task_id: int
    workers: int

    @property
    def label(self) -> str:
        return f"{self.task_type}-{self.task_id}"


def worker_role(strategy=None) -> WorkerRole:
    """Chief or not: the chief task, else worker 0 when the cluster has no chief task."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return WorkerRole(True, "chief", 0, 1)
    task_id = int(getattr(resolver, "task_id", 0) or 0)
    cluster = resolver.cluster_spec().as_dict()
    workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
    return WorkerRole(chief, task_type, task_id, max(workers, 1))


def writing_dir(path: str | Path, strategy=None) -> Path:
    """Where this worker writes what belongs in `path`: `path` itself on the chief, a sibling
    scratch folder `<path>.<task>-<id>` on every other worker (kept, so that resuming and
    reusing finished members decide alike on every worker)."""
    path = Path(path)
    role = worker_role(strategy)
    return path if role.chief else path.with_name(f"{path.name}.{role.label}")


def shard_by_data(dataset):
    """Shard a tf.data pipeline across workers by element, not by file (its elements come from
    an in-memory list of paths, so there are no files for tf.data to split and there may be
    fewer shards than workers)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def all_agree_to_stop(strategy, stop: bool) -> bool:
    """True on every worker when any worker wants to stop (wall-clock budgets differ per
    machine; a worker that leaves fit() alone would leave the others waiting)."""
    if strategy is None or strategy.num_replicas_in_sync == 1 or not worker_role(strategy).workers > 1:
        return bool(stop)
    import tensorflow as tf

    value = strategy.run(lambda: tf.constant(1.0 if stop else 0.0))  # tf.distribute has no MAX
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None).numpy() > 0)


def strategy_record(strategy, global_batch: int) -> dict:
    """How a run was spread (stored in run.json): strategy, replicas, workers, batch split."""
    replicas = int(strategy.num_replicas_in_sync)
    role = worker_role(strategy)
    return {"strategy": type(strategy).__name__, "replicas": replicas, "workers": role.workers,
            "global_batch": int(global_batch),
            "per_replica_batch": max(1, int(global_batch) // replicas)}


def average_non_trainable(model, strategy) -> int:
    """Set every non-trainable weight (BatchNorm moving statistics) to its mean over replicas;
    returns how many. Keras creates them without a cross-replica aggregation, so each replica
    and worker otherwise keeps statistics of its own slice of the batch. Averaging the
    exponential moving averages equals averaging every step's batch statistics."""
    import tensorflow as tf

    count = 0
    for weight in model.non_trainable_weights:
        variable = weight.value
        local = strategy.run(lambda v=variable: tf.identity(v))
        weight.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None))
        count += 1
    return count


def replica_sync_callback(strategy):
    """A Keras callback that averages the non-trainable weights across replicas before each
    validation and at each epoch end (so checkpoints, logs and the bundle agree on every
    worker); None with a single replica."""
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return None
    import keras

    class AverageNonTrainable(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            average_non_trainable(self.model, strategy)

        def on_epoch_end(self, epoch, logs=None):
            average_non_trainable(self.model, strategy)

    return AverageNonTrainable()
