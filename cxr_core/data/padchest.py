"""Read the PadChest metadata table and parse its `Labels` column safely."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.errors import DataError
from .term_tree import normalise_label

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("ImageID", "ImageDir", "PatientID", "Projection", "Labels")
#: Marker meaning "image excluded from reporting": its labels are not trustworthy.
EXCLUDE_MARKER = "exclude"
#: Marker about image quality, not a finding: removed from the label list, image kept.
SUBOPTIMAL_MARKER = "suboptimal study"


class LabelParseError(ValueError):
    """A `Labels` cell is not a Python-literal list of strings."""


def parse_labels(cell: object) -> list[str]:
    """Parse one `Labels` cell into normalised, de-duplicated labels in their original order.

    Uses `ast.literal_eval` (never `eval`). NaN/None give an empty list; anything that is not a
    list of strings raises `LabelParseError`.
    """
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    if isinstance(cell, (list, tuple)):
        items = cell
    else:
        text = str(cell).strip()
        if not text or text.lower() == "nan":
            return []
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise LabelParseError(f"not a Python literal list: {text[:60]!r}") from exc
        if not isinstance(items, (list, tuple)):
            raise LabelParseError(f"not a list: {text[:60]!r}")
    labels: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise LabelParseError(f"list entry is not text: {item!r}")
        key = normalise_label(item)
        if key and key not in labels:
            labels.append(key)
    return labels


def read_padchest_csv(path: str | Path) -> pd.DataFrame:
    """Read the PadChest table (`.csv` or `.csv.gz`), keeping every column as text."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"PadChest CSV not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=True, low_memory=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, EOFError, ValueError) as exc:
        raise DataError(f"PadChest CSV {path} could not be read: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"PadChest CSV {path} lacks the column(s): {', '.join(missing)}.")
    return frame


def filter_rows(
    frame: pd.DataFrame,
    projections: tuple[str, ...] = ("PA",),
    keep_pediatric: bool = False,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep usable rows and parse their labels; return the kept rows and dropped counts by reason.

    Policy (documented in docs/labels.md): rows of other projections, pediatric rows (unless kept),
    rows with missing ImageID/PatientID, no/empty/unparseable labels, or the 'exclude' marker are
    dropped. The 'suboptimal study' marker is removed; a row left with no label is dropped.
    """
    dropped: dict[str, int] = {}

    def drop(mask: pd.Series, reason: str) -> None:
        count = int(mask.sum())
        if count:
            dropped[reason] = dropped.get(reason, 0) + count

    projection = frame["Projection"].fillna("").str.strip().str.upper()
    wanted = {p.upper() for p in projections}
    keep = projection.isin(wanted)
    drop(~keep, "projection not " + "/".join(sorted(wanted)))
    rows = frame[keep]

    if not keep_pediatric and "Pediatric" in rows.columns:
        pediatric = rows["Pediatric"].fillna("").str.strip().str.upper().eq("PED")
        drop(pediatric, "pediatric")
        rows = rows[~pediatric]

    ids_missing = rows["ImageID"].isna() | rows["PatientID"].isna()
    drop(ids_missing, "missing ImageID or PatientID")
    rows = rows[~ids_missing]

    parsed: list[list[str] | None] = []
    for cell in rows["Labels"].tolist():
        try:
            parsed.append(parse_labels(cell))
        except LabelParseError:
            parsed.append(None)
    parsed_series = pd.Series(parsed, index=rows.index, dtype=object)
    unparseable = parsed_series.isna()
    drop(unparseable, "unparseable labels")
    no_labels = rows["Labels"].isna() & ~unparseable
    empty = parsed_series.map(lambda v: v == [] if v is not None else False) & ~no_labels
    drop(no_labels, "no labels")
    drop(empty, "empty label list")
    good = ~(unparseable | no_labels | empty)
    rows, parsed_series = rows[good], parsed_series[good]

    excluded = parsed_series.map(lambda v: EXCLUDE_MARKER in v)
    drop(excluded, "marked 'exclude'")
    rows, parsed_series = rows[~excluded], parsed_series[~excluded]

    cleaned = parsed_series.map(lambda v: [x for x in v if x != SUBOPTIMAL_MARKER])
    only_marker = cleaned.map(len).eq(0)
    drop(only_marker, "only 'suboptimal study'")
    rows = rows[~only_marker].copy()
    rows["labels"] = cleaned[~only_marker]

    duplicated = rows["ImageID"].duplicated(keep="first")
    drop(duplicated, "duplicate ImageID")
    rows = rows[~duplicated]
    log.info("kept %d of %d rows", len(rows), len(frame))
    return rows.reset_index(drop=True), dropped
