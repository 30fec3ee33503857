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
                               workers=args.workers)
    for image_id, error in summary["failures"][:20]:
        sys.stderr.write(f"failed {image_id}: {error}\n")
    print(f"{summary['written']} crops written, {summary['already_done']} already done, "
          f"{summary['fallbacks']} segmentation fallbacks (whole image used), "
          f"{summary['failed']} failed")
    return 1 if summary["failed"] else 0


def _train_config(args):
    from .modeling.training import TrainConfig

    return TrainConfig(input_size=args.input_size, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, epochs=args.epochs,
                       patience=args.patience, weights=None if args.weights == "none" else args.weights,
                       mixed_precision={"auto": None, "on": True, "off": False}[args.mixed_precision],
                       xla=args.xla, seed=args.seed, max_minutes=args.max_minutes,
                       monitor=args.monitor)


def _cmd_train(args) -> int:
    from .modeling.training import train_member

    record = train_member(args.arch, args.data, args.split, args.out, _train_config(args))
    record.pop("classifier", None)
    print(f"{record['arch']}: {record['epochs_run']} epochs, best val loss "
          f"{record['best_val_loss']:.4f}; weights in {args.out}")
    return 0


def _cmd_train_ensemble(args) -> int:
    from .modeling.registry import METHOD_ARCHITECTURES
    from .modeling.training import train_ensemble

    bundle = train_ensemble(args.data, args.split, args.out, tuple(args.arch or METHOD_ARCHITECTURES),
                            _train_config(args),
                            label_set=args.label_set)
    if not args.no_lite:
        from .explain.engines import compile_bundle

        compile_bundle(bundle)
    print(f"bundle written to {bundle}; next: python -m cxr_core evaluate --bundle {bundle} "
          f"--data {args.data} --split {args.split}")
    return 0


def _cmd_evaluate(args) -> int:
    from .modeling.evaluation import evaluate_bundle

    metrics = evaluate_bundle(args.bundle, args.data, args.split, refit_thresholds=args.refit_thresholds)
    for name, row in metrics["overall"].items():
        print(f"{name:>18}: AUC {row['auc_macro']:.3f}  F1(macro, both classes) {row['f1_macro']:.3f}  "
              f"F1(positive) {row['f1_positive_macro']:.3f}  Hamming {row['hamming_loss']:.4f}")
    print(f"tables in {Path(args.bundle) / 'metrics'}")
    return 0


def _cmd_explain(args) -> int:
    from .review.batch_explain import explain_paths

    failures = explain_paths(args.inputs, args.bundle or _default_bundle(), args.out,
                             all_labels=args.all_labels, uncertainty=args.uncertainty,
                             batch_size=args.batch_size, engine=args.engine)
    return _report_failures(failures, f"reports and predictions written to {args.out}")


def _cmd_compile_bundle(args) -> int:
    from .explain.engines import compile_bundle

    bundle = compile_bundle(args.bundle)
    sizes = {m["arch"]: (bundle.path / m["lite"]).stat().st_size / 1e6 for m in bundle.manifest["members"]}
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
def _training_arguments(p) -> None:
    p.add_argument("--data", required=True, type=Path, help="preprocessed cache folder")
    p.add_argument("--split", required=True, type=Path, help="DIR/<set>/split.csv")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=350)
    p.add_argument("--patience", type=int, default=25)
    p.add_argument("--weights", default="imagenet", choices=["imagenet", "none"])
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--xla", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this wall time")
    p.add_argument("--monitor", default="val_loss", choices=["val_loss", "val_auc"],
                   help="checkpoint and early-stopping criterion (the method: val_loss)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
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
    p.set_defaults(func=_cmd_preprocess)

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
    p.add_argument("--refit-thresholds", action="store_true",
                   help="choose thresholds on the validation split again")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("explain", help="findings, heatmaps and reports for X-ray files")
    p.add_argument("inputs", nargs="+", type=Path, metavar="FILE_OR_DIR")
    p.add_argument("--bundle", type=Path, default=None, help="default: the app's default bundle")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--all-labels", action="store_true", help="a panel for every label")
    p.add_argument("--uncertainty", action="store_true", help="add uncertainty maps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--engine", choices=["auto", "lite", "tensorflow"], default=None,
                   help="inference engine (default: CXR_ENGINE or auto)")
    p.set_defaults(func=_cmd_explain)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for user errors, with one sentence on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if getattr(args, "min_count", 1) < 1:
        parser.error("--min-count must be at least 1")
    try:
        return int(args.func(args) or 0)
    except CxrError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


def _cmd_build_demo(args) -> int:
    from .modeling.demo import build_demo_bundle, demo_train_config

    config = demo_train_config(args.seed, input_size=args.input_size,
                               learning_rate=args.learning_rate, patience=args.patience,
                               epochs=args.epochs, max_minutes=args.max_minutes,
                               batch_size=args.batch_size, monitor=args.monitor,
                               augment=args.augment)
    out = build_demo_bundle(args.data, args.out, args.work, args.segmenter,
                            tuple(args.arch or args.arch_default), config, seed=args.seed,
                            term_tree=args.term_tree)
    print(f"demo bundle written to {out}")
    return 0


def _register_build_demo(sub) -> None:
    from .modeling.demo import DEMO_ARCHITECTURES

    p = sub.add_parser("build-demo", help="train the bundled demo model on the public X-rays "
                                           "(nih-sample + cxr-public)")
    p.add_argument("--data", required=True, type=Path,
                   help="folder holding nih-sample/, cxr-public/ and padchest/term_tree.txt")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--work", required=True, type=Path, help="folder for the cache and runs")
    p.add_argument("--segmenter", type=Path, default=Path("models/segmenter"))
    p.add_argument("--term-tree", type=Path, default=None,
                   help="PadChest term tree (default: DATA/padchest/term_tree.txt)")
    p.add_argument("--arch", action="append", default=None)
    p.add_argument("--input-size", type=int, default=None, help="default: the demo recipe's")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="per member")
    p.add_argument("--monitor", default=None, choices=["val_loss", "val_auc"],
                   help="checkpoint/early-stopping criterion (default val_auc: the val split is small)")
    p.add_argument("--augment", default=None, choices=["mild", "method"],
                   help="classifier augmentation (default: mild)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_build_demo, arch_default=DEMO_ARCHITECTURES)
