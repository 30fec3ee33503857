"""Runtime choices: which strategy `--strategy` builds, who writes where, and mixed precision."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from cxr_core.modeling import runtime
from cxr_core.modeling.runtime import StrategyError

from ..helpers import LABELS, xray_batch


def cluster(workers: int, index: int = 0, chief: bool = False) -> str:
    spec = {"worker": [f"127.0.0.1:{2000 + i}" for i in range(workers)]}
    if chief:
        spec["chief"] = ["127.0.0.1:1999"]
    return json.dumps({"cluster": spec, "task": {"type": "worker", "index": index}})


def test_auto_picks_multi_worker_only_under_a_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert runtime.resolve_strategy_name("auto") == "default"  # no GPU in tests
    monkeypatch.setenv("TF_CONFIG", cluster(1))
    assert runtime.resolve_strategy_name("auto") == "default"  # a one-task "cluster"
    monkeypatch.setenv("TF_CONFIG", cluster(2, index=1))
    assert runtime.resolve_strategy_name("auto") == "multi-worker"
    assert runtime.resolve_strategy_name("mirrored") == "mirrored"


def test_strategy_errors_are_one_sentence(monkeypatch):
    with pytest.raises(StrategyError, match="Unknown strategy 'ring'"):
        runtime.make_strategy("ring")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="needs TF_CONFIG"):
        runtime.make_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(StrategyError, match="TF_CONFIG is not valid JSON"):
        runtime.resolve_strategy_name("auto")


def test_default_strategy_and_its_record(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = runtime.make_strategy("default")
    assert strategy.num_replicas_in_sync == 1
    assert runtime.distribution_strategy(strategy) is strategy  # an object passes through
    record = runtime.strategy_record(strategy, 32)
    assert record["replicas"] == 1 and record["per_replica_batch"] == 32 and record["workers"] == 1
    assert runtime.replica_sync_callback(strategy) is None
    assert runtime.all_agree_to_stop(strategy, True) and not runtime.all_agree_to_stop(strategy, False)


class _Resolver:
    def __init__(self, spec: dict, task_type: str, task_id: int):
        self.task_type, self.task_id, self._spec = task_type, task_id, spec

    def cluster_spec(self):
        return SimpleNamespace(as_dict=lambda: self._spec)


def test_only_the_chief_writes_into_the_output_folders(tmp_path):
    workers = {"worker": ["a:1", "b:1", "c:1"]}
    roles = [runtime.worker_role(SimpleNamespace(cluster_resolver=_Resolver(workers, "worker", i)))
             for i in range(3)]
    assert [r.chief for r in roles] == [True, False, False] and roles[2].workers == 3
    out = tmp_path / "run" / "DenseNet201"
    paths = [runtime.writing_dir(out, SimpleNamespace(cluster_resolver=_Resolver(workers, "worker", i)))
             for i in range(3)]
    assert paths[0] == out
    assert paths[1] == out.with_name("DenseNet201.worker-1") and paths[2].name == "DenseNet201.worker-2"
    with_chief = {"chief": ["x:1"], **workers}
    chief = runtime.worker_role(SimpleNamespace(cluster_resolver=_Resolver(with_chief, "chief", 0)))
    worker0 = runtime.worker_role(SimpleNamespace(cluster_resolver=_Resolver(with_chief, "worker", 0)))
    assert chief.chief and not worker0.chief and chief.workers == 4
    assert runtime.writing_dir(out, None) == out  # one process: it is the chief


def test_shard_by_data_sets_the_data_policy():
    import tensorflow as tf

    ds = runtime.shard_by_data(tf.data.Dataset.from_tensor_slices(["a.png", "b.png", "c.png"]))
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    assert [x.decode() for x in ds.as_numpy_iterator()] == ["a.png", "b.png", "c.png"]


def test_mixed_float16_on_cpu_finite_loss_float32_logits_and_exact_gradcam():
    import keras

    from cxr_core.explain.gradcam import all_label_cams, naive_gradcam, normalise_maps
    from cxr_core.modeling.losses import label_weights, make_weighted_bce
    from cxr_core.modeling.model_building import build_classifier

    try:
        info = runtime.configure(mixed_precision=True)
        assert info["mixed_precision"] and keras.mixed_precision.global_policy().name == "mixed_float16"
        keras.utils.set_random_seed(0)
        built = build_classifier("MobileNet", LABELS, 64, weights=None, augment=False)
        model = built.model
        assert model.get_layer("head_dense").compute_dtype == "float16"
        x = xray_batch(8, 64, seed=3)[..., None]
        y = (np.random.default_rng(3).random((8, len(LABELS))) < 0.4).astype("float32")
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=make_weighted_bce(*label_weights(y)))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        losses = [float(model.train_on_batch(x, y)) for _ in range(3)]
        assert np.isfinite(losses).all()
        logits = model(x[:2], training=False)
        assert logits.dtype == "float32"
        # a random head gives many all-zero CAMs; widen it so the comparison means something
        rng = np.random.default_rng(0)
        for name in ("head_dense", "logits"):
            layer = model.get_layer(name)
            layer.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") for w in layer.get_weights()])
        probs, cams, weights = all_label_cams(built, x[:2], return_weights=True)
        assert probs.dtype == np.float32 and np.isfinite(cams).all()
        compared = 0
        for k in range(len(LABELS)):
            ref_map, ref_weights = naive_gradcam(built, x[:2], k, return_weights=True)
            scale = np.abs(ref_weights).max()
            assert scale > 0
            # float16 features and gradients: agreement to float16 precision, not 1e-4
            assert np.abs(ref_weights - weights[..., k]).max() / scale < 2e-2, k
            ref, fast = normalise_maps(ref_map), normalise_maps(cams[..., k])
            assert np.abs(ref - fast).max() < 2e-2, k
            compared += int(ref.max() > 0)
        assert compared >= 2
    finally:
        runtime.configure(mixed_precision=False)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_gpu_check_exits_cleanly_without_a_gpu(capsys, monkeypatch):
    import tensorflow as tf

    from benchmarks import common, gpu_check

    assert tf.config.list_physical_devices("GPU") == []  # the suite hides GPUs
    written = []
    monkeypatch.setattr(common, "write_result", lambda name, result: written.append(name))
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert "no GPU is visible" in out and "Exiting without results" in out
    assert written == []


def test_gpu_check_compiles_the_augmented_train_step_under_xla():
    """gpu-check's XLA rows train as training does under --xla: the augmentation's image warp,
    which XLA cannot compile, runs in the input pipeline, so the compiled step runs."""
    from benchmarks import gpu_check

    assert gpu_check.train_steps_per_s("MobileNetV3Small", 64, 4, 2, "float32", xla=True) > 0


def test_mixed_precision_grad_cam_matches_the_reference_for_efficientnet():
    """Under mixed_float16 the naive Grad-CAM reference sums its ~1,300 channels in float32, as
    the closed form does: a float16 sum cancelled to noise and differed from the closed form by
    the whole map range (1.0) for EfficientNetB0, which gpu-check reported as inexact."""
    from benchmarks import gpu_check

    result = gpu_check.gradcam_exactness("EfficientNetB0", 64)
    assert result["labels_with_nonzero_maps"] >= 2 and result["within_2e-2"], result
