"""Command-line interface: every subcommand calls the same library functions as the app."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import CxrError

log = logging.getLogger("cxr_core")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one sentence and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import format_summary, prepare

    summaries = prepare(args.csv, args.term_tree, args.out, min_count=args.min_count,
                        seed=args.seed, projections=tuple(args.projection),
                        keep_pediatric=args.keep_pediatric)
    print(format_summary(summaries))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full `cxr` / `python -m cxr_core` argument parser."""
    parser = _Parser(prog="python -m cxr_core", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("prepare", help="PadChest CSV + term tree -> label sets and split")
    p.add_argument("--csv", required=True, type=Path)
    p.add_argument("--term-tree", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--min-count", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--projection", action="append", default=None,
                   help="projection(s) to keep (repeatable; default PA)")
    p.add_argument("--keep-pediatric", action="store_true")
    p.set_defaults(func=_cmd_prepare)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for user errors, with one sentence on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if getattr(args, "projection", "unset") is None:
        args.projection = ["PA"]
    if getattr(args, "min_count", 1) is not None and getattr(args, "min_count", 1) < 1:
        parser.error("--min-count must be at least 1")
    try:
        return int(args.func(args) or 0)
    except CxrError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


def _cmd_segmenter_train(args: argparse.Namespace) -> int:
    from .segmenter_training import train_segmenter

    card = train_segmenter(args.data, args.out, epochs=args.epochs, max_minutes=args.max_minutes,
                           seed=args.seed)
    print(f"segmenter written to {args.out}: held-out mean Dice {card['heldout_dice_mean']}, "
          f"IoU {card['heldout_iou_mean']} on {card['heldout_pairs']} pairs")
    return 0


def _register_segmenter(sub) -> None:
    p = sub.add_parser("segmenter", help="lung segmenter commands")
    ssub = p.add_subparsers(dest="segmenter_command", required=True, parser_class=_Parser)
    t = ssub.add_parser("train", help="train the lung U-Net on image/mask pairs")
    t.add_argument("--data", required=True, type=Path)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--max-minutes", type=float, default=25.0)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_cmd_segmenter_train)


_EXTRA_COMMANDS.append(_register_segmenter)
