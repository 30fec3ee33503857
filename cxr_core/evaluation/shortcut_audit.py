"""Shortcut audit: a finding's test AUC within each view position (AP / PA), sex, age band and
source, with patient-level bootstrap intervals. Within one subgroup the acquisition cannot give
the answer away, so a model that reads the finding keeps its AUC there; one that reads the view
or the collection loses it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.errors import DataError
from ..data.public_dataset import source_of
from ..data.split_table import read_split
from ..modeling.ensemble import ctp
from .bootstrap import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    MIN_CLASS_COUNT,
    auc_samples,
    percentile_interval,
    resample_groups,
    too_few_note,
)

log = logging.getLogger(__name__)

ATTRIBUTES = ("view", "sex", "age band", "source")
AGE_BANDS = ((0, 40, "< 40"), (40, 60, "40-59"), (60, 80, "60-79"), (80, 200, ">= 80"))
AUDIT_CSV = "shortcut_audit.csv"


def view_group(view) -> str | None:
    """'AP' (including AP supine) or 'PA'; None for anything else (lateral, unknown)."""
    text = str(view).strip().upper()
    if text.startswith("AP"):
        return "AP"
    if text.startswith("PA"):
        return "PA"
    return None


def age_band(age) -> str | None:
    """The age band of an age in years; None when unknown."""
    try:
        years = float(age)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(years):
        return None
    return next((name for low, high, name in AGE_BANDS if low <= years < high), None)


def sex_group(sex) -> str | None:
    text = str(sex).strip().upper()[:1]
    return {"M": "M", "F": "F"}.get(text)


def _group_order(value) -> tuple[int, str]:
    """Age bands youngest first, everything else alphabetically."""
    bands = [name for _, _, name in AGE_BANDS]
    return (bands.index(value), "") if value in bands else (len(bands), str(value))


def subgroup_aucs(targets: np.ndarray, probs: np.ndarray, labels: list[str], attributes: pd.DataFrame,
                  patients, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                  min_count: int = MIN_CLASS_COUNT) -> pd.DataFrame:
    """AUC of every label within every value of every attribute column, with a patient-level
    bootstrap interval. Rows: label, attribute, group, images, positives, auc, auc_low,
    auc_high, note; also the 'all' group for reference. NaN AUC where a class is missing.
    A target that is unknown (NaN: its source does not annotate the finding) is left out."""
    targets = np.asarray(targets, np.float64)
    probs = np.asarray(probs, np.float64)
    patients = np.asarray(patients)
    rows = []
    groups = [("all", "all", np.ones(len(targets), bool))]
    for column in attributes.columns:
        values = attributes[column]
        groups += [(column, value, (values == value).to_numpy())
                   for value in sorted(values.dropna().unique(), key=_group_order)]
    for attribute, value, inside in groups:
        y, p = targets[inside], probs[inside]
        if not len(y):
            continue
        weights = resample_groups(patients[inside], max(n_resamples, 1), seed).weights
        point = auc_samples(np.ones((len(y), 1), np.float32), y, p)[0]
        samples = auc_samples(weights, y, p) if n_resamples else None
        low, high = percentile_interval(samples) if samples is not None else (None, None)
        for k, label in enumerate(labels):
            known = int(np.isfinite(y[:, k]).sum())
            positives = int(np.nansum(y[:, k]))
            note = too_few_note(positives, known - positives, min_count)
            rows.append({"label": label, "attribute": attribute, "group": str(value), "images": known,
                         "positives": positives, "auc": float(point[k]),
                         "auc_low": float(low[k]) if low is not None and not note else float("nan"),
                         "auc_high": float(high[k]) if high is not None and not note else float("nan"),
                         "note": note})
    return pd.DataFrame(rows)


def read_attributes(image_ids, image_dirs, metadata: list[Path]) -> pd.DataFrame:
    """view, sex, age band and source of each test image: the source from its folder, the rest
    from metadata CSVs (columns image and any of view, sex, age; matched by file name)."""
    names = [Path(str(i)).name for i in image_ids]
    found: dict[str, dict] = {}
    for path in metadata:
        try:
            table = pd.read_csv(path, dtype=str)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"The metadata file {path} could not be read as CSV ({exc}).") from exc
        if "image" not in table.columns:
            raise DataError(f"The metadata file {path} has no 'image' column.")
        for row in table.to_dict(orient="records"):
            found.setdefault(Path(str(row["image"])).name, row)
    frame = pd.DataFrame({
        "view": [view_group(found.get(n, {}).get("view")) for n in names],
        "sex": [sex_group(found.get(n, {}).get("sex")) for n in names],
        "age band": [age_band(found.get(n, {}).get("age")) for n in names],
        "source": list(source_of(pd.Series(list(image_dirs)))),
    })
    missing = sum(n not in found for n in names)
    if metadata and missing:
        log.warning("%d of %d test images have no metadata row: left out of view, sex and age", missing, len(names))
    return frame


def audit_bundle(bundle_dir: str | Path, metadata: list[Path] | None = None,
                 n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """The audit of a bundle's stored test predictions (CTP ensemble) with its split.csv;
    written to `metrics/shortcut_audit.csv` and into the manifest for the model card."""
    from ..modeling.bundle import Bundle

    bundle = Bundle.load(bundle_dir)
    stored = bundle.test_predictions()
    if stored is None:
        raise DataError(f"Bundle {bundle.bundle_id} has no stored test predictions: evaluate it first.")
    split = read_split(bundle.path / "split.csv").part("test").set_index("ImageID")
    ids = list(stored["image_ids"])
    missing = [i for i in ids if i not in split.index]
    if missing:
        raise DataError(f"{len(missing)} test images of the bundle are not in its split.csv.")
    test = split.loc[ids]
    ens_t, _ = bundle.thresholds()
    probs, _ = ctp(bundle.calibrate(stored["member_probs"]), ens_t)
    attributes = read_attributes(ids, test["ImageDir"], list(metadata or []))
    table = subgroup_aucs(stored["targets"], probs, bundle.labels, attributes, test["PatientID"].to_numpy(),
                          n_resamples, seed)
    (bundle.path / "metrics").mkdir(exist_ok=True)
    table.to_csv(bundle.path / "metrics" / AUDIT_CSV, index=False)
    bundle.update(metrics={"shortcut_audit": {
        "model": "CTP", "resamples": n_resamples, "seed": seed, "table": f"metrics/{AUDIT_CSV}",
        "rows": table.replace({np.nan: None}).to_dict(orient="records")}}).save()
    return table


def audit_markdown(rows: list[dict]) -> str:
    """One row per label and subgroup: 'AUC [low, high]' per label as columns."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return ""
    labels = list(dict.fromkeys(frame["label"]))
    lines = ["| attribute | group | images | " + " | ".join(labels) + " |",
             "|---|---|---|" + "---|" * len(labels)]
    for (attribute, group), part in frame.groupby(["attribute", "group"], sort=False):
        cells = []
        for label in labels:
            row = part[part["label"] == label].iloc[0]
            auc, low, high = row["auc"], row["auc_low"], row["auc_high"]
            if auc is None or (isinstance(auc, float) and np.isnan(auc)):
                cells.append("–")
            elif low is None or high is None or (isinstance(low, float) and np.isnan(low)):
                cells.append(f"{auc:.2f} ({row['positives']} pos.)")
            else:
                cells.append(f"{auc:.2f} [{low:.2f}, {high:.2f}]")
        lines.append(f"| {attribute} | {group} | {part['images'].iloc[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
