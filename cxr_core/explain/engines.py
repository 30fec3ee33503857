"""Inference engines: one member's probabilities and raw all-label Grad-CAM maps for a batch.

`KerasEngine` runs the member's compiled TensorFlow graph (as trained; GPUs, mixed precision).
`LiteEngine` runs the same graph (backbone, head and the closed-form Grad-CAM of `gradcam`)
exported to TensorFlow Lite in float32: it opens in a fraction of a second where building the
Keras layers and tracing the graph of a large architecture takes ~10 s on 2 cores, and it is as
fast or faster on CPU (XNNPACK). `export_lite` writes it and checks it against the Keras graph;
`python -m cxr_core compile-bundle B` adds one per member to a bundle.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..base.errors import EngineError

log = logging.getLogger(__name__)

ENGINE_CHOICES = ("auto", "lite", "tensorflow")
# Lite vs TensorFlow on the export check: float32 both, but XNNPACK sums in another order, which
# shows in the peak-normalised maps of deep random-weight models at ~2e-4
EXPORT_TOLERANCE = {"probabilities": 1e-4, "maps": 1e-3}


class KerasEngine:
    """A Keras member through its compiled TensorFlow graph (`gradcam.member_graph`)."""

    kind = "tensorflow"

    def __init__(self, classifier):
        from ..modeling.feature_geometry import classifier_grid

        self.classifier = classifier
        self.arch = classifier.arch.name
        self.input_size = int(classifier.input_size)
        #: where the map cells look in the input (`modeling.feature_geometry`)
        self.map_grid = tuple(classifier_grid(classifier).as_record())

    def explain(self, x: np.ndarray):
        """(probabilities (N, K), raw maps (N, h, w, K)) as tensors for images (N, S, S, 1)."""
        import tensorflow as tf

        from .gradcam import member_graph

        probs, maps, _ = member_graph(self.classifier)(tf.convert_to_tensor(x, tf.float32))
        return probs, maps


def interpreter_class():
    """LiteRT's interpreter (package ai-edge-litert); TensorFlow's deprecated copy otherwise."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is in requirements.txt
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


class LiteEngine:
    """A member exported by `export_lite`, run one image at a time (one interpreter is not
    thread-safe, so calls are serialised; the app shares one engine between sessions)."""

    kind = "lite"

    def __init__(self, path: str | Path, arch: str, input_size: int, threads: int | None = None,
                 map_grid=None):
        self.path = Path(path)
        self.arch = arch
        self.input_size = int(input_size)
        #: where the map cells look in the input, as the bundle records it (None: naive placement)
        self.map_grid = tuple(map_grid) if map_grid is not None else None
        try:
            self._interpreter = interpreter_class()(model_path=str(self.path),
                                                     num_threads=threads or os.cpu_count() or 1)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"The TensorFlow Lite model {self.path.name} could not be opened; "
                              f"compile the bundle again.") from exc
        inputs = self._interpreter.get_input_details()
        outputs = {len(d["shape"]): d for d in self._interpreter.get_output_details()}
        if len(inputs) != 1 or 2 not in outputs or 4 not in outputs:
            raise EngineError(f"{self.path.name} is not a member exported by CXR Review.")
        if list(inputs[0]["shape"][1:]) != [self.input_size, self.input_size, 1]:
            raise EngineError(f"{self.path.name} expects {list(inputs[0]['shape'][1:])} images, "
                              f"the bundle says {self.input_size} px.")
        self._input = inputs[0]["index"]
        self._probs, self._maps = outputs[2]["index"], outputs[4]["index"]
        self._lock = threading.Lock()

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, K), raw maps (N, h, w, K)) for images (N, S, S, 1)."""
        x = np.asarray(x, np.float32)
        probs, maps = [], []
        with self._lock:
            for image in x:
                self._interpreter.set_tensor(self._input, image[None])
                self._interpreter.invoke()
                probs.append(self._interpreter.get_tensor(self._probs)[0].copy())
                maps.append(self._interpreter.get_tensor(self._maps)[0].copy())
        return np.stack(probs), np.stack(maps)


def as_engine(member):
    """An engine for a Keras classifier; engines pass through."""
    return member if hasattr(member, "explain") else KerasEngine(member)


def export_lite(classifier, path: str | Path, check_seed: int = 0) -> Path:
    """Write the member's inference graph (probabilities + all-label maps) as a float32
    TensorFlow Lite model and check it against the TensorFlow graph on a random image."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from .gradcam import member_graph, normalise_maps

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frozen = convert_variables_to_constants_v2(member_graph(classifier).get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    tmp = path.with_suffix(".tflite.tmp")
    tmp.write_bytes(converter.convert())
    size = classifier.input_size
    x = np.random.default_rng(check_seed).random((1, size, size, 1)).astype(np.float32)
    ref_probs, ref_maps = (np.asarray(v) for v in KerasEngine(classifier).explain(x))
    probs, maps = LiteEngine(tmp, classifier.arch.name, size, threads=1).explain(x)
    prob_error = float(np.abs(probs - ref_probs).max())
    map_error = float(np.abs(normalise_maps(maps[0].transpose(2, 0, 1))
                             - normalise_maps(ref_maps[0].transpose(2, 0, 1))).max())
    if prob_error > EXPORT_TOLERANCE["probabilities"] or map_error > EXPORT_TOLERANCE["maps"]:
        tmp.unlink()
        raise EngineError(f"The TensorFlow Lite export of {classifier.arch.name} differs from the "
                          f"model (probabilities {prob_error:.1e}, maps {map_error:.1e}).")
    os.replace(tmp, path)
    log.info("%s exported to %s (%.1f MB; max difference %.1e / %.1e)", classifier.arch.name,
             path.name, path.stat().st_size / 1e6, prob_error, map_error)
    return path


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU. Without an NVIDIA device node (or with CUDA hidden) it
    cannot, and TensorFlow is not imported just to ask: the Lite path then never loads it."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1") or not Path("/dev/nvidiactl").exists():
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_engine(requested: str, has_lite: bool) -> str:
    """'auto' -> 'lite' when every member has a Lite export and no GPU is visible (the GPU runs
    the TensorFlow graph faster), otherwise 'tensorflow'; explicit choices are checked."""
    if requested not in ENGINE_CHOICES:
        raise EngineError(f"Unknown inference engine '{requested}'; choose one of {', '.join(ENGINE_CHOICES)}.")
    if requested == "lite" and not has_lite:
        raise EngineError("This bundle has no TensorFlow Lite members; run "
                          "'python -m cxr_core compile-bundle' on it or use the tensorflow engine.")
    if requested == "auto":
        return "lite" if has_lite and not gpu_available() else "tensorflow"
    return requested


def bundle_engines(bundle, kind: str | None = None) -> list:
    """Inference engines of a bundle's members: 'lite', 'tensorflow' or 'auto' (default: the
    CXR_ENGINE setting); opened once per kind and kept in the bundle's cache."""
    from ..base.config import settings

    kind = resolve_engine(kind or settings().engine, bundle.has_lite)
    key = f"engines:{kind}"
    if key not in bundle.cache:
        if kind == "lite":
            grids = bundle.map_grids()
            bundle.cache[key] = [LiteEngine(bundle.path / m["lite"], m["arch"], m["input_size"],
                                            map_grid=grid) for m, grid in zip(bundle.members, grids)]
        else:
            bundle.cache[key] = [KerasEngine(c) for c in bundle.classifiers]
    return bundle.cache[key]


def compile_bundle(bundle_dir: str | Path):
    """Add a checked TensorFlow Lite export of every member (`export_lite`) to a bundle, and of
    its segmenter when that has none, so that it opens in about a second instead of building and
    tracing each Keras model (and the Lite path needs no TensorFlow at all)."""
    from ..imaging.segmenter_lite import LITE_NAME, export_segmenter_lite
    from ..modeling.bundle import Bundle
    from ..modeling.feature_geometry import classifier_grid

    bundle = bundle_dir if isinstance(bundle_dir, Bundle) else Bundle.load(bundle_dir)
    for index, (member, classifier) in enumerate(zip(bundle.members, bundle.classifiers)):
        rel = f"members/{member['arch']}.tflite"
        export_lite(classifier, bundle.path / rel)
        bundle.set_member_file(index, "lite", rel)
        bundle.set_member_file(index, "map_grid", classifier_grid(classifier).as_record())
    segmenter_dir = bundle.segmenter_dir()
    if not (segmenter_dir / LITE_NAME).is_file():
        export_segmenter_lite(segmenter_dir)
    return bundle.save()  # checksums the new files into the manifest
