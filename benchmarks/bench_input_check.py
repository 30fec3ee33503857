"""The input check ("is this a frontal chest X-ray?") on real X-rays and on generated non-X-rays.

Real: every X-ray of ../shared/data cxr-public (505) and nih-sample (818): share refused (target
<= 1%). Generated (benchmarks/non_cxr.py): 8 synthetic kinds x 10 images, and 8 rotations /
cut-outs of 25 X-rays the fit never saw (NIH and the bundle's test split): how many pass
(target: none). The bundle (default: the shipped one) is fitted on a temporary copy when it has
no stored statistics. `--with-features` also measures the alternative on the members' pooled
features (cosine distance to the 5th nearest training crop, threshold = highest validation
distance), which needs the classifiers.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import REPO, SHARED, write_result
from benchmarks.non_cxr import synthetic_images, transformed_xrays

log = logging.getLogger("bench_input_check")
N_TRANSFORMED_SOURCES = 25


def real_items(bundle_dir: Path) -> list[tuple[str, str, Path]]:
    """(dataset, split, path) of every real X-ray; split from the bundle's split.csv when listed."""
    split_csv = bundle_dir / "split.csv"
    which = dict(pd.read_csv(split_csv)[["ImageID", "split"]].values) if split_csv.is_file() else {}
    items = []
    for dataset in ("cxr-public", "nih-sample"):
        meta = pd.read_csv(SHARED / dataset / "metadata.csv")
        for rel in meta["image"]:
            split = which.get(Path(rel).name, "not in split" if dataset == "cxr-public" else "unseen")
            items.append((dataset, split, SHARED / dataset / rel))
    return items


def image_facts(segmenter, images: list, batch: int = 16, keep_crops: bool = False):
    """Preprocess decoded images (or pixel arrays): the input check's facts for each (and the
    lung crops, for the feature baseline)."""
    from cxr_core.imaging.image_io import LoadedImage
    from cxr_core.imaging.preprocessing import preprocess_batch
    from cxr_core.review.input_check import input_facts

    facts, crops = [], []
    for start in range(0, len(images), batch):
        chunk = [im if isinstance(im, LoadedImage) else
                 LoadedImage(im, im.shape, "png", 8, "MONOCHROME2", "generated") for im in images[start:start + batch]]
        pres = preprocess_batch(chunk, segmenter)
        facts += [input_facts(im, pre) for im, pre in zip(chunk, pres)]
        crops += [p.crop[::2, ::2].copy() for p in pres] if keep_crops else []
    return facts, crops


def tradeoff(frame: pd.DataFrame, neg_frame: pd.DataFrame, fitted: float) -> list[dict]:
    """Real X-rays refused and generated images passed at other thresholds than the fitted one
    (the refusals of checks 1-2 stay): what choosing the threshold elsewhere would give."""
    unseen = ~frame["split"].isin(["train", "val"])
    real_lungs = ~frame["verdict"].isin(["passed", "score"])  # refused before the score
    neg_lungs = ~neg_frame["verdict"].isin(["passed", "score"])
    rows = []
    candidates = {"fitted": fitted, **{f"real_q{q}": float(frame.loc[unseen, "score"].quantile(q))
                                       for q in (0.98, 0.99, 0.995)}}
    for name, threshold in candidates.items():
        real_refused = real_lungs | (frame["score"] > threshold)
        neg_passed = ~neg_lungs & (neg_frame["score"] <= threshold)
        rows.append({"threshold": name, "value": round(threshold, 3),
                     "real_refused_share": round(float(real_refused.mean()), 4),
                     "real_refused_share_not_used_by_the_fit": round(float(real_refused[unseen].mean()), 4),
                     "generated_passed": int(neg_passed.sum()),
                     "generated_passed_by_kind": neg_frame.loc[neg_passed, "kind"].value_counts().to_dict()})
    return rows


def which_check(check) -> str:
    """"passed", or the rule that refused (InputCheck.refused_by)."""
    return "passed" if check.passed else check.refused_by


def feature_baseline(bundle, real_crops, real_splits, neg_crops, neg_kinds) -> dict:
    """kNN distance on the members' pooled features (the alternative the check did not use)."""
    from cxr_core.imaging.resize import resize_batch

    def pooled(crop_list):
        crops = np.stack(crop_list)
        out = []
        for classifier in bundle.classifiers:
            x = resize_batch(crops, classifier.input_size)[..., None]
            feats = np.concatenate([classifier.features_and_logits(x[i:i + 32])[0].mean(axis=(1, 2))
                                    for i in range(0, len(x), 32)])
            out.append(feats / np.linalg.norm(feats, axis=1, keepdims=True))
        return out

    real, neg = pooled(real_crops), pooled(neg_crops)
    splits = np.asarray(real_splits)
    train = splits == "train"
    dist_real, dist_neg = [], []
    for r, n in zip(real, neg):
        sims = r @ r[train].T
        sims[np.where(train)[0], np.arange(train.sum())] = -1.0  # a training crop is not its own neighbour
        dist_real.append(1 - np.sort(sims, axis=1)[:, -5])
        dist_neg.append(1 - np.sort(n @ r[train].T, axis=1)[:, -5])
    dist_real, dist_neg = np.mean(dist_real, axis=0), np.mean(dist_neg, axis=0)
    threshold = float(dist_real[splits == "val"].max())
    passed_neg = dist_neg <= threshold
    return {"method": "mean over members of the cosine distance to the 5th nearest training crop",
            "threshold": threshold,
            "real_refused": float(np.mean(dist_real[~train] > threshold)),
            "negatives_passed": int(passed_neg.sum()), "negatives": int(len(passed_neg)),
            "negatives_passed_by_kind": dict(Counter(k for k, p in zip(neg_kinds, passed_neg) if p))}


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "models" / "cxr-demo")
    parser.add_argument("--with-features", action="store_true")
    args = parser.parse_args(argv or [])  # run_all calls main() with no arguments
    logging.basicConfig(level=logging.INFO)
    if not (SHARED / "nih-sample" / "metadata.csv").is_file():
        print(f"skipped: real data not available under {SHARED}")
        return 0
    from cxr_core.imaging.image_io import load_image
    from cxr_core.imaging.segmentation import LungSegmenter
    from cxr_core.modeling.bundle import Bundle
    from cxr_core.modeling.input_model import fit_input_check, load_input_model
    from cxr_core.review.input_check import decide
    from cxr_core.review.pipeline import resolve_segmenter

    work = Path(tempfile.mkdtemp(prefix="bench-input-check-"))
    try:
        bundle = Bundle.load(args.bundle)
        segmenter = LungSegmenter.load(resolve_segmenter(bundle))
        items = real_items(args.bundle)
        start = time.perf_counter()
        real_facts, real_crops = image_facts(segmenter, [load_image(p) for _, _, p in items],
                                             keep_crops=args.with_features)
        seconds_real = time.perf_counter() - start
        rng = np.random.default_rng(0)
        held_out = [i for i, (d, s, _) in enumerate(items) if s in ("unseen", "test")]
        sources = [load_image(items[i][2]).pixels
                   for i in rng.choice(held_out, N_TRANSFORMED_SOURCES, replace=False)]
        negatives = list(synthetic_images(10, seed=0)) + list(transformed_xrays(sources))
        neg_facts, neg_crops = image_facts(segmenter, [im for _, im in negatives],
                                           keep_crops=args.with_features)
        kinds = [k for k, _ in negatives]

        bundle = Bundle.load(args.bundle)
        fit = bundle.input_check
        if not fit:  # fit on a copy: the benchmark never changes the bundle it measures
            copy = work / "bundle"
            shutil.copytree(args.bundle, copy)
            fit = fit_input_check(copy, SHARED / "cxr-public", segmenter)
            bundle = Bundle.load(copy)
        model = load_input_model(bundle)
        start = time.perf_counter()
        real_checks = [decide(f, model) for f in real_facts]
        seconds_decide = (time.perf_counter() - start) / len(real_facts)
        neg_checks = [decide(f, model) for f in neg_facts]

        frame = pd.DataFrame({"dataset": [d for d, _, _ in items], "split": [s for _, s, _ in items],
                              "file": [p.name for _, _, p in items],
                              "verdict": [which_check(c) for c in real_checks],
                              "score": [c.score for c in real_checks]})
        frame["refused"] = frame["verdict"] != "passed"
        by_group = frame.groupby(["dataset", "split"])["refused"].agg(["sum", "count"])
        neg_frame = pd.DataFrame({"kind": kinds, "verdict": [which_check(c) for c in neg_checks],
                                  "score": [c.score for c in neg_checks]})
        passed = neg_frame[neg_frame["verdict"] == "passed"]
        unseen = ~frame["split"].isin(["train", "val"])
        result = {
            "bundle": bundle.bundle_id, "fit": fit,
            "real": {"images": len(frame), "refused": int(frame["refused"].sum()),
                     "refused_share": round(float(frame["refused"].mean()), 4),
                     "images_not_used_by_the_fit": int(unseen.sum()),
                     "refused_share_not_used_by_the_fit": round(float(frame.loc[unseen, "refused"].mean()), 4),
                     "by_dataset_split": {f"{d}/{s}": f"{int(r['sum'])}/{int(r['count'])}"
                                          for (d, s), r in by_group.iterrows()},
                     "refused_by_check": frame.loc[frame["refused"], "verdict"].value_counts().to_dict(),
                     "refused_files": frame.loc[frame["refused"], ["dataset", "file", "verdict", "score"]]
                     .to_dict("records"),
                     "score_quantiles": {q: round(float(frame["score"].quantile(q)), 3)
                                         for q in (0.5, 0.9, 0.99, 1.0)} if model else None},
            "generated": {"images": len(neg_frame), "passed": int(len(passed)),
                          "passed_by_kind": passed["kind"].value_counts().to_dict(),
                          "refused_by_check": neg_frame["verdict"].value_counts().to_dict(),
                          "refused_by_lungs_alone": int((neg_frame["verdict"] == "lungs").sum()),
                          "per_kind": {k: int((neg_frame["kind"] == k).sum()) for k in dict.fromkeys(kinds)}},
            "seconds_per_image_segment_and_describe": round(seconds_real / len(frame), 4),
            "seconds_per_image_score": round(seconds_decide, 6),
            "targets": {"real_refused_share_max": 0.01, "generated_passed_max": 0},
        }
        if model is not None:
            result["tradeoff"] = tradeoff(frame, neg_frame, model.threshold)
        if args.with_features:
            result["feature_baseline"] = feature_baseline(
                bundle, real_crops, frame["split"].tolist(), neg_crops, kinds)
        write_result("input_check", result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
