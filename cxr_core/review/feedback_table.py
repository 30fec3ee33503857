"""The Feedback page's tables and CSV export: readable headers, a "latest" flag, no empty cells.

Pure pandas over `FeedbackStore.reviews_frame()`, so the page stays layout only and all of this
is tested without Streamlit.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..base.errors import CxrError
from ..imaging.image_io import load_image
from .feedback import agreement_stats

log = logging.getLogger(__name__)

EMPTY = "–"  # shown instead of None/NaN/empty lists
THUMBNAIL_PX = 96
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _as_list(value) -> list:
    if isinstance(value, str):
        value = json.loads(value)
    return list(value) if isinstance(value, (list, tuple)) else []


def _as_dict(value) -> dict:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value) if isinstance(value, dict) else {}


def _other_findings(value) -> list[str]:
    """The findings an expert added that the model does not list (none in older rows)."""
    return [str(item.get("finding", "")) for item in _as_list(value) if isinstance(item, dict)]


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column of the stored rows, or empty values when an older frame lacks it."""
    return frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index)


def mark_latest(frame: pd.DataFrame) -> pd.Series:
    """True where the row is its reviewer's latest version for that image and bundle (computed
    on the rows given: pass every row, then filter)."""
    if frame.empty:
        return pd.Series([], dtype=bool, index=frame.index)
    newest = frame.groupby(["image_sha256", "bundle_id", "reviewer"])["version"].transform("max")
    return frame["version"] == newest


def _decisions_text(value) -> str:
    decisions = _as_dict(value)
    return "; ".join(f"{label}: {decision}" for label, decision in decisions.items()) or EMPTY


def _probabilities_text(model_output) -> str:
    output = _as_dict(model_output)
    labels, probs = output.get("labels", []), output.get("probabilities", [])
    return "; ".join(f"{label}={float(p):.3f}" for label, p in zip(labels, probs)) or EMPTY


def review_rows(frame: pd.DataFrame, latest: pd.Series, thumbnails: dict[str, str] | None = None
                ) -> pd.DataFrame:
    """One readable row per stored review (every version), newest first."""
    rows = pd.DataFrame({
        "Image": frame["image_sha256"].map(lambda s: (thumbnails or {}).get(s, "")),
        "Image id": frame["image_sha256"].str[:12],
        "Submitted (UTC)": pd.to_datetime(frame["created_at"], utc=True).dt.strftime("%Y-%m-%d %H:%M"),
        "Reviewer": frame["reviewer"],
        "Version": frame["version"].astype(int),
        "Latest": latest.loc[frame.index].map({True: "yes", False: "no"}),
        "Model findings": frame["model_labels"].map(lambda v: ", ".join(_as_list(v)) or EMPTY),
        "Expert findings": frame["expert_labels"].map(lambda v: ", ".join(_as_list(v)) or EMPTY),
        "Added by expert": frame["added_labels"].map(lambda v: ", ".join(_as_list(v)) or EMPTY),
        "Other findings (not in the model)": _column(frame, "other_findings").map(
            lambda v: ", ".join(_other_findings(v)) or EMPTY),
        "Decisions": frame["decisions"].map(_decisions_text),
        "Comment": frame["comment"].map(lambda c: c if isinstance(c, str) and c else EMPTY),
        "Model": frame["bundle_id"],
    }, index=frame.index)
    if not thumbnails:
        rows = rows.drop(columns="Image")
    return rows.iloc[::-1].reset_index(drop=True)


def _share(value: float, count: int, noun: str) -> str:
    if count == 0 or value is None or (isinstance(value, float) and math.isnan(value)):
        return f"no {noun}s yet"
    agreeing = round(value * count)
    return f"{value:.0%} ({agreeing} of {count} {noun}{'s' if count != 1 else ''})"


def agreement_table(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per finding, as text: how often the expert agreed with the model, and experts with each other."""
    stats = agreement_stats(frame, labels)
    return pd.DataFrame({
        "Finding": stats["label"],
        "Expert agrees with model": [_share(v, int(n), "review") for v, n in
                                     zip(stats["model_expert_agreement"], stats["reviews"])],
        "Experts agree with each other": [_share(v, int(n), "reviewer pair") for v, n in
                                          zip(stats["inter_expert_agreement"], stats["reviewer_pairs"])],
    })


def _safe_cell(value: str) -> str:
    """Text a spreadsheet will not run as a formula (CSV injection)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def export_frame(frame: pd.DataFrame, latest: pd.Series) -> pd.DataFrame:
    """The rows given, with everything a retraining or an audit needs, one column per fact."""
    columns = ["image_sha256", "bundle_id", "label_set", "reviewer", "version", "latest",
               "created_at", "model_labels", "expert_labels", "added_labels", "other_findings",
               "decisions", "probabilities", "thresholds", "comment"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    output = frame["model_output"].map(_as_dict)

    def by_label(key: str) -> pd.Series:
        return output.map(lambda o: "|".join(f"{lab}={float(v):.6f}" for lab, v in
                                             zip(o.get("labels", []), o.get(key, []))))

    out = pd.DataFrame({
        "image_sha256": frame["image_sha256"],
        "bundle_id": frame["bundle_id"],
        "label_set": frame["label_set"],
        "reviewer": frame["reviewer"].map(_safe_cell),
        "version": frame["version"].astype(int),
        "latest": latest.loc[frame.index].astype(bool),
        "created_at": pd.to_datetime(frame["created_at"], utc=True).map(lambda t: t.isoformat()),
        "model_labels": frame["model_labels"].map(lambda v: "|".join(_as_list(v))),
        "expert_labels": frame["expert_labels"].map(lambda v: "|".join(_as_list(v))),
        "added_labels": frame["added_labels"].map(lambda v: "|".join(_as_list(v))),
        "other_findings": _column(frame, "other_findings").map(
            lambda v: _safe_cell("|".join(_other_findings(v)))),
        "decisions": frame["decisions"].map(lambda v: "|".join(f"{k}={d}" for k, d in _as_dict(v).items())),
        "probabilities": by_label("probabilities"),
        "thresholds": by_label("thresholds"),
        "comment": frame["comment"].fillna("").map(_safe_cell),
    })
    return out[columns].reset_index(drop=True)


def thumbnail_data_url(path: Path, size: int = THUMBNAIL_PX) -> str | None:
    """A small PNG of a stored image as a data URL (for a table cell), or None if unreadable."""
    try:
        image = load_image(path, filename=path.stem)  # stored as <sha256>.img: sniff the content
    except CxrError as exc:
        log.warning("no thumbnail for %s: %s", path.stem[:12], exc)
        return None
    height, width = image.original_size
    scale = size / max(height, width)
    small = cv2.resize(image.pixels, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", np.clip(small * 255, 0, 255).astype(np.uint8))
    if not ok:  # pragma: no cover
        return None
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")
