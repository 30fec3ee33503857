"""Predict with members, evaluate members and ensembles on the test split, write tables."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.split_table import cached_paths, read_split
from .ensemble import agreement, binarize, ctp, ptc_labelwise, ptc_mode
from .inference import predict_members
from .metrics import label_metrics, overall_metrics

log = logging.getLogger(__name__)

ENSEMBLES = ("CTP", "PTC label-wise", "PTC mode")


def evaluate_predictions(member_probs: np.ndarray, targets: np.ndarray, labels: list[str],
                         archs: list[str], ens_thresholds: np.ndarray,
                         member_thresholds: np.ndarray) -> dict[str, pd.DataFrame]:
    """Per-label tables for every member and ensemble, plus an 'overall' table."""
    member_binary = binarize(member_probs, member_thresholds[:, None, :])
    ctp_probs, ctp_binary = ctp(member_probs, ens_thresholds)
    labelwise = ptc_labelwise(member_binary, tie_break=ctp_binary)
    mode = ptc_mode(member_binary, labelwise)
    votes = agreement(member_binary) / member_probs.shape[0]
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {
        arch: (member_probs[m], member_binary[m]) for m, arch in enumerate(archs)}
    # PTC rules have no probability of their own: the vote share ranks images for their AUC.
    results["CTP"] = (ctp_probs, ctp_binary)
    results["PTC label-wise"] = (votes, labelwise)
    results["PTC mode"] = (votes, mode)
    tables = {name: label_metrics(targets, p, b, labels) for name, (p, b) in results.items()}
    overall = pd.DataFrame({name: overall_metrics(targets, p, b) for name, (p, b) in results.items()}).T
    overall.index.name = "model"
    tables["overall"] = overall.reset_index()
    return tables


def comparison_table(tables: dict[str, pd.DataFrame], archs: list[str], metric: str) -> pd.DataFrame:
    """The method's layout: one row per label, one column per member and ensemble, with the
    best member marked and ensembles that beat every member flagged."""
    names = [*archs, *ENSEMBLES]
    frame = pd.DataFrame({name: tables[name][metric].to_numpy() for name in names})
    frame.insert(0, "images", tables[archs[0]]["positives"].to_numpy())
    frame.insert(0, "label", tables[archs[0]]["label"].to_numpy())
    member_values = frame[archs]
    frame["best_member"] = [
        "" if row.isna().all() else str(row.astype(float).idxmax())  # no AUC: nothing to mark
        for _, row in member_values.iterrows()]
    best = member_values.max(axis=1)
    frame["ensembles_beating_all_members"] = [
        ", ".join(e for e in ENSEMBLES if pd.notna(row[e]) and pd.notna(b) and row[e] > b)
        for (_, row), b in zip(frame.iterrows(), best)]
    return frame


def _to_markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) and not np.isnan(v) else ("" if isinstance(v, float) else str(v))
                 for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(tables: dict[str, pd.DataFrame], archs: list[str], out_dir: Path) -> list[Path]:
    """CSV and Markdown for the AUC and F1 comparison tables and the overall table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for metric in ("auc", "f1_macro", "f1_positive"):
        frame = comparison_table(tables, archs, metric)
        frame.to_csv(out_dir / f"{metric}_by_label.csv", index=False)
        (out_dir / f"{metric}_by_label.md").write_text(_to_markdown(frame))
        written += [out_dir / f"{metric}_by_label.csv", out_dir / f"{metric}_by_label.md"]
    tables["overall"].to_csv(out_dir / "overall.csv", index=False)
    (out_dir / "overall.md").write_text(_to_markdown(tables["overall"]))
    return written + [out_dir / "overall.csv"]


def evaluate_bundle(bundle_path: str | Path, cache_dir: str | Path, split_csv: str | Path,
                    refit_thresholds: bool = False) -> dict:
    """Evaluate a bundle on the test split, store predictions and metrics in it."""
    from ..base.errors import BundleError
    from .bundle import Bundle, write_manifest

    bundle = Bundle.load(bundle_path)
    table = read_split(split_csv)
    if table.labels != bundle.labels:
        raise BundleError("The split's label columns differ from the bundle's labels; "
                          "evaluate with the split the bundle was trained on.")
    if refit_thresholds:
        from .thresholds import threshold_table

        val_probs = predict_members(bundle.classifiers, cached_paths(cache_dir, table.part("val")),
                                    bundle.input_size)
        bundle.manifest["thresholds"] = threshold_table(val_probs, table.targets("val"))
        write_manifest(bundle.path, bundle.manifest)
    test = table.part("test")
    member_probs = predict_members(bundle.classifiers, cached_paths(cache_dir, test),
                                   bundle.input_size)
    ens_t, mem_t = bundle.thresholds()
    tables = evaluate_predictions(member_probs, table.targets("test"), bundle.labels,
                                  bundle.archs, ens_t, mem_t)
    write_tables(tables, bundle.archs, bundle.path / "metrics")
    overall = tables["overall"].set_index("model").to_dict(orient="index")
    metrics = {"split": "test", "images": int(len(test)), "overall": overall,
               "per_label": {name: tables[name].to_dict(orient="records")
                             for name in [*bundle.archs, *ENSEMBLES]}}
    bundle.store_test_predictions(test["ImageID"].tolist(), table.targets("test"), member_probs,
                                  metrics)
    return metrics
