"""The input check's statistics, stored in a bundle: fit, save, load and score.

A small neural network (one hidden layer of 64 ReLU units; three seeds, their probabilities
averaged) on the input descriptor (`imaging.input_descriptor`: layout thumbnail, mirror
similarity, histogram, lung-mask thumbnail and geometry), fitted with the bundle's own training
X-rays (plus jittered copies) as frontal chest X-rays and rotated / cut-out copies of them plus
noise as everything else. Its out-of-distribution score is the negative log-odds (higher = less
like the training X-rays); the threshold is the validation score that refuses at most 1 % of the
bundle's validation X-rays, plus a margin. Stored as `input_check.npz` (plain arrays, scored in
NumPy, checksummed by the manifest) with a summary under the manifest's "input_check" key. A
logistic model (the earlier method, no hidden layer) loads and scores the same way. No
classifier is run: it fits on any bundle, in minutes on a CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.errors import BundleError, DataError
from ..imaging.input_descriptor import describe_input, descriptor_size

log = logging.getLogger(__name__)

INPUT_CHECK_FILE = "input_check.npz"
METHOD = "mlp-descriptor-v2"
#: share of validation X-rays the fitted threshold may refuse (the target on real X-rays is 1 %)
VAL_REFUSED = 0.01
HIDDEN_UNITS, SEEDS, WEIGHT_DECAY = 64, 3, 1e-3
LOGIT_CAP = 20.0  # scores are negative log-odds, capped so that certain verdicts stay finite


@dataclass(frozen=True)
class InputModel:
    """Standardisation, network weights and the refusal threshold on the OOD score. Without
    hidden weights (`w1` None) it is a logistic model: `coef` (D,), `intercept` a float; with
    them, `w1` (S, D, H), `b1` (S, H), `coef` (S, H), `intercept` (S,) for S averaged seeds."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float | np.ndarray
    threshold: float
    w1: np.ndarray | None = None
    b1: np.ndarray | None = None

    def scores(self, descriptors: np.ndarray) -> np.ndarray:
        """Out-of-distribution scores (negative log-odds of 'frontal chest X-ray') for (N, D)."""
        z = (np.atleast_2d(np.asarray(descriptors, np.float64)) - self.mean) / self.scale
        if self.w1 is None:
            return -(z @ self.coef + self.intercept)
        hidden = np.maximum(np.einsum("nd,sdh->snh", z, self.w1) + self.b1[:, None, :], 0.0)
        logits = np.einsum("snh,sh->sn", hidden, self.coef) + np.asarray(self.intercept)[:, None]
        prob = (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).mean(axis=0)
        prob = np.clip(prob, 1.0 / (1.0 + np.exp(LOGIT_CAP)), 1.0 / (1.0 + np.exp(-LOGIT_CAP)))
        return -np.log(prob / (1.0 - prob))

    @property
    def inputs(self) -> int:
        return int(self.coef.shape[0] if self.w1 is None else self.w1.shape[1])

    def save(self, path: Path) -> None:
        extra = {} if self.w1 is None else {"w1": self.w1, "b1": self.b1}
        np.savez(path, mean=self.mean, scale=self.scale, coef=self.coef,
                 intercept=np.asarray(self.intercept, np.float64),
                 threshold=np.float64(self.threshold), **extra)

    @classmethod
    def load(cls, path: Path) -> "InputModel":
        with np.load(path, allow_pickle=False) as data:
            if "w1" in data:
                model = cls(data["mean"], data["scale"], data["coef"], data["intercept"],
                            float(data["threshold"]), data["w1"], data["b1"])
            else:
                model = cls(data["mean"], data["scale"], data["coef"], float(data["intercept"]),
                            float(data["threshold"]))
        if model.inputs != descriptor_size() or model.mean.shape != (descriptor_size(),):
            raise BundleError(f"{path.name} was fitted for another input descriptor; run "
                              f"'python -m cxr_core fit-input-check' on the bundle again.")
        return model


def load_input_model(bundle) -> InputModel | None:
    """The bundle's input-check statistics, or None (with a warning) when it has none."""
    entry = bundle.input_check
    if not entry:
        log.warning("bundle %s has no input-check statistics: only the DICOM and lung-shape checks "
                    "run; fit them with 'python -m cxr_core fit-input-check --bundle %s'",
                    bundle.bundle_id, bundle.path)
        return None
    return InputModel.load(bundle.path / entry["file"])


def fit_network(positives: np.ndarray, negatives: np.ndarray, val_positives: np.ndarray,
                margin: float = 0.0, val_refused: float = VAL_REFUSED,
                hidden: int = HIDDEN_UNITS, seeds: int = SEEDS) -> tuple[InputModel, dict]:
    """Fit the network on descriptors (`seeds` networks, probabilities averaged); threshold =
    the validation score that refuses at most `val_refused` of the validation X-rays (one odd
    validation film then does not set it for everything), + margin."""
    from sklearn.neural_network import MLPClassifier

    x = np.concatenate([positives, negatives]).astype(np.float64)
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = (x - mean) / scale
    nets = [MLPClassifier((hidden,), alpha=WEIGHT_DECAY, max_iter=500, random_state=seed).fit(z, y)
            for seed in range(seeds)]
    model = InputModel(mean, scale, np.stack([n.coefs_[1][:, 0] for n in nets]),
                       np.array([n.intercepts_[1][0] for n in nets]), 0.0,
                       np.stack([n.coefs_[0] for n in nets]), np.stack([n.intercepts_[0] for n in nets]))
    val = model.scores(val_positives)
    train_pos, train_neg = model.scores(positives), model.scores(negatives)
    threshold = float(np.quantile(val, 1.0 - val_refused, method="higher") + margin)
    model = InputModel(mean, scale, model.coef, model.intercept, threshold, model.w1, model.b1)
    summary = {
        "threshold": threshold, "margin": margin, "hidden_units": hidden, "seeds": seeds,
        "val_refused_allowed": val_refused, "val_refused": float(np.mean(val > threshold)),
        "val_scores": {"max": float(val.max()), "median": float(np.median(val)), "n": int(len(val))},
        "train_refused": float(np.mean(train_pos > threshold)),
        "train_negatives_passed": float(np.mean(train_neg <= threshold)),
    }
    return model, summary


def _describe_batch(works: list[np.ndarray], segmenter) -> np.ndarray:
    from ..imaging.preprocessing import segment_works

    masks = segment_works(np.stack(works), segmenter)
    return np.stack([describe_input(w, m) for w, m in zip(works, masks)])


def describe_rows(paths: list[Path], segmenter, rng: np.random.Generator | None = None,
                  jitter_copies: int = 0, negatives: int = 0, batch: int = 8) -> dict[str, np.ndarray]:
    """Descriptors of X-ray files ('positives'), of `jitter_copies` jittered copies of each, and
    of `negatives` rotations / cut-outs of each (the kinds taken in turn) plus one other image
    per two files (noise, a smooth field or a page of text, in turn)."""
    from ..imaging.image_io import load_image
    from ..imaging.input_negatives import OTHER_IMAGES, XRAY_TRANSFORMS, jitter_xray, transform_xray
    from ..imaging.preprocessing import to_work

    rng = rng or np.random.default_rng(0)
    pos, neg = [], []
    turn = others = 0
    for start in range(0, len(paths), batch):
        works = [to_work(load_image(p)) for p in paths[start:start + batch]]
        extra = [jitter_xray(w, rng) for w in works for _ in range(jitter_copies)]
        pos.append(_describe_batch(works + extra, segmenter))
        if negatives:
            made = []
            for w in works:
                for _ in range(negatives):
                    made.append(to_work(transform_xray(w, XRAY_TRANSFORMS[turn % len(XRAY_TRANSFORMS)])))
                    turn += 1
            for _ in range((len(works) + 1) // 2):
                made.append(OTHER_IMAGES[others % len(OTHER_IMAGES)](rng))
                others += 1
            neg.append(_describe_batch(made, segmenter))
        log.info("input check: described %d / %d images", min(start + batch, len(paths)), len(paths))
    empty = np.zeros((0, descriptor_size()), np.float32)
    return {"positives": np.concatenate(pos) if pos else empty,
            "negatives": np.concatenate(neg) if neg else empty}


def fit_input_check(bundle_dir, images_dir: str | Path, segmenter=None,
                    split_csv: str | Path | None = None, max_images: int = 1000,
                    jitter_copies: int = 1, negatives_per_image: int = 3, margin: float = 0.0,
                    seed: int = 0, val_refused: float = VAL_REFUSED) -> dict:
    """Fit the input check on a bundle's own train / validation X-rays (rows of its split file,
    files under `images_dir`) and store it in the bundle; returns the manifest summary.
    `bundle_dir` is a folder or a `Bundle`; the segmenter defaults to the bundle's own."""
    from ..data.split_table import read_split
    from ..imaging.batch_preprocess import source_path
    from ..imaging.segmentation import LungSegmenter
    from .bundle import Bundle

    bundle = bundle_dir if isinstance(bundle_dir, Bundle) else Bundle.load(bundle_dir)
    segmenter = segmenter or LungSegmenter.load(bundle.segmenter_dir())
    split_csv = Path(split_csv) if split_csv else bundle.path / "split.csv"
    table = read_split(split_csv)
    rng = np.random.default_rng(seed)

    def rows(split: str) -> list[Path]:
        part = table.part(split)
        if part.empty:
            raise DataError(f"{split_csv} has no '{split}' rows to fit the input check on.")
        if len(part) > max_images:
            part = part.iloc[np.sort(rng.choice(len(part), max_images, replace=False))]
        paths = [source_path(Path(images_dir), str(r.ImageID), getattr(r, "ImageDir", None))
                 for r in part.itertuples()]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} of {len(paths)} '{split}' images are not under "
                            f"{images_dir} (first: {missing[0]}).")
        return paths

    start = time.perf_counter()
    train = describe_rows(rows("train"), segmenter, rng, jitter_copies, negatives_per_image)
    val = describe_rows(rows("val"), segmenter)["positives"]
    model, summary = fit_network(train["positives"], train["negatives"], val, margin,
                                 val_refused=val_refused)
    info = {"seed": seed, "split": split_csv.name,
            "train_images": int(len(train["positives"]) // (1 + jitter_copies)),
            "jitter_copies": jitter_copies, "negatives_per_image": negatives_per_image,
            "negatives": int(len(train["negatives"])), "val_images": int(len(val)),
            "fit_seconds": round(time.perf_counter() - start, 1), **summary}
    return store_input_model(bundle, model, info)


def store_input_model(bundle, model: InputModel, info: dict) -> dict:
    """Write the statistics into a bundle, summarise them in its manifest and re-checksum."""
    model.save(bundle.path / INPUT_CHECK_FILE)
    bundle.replace(input_check={
        "file": INPUT_CHECK_FILE, "method": METHOD, "descriptor_size": descriptor_size(),
        "fitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "threshold": model.threshold,
        **info}).save()
    log.info("input check stored in %s: threshold %.3f", bundle.bundle_id, model.threshold)
    return bundle.input_check
