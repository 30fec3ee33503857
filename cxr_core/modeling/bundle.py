"""Model bundles: the unit the app and the CLI load.

A folder with `manifest.json` (schema version, id, label set, labels with their general group,
architectures, input size, preprocessing and segmenter reference, thresholds, training
configuration, data summary, metrics, sha256 of every file), one float16 weight archive per
member, and the stored test-split predictions. Loading verifies every checksum.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base.config import DEFAULT_SEGMENTER
from ..base.errors import BundleError
from ..base.weights_io import load_member_weights, save_member_weights, sha256_file
from .calibration import apply_calibration
from .ensemble import EnsemblePrediction, combine
from .feature_geometry import classifier_grid
from .model_building import GRAPH
from .thresholds import threshold_table

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
TEST_PREDICTIONS = "test_predictions.npz"


def as_deployed(model) -> None:
    """Round a model's weights to the float16 values `write_bundle` stores, so that what is
    measured on it (validation thresholds) is what the bundle will compute."""
    from .model_building import set_classifier_weights

    set_classifier_weights(model, [w.astype(np.float16).astype(w.dtype) if w.dtype.kind == "f" else w
                                   for w in model.get_weights()])


def write_bundle(out_dir: str | Path, classifiers: list, labels: list[str], label_set: str,
                 val_probs: np.ndarray, val_targets: np.ndarray, training: dict,
                 groups: dict[str, list[str]] | None = None, segmenter_ref: str = DEFAULT_SEGMENTER,
                 bundle_id: str | None = None, data_summary: dict | None = None,
                 threshold_method: str = "f1", extra: dict | None = None) -> Path:
    """Write member weights, thresholds and the manifest; returns the bundle folder."""
    out_dir = Path(out_dir)
    (out_dir / "members").mkdir(parents=True, exist_ok=True)
    members = []
    for classifier in classifiers:
        rel = f"members/{classifier.arch.name}.npz"
        save_member_weights(classifier.model, out_dir / rel)
        members.append({"arch": classifier.arch.name, "weights": rel,
                        "input_size": classifier.input_size, "graph": GRAPH,
                        "map_grid": classifier_grid(classifier).as_record()})
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "bundle_id": bundle_id or f"{label_set}-{time.strftime('%Y%m%d')}-{uuid.uuid4().hex[:8]}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label_set": label_set,
        "labels": [{"name": lab, "groups": (groups or {}).get(lab, [lab])} for lab in labels],
        "members": members,
        "input_size": int(classifiers[0].input_size),
        "preprocessing": {"work_size": 512, "crop": "lung segmentation + below-lung area",
                          "segmenter": segmenter_ref, "weights_dtype": "float16"},
        "threshold_method": threshold_method,
        "thresholds": threshold_table(np.asarray(val_probs), np.asarray(val_targets)),
        "training": training,
        "data": data_summary or {},
        "metrics": {},
        "lineage": {},
        "demo": False,
    }
    manifest.update(extra or {})
    write_manifest(out_dir, manifest)
    return out_dir


def stored_targets(targets) -> np.ndarray:
    """Targets as stored with predictions: uint8 when every label is known, float32 with NaN
    for the unknown ones (a finding the image's source does not annotate) otherwise."""
    targets = np.asarray(targets, dtype=np.float32)
    return targets if np.isnan(targets).any() else targets.astype(np.uint8)


def write_manifest(bundle_dir: Path, manifest: dict) -> None:
    """(Re)compute checksums of every file but the manifest and write it."""
    files = sorted(p for p in bundle_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest["files"] = {str(p.relative_to(bundle_dir)): sha256_file(p) for p in files}
    text = json.dumps(to_jsonable(manifest), indent=2, allow_nan=False)
    (bundle_dir / MANIFEST).write_text(text)


def to_jsonable(value):
    """Plain JSON types: numpy scalars/arrays converted, NaN and infinities become null."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


@dataclass
class Bundle:
    """A verified bundle; members are built lazily on the first prediction."""

    path: Path
    manifest: dict
    _classifiers: list | None = None
    cache: dict = field(default_factory=dict, repr=False)  # objects built from it (engines)

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "Bundle":
        """Open a bundle folder, refusing a broken, tampered or inconsistent one."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"No model bundle at {path} (manifest.json is missing).")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"The manifest of bundle {path} is not valid JSON.") from exc
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise BundleError(f"Bundle {path} has schema version {manifest.get('schema_version')}, "
                              f"this version of CXR Review reads {SCHEMA_VERSION}.")
        bundle = cls(path, manifest)
        bundle._check_consistency()
        if verify:
            bundle.verify()
        return bundle

    def _check_consistency(self) -> None:
        m = self.manifest
        k = len(m.get("labels", []))
        if not k or not m.get("members"):
            raise BundleError(f"Bundle {self.path} lists no labels or no members.")
        method = m.get("threshold_method")
        thresholds = m.get("thresholds", {}).get(method)
        if not thresholds or len(thresholds["ensemble"]) != k or len(thresholds["members"]) != len(m["members"]) \
                or any(len(t) != k for t in thresholds["members"]):
            raise BundleError(f"Bundle {self.path} has thresholds that do not match its labels and members.")
        for name, entry in m.get("thresholds", {}).items():
            if entry.get("calibration") and entry["calibration"] not in m.get("calibration", {}):
                raise BundleError(f"Bundle {self.path}: threshold method '{name}' needs the "
                                  f"'{entry['calibration']}' calibration, which it does not store.")

    def verify(self) -> None:
        """Check that every listed file exists with its recorded sha256."""
        for rel, digest in self.manifest.get("files", {}).items():
            file = self.path / rel
            if not file.is_file():
                raise BundleError(f"Bundle {self.path} is incomplete: {rel} is missing.")
            if sha256_file(file) != digest:
                raise BundleError(f"Bundle {self.path} is corrupted: {rel} does not match its checksum.")
        for member in self.manifest["members"]:
            for rel in (member["weights"], member.get("lite")):
                if rel and rel not in self.manifest.get("files", {}):
                    raise BundleError(f"Bundle {self.path} has no checksum for {rel}.")

    # --- facts -----------------------------------------------------------------------------
    @property
    def bundle_id(self) -> str:
        return self.manifest["bundle_id"]

    @property
    def labels(self) -> list[str]:
        return [entry["name"] for entry in self.manifest["labels"]]

    @property
    def groups(self) -> dict[str, list[str]]:
        return {entry["name"]: entry["groups"] for entry in self.manifest["labels"]}

    @property
    def archs(self) -> list[str]:
        return [m["arch"] for m in self.manifest["members"]]

    @property
    def input_size(self) -> int:
        return int(self.manifest["input_size"])

    @property
    def is_demo(self) -> bool:
        return bool(self.manifest.get("demo"))

    def thresholds(self, method: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ensemble thresholds (K,), member thresholds (M, K)) for a method (default: stored)."""
        entry = self.threshold_entry(method)
        return np.asarray(entry["ensemble"]), np.asarray(entry["members"])

    def calibration_name(self, method: str | None = None) -> str | None:
        """The post-hoc calibration a threshold method works on (None: raw probabilities)."""
        return self.threshold_entry(method).get("calibration")

    def calibrate(self, member_probs: np.ndarray, method: str | None = None) -> np.ndarray:
        """Member probabilities (M, N, K) as the threshold method expects them: calibrated
        with the stored calibrator when the method names one, unchanged otherwise."""
        name = self.calibration_name(method)
        if not name:
            return np.asarray(member_probs)
        return apply_calibration(self.manifest["calibration"][name], member_probs)

    @property
    def label_set(self) -> str:
        return self.manifest.get("label_set", "")

    @property
    def created(self) -> str:
        return self.manifest.get("created", "")

    @property
    def preprocessing(self) -> dict:
        """How crops are made (work size, crop rule, segmenter reference, weight dtype)."""
        return dict(self.manifest.get("preprocessing", {}))

    @property
    def revision(self) -> dict:
        """A revision record (members reused from another bundle, and what changed), if any."""
        return dict(self.manifest.get("revision", {}))

    @property
    def members(self) -> list[dict]:
        """The member records (architecture, weights file, input size, Lite file): a copy."""
        return [dict(m) for m in self.manifest["members"]]

    @property
    def segmenter_ref(self) -> str:
        """Where the lung segmenter these members were trained behind lives (a folder; relative
        paths are resolved against the repository)."""
        return self.manifest.get("preprocessing", {}).get("segmenter", DEFAULT_SEGMENTER)

    @property
    def threshold_method(self) -> str:
        """The default threshold method (what the app and `evaluate` use unless told)."""
        return self.manifest["threshold_method"]

    @property
    def threshold_methods(self) -> list[str]:
        return list(self.manifest.get("thresholds", {}))

    def threshold_entry(self, method: str | None = None) -> dict:
        """A threshold method's stored record (thresholds, calibration, where it was chosen)."""
        return dict(self.manifest["thresholds"][method or self.threshold_method])

    def threshold_split(self, method: str | None = None) -> str | None:
        """The split a threshold method was chosen on ('validation'); None when the bundle
        predates that record."""
        entry = self.manifest.get("thresholds", {}).get(method or self.threshold_method, {})
        return entry.get("chosen_on")

    def set_thresholds(self, name: str, entry: dict, make_default: bool = False) -> None:
        """Store (or replace) a threshold method; `save()` writes it."""
        self.manifest.setdefault("thresholds", {})[name] = entry
        if make_default:
            self.manifest["threshold_method"] = name

    def set_default_threshold_method(self, name: str) -> None:
        """Make a stored threshold method the default; `save()` writes it."""
        if name not in self.manifest.get("thresholds", {}):
            raise BundleError(f"Bundle {self.path} has no threshold method '{name}'.")
        self.manifest["threshold_method"] = name

    def drop_threshold_method(self, name: str) -> None:
        """Remove a stored threshold method (never the default one)."""
        if name == self.threshold_method:
            raise BundleError(f"'{name}' is the default threshold method of bundle {self.path}.")
        self.manifest.get("thresholds", {}).pop(name, None)

    def set_calibration(self, name: str, calibration: dict) -> None:
        """Store a post-hoc calibrator fitted on validation."""
        self.manifest.setdefault("calibration", {})[name] = calibration

    def drop_calibrations(self) -> list[str]:
        """Remove every stored calibrator; returns their names."""
        return sorted(self.manifest.pop("calibration", {}) or {})

    @property
    def reading(self) -> dict | None:
        """The reader's operating points record (`evaluation.reading_points`), if any."""
        return self.manifest.get("reading")

    @property
    def calibrations(self) -> dict:
        """Post-hoc calibrators fitted on validation, by name."""
        return dict(self.manifest.get("calibration", {}))

    @property
    def inference(self) -> dict:
        """The inference choice made on validation (test-time flips and their evidence)."""
        return dict(self.manifest.get("inference", {}))

    @property
    def input_check(self) -> dict | None:
        """The input check's fitted record, or None when the bundle has none."""
        return self.manifest.get("input_check")

    @property
    def lineage(self) -> dict:
        """Where this bundle came from (parent bundle, reviews used, what was refitted)."""
        return dict(self.manifest.get("lineage", {}))

    @property
    def metrics(self) -> dict:
        return dict(self.manifest.get("metrics", {}))

    @property
    def data_summary(self) -> dict:
        return dict(self.manifest.get("data", {}))

    @property
    def training(self) -> dict:
        return dict(self.manifest.get("training", {}))

    def update(self, **fields) -> "Bundle":
        """Change manifest fields: a dict value is merged into a dict field, anything else
        replaces it. Nothing is written until `save()`; returns the bundle for chaining."""
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(self.manifest.get(key), dict):
                self.manifest[key].update(value)
            else:
                self.manifest[key] = value
        return self

    def replace(self, **fields) -> "Bundle":
        """Set manifest fields whole (a dict value replaces the field, nothing is merged).
        Nothing is written until `save()`; returns the bundle for chaining."""
        self.manifest.update(fields)
        return self

    def set_member_file(self, index: int, key: str, value) -> None:
        """Record a fact of one member: a file by its path inside the bundle (its Lite export),
        or where its map cells look (`map_grid`)."""
        self.manifest["members"][index][key] = value

    def map_grids(self) -> list:
        """Each member's feature grid ([centre of cell 0, stride, input side], see
        `feature_geometry`): as recorded, else measured on the rebuilt Keras member (a bundle
        written before the record existed)."""
        from .feature_geometry import classifier_grid

        records = [m.get("map_grid") for m in self.manifest["members"]]
        if any(r is None for r in records):
            records = [r if r is not None else classifier_grid(c).as_record()
                       for r, c in zip(records, self.classifiers)]
        return [tuple(r) for r in records]

    def save(self) -> "Bundle":
        """Re-checksum every file and write the manifest: the one way a bundle is written."""
        write_manifest(self.path, self.manifest)
        self.cache.clear()
        return self

    def segmenter_dir(self) -> Path:
        """The segmenter folder the bundle refers to: inside the bundle, beside it, in the
        repository, or the shipped one."""
        from ..base.config import REPO_ROOT
        from ..imaging.segmentation import DEFAULT_SEGMENTER_DIR

        ref = self.segmenter_ref
        for candidate in (self.path / "segmenter", self.path / ref, REPO_ROOT / ref):
            if (candidate / "segmenter.json").is_file():
                return candidate
        return DEFAULT_SEGMENTER_DIR

    @staticmethod
    def exists(path: str | Path) -> bool:
        """Whether a folder holds a bundle (a manifest), without reading it."""
        return (Path(path) / MANIFEST).is_file()

    @staticmethod
    def stamp(path: str | Path) -> float:
        """When the bundle's manifest last changed (seconds), for caches keyed on it."""
        return (Path(path) / MANIFEST).stat().st_mtime_ns / 1e9

    # --- models ----------------------------------------------------------------------------
    @property
    def classifiers(self) -> list:
        """The members rebuilt exactly as trained (see `model_building.GRAPH`)."""
        if self._classifiers is None:
            from .model_building import build_classifier, fold_stem_scale, refresh_layer_state

            built = []
            for i, member in enumerate(self.manifest["members"]):
                classifier = build_classifier(member["arch"], self.labels, member["input_size"],
                                              weights=None, augment=False)
                load_member_weights(classifier.model, self.path / member["weights"])
                refresh_layer_state(classifier.model)
                if self._keras_imagenet_stem(i):
                    fold_stem_scale(classifier.model, classifier.arch.imagenet_stem_scale)
                built.append(classifier)
            self._classifiers = built
        return self._classifiers

    def _keras_imagenet_stem(self, index: int) -> bool:
        """Whether a member predates the `graph` record and was trained on Keras's ImageNet graph
        (EfficientNet from ImageNet weights), whose stem rescaling then has to be folded in."""
        from .registry import get_arch

        member = self.manifest["members"][index]
        if member.get("graph") or get_arch(member["arch"]).imagenet_stem_scale is None:
            return False
        runs = self.manifest.get("training", {}).get("members", [])
        config = (runs[index] if index < len(runs) else {}).get("config") \
            or self.manifest.get("training", {}).get("config", {})
        return config.get("weights") == "imagenet"

    @property
    def tta_flip(self) -> bool:
        """Whether each member is averaged over the crop and its left-right mirror (test-time
        flips, chosen on validation by `evaluation.choose_test_time_flips`)."""
        return bool(self.manifest.get("inference", {}).get("tta_flip", False))

    @property
    def map_method(self) -> str:
        """How the maps are computed unless a caller asks otherwise: "gradcam" (the method's,
        the default) or "occlusion", chosen on radiologists' boxes (`inference.map_method`)."""
        return str(self.manifest.get("inference", {}).get("map_method", "gradcam"))

    @property
    def has_lite(self) -> bool:
        """Whether every member has a TensorFlow Lite export (`explain.engines.compile_bundle`)."""
        return all(m.get("lite") for m in self.manifest["members"])

    def predict(self, crops: np.ndarray, method: str | None = None) -> EnsemblePrediction:
        """Member and ensemble probabilities, findings and agreement for (N, H, W) crops."""
        from .inference import predict_arrays

        member_probs = self.calibrate(predict_arrays(self.classifiers, crops, flip=self.tta_flip), method)
        ens_t, mem_t = self.thresholds(method)
        return combine(member_probs, ens_t, mem_t)

    # --- stored predictions ---------------------------------------------------------------
    def store_test_predictions(self, image_ids: list[str], targets: np.ndarray,
                               member_probs: np.ndarray, metrics: dict) -> None:
        np.savez_compressed(self.path / TEST_PREDICTIONS, image_ids=np.asarray(image_ids),
                            targets=stored_targets(targets),
                            member_probs=np.asarray(member_probs, np.float32))
        self.manifest["metrics"] = metrics
        self.save()

    def test_predictions(self) -> dict | None:
        path = self.path / TEST_PREDICTIONS
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def publish_bundle(source: str | Path, out_dir: str | Path, split_csv: str | Path,
                   updates: dict) -> Path:
    """Copy a freshly written bundle to its final folder with its `split.csv`, apply manifest
    updates (demo flag, segmenter reference, lineage...) and re-checksum."""
    import shutil

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(source, out_dir)
    (out_dir / "split.csv").write_bytes(Path(split_csv).read_bytes())
    Bundle.load(out_dir).update(**updates).save()
    return out_dir


def find_bundles(models_dir: str | Path) -> list[Path]:
    """Bundle folders (those holding a manifest.json) directly under or one level below."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    found = [p.parent for p in models_dir.glob(f"*/{MANIFEST}")]
    found += [p.parent for p in models_dir.glob(f"*/*/{MANIFEST}")]
    return sorted(set(found))
