"""The bundled demonstration model's data: the public X-rays in `../shared/data` (NIH
ChestX-ray14 sample and the COVID-19 image data collection of Cohen et al.) as one label table
in the PadChest vocabulary, and its patient-level split in the same format as `prepare`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.errors import DataError
from .split import split_quality, stratified_patient_split
from .term_tree import TermTree, normalise_label

log = logging.getLogger(__name__)

NIH = "nih-sample"
COHEN = "cxr-public"
SOURCES = (NIH, COHEN)
SOURCE_TITLES = {
    NIH: "NIH Clinical Center ChestX-ray14 sample (Wang et al., CVPR 2017)",
    COHEN: "COVID-19 image data collection (Cohen et al.)",
}
#: Source spellings that differ from the PadChest term tree's (NIH 'Edema' is pulmonary edema).
NIH_TO_PADCHEST = {"edema": "pulmonary edema"}
#: cxr-public finding nodes that have a PadChest term (the other nodes are organisms).
COHEN_TO_PADCHEST = {"No Finding": "normal", "Pneumonia": "pneumonia", "Viral": "viral pneumonia",
                     "COVID-19": "COVID 19"}
#: A label is kept when the reference source alone has this many positives and negatives:
#: at the 20 % test share that is about 10 of each among unseen NIH patients' test images.
MIN_EACH_CLASS = 50


def read_metadata(data_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Labelled rows of cxr-public's `metadata.csv` and its finding-node columns."""
    meta = _read_csv(Path(data_dir) / "metadata.csv")
    nodes = list(meta.columns[meta.columns.get_loc("license") + 1:])
    labelled = meta[meta["finding"].notna() & (meta["finding"].astype(str).str.len() > 0)].copy()
    return labelled.reset_index(drop=True), nodes


def read_nih_sample(data_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Rows of the NIH sample's `metadata.csv` and its finding columns (PadChest spelling)."""
    meta = _read_csv(Path(data_dir) / "metadata.csv")
    if "license" not in meta.columns:
        raise DataError(f"{data_dir}/metadata.csv lacks the 'license' column.")
    findings = list(meta.columns[meta.columns.get_loc("license") + 1:])
    if not findings:
        raise DataError(f"{data_dir}/metadata.csv has no finding columns.")
    return meta, findings


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"No metadata.csv in {path.parent}.")
    return pd.read_csv(path, dtype={"patient_id": str})


def padchest_name(name: str, tree: TermTree) -> str:
    """The term tree's own spelling of a finding (source spellings mapped first)."""
    key = normalise_label(NIH_TO_PADCHEST.get(normalise_label(name), name))
    return tree.display.get(key, key)


def combined_table(data_root: Path, tree: TermTree) -> tuple[pd.DataFrame, list[str]]:
    """Both sources as one table: ImageID, ImageDir (relative to `data_root`), PatientID
    (prefixed by source), source, view, licence and one 0/1 column per PadChest finding.

    A finding a source does not annotate is unknown there (NaN), not absent: cxr-public says
    nothing of effusions, and its pneumonia X-rays often show one."""
    nih, nih_findings = read_nih_sample(Path(data_root) / NIH)
    cohen, _ = read_metadata(Path(data_root) / COHEN)
    parts = []
    for source, frame, mapping in (
            (NIH, nih, {f: padchest_name(f, tree) for f in nih_findings}),
            (COHEN, cohen, {n: padchest_name(p, tree) for n, p in COHEN_TO_PADCHEST.items()})):
        part = pd.DataFrame({
            "ImageID": frame["image"].map(lambda p: Path(p).name),
            "ImageDir": frame["image"].map(lambda p, s=source: f"{s}/{Path(p).parent.as_posix()}"),
            "PatientID": source + "-" + frame["patient_id"].astype(str),
            "source": source,
            "view": frame["view"].fillna("?").astype(str),
            "license": frame["license"].fillna("").astype(str).str.strip(),
        })
        for column, label in mapping.items():
            part[label] = frame[column].fillna(0).astype(np.float64).to_numpy()
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)  # a finding one source lacks becomes NaN there
    findings = [c for c in table.columns if c not in ("ImageID", "ImageDir", "PatientID", "source",
                                                     "view", "license")]
    table[findings] = table[findings].astype(np.float64)
    if table["ImageID"].map(lambda i: Path(i).stem).duplicated().any():
        raise DataError("Two source images share a file name; the crop cache needs unique names.")
    return table, findings


def select_labels(table: pd.DataFrame, findings: list[str], reference: str = NIH,
                  min_each_class: int = MIN_EACH_CLASS) -> list[str]:
    """Findings with >= `min_each_class` positives and negatives within the reference source,
    most frequent first: a label must be learnable and testable on one collection's own
    images, so a finding only one collection has (COVID 19) cannot be a collection detector."""
    ref = table[table["source"] == reference]
    counts, known = ref[findings].sum(), ref[findings].notna().sum()
    keep = [f for f in findings
            if counts[f] >= min_each_class and known[f] - counts[f] >= min_each_class]
    return sorted(keep, key=lambda f: (-int(table[f].sum()), f))


def source_of(image_dirs: pd.Series) -> pd.Series:
    """The source collection of split rows, from their ImageDir (`<source>/images`)."""
    return image_dirs.astype(str).map(lambda d: d.split("/")[0])


def build_split(data_root: Path, out_csv: Path, tree: TermTree, seed: int = 0,
                min_each_class: int = MIN_EACH_CLASS, test_images: set[str] | None = None) -> dict:
    """Write a `split.csv` over both sources (patient-level, stratified by label and source);
    returns the data summary stored in the bundle manifest. Every patient with an image (file
    name) in `test_images` goes to test: X-rays kept unseen for a later check, such as the
    radiologists' boxes of `localise`."""
    table, findings = combined_table(data_root, tree)
    labels = select_labels(table, findings, min_each_class=min_each_class)
    unknown = table[labels].isna().to_numpy()
    matrix = np.nan_to_num(table[labels].to_numpy(np.float64)).astype(np.uint8)  # known positives
    by_source = np.stack([(table["source"] == s).to_numpy(np.uint8) for s in SOURCES], axis=1)
    # unknowns are stratified too, so every split gets its share of each label's known images
    with_unknown = unknown[:, unknown.any(axis=0)].astype(np.uint8)
    names = table["ImageID"].map(lambda i: Path(str(i)).name)
    held_patients = set(table.loc[names.isin(set(test_images or ())), "PatientID"])
    held = table["PatientID"].isin(held_patients).to_numpy()
    split = np.full(len(table), "test", dtype=object)
    split[~held] = stratified_patient_split(
        table["PatientID"].to_numpy()[~held],
        np.hstack([matrix, by_source, with_unknown])[~held], seed=seed)
    out = table[["ImageID", "ImageDir", "PatientID"]].assign(split=split)
    out = pd.concat([out, table[labels].astype("Int64").reset_index(drop=True)], axis=1)  # NaN: empty
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(out_csv, index=False)
    quality = split_quality(split, table["PatientID"].to_numpy(), matrix, labels)
    per_source = {}
    for source in SOURCES:
        rows = (table["source"] == source).to_numpy()
        per_source[source] = {
            "images": int(rows.sum()),
            "patients": int(table.loc[rows, "PatientID"].nunique()),
            "images_per_split": {s: int(((split == s) & rows).sum()) for s in ("train", "val", "test")},
            "positives": {f: int(table.loc[rows, f].sum()) for f in findings},
            "unknown": [f for f in findings if table.loc[rows, f].isna().all()],
        }
    licences = table["license"].replace("", "not stated")
    return {
        "images_root": str(Path(data_root).resolve()),
        "source": "; ".join(f"{s}: {SOURCE_TITLES[s]}, 8-bit PNG, longest side 512 px"
                            for s in SOURCES),
        "images": int(len(out)),
        "views": table["view"].value_counts().to_dict(),
        "patients_per_split": quality.patients,
        "images_per_split": quality.images,
        "per_source": per_source,
        "labels": {lab: {s: int(quality.counts.loc[lab, s]) for s in quality.counts.columns}
                   for lab in labels},
        "unknown_labels": {lab: {s: int((unknown[:, k] & (split == s)).sum())
                                 for s in ("train", "val", "test")} for k, lab in enumerate(labels)},
        "label_rule": (f"PadChest findings with >= {min_each_class} positive and >= "
                       f"{min_each_class} negative images within {NIH} (about 10 of each in its "
                       "test share); a finding a source does not annotate is unknown there (empty "
                       "in split.csv): left out of the loss, the metrics and threshold fitting"),
        "labels_not_kept": {f: int(table[f].sum()) for f in findings if f not in labels},
        "worst_share_deviation": round(quality.worst_deviation, 4),
        "licences": licences.value_counts().to_dict(),
        "groups": {lab: tree.general_labels(lab) for lab in labels},
        "held_out_for_test": {"patients": len(held_patients), "images": int(held.sum())},
    }
