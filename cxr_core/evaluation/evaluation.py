"""Predict with members, evaluate members and ensembles on the test split, write tables."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.split_table import cached_paths, read_split
from ..modeling.ensemble import agreement, binarize, ctp, ptc_labelwise, ptc_mode
from ..modeling.inference import predict_members
from .bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, METRICS, model_intervals
from ..modeling.calibration import calibration_table
from .metrics import label_metrics, overall_metrics
from .paper import write_side_by_side

log = logging.getLogger(__name__)

ENSEMBLES = ("CTP", "PTC label-wise", "PTC mode")
MACRO_COLUMN = {"auc": "auc_macro", "f1_macro": "f1_macro", "f1_positive": "f1_positive_macro"}


def model_outputs(member_probs: np.ndarray, archs: list[str], ens_thresholds: np.ndarray,
                  member_thresholds: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(scores, binary predictions), both (N, K), of every member and ensemble rule."""
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
    return results


def evaluate_predictions(member_probs: np.ndarray, targets: np.ndarray, labels: list[str],
                         archs: list[str], ens_thresholds: np.ndarray,
                         member_thresholds: np.ndarray, groups=None,
                         n_resamples: int = 0, seed: int = DEFAULT_SEED) -> dict[str, pd.DataFrame]:
    """Per-label tables for every member and ensemble, plus an 'overall' table.

    With `n_resamples` > 0, bootstrap intervals (resampling `groups`, the patient of each
    image) add `<metric>_low/_high` and `ci_note` columns to every table.
    """
    results = model_outputs(member_probs, archs, ens_thresholds, member_thresholds)
    tables = {name: label_metrics(targets, p, b, labels) for name, (p, b) in results.items()}
    overall = pd.DataFrame({name: overall_metrics(targets, p, b) for name, (p, b) in results.items()}).T
    overall.index.name = "model"
    if n_resamples:
        intervals = model_intervals(results, targets, labels, groups, n_resamples, seed)
        for name in results:
            tables[name] = tables[name].merge(intervals["per_label"][name], on="label", how="left")
            for key, value in intervals["macro"][name].items():
                metric, _, bound = key.rpartition("_")
                column = f"{MACRO_COLUMN[metric]}_{bound}" if metric in METRICS else key
                overall.loc[name, column] = value
        overall.attrs["resampling"] = intervals["resampling"]
    for column in ("labels_without_auc", "labels_with_interval"):  # counts, not measurements
        if column in overall.columns:
            overall[column] = overall[column].astype(int)
    tables["overall"] = overall.reset_index()
    tables["overall"].attrs = overall.attrs
    return tables


def comparison_table(tables: dict[str, pd.DataFrame], archs: list[str], metric: str) -> pd.DataFrame:
    """The method's layout: one row per label, one column per member and ensemble, with the
    best member marked and ensembles that beat every member flagged. When the tables carry
    bootstrap intervals, `<model> low` / `<model> high` columns and the `ci_note` follow."""
    names = [*archs, *ENSEMBLES]
    first = tables[archs[0]]
    frame = pd.DataFrame({"label": first["label"].to_numpy(), "images": first["images"].to_numpy(),
                          "positives": first["positives"].to_numpy()})
    for name in names:
        frame[name] = tables[name][metric].to_numpy()
    member_values = frame[archs]
    frame["best_member"] = [
        "" if row.isna().all() else str(row.astype(float).idxmax())  # no AUC: nothing to mark
        for _, row in member_values.iterrows()]
    best = member_values.max(axis=1)
    frame["ensembles_beating_all_members"] = [
        ", ".join(e for e in ENSEMBLES if pd.notna(row[e]) and pd.notna(b) and row[e] > b)
        for (_, row), b in zip(frame.iterrows(), best)]
    if f"{metric}_low" in first.columns:
        for name in names:
            frame[f"{name} low"] = tables[name][f"{metric}_low"].to_numpy()
            frame[f"{name} high"] = tables[name][f"{metric}_high"].to_numpy()
        frame["ci_note"] = first["ci_note"].to_numpy()
    return frame


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def _to_markdown(frame: pd.DataFrame) -> str:
    """A Markdown table; `<x> low` / `<x> high` columns are folded into `<x>` as 'v [low, high]'."""
    frame = frame.copy()
    for column in [c for c in frame.columns if f"{c} low" in frame.columns]:
        frame[column] = [
            _cell(v) + (f" [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) and pd.notna(hi) else "")
            for v, lo, hi in zip(frame[column], frame[f"{column} low"], frame[f"{column} high"])]
        frame = frame.drop(columns=[f"{column} low", f"{column} high"])
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for _, row in frame.iterrows()]
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
    overall = tables["overall"].copy()
    for column in ("labels_without_auc", "labels_with_interval"):
        if column in overall.columns:
            overall[column] = overall[column].astype("Int64")
    overall.to_csv(out_dir / "overall.csv", index=False)
    readable = overall.rename(columns={c: c.replace("_low", " low").replace("_high", " high")
                                       for c in overall.columns})
    note = ""
    if overall.attrs.get("resampling"):
        r = overall.attrs["resampling"]
        note = (f"\nIntervals: {r['confidence']:.0%} percentile bootstrap, {r['resamples']} resamples "
                f"of {r['units']} {r['unit']}s (seed {r['seed']}); labels with fewer than "
                f"{r['min_class_count']} positives or negatives get none.\n")
    (out_dir / "overall.md").write_text(_to_markdown(readable) + note)
    return written + [out_dir / "overall.csv"]


def write_calibration_tables(targets: np.ndarray, member_probs: np.ndarray, labels: list[str],
                             archs: list[str], out_dir: Path) -> list[Path]:
    """calibration.csv: ECE and Brier per label and over all labels, for every member and CTP."""
    frames = [calibration_table(targets, probs, labels).assign(model=name)
              for name, probs in [("CTP", np.asarray(member_probs).mean(axis=0)),
                                  *zip(archs, member_probs)]]
    frame = pd.concat(frames, ignore_index=True)[["model", "label", "positives", "ece", "brier",
                                                  "mean_probability", "prevalence"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_dir / "calibration.csv", index=False)
    pooled = frame[frame["label"] == "all labels"].drop(columns=["label"])
    (out_dir / "calibration.md").write_text(_to_markdown(pooled))
    return [out_dir / "calibration.csv", out_dir / "calibration.md"]


def threshold_origin(bundle, method: str | None = None) -> str:
    """The split a threshold method was chosen on ('validation', or 'unknown' for a bundle
    that predates the record); refuses a method chosen on the test split, whose test figures
    would be optimistic."""
    from ..base.errors import ThresholdSplitError

    name = method or bundle.threshold_method
    chosen_on = bundle.threshold_split(name)
    if chosen_on == "test":
        raise ThresholdSplitError(f"Threshold method '{name}' was chosen on the test split, so it "
                                  "cannot be used to report test figures; choose one fitted on validation.")
    if chosen_on is None:
        log.warning("threshold method '%s' does not record the split it was chosen on", name)
    return chosen_on or "unknown"


def evaluate_bundle(bundle_path: str | Path, cache_dir: str | Path, split_csv: str | Path,
                    refit_thresholds: bool = False, n_resamples: int = DEFAULT_RESAMPLES,
                    seed: int = DEFAULT_SEED, method: str | None = None) -> dict:
    """Evaluate a bundle on the test split with threshold `method` (default: the bundle's),
    store predictions and metrics in it; refuses thresholds chosen on the test split."""
    from ..base.errors import BundleError
    from ..modeling.bundle import Bundle

    bundle = Bundle.load(bundle_path)
    table = read_split(split_csv)
    if table.labels != bundle.labels:
        raise BundleError("The split's label columns differ from the bundle's labels; "
                          "evaluate with the split the bundle was trained on.")
    if refit_thresholds:
        from ..modeling.thresholds import threshold_table

        val_probs = predict_members(bundle.classifiers, cached_paths(cache_dir, table.part("val")),
                                    bundle.input_size, flip=bundle.tta_flip)
        # built-in methods chosen again; saved and calibrated methods are kept
        for name, entry in threshold_table(val_probs, table.targets("val")).items():
            bundle.set_thresholds(name, entry)
        bundle.save()
        from .recalibration import store_val_predictions

        store_val_predictions(bundle, table.part("val")["ImageID"].tolist(), table.targets("val"),
                              val_probs)
    chosen_on = threshold_origin(bundle, method)
    test = table.part("test")
    member_probs = predict_members(bundle.classifiers, cached_paths(cache_dir, test),
                                   bundle.input_size, flip=bundle.tta_flip)
    ens_t, mem_t = bundle.thresholds(method)
    calibrated = bundle.calibrate(member_probs, method)
    tables = evaluate_predictions(calibrated, table.targets("test"),
                                  bundle.labels, bundle.archs, ens_t, mem_t,
                                  groups=test["PatientID"].to_numpy(), n_resamples=n_resamples,
                                  seed=seed)
    write_tables(tables, bundle.archs, bundle.path / "metrics")
    write_calibration_tables(table.targets("test"), calibrated, bundle.labels, bundle.archs,
                             bundle.path / "metrics")
    write_side_by_side(tables, bundle.label_set, bundle.path / "metrics")
    overall = tables["overall"].set_index("model").to_dict(orient="index")
    metrics = {"split": "test", "images": int(len(test)), "overall": overall,
               "thresholds": {"method": method or bundle.threshold_method, "chosen_on": chosen_on},
               "intervals": tables["overall"].attrs.get("resampling", {}),
               "per_label": {name: tables[name].to_dict(orient="records")
                             for name in [*bundle.archs, *ENSEMBLES]}}
    bundle.store_test_predictions(test["ImageID"].tolist(), table.targets("test"), member_probs,
                                  metrics)
    return metrics


def macro_auc(targets: np.ndarray, probs: np.ndarray) -> float:
    """Mean AUC over the labels that have both classes among their known targets (NaN when
    none has)."""
    from sklearn.metrics import roc_auc_score

    targets, aucs = np.asarray(targets, dtype=np.float64), []
    for k in range(targets.shape[1]):
        known = np.isfinite(targets[:, k])
        y = targets[known, k].astype(int)
        if len(y) and y.min() != y.max():
            aucs.append(roc_auc_score(y, np.asarray(probs)[known, k]))
    return float(np.mean(aucs)) if aucs else float("nan")


def drop_fits_of_other_flips(bundle) -> dict:
    """Remove what was fitted on probabilities of the other flip setting (calibrations, the
    threshold methods on them, saved operating points, the stored validation predictions); the
    built-in methods stay until `evaluate_bundle(refit_thresholds=True)` chooses them again.
    Changes the manifest in memory; returns the names dropped."""
    from ..modeling.thresholds import THRESHOLD_METHODS
    from .recalibration import VAL_PREDICTIONS

    calibrations = bundle.drop_calibrations()
    methods = [name for name in bundle.threshold_methods if name not in THRESHOLD_METHODS]
    if bundle.threshold_method not in THRESHOLD_METHODS:
        base = bundle.threshold_method.split("+")[0]
        bundle.set_default_threshold_method(base if base in THRESHOLD_METHODS else "f1")
    for name in methods:
        bundle.drop_threshold_method(name)
    (bundle.path / VAL_PREDICTIONS).unlink(missing_ok=True)
    if calibrations or methods:
        log.warning("test-time flips changed: dropped calibrations %s and threshold methods %s "
                    "(fitted on the other probabilities)", calibrations, methods)
    return {"calibrations": calibrations, "threshold_methods": methods}


def choose_test_time_flips(bundle_path: str | Path, cache_dir: str | Path,
                           split_csv: str | Path) -> dict:
    """Decide on validation whether averaging each member over the crop and its left-right
    mirror raises the CTP ensemble's macro AUC; store the choice and both figures under the
    manifest's `inference` key. Re-evaluate with `refit_thresholds=True` afterwards: the
    thresholds must follow the probabilities the pipeline will produce."""
    from ..modeling.bundle import Bundle

    bundle = Bundle.load(bundle_path)
    table = read_split(split_csv)
    paths, targets = cached_paths(cache_dir, table.part("val")), table.targets("val")
    plain = macro_auc(targets, predict_members(bundle.classifiers, paths, bundle.input_size).mean(0))
    flipped = macro_auc(targets, predict_members(bundle.classifiers, paths, bundle.input_size,
                                                 flip=True).mean(0))
    choice = {"tta_flip": bool(flipped > plain), "chosen_on": "validation macro AUC (CTP)",
              "val_auc_plain": round(plain, 4), "val_auc_flip": round(flipped, 4)}
    dropped = drop_fits_of_other_flips(bundle) if choice["tta_flip"] != bundle.tta_flip else {}
    choice.update({"dropped_calibrations": dropped.get("calibrations", []),
                   "dropped_threshold_methods": dropped.get("threshold_methods", [])})
    bundle.replace(inference=choice).save()
    log.info("test-time flips %s: validation macro AUC %.4f plain, %.4f with flips",
             "on" if choice["tta_flip"] else "off", plain, flipped)
    return choice
