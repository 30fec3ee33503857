"""Training on tf.distribute for real: a two-worker cluster on 127.0.0.1 (MultiWorkerMirroredStrategy
through the CLI) and MirroredStrategy over two logical CPU devices, each in fresh processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd

from cxr_core.data.split_table import cache_path
from cxr_core.modeling.bundle import Bundle

REPO = Path(__file__).resolve().parents[2]
ARCH = "MobileNet"  # the compact architecture with the smallest graph (fast to trace)


def tiny_cache(root: Path, n: int = 30, seed: int = 0) -> tuple[Path, Path]:
    """A split of `n` generated 16-bit crops (18 train, 6 val, 6 test) and two labels."""
    rng = np.random.default_rng(seed)
    ids = [f"im{i:03d}.png" for i in range(n)]
    targets = rng.integers(0, 2, (n, 2))
    split = ["train"] * 18 + ["val"] * 6 + ["test"] * (n - 24)
    frame = pd.DataFrame({"ImageID": ids, "ImageDir": "0", "PatientID": [f"p{i}" for i in range(n)],
                          "split": split, "a": targets[:, 0], "b": targets[:, 1]})
    root.mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / "split.csv", index=False)
    for image_id in ids:
        path = cache_path(root / "cache", image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), (rng.random((48, 48)) * 65535).astype(np.uint16))
    return root / "cache", root / "split.csv"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def child_env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "",
           "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of a Keras weights file by its path inside the file."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                          if isinstance(obj, h5py.Dataset) else None)
    return out


def result_line(output: str) -> dict:
    """The JSON printed after RESULT on its own line; TensorFlow's C++ log lines (which a worker
    may write to the same merged stream when its peer has already left) are ignored."""
    line = next(l for l in output.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def two_workers(cwd: Path, command: list[str]) -> list[tuple[int, str]]:
    """Run `command` as both workers of a cluster on 127.0.0.1 (TF_CONFIG with free ports);
    (return code, output) per worker, in worker order."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    workers = [subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=child_env(TF_CONFIG=json.dumps(
                                    {"cluster": cluster, "task": {"type": "worker", "index": i}})))
               for i in range(2)]
    try:
        outputs = [w.communicate(timeout=600)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    return [(w.returncode, out) for w, out in zip(workers, outputs)]


def test_two_worker_cluster_trains_one_model_and_only_the_chief_writes(tmp_path):
    cache, split = tiny_cache(tmp_path)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "cxr_core", "train-ensemble", "--arch", ARCH,
               "--data", str(cache), "--split", str(split), "--out", str(run), "--input-size", "32",
               "--batch-size", "8", "--epochs", "3", "--max-minutes", "0.0001", "--weights", "none",
               "--no-lite", "--mixed-precision", "off", "--strategy", "multi-worker", "--label-set", "tiny"]
    results = two_workers(tmp_path, command)
    for code, output in results:
        assert code == 0, output[-3000:]
    outputs = [output for _, output in results]
    assert "bundle written to" in outputs[0] and "the chief writes the bundle" in outputs[1]

    chief, other = run / ARCH, run / f"{ARCH}.worker-1"
    bundle = Bundle.load(run / "bundle")  # verifies every checksum
    assert [m["arch"] for m in bundle.manifest["members"]] == [ARCH]
    assert not (run / "bundle.worker-1" / "lite").exists()
    for folder in (chief, other):
        assert (folder / "best.weights.h5").is_file() and (folder / "training_log.csv").is_file()
        assert not (folder / "backup").exists()  # BackupAndRestore cleaned up after a finished run
    record = json.loads((chief / "run.json").read_text())["runtime"]
    assert record["replicas"] == 2 and record["workers"] == 2 and record["per_replica_batch"] == 4
    # one model trained in lockstep: both workers hold the same weights and saw the same losses
    weights, copy = h5_arrays(chief / "best.weights.h5"), h5_arrays(other / "best.weights.h5")
    assert weights.keys() == copy.keys() and len(weights) > 50
    for name, value in weights.items():
        np.testing.assert_array_equal(value, copy[name], err_msg=name)
    logs = [pd.read_csv(f / "training_log.csv") for f in (chief, other)]
    assert len(logs[0]) == 1 and np.isfinite(logs[0]["loss"]).all()  # both stopped by the budget
    pd.testing.assert_frame_equal(logs[0], logs[1])


MIRRORED_CHILD = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cxr_core.modeling.training import TrainConfig, train_member
    config = TrainConfig(input_size=32, batch_size=8, epochs=1, weights=None, augment=False,
                         mixed_precision=False, learning_rate=1e-3)
    record = train_member(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], config,
                          strategy="mirrored")
    model = record.pop("classifier").model
    print("RESULT" + json.dumps({**record["runtime"],
                                 "devices": sorted({v.device for v in model.weights[0].value.values}),
                                 "loss": record["best_val_loss"]}))
""")


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    cache, split = tiny_cache(tmp_path)
    done = subprocess.run([sys.executable, "-c", MIRRORED_CHILD, ARCH, str(cache), str(split),
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=600,
                          env=child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    result = result_line(done.stdout)
    assert result["strategy"] == "MirroredStrategy" and result["replicas"] == 2
    assert result["per_replica_batch"] == 4 and len(result["devices"]) == 2
    assert np.isfinite(result["loss"])
    assert (tmp_path / "run" / "best.weights.h5").is_file()


WORKER_CHILD = textwrap.dedent("""
    import json, logging, sys
    import keras
    from cxr_core.modeling.training import TrainConfig, train_member

    logging.basicConfig(level=logging.INFO)
    arch, cache, split, out, stop_after = sys.argv[1:6]

    class Interrupted(Exception):
        pass

    class Interrupt(keras.callbacks.Callback):  # runs after the built-in backup of the epoch
        def on_epoch_end(self, epoch, logs=None):
            if epoch == int(stop_after):
                raise Interrupted(f"interrupted after epoch {epoch}")

    config = TrainConfig(input_size=32, batch_size=8, epochs=4, patience=10, weights=None,
                         augment=False, mixed_precision=False, learning_rate=1e-3)
    callbacks = [Interrupt()] if int(stop_after) >= 0 else None
    try:
        record = train_member(arch, cache, split, out, config, strategy="multi-worker",
                              callbacks=callbacks)
    except Interrupted as exc:
        print("INTERRUPTED", exc)
        sys.exit(3)
    record.pop("classifier")
    print("RESULT" + json.dumps({"epochs_run": record["epochs_run"],
                                 "workers": record["runtime"]["workers"]}), flush=True)
""")


def test_interrupted_two_worker_run_resumes_on_every_worker(tmp_path):
    """Both workers stop after epoch 2 of 4 (a pre-empted job), then the same job is started
    again: every worker resumes from its own backup, the run ends after epoch 4 with one
    training-log row per epoch, and both workers hold the same weights."""
    cache, split = tiny_cache(tmp_path)
    run = tmp_path / "run"
    args = [str(cache), str(split), str(run)]
    child = [sys.executable, "-c", WORKER_CHILD, ARCH, *args]
    for code, output in two_workers(tmp_path, [*child, "1"]):
        assert code == 3 and "INTERRUPTED" in output, output[-3000:]
    chief, other = run, run.with_name("run.worker-1")
    for folder in (chief, other):
        assert (folder / "backup").is_dir(), f"no backup in {folder}"
        assert pd.read_csv(folder / "training_log.csv")["epoch"].tolist() == [0, 1]
    resumed = two_workers(tmp_path, [*child, "-1"])
    for code, output in resumed:
        assert code == 0, output[-3000:]
        assert "resuming the interrupted run" in output
        result = result_line(output)
        assert result == {"epochs_run": 4, "workers": 2}
    logs = [pd.read_csv(folder / "training_log.csv") for folder in (chief, other)]
    assert logs[0]["epoch"].tolist() == [0, 1, 2, 3]  # epochs 0-1 not trained again
    pd.testing.assert_frame_equal(logs[0], logs[1])
    weights, copy = h5_arrays(chief / "best.weights.h5"), h5_arrays(other / "best.weights.h5")
    assert weights.keys() == copy.keys() and len(weights) > 50
    for name, value in weights.items():
        np.testing.assert_array_equal(value, copy[name], err_msg=name)
    for folder in (chief, other):
        assert not (folder / "backup").exists()
