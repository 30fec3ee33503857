"""Command-line interface (`python -m cxr_core` or `cxr`): each subcommand calls the same
library functions as the app."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .base.errors import CxrError

log = logging.getLogger("cxr_core")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one sentence and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _default_bundle() -> Path:
    from .base.config import settings

    return settings().default_bundle_path


def _load_segmenter(path: Path | None):
    from .imaging.segmentation import DEFAULT_SEGMENTER_DIR, LungSegmenter

    return LungSegmenter.load(path or DEFAULT_SEGMENTER_DIR)


def _report_failures(failures: list[tuple[str, str]], done: str) -> int:
    """List skipped files on stderr, summarise, and return the exit code (1 if any failed)."""
    for name, error in failures:
        sys.stderr.write(f"skipped {name}: {error}\n")
    print(f"{done}; {len(failures)} file(s) failed")
    return 1 if failures else 0


# --- commands --------------------------------------------------------------------------------
def _cmd_prepare(args) -> int:
    from .data.prepare import format_summary, prepare

    summaries = prepare(args.csv, args.term_tree, args.out, min_count=args.min_count,
                        seed=args.seed, projections=tuple(args.projection or ["PA"]),
                        keep_pediatric=args.keep_pediatric)
    print(format_summary(summaries))
    return 0


def _cmd_segmenter_train(args) -> int:
    from .imaging.segmenter_training import train_segmenter

    card = train_segmenter(args.data, args.out, epochs=args.epochs, max_minutes=args.max_minutes,
                           seed=args.seed, resume=args.resume, learning_rate=args.learning_rate)
    print(f"segmenter written to {args.out}: held-out mean Dice {card['heldout_dice_mean']}, "
          f"IoU {card['heldout_iou_mean']} on {card['heldout_pairs']} pairs")
    return 0


def _cmd_segment(args) -> int:
    from .imaging.batch_preprocess import segment_folder

    if not args.in_dir.is_dir():
        raise CxrError(f"Input folder not found: {args.in_dir}")
    failures = segment_folder(args.in_dir, args.out_dir, _load_segmenter(args.segmenter),
                              lungs_only=args.lungs_only, workers=args.workers)
    return _report_failures(failures, f"masks written to {args.out_dir}")


def _cmd_preprocess(args) -> int:
    from .imaging.batch_preprocess import preprocess_split

    if not args.images.is_dir():
        raise CxrError(f"Image folder not found: {args.images}")
    summary = preprocess_split(args.images, args.split, args.out, _load_segmenter(args.segmenter),
                               workers=args.workers, shard=args.shard)
    for image_id, error in summary["failures"][:20]:
        sys.stderr.write(f"failed {image_id}: {error}\n")
    shard = "" if summary["shard"] == "0/1" else f"shard {summary['shard']} ({summary['rows']} of {summary['split_rows']} rows): "
    print(f"{shard}{summary['written']} crops written, {summary['already_done']} already done, "
          f"{summary['fallbacks']} segmentation fallbacks (whole image used), "
          f"{summary['failed']} failed")
    return 1 if summary["failed"] else 0


def _cmd_preprocess_merge(args) -> int:
    from .imaging.batch_preprocess import verify_cache

    report = verify_cache(args.split, args.out, shards=args.shards)
    for problem in report["problems"][:20]:
        sys.stderr.write(f"{problem['problem']} {problem['ImageID']} (shard {problem['shard']}): "
                         f"{problem['reason']}\n")
    rerun = report["shards_with_missing"]
    print(f"{report['present']} of {report['rows']} crops present, {report['failed']} failed, "
          f"{report['missing']} missing across {report['shards']} shard(s)"
          + (f"; rerun shard(s) {', '.join(map(str, rerun[:20]))}" if rerun else "")
          + f"; details in {Path(args.out) / 'preprocess_missing.csv'}")
    return 0 if report["complete"] else 1


def _train_config(args):
    from .modeling.training import TrainConfig

    return TrainConfig(input_size=args.input_size, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, epochs=args.epochs,
                       patience=args.patience, weights=None if args.weights == "none" else args.weights,
                       mixed_precision={"auto": None, "on": True, "off": False}[args.mixed_precision],
                       xla=args.xla, seed=args.seed, max_minutes=args.max_minutes,
                       monitor=args.monitor, outside_lungs=args.outside_lungs)


def _use_imagenet_files(paths: list[Path] | None, archs) -> None:
    """`--imagenet-weights`: each file serves the architecture whose stock Keras file name it
    has, or the command's only architecture."""
    from .modeling.model_building import use_imagenet_weights
    from .modeling.registry import get_arch

    specs = [get_arch(arch) for arch in archs]
    for path in paths or []:
        match = [s for s in specs if s.weights_file == Path(path).name] or (
            specs if len(specs) == 1 else [])
        if not match:
            raise CxrError(f"--imagenet-weights {path}: give the file its Keras name ("
                           + ", ".join(s.weights_file for s in specs)
                           + ") so it is clear which architecture it is for.")
        use_imagenet_weights(match[0].name, path)


def _cmd_train(args) -> int:
    from .modeling.training import train_member

    _use_imagenet_files(args.imagenet_weights, [args.arch])
    record = train_member(args.arch, args.data, args.split, args.out, _train_config(args),
                          strategy=args.strategy)
    record.pop("classifier", None)
    print(f"{record['arch']}: {record['epochs_run']} epochs, best val loss "
          f"{record['best_val_loss']:.4f}; weights in {args.out}")
    return 0


def _cmd_train_ensemble(args) -> int:
    from .modeling.registry import METHOD_ARCHITECTURES
    from .modeling.runtime import make_strategy, worker_role
    from .modeling.training import train_ensemble

    strategy = make_strategy(args.strategy)
    _use_imagenet_files(args.imagenet_weights, args.arch or METHOD_ARCHITECTURES)
    bundle = train_ensemble(args.data, args.split, args.out, tuple(args.arch or METHOD_ARCHITECTURES),
                            _train_config(args),
                            label_set=args.label_set, strategy=strategy)
    if not worker_role(strategy).chief:
        print(f"worker finished; the chief writes the bundle (this worker's copy: {bundle})")
        return 0
    if not args.no_lite:
        from .explain.engines import compile_bundle

        compile_bundle(bundle)
    print(f"bundle written to {bundle}; next: python -m cxr_core evaluate --bundle {bundle} "
          f"--data {args.data} --split {args.split}")
    return 0


def _interval(row: dict, key: str) -> str:
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    return f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None and low == low else ""


def _cmd_evaluate(args) -> int:
    from .evaluation.evaluation import evaluate_bundle

    refit = args.refit_thresholds
    if args.choose_flips:  # first: a calibration is fitted on the probabilities with or without flips
        from .evaluation.evaluation import choose_test_time_flips

        choice = choose_test_time_flips(args.bundle, args.data, args.split)
        print(f"test-time flips {'on' if choice['tta_flip'] else 'off'}: validation macro AUC "
              f"{choice['val_auc_plain']:.4f} plain, {choice['val_auc_flip']:.4f} with flips")
        if choice["dropped_threshold_methods"]:
            print("dropped (fitted without this flip setting): "
                  + ", ".join(choice["dropped_calibrations"] + choice["dropped_threshold_methods"]))
        refit = True  # the thresholds follow the probabilities the pipeline will produce
    if args.calibrate:
        from .evaluation.recalibration import calibrate_bundle

        summary = calibrate_bundle(args.bundle, args.calibrate, args.data, args.split,
                                   make_default=args.calibrated_default)
        print(f"{args.calibrate} calibration fitted on {summary['validation_images']} validation images "
              f"(validation ECE of CTP {summary['val_ece_ctp_before']:.3f} -> "
              f"{summary['val_ece_ctp_after']:.3f}); threshold methods added: "
              f"{', '.join(summary['threshold_methods_added'])}; default: "
              f"{summary['default_threshold_method']}")
    metrics = evaluate_bundle(args.bundle, args.data, args.split, refit_thresholds=refit,
                              n_resamples=args.resamples, seed=args.seed)
    for name, row in metrics["overall"].items():
        print(f"{name:>18}: AUC {row['auc_macro']:.3f}{_interval(row, 'auc_macro')}  "
              f"F1(macro, both classes) {row['f1_macro']:.3f}{_interval(row, 'f1_macro')}  "
              f"F1(positive) {row['f1_positive_macro']:.3f}  Hamming {row['hamming_loss']:.4f}")
    r = metrics.get("intervals", {})
    if r:
        print(f"95% intervals: patient-level bootstrap ({r['resamples']} resamples of {r['units']} "
              f"{r['unit']}s, seed {r['seed']}); labels with < {r['min_class_count']} positives or "
              "negatives have none")
    chosen = metrics["thresholds"]
    print(f"thresholds {chosen['method']}: chosen on " + (
        "the validation split" if chosen["chosen_on"] == "validation" else
        "an unrecorded split (the bundle predates that record; if it was the test split, the F1 "
        "figures are optimistic)"))
    print(f"tables in {Path(args.bundle) / 'metrics'}")
    return 0


def _cmd_compare(args) -> int:
    from .evaluation.compare import compare_bundles, write_comparison

    if args.resamples < 1:
        raise CxrError("compare needs --resamples of at least 1.")
    result = compare_bundles(args.bundle_a, args.bundle_b, model=args.model,
                             n_resamples=args.resamples, seed=args.seed)
    out = args.out or Path(args.bundle_b) / "metrics" / f"compare_{result.a_id}"
    write_comparison(result, out)
    print(result.summary())
    for _, r in result.table.iterrows():
        interval = r["note"] or f"[{r['low']:+.3f}, {r['high']:+.3f}] {r['verdict']}"
        print(f"{r['label']:>32}: {r['auc_a']:.3f} -> {r['auc_b']:.3f} ({r['difference']:+.3f}) {interval}")
    print(f"comparison.csv and comparison.md in {out}")
    return 0


def _cmd_explain(args) -> int:
    from .review.batch_explain import explain_paths

    failures = explain_paths(args.inputs, args.bundle or _default_bundle(), args.out,
                             all_labels=args.all_labels, uncertainty=args.uncertainty,
                             batch_size=args.batch_size, engine=args.engine,
                             dicom_out=args.dicom_out, force=args.force, save_maps=args.save_maps,
                             map_method=args.map_method)
    return _report_failures(failures, f"reports and predictions written to {args.out}")


def _cmd_localise(args) -> int:
    from .review.localise import localise

    result = localise(args.bundle or _default_bundle(), args.images, args.boxes, args.out,
                      metadata=args.metadata, engine=args.engine, n_resamples=args.resamples,
                      seed=args.seed, batch_size=args.batch_size, store=not args.no_store,
                      map_method=args.map_method)
    overall = result.summary[result.summary["finding"] == "overall"].set_index("measure")
    for measure, row in overall.iterrows():
        print(f"{measure:>14}: model {row['model']:.3f} [{row['model_low']:.3f}, {row['model_high']:.3f}]"
              f"  uniform over lungs {row['uniform_lungs']:.3f}  average map {row['average_map']:.3f}")
    if result.unknown:
        print("findings not in the bundle's labels, skipped: " + ", ".join(result.unknown))
    for label in result.sameness.loc[result.sameness["flagged"], "label"]:
        print(f"flagged: the map of '{label}' is nearly the same on every X-ray")
    return _report_failures(result.failures, f"localisation tables and contact sheet written to {args.out}")


def _cmd_audit(args) -> int:
    from .evaluation.model_card import write_model_card
    from .evaluation.shortcut_audit import audit_bundle, audit_markdown

    table = audit_bundle(args.bundle or _default_bundle(), args.metadata, n_resamples=args.resamples,
                         seed=args.seed)
    print(audit_markdown(table.to_dict(orient="records")))
    write_model_card(args.bundle or _default_bundle())
    print("metrics/shortcut_audit.csv and the model card's audit section written")
    return 0


def _cmd_fit_input_check(args) -> int:
    from .modeling.input_model import fit_input_check

    bundle_dir = args.bundle or _default_bundle()
    summary = fit_input_check(bundle_dir, args.images, split_csv=args.split,
                              max_images=args.max_images, margin=args.margin, seed=args.seed)
    print(f"input check fitted on {summary['train_images']} training and {summary['val_images']} "
          f"validation X-rays ({summary['negatives']} generated non-X-rays): threshold "
          f"{summary['threshold']:.3f}; stored in {bundle_dir}")
    return 0


def _cmd_compile_bundle(args) -> int:
    from .explain.engines import compile_bundle

    bundle = compile_bundle(args.bundle)
    sizes = {m["arch"]: (bundle.path / m["lite"]).stat().st_size / 1e6 for m in bundle.members}
    print(f"{bundle.bundle_id}: TensorFlow Lite members added ("
          + ", ".join(f"{a} {mb:.1f} MB" for a, mb in sizes.items()) + ")")
    return 0


def _cmd_retrain(args) -> int:
    from .review.retrain import retrain

    result = retrain(args.bundle, args.feedback, args.images, args.out, epochs=args.epochs,
                     data_root=args.data_root)
    print(json.dumps(result["summary"], indent=2))
    return 0


# --- parser ----------------------------------------------------------------------------------
def _imagenet_weights_argument(p) -> None:
    p.add_argument("--imagenet-weights", type=Path, action="append", default=None,
                   metavar="PATH", help="ImageNet weights file to start from (repeatable; "
                   "default: Keras's own file name under ~/.keras/models)")


def _map_method_argument(p) -> None:
    from .explain.occlusion import MAP_METHODS

    p.add_argument("--map-method", choices=list(MAP_METHODS), default=None,
                   help="how the maps are computed: the method's Grad-CAM or occlusion sensitivity "
                        "(default: the bundle's choice; docs/explanations.md)")


def _outside_lungs_argument(p, default) -> None:
    p.add_argument("--outside-lungs", type=float, default=default, metavar="SHARE",
                   help="share of training X-rays whose region outside the lung fields is swapped "
                        "with another X-ray's, so it cannot stand in for lung findings (0: the "
                        "method; needs the cache's lung masks)")


def _training_arguments(p) -> None:
    from .modeling.runtime import STRATEGIES
    from .modeling.training import MONITORS, TrainConfig

    defaults = TrainConfig()  # the library's defaults, not retyped here
    p.add_argument("--data", required=True, type=Path, help="preprocessed cache folder")
    p.add_argument("--split", required=True, type=Path, help="DIR/<set>/split.csv")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--input-size", type=int, default=defaults.input_size)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--patience", type=int, default=defaults.patience)
    p.add_argument("--weights", default=defaults.weights or "none", choices=["imagenet", "none"])
    _imagenet_weights_argument(p)
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--xla", action="store_true")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this wall time")
    p.add_argument("--monitor", default=defaults.monitor, choices=list(MONITORS),
                   help="checkpoint and early-stopping criterion (the method: val_loss)")
    _outside_lungs_argument(p, defaults.outside_lungs)
    p.add_argument("--strategy", default="auto", choices=list(STRATEGIES),
                   help="auto: multi-worker when TF_CONFIG names a cluster, mirrored over "
                        "several local GPUs, else default; --batch-size is the global batch")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    from .explain.engines import ENGINE_CHOICES
    from .modeling.calibration import CALIBRATION_METHODS
    from .modeling.registry import ARCHITECTURES, METHOD_ARCHITECTURES

    parser = _Parser(prog="python -m cxr_core", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("prepare", help="PadChest CSV + term tree -> label sets and split")
    p.add_argument("--csv", required=True, type=Path)
    p.add_argument("--term-tree", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--min-count", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--projection", action="append", help="projection(s) to keep (default PA)")
    p.add_argument("--keep-pediatric", action="store_true")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("segmenter", help="lung segmenter commands")
    ssub = p.add_subparsers(dest="segmenter_command", required=True, parser_class=_Parser)
    t = ssub.add_parser("train", help="train the lung U-Net on image/mask pairs")
    t.add_argument("--data", required=True, type=Path)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--max-minutes", type=float, default=25.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--learning-rate", type=float, default=1e-3)
    t.add_argument("--resume", action="store_true", help="continue from the weights in --out")
    t.set_defaults(func=_cmd_segmenter_train)

    p = sub.add_parser("segment", help="write lung masks for every image in a folder")
    p.add_argument("in_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--lungs-only", action="store_true", help="without the below-lung area")
    p.add_argument("--segmenter", type=Path, default=None)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("preprocess", help="crop every image of a split into a cache")
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--split", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--segmenter", type=Path, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="process only shard I of N (0-based; e.g. $SLURM_ARRAY_TASK_ID/16)")
    p.set_defaults(func=_cmd_preprocess)

    p = sub.add_parser("preprocess-merge",
                       help="check a (sharded) cache against the split: missing and failed images")
    p.add_argument("--split", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="the cache folder all shards wrote")
    p.add_argument("--shards", type=int, default=None, help="N of the run (default: from the logs)")
    p.set_defaults(func=_cmd_preprocess_merge)

    p = sub.add_parser("train", help="train one architecture")
    p.add_argument("--arch", required=True, choices=list(ARCHITECTURES))
    _training_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("train-ensemble", help="train several architectures and write a bundle")
    p.add_argument("--arch", action="append", choices=list(ARCHITECTURES),
                   help=f"repeatable; default: {', '.join(METHOD_ARCHITECTURES)}")
    p.add_argument("--label-set", default="specific")
    p.add_argument("--no-lite", action="store_true",
                   help="skip the TensorFlow Lite members (compile-bundle adds them later)")
    _training_arguments(p)
    p.set_defaults(func=_cmd_train_ensemble)

    p = sub.add_parser("evaluate", help="per-label metrics of a bundle on the test split")
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--split", required=True, type=Path)
    p.add_argument("--choose-flips", action="store_true",
                   help="decide on validation whether test-time left-right flips help, store the "
                        "choice in the bundle and choose the thresholds again")
    p.add_argument("--refit-thresholds", action="store_true",
                   help="choose thresholds on the validation split again")
    p.add_argument("--resamples", type=int, default=1000,
                   help="patient-level bootstrap resamples for the 95%% intervals (0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--calibrate", choices=list(CALIBRATION_METHODS), default=None,
                   help="fit this post-hoc calibration per member and label on validation first")
    p.add_argument("--calibrated-default", action="store_true",
                   help="with --calibrate: make the calibrated thresholds the bundle's default")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("compare", help="per-label AUC difference of two evaluated bundles "
                                       "(paired bootstrap on their shared test images)")
    p.add_argument("bundle_a", type=Path, help="reference bundle (A), e.g. the parent")
    p.add_argument("bundle_b", type=Path, help="bundle compared with it (B), e.g. a retrain child")
    p.add_argument("--model", default="CTP", help="CTP (default) or a member both bundles have")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="folder for comparison.csv/.md (default: B/metrics/compare_<A id>)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("explain", help="findings, heatmaps and reports for X-ray files")
    p.add_argument("inputs", nargs="+", type=Path, metavar="FILE_OR_DIR")
    p.add_argument("--bundle", type=Path, default=None, help="default: the app's default bundle")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--all-labels", action="store_true", help="a panel for every label")
    p.add_argument("--uncertainty", action="store_true", help="add uncertainty maps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--engine", choices=list(ENGINE_CHOICES), default=None,
                   help="inference engine (default: CXR_ENGINE or auto)")
    p.add_argument("--dicom-out", action="store_true",
                   help="for DICOM inputs also write a Structured Report of the findings and a "
                        "Secondary Capture of the report (docs/dicom.md)")
    p.add_argument("--force", action="store_true",
                   help="explain images the input check refuses (not frontal chest X-rays) anyway")
    p.add_argument("--save-maps", action="store_true",
                   help="also write <stem>_maps.npz: every label's map in the original image's "
                        "frame at display size, the lung fields and the probabilities")
    _map_method_argument(p)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("localise", help="do the bundle's maps point at the findings? measured "
                                        "against radiologists' boxes (docs/explanations.md)")
    p.add_argument("--bundle", type=Path, default=None, help="default: the app's default bundle")
    p.add_argument("--images", required=True, type=Path, help="folder of the boxed X-rays")
    p.add_argument("--boxes", required=True, type=Path,
                   help="CSV with image, finding, x, y, w, h in the image's pixels")
    p.add_argument("--metadata", type=Path, default=None,
                   help="CSV with image, patient_id (the bootstrap resamples patients; "
                        "default: each image is its own patient)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--resamples", type=int, default=1000, help="patient-level bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--engine", choices=list(ENGINE_CHOICES), default=None,
                   help="inference engine (default: CXR_ENGINE or auto)")
    p.add_argument("--no-store", action="store_true",
                   help="do not store the tables in the bundle (metrics/ and its manifest)")
    _map_method_argument(p)
    p.set_defaults(func=_cmd_localise)

    p = sub.add_parser("audit", help="shortcut audit: test AUC per finding within each view, sex, "
                                     "age band and source, with intervals (into the model card)")
    p.add_argument("--bundle", type=Path, default=None, help="default: the app's default bundle")
    p.add_argument("--metadata", type=Path, nargs="*", default=[],
                   help="CSV(s) with image and any of view, sex, age (matched by file name)")
    p.add_argument("--resamples", type=int, default=1000, help="patient-level bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser("fit-input-check",
                       help="fit the 'is this a frontal chest X-ray?' check and store it in a bundle")
    p.add_argument("--bundle", type=Path, default=None, help="default: the app's default bundle")
    p.add_argument("--images", required=True, type=Path,
                   help="folder with the bundle's training images (as for 'preprocess')")
    p.add_argument("--split", type=Path, default=None, help="default: the bundle's split.csv")
    p.add_argument("--max-images", type=int, default=1000, help="per split (train, val)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="added to the highest validation score to make the threshold")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_fit_input_check)

    p = sub.add_parser("compile-bundle", help="add TensorFlow Lite members to a bundle (fast start)")
    p.add_argument("bundle", type=Path)
    p.set_defaults(func=_cmd_compile_bundle)

    p = sub.add_parser("retrain", help="fine-tune a bundle with expert feedback")
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--feedback", required=True, help="database URL of the feedback store")
    p.add_argument("--images", required=True, type=Path, help="folder with the reviewed images")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--data-root", type=Path, default=None,
                   help="the bundle's original images (default: as recorded in its manifest)")
    p.set_defaults(func=_cmd_retrain)
    _register_build_demo(sub)
    _register_operating_points(sub)
    _register_node(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for user errors, with one sentence on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if getattr(args, "min_count", 1) < 1:
        parser.error("--min-count must be at least 1")
    if getattr(args, "resamples", 0) < 0:
        parser.error("--resamples must be 0 or more")
    try:
        return int(args.func(args) or 0)
    except CxrError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


def _cmd_operating_points(args) -> int:
    from .evaluation.reading_points import fit_reading_points
    from .modeling.bundle import Bundle

    reading = fit_reading_points(args.bundle, args.data, args.split)
    bundle = Bundle.load(args.bundle)
    ece = reading["val_ece"]
    print(f"calibration: {reading['calibration'] or 'none'} (validation ECE, out of fold: raw "
          f"{ece['raw']:.3f}, temperature {ece['temperature']:.3f}, isotonic {ece['isotonic']:.3f})")
    for point in reading["points"]:
        entry = bundle.threshold_entry(point)
        rates = ", ".join(f"{label} {s:.2f}/{p:.2f}" if s is not None and p is not None else f"{label} -"
                          for label, s, p in zip(bundle.labels, entry["sensitivity"], entry["specificity"]))
        print(f"{point} ({entry['rule']}): sensitivity/specificity on validation: {rates}")
    print(f"stored in {Path(args.bundle)}; the Review page offers them (default: {reading['default']})")
    return 0


def _register_operating_points(sub) -> None:
    p = sub.add_parser("operating-points",
                       help="choose the reading points (balanced, high sensitivity, high "
                            "specificity) and the calibration on validation and store them in a bundle")
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--data", type=Path, default=None,
                   help="crop cache: predict validation again (default: the bundle's stored "
                        "validation predictions)")
    p.add_argument("--split", type=Path, default=None, help="with --data: the bundle's split")
    p.set_defaults(func=_cmd_operating_points)


def _cmd_build_demo(args) -> int:
    from .evaluation.demo import build_demo_bundle, demo_train_config

    config = demo_train_config(args.seed, input_size=args.input_size,
                               learning_rate=args.learning_rate, patience=args.patience,
                               epochs=args.epochs, max_minutes=args.max_minutes,
                               batch_size=args.batch_size, monitor=args.monitor,
                               augment=args.augment, outside_lungs=args.outside_lungs)
    _use_imagenet_files(args.imagenet_weights, args.arch or args.arch_default)
    out = build_demo_bundle(args.data, args.out, args.work, args.segmenter,
                            tuple(args.arch or args.arch_default), config, seed=args.seed,
                            term_tree=args.term_tree)
    print(f"demo bundle written to {out}")
    return 0


def _register_build_demo(sub) -> None:
    from .evaluation.demo import DEMO_ARCHITECTURES
    from .imaging.augment import CLASSIFIER_AUGMENTS
    from .imaging.segmentation import DEFAULT_SEGMENTER_DIR
    from .modeling.training import MONITORS

    p = sub.add_parser("build-demo", help="train the bundled demo model on the public X-rays "
                                           "(nih-sample + cxr-public)")
    p.add_argument("--data", required=True, type=Path,
                   help="folder holding nih-sample/, cxr-public/ and padchest/term_tree.txt")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--work", required=True, type=Path, help="folder for the cache and runs")
    p.add_argument("--segmenter", type=Path, default=DEFAULT_SEGMENTER_DIR)
    p.add_argument("--term-tree", type=Path, default=None,
                   help="PadChest term tree (default: DATA/padchest/term_tree.txt)")
    p.add_argument("--arch", action="append", default=None)
    p.add_argument("--input-size", type=int, default=None, help="default: the demo recipe's")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="per member")
    p.add_argument("--monitor", default=None, choices=list(MONITORS),
                   help="checkpoint/early-stopping criterion (default val_auc: the val split is small)")
    p.add_argument("--augment", default=None, choices=list(CLASSIFIER_AUGMENTS),
                   help="classifier augmentation (default: mild)")
    _outside_lungs_argument(p, None)
    p.add_argument("--seed", type=int, default=0)
    _imagenet_weights_argument(p)
    p.set_defaults(func=_cmd_build_demo, arch_default=DEMO_ARCHITECTURES)


def _cmd_node(args) -> int:
    from .pacs.node import Node, default_reviewer_factory
    from .pacs.settings import node_settings

    config = node_settings(args.config, aet=args.aet, host=args.host, port=args.port,
                           allow=args.allow, send_to=args.send_to, queue=args.queue)
    Node(config, default_reviewer_factory(args.bundle, args.engine)).serve_forever()
    return 0


def _register_node(sub) -> None:
    p = sub.add_parser("node", help="DICOM node: receive chest X-rays by C-STORE, review them, send "
                                    "SR + SC back (docs/pacs.md)")
    p.add_argument("--aet", default=None, help="this node's AE title (default CXRREVIEW)")
    p.add_argument("--host", default=None, help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="DICOM port (default 11112)")
    p.add_argument("--allow", action="append", default=None, metavar="AET",
                   help="calling AE title allowed to send (repeat or comma-separate)")
    p.add_argument("--send-to", action="append", default=None, metavar="AET@HOST:PORT|URL",
                   help="destination of the results: a DICOM node or a DICOMweb STOW base URL")
    p.add_argument("--queue", type=Path, default=None, help="queue folder (default DATA_DIR/node_queue)")
    p.add_argument("--config", type=Path, default=None, help="TOML settings file (default CXR_PACS_CONFIG)")
    p.add_argument("--bundle", type=Path, default=None, help="default: the app's default bundle")
    p.add_argument("--engine", choices=["auto", "lite", "tensorflow"], default=None,
                   help="inference engine (default: CXR_ENGINE or auto)")
    p.set_defaults(func=_cmd_node)
