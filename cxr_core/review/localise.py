"""`localise`: do a bundle's maps point at the findings? Radiologists' boxes against the maps
the Review page shows, beside two baselines, with patient-level intervals; stored in the bundle.

Every boxed X-ray goes through the product path (loader, segmentation, crop, engines, flips,
ensemble, paste back at display size); each box is measured against the map of its finding,
the map uniform over the lung fields, and the bundle's average map of that finding over these
X-rays pasted into the image's crop box (what a model that ignores the image would show).
Maps are measured as computed, never masked. The measures are `evaluation.localisation`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..base.errors import CxrError, DataError
from ..data.label_sets import in_lungs
from ..explain.attention import lung_energy_share
from ..explain.occlusion import MAP_METHOD_NAMES
from ..evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from ..evaluation.localisation import (
    SAMENESS_FLAG,
    average_map,
    bootstrap_mean,
    box_measures,
    format_interval,
    map_sameness,
    markdown_table,
    scale_box,
    summarise,
    uniform_map,
)
from ..evaluation.model_card import write_model_card
from ..explain.overlay import to_original
from ..modeling.bundle import Bundle
from .pipeline import Review, Reviewer

log = logging.getLogger(__name__)

BOX_COLUMNS = ("image", "finding", "x", "y", "w", "h")
#: Files `localise` writes into its output folder and into `<bundle>/metrics/`.
SUMMARY_CSV = "localisation.csv"
SUMMARY_MD = "localisation.md"
BOXES_CSV = "localisation_boxes.csv"
SAMENESS_CSV = "localisation_sameness.csv"
LUNG_ENERGY_CSV = "localisation_lung_energy.csv"
SHEET_PNG = "localisation_cases.png"
#: Cases of each kind (best, worst) on the contact sheet.
SHEET_CASES = 4


@dataclass
class LocalisationResult:
    """What `localise` measured and where it wrote it."""

    summary: pd.DataFrame  # per finding and overall (see `evaluation.localisation.summarise`)
    boxes: pd.DataFrame  # one row per box and source
    sameness: pd.DataFrame  # per label: map sameness over the X-rays and the flag
    unknown: list[str]  # findings of the boxes that are not in the bundle's labels
    failures: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)
    sheet: bytes = b""  # the contact sheet's PNG
    written: list[Path] = field(default_factory=list)
    #: per lung finding and for all of them: share of its map on the lung fields over every
    #: reviewed X-ray (boxed for that finding or not), beside a map uniform over the crop
    lung_energy: pd.DataFrame = field(default_factory=pd.DataFrame)
    map_method: str = "gradcam"  # how the maps measured were computed


def read_boxes(path: Path) -> pd.DataFrame:
    """The boxes CSV (image, finding, x, y, w, h in the image's pixels), findings normalised
    (stripped, lower-case); one clear sentence when it cannot be used."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"The boxes file {path} could not be read as CSV ({exc}).") from exc
    missing = [c for c in BOX_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"The boxes file {path} lacks the column(s) {', '.join(missing)} "
                        f"(needed: {', '.join(BOX_COLUMNS)}).")
    numbers = frame[["x", "y", "w", "h"]].apply(pd.to_numeric, errors="coerce")
    if numbers.isna().any().any() or (numbers[["w", "h"]] <= 0).any().any():
        raise DataError(f"The boxes file {path} has boxes whose x, y, w or h is not a number "
                        "or whose width or height is not positive.")
    frame[["x", "y", "w", "h"]] = numbers
    frame["image"] = frame["image"].astype(str)
    frame["finding"] = frame["finding"].astype(str).str.strip().str.lower()
    return frame


def patient_ids(boxes: pd.DataFrame, metadata: Path | None) -> pd.Series:
    """The patient of each box: the boxes' own `patient_id` column, else the metadata CSV's
    (image, patient_id; matched by path or file name), else the image itself."""
    if "patient_id" in boxes.columns:
        return boxes["patient_id"].astype(str)
    if metadata is None:
        return boxes["image"]
    table = pd.read_csv(metadata, dtype=str)
    if not {"image", "patient_id"} <= set(table.columns):
        raise DataError(f"The metadata file {metadata} needs the columns image and patient_id.")
    by_path = dict(zip(table["image"], table["patient_id"]))
    by_name = dict(zip(table["image"].map(lambda s: Path(s).name), table["patient_id"]))
    return pd.Series([by_path.get(img, by_name.get(Path(img).name, img)) for img in boxes["image"]],
                     index=boxes.index)


def resolve_image(images_dir: Path, image: str) -> Path | None:
    """An image named in the boxes CSV: relative to the images folder, or by file name in it."""
    for candidate in (Path(images_dir) / image, Path(images_dir) / Path(image).name):
        if candidate.is_file():
            return candidate
    return None


def _bundle_label(finding: str, labels: list[str]) -> int | None:
    lowered = [label.strip().lower() for label in labels]
    return lowered.index(finding) if finding in lowered else None


def localise(bundle_dir: Path, images_dir: Path, boxes_csv: Path, out_dir: Path,
             metadata: Path | None = None, engine: str | None = None,
             n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, batch_size: int = 8,
             store: bool = True, reviewer: Reviewer | None = None,
             map_method: str | None = None) -> LocalisationResult:
    """Measure the bundle's maps against the boxes, write the tables and the contact sheet into
    `out_dir` and, with `store`, into `<bundle>/metrics/` with a manifest entry. `map_method`:
    "gradcam" or "occlusion" (default: the bundle's choice); the tables say which."""
    boxes = read_boxes(boxes_csv)
    boxes["patient"] = patient_ids(boxes, metadata)
    reviewer = reviewer or Reviewer.from_paths(bundle_dir, engine=engine, map_method=map_method)
    labels = reviewer.bundle.labels
    boxes["label_index"] = [_bundle_label(f, labels) for f in boxes["finding"]]
    unknown = sorted(boxes.loc[boxes["label_index"].isna(), "finding"].unique())
    if unknown:
        log.warning("findings not in the bundle's labels, skipped: %s", ", ".join(unknown))
    boxes = boxes[boxes["label_index"].notna()].astype({"label_index": int})
    if boxes.empty:
        raise DataError("None of the boxes names a finding of this bundle "
                        f"(its labels: {', '.join(labels)}).")
    reviews, failures = _review_images(reviewer, images_dir, sorted(boxes["image"].unique()), batch_size)
    boxes = boxes[boxes["image"].isin(reviews)]
    if boxes.empty:
        raise DataError("No boxed image could be reviewed; see the failures listed above.")
    averages = _average_crop_maps(list(reviews.values()), len(labels))
    records = _measure(boxes, reviews, averages)
    summary = summarise(records, n_resamples, seed)
    sameness = pd.DataFrame({"label": labels,
                             "sameness": [map_sameness([r.crop_map(k) for r in reviews.values()])
                                          for k in range(len(labels))]})
    sameness["flagged"] = sameness["sameness"] >= SAMENESS_FLAG
    for row in sameness[sameness["flagged"]].itertuples():
        log.warning("label '%s': its map is nearly the same on every X-ray (sameness %.2f)",
                    row.label, row.sameness)
    patient_of = dict(zip(boxes["image"], boxes["patient"].astype(str)))
    lung_energy = lung_energy_table(reviews, labels, patient_of, n_resamples, seed)
    result = LocalisationResult(summary, records, sameness, unknown, failures, lung_energy=lung_energy,
                                map_method=reviewer.map_method)
    result.sheet = contact_sheet(records, reviews)
    result.written = write_results(result, Path(out_dir), n_resamples, seed)
    if store:
        result.written += store_in_bundle(reviewer.bundle, result, n_resamples, seed)
    return result


def _review_images(reviewer: Reviewer, images_dir: Path, names: list[str],
                   batch_size: int) -> tuple[dict[str, Review], list[tuple[str, str]]]:
    """Review every boxed image (refused ones too: the input check is not the question here)."""
    reviews: dict[str, Review] = {}
    failures: list[tuple[str, str]] = []
    with tqdm(total=len(names), desc="localise", unit="img", disable=None) as bar:
        for start in range(0, len(names), batch_size):
            loaded, kept = [], []
            for name in names[start:start + batch_size]:
                path = resolve_image(images_dir, name)
                if path is None:
                    failures.append((name, f"not found in {images_dir}"))
                    continue
                try:
                    loaded.append(reviewer.load(path))
                    kept.append(name)
                except CxrError as exc:
                    failures.append((name, str(exc)))
            if loaded:
                reviews.update(zip(kept, reviewer.review(loaded)))
            bar.update(min(batch_size, len(names) - start))
            log.info("localise: %d of %d images reviewed", min(start + batch_size, len(names)), len(names))
    return reviews, failures


def _average_crop_maps(reviews: list[Review], n_labels: int) -> list[np.ndarray]:
    """Per label, the mean crop-space map over the reviewed X-rays."""
    size = reviews[0].crop_map(0).shape
    return [average_map([r.crop_map(k) for r in reviews], size) for k in range(n_labels)]


def _measure(boxes: pd.DataFrame, reviews: dict[str, Review], averages: list[np.ndarray]) -> pd.DataFrame:
    """One row per box and source (model, uniform over the lungs, average map)."""
    rows = []
    for box in boxes.itertuples():
        review = reviews[box.image]
        k = int(box.label_index)
        display = review.display_size()
        lungs = review.lungs_display()
        in_display = scale_box((box.x, box.y, box.w, box.h), review.image.original_size, display)
        maps = {"model": review.heatmap_display(k),
                "uniform_lungs": uniform_map(lungs),
                "average_map": to_original(averages[k], review.box_display(), display)}
        for source, heat in maps.items():
            rows.append({"image": box.image, "patient": str(box.patient), "finding": box.finding,
                         "source": source, "x": box.x, "y": box.y, "w": box.w, "h": box.h,
                         **box_measures(heat, in_display, lungs)})
    return pd.DataFrame(rows)


#: The row of `lung_energy_table` over every lung finding together.
ALL_LUNG_FINDINGS = "all lung findings"


def lung_energy_table(reviews: dict[str, Review], labels: list[str], patient_of: dict[str, str],
                      n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """Per finding that lies on the lungs (`label_sets.in_lungs`), and for all of them: the mean
    share of its map's energy on the lung fields over the reviewed X-rays, with a patient-level
    interval, beside a map uniform over the crop box (what a map that ignores the lungs gets).
    X-rays whose segmentation fell back (lungs unknown) are left out."""
    usable = {name: r for name, r in reviews.items() if not r.pre.fallback and r.lungs_display().any()}
    lungs = {name: r.lungs_display() for name, r in usable.items()}
    groups = [patient_of.get(name, name) for name in usable]
    uniform = []  # per X-ray: the share of a map uniform over the crop box that lies on the lungs
    for name, review in usable.items():
        crop = np.zeros(lungs[name].shape, np.float32)
        x0, y0, x1, y1 = review.box_display()
        crop[y0:y1, x0:x1] = 1.0
        uniform.append(lung_energy_share(crop, lungs[name]))
    uniform_mean = float(np.nanmean(uniform)) if uniform else np.nan
    rows, pooled, pooled_groups = [], [], []
    for k, label in enumerate(labels):
        if not in_lungs(label):
            continue
        values = [lung_energy_share(review.heatmap_display(k), lungs[name]) for name, review in usable.items()]
        mean, low, high = bootstrap_mean(values, groups, n_resamples, seed)
        rows.append({"finding": label, "xrays": len(values), "energy_on_lungs": mean, "low": low,
                     "high": high, "uniform_crop": uniform_mean})
        pooled += values
        pooled_groups += groups
    if rows:
        mean, low, high = bootstrap_mean(pooled, pooled_groups, n_resamples, seed)
        rows.append({"finding": ALL_LUNG_FINDINGS, "xrays": len(usable), "energy_on_lungs": mean,
                     "low": low, "high": high, "uniform_crop": uniform_mean})
    return pd.DataFrame(rows, columns=["finding", "xrays", "energy_on_lungs", "low", "high",
                                       "uniform_crop"])


def lung_energy_markdown(table: pd.DataFrame) -> str:
    lines = ["| finding | X-rays | energy on lungs | map uniform over the crop |", "|---|---|---|---|"]
    for row in table.itertuples():
        lines.append(f"| {row.finding} | {row.xrays} | {format_interval(row.energy_on_lungs, row.low, row.high)} "
                     f"| {row.uniform_crop:.2f} |")
    return "\n".join(lines) + "\n"


def sameness_markdown(sameness: pd.DataFrame) -> str:
    lines = ["| label | map sameness | flagged |", "|---|---|---|"]
    for row in sameness.itertuples():
        value = "–" if not np.isfinite(row.sameness) else f"{row.sameness:.2f}"
        lines.append(f"| {row.label} | {value} | {'nearly the same on every X-ray' if row.flagged else ''} |")
    return "\n".join(lines) + "\n"


def report_markdown(result: LocalisationResult, n_resamples: int, seed: int) -> str:
    """The Markdown page: the summary table, the notes, the sameness table, what was skipped."""
    model = result.boxes[result.boxes["source"] == "model"]
    text = [(f"Maps: {MAP_METHOD_NAMES.get(result.map_method, result.map_method)}. "
             f"Boxes measured: {len(model)} on {model['image'].nunique()} X-rays of "
            f"{model['patient'].nunique()} patients. Values are means over boxes with 95% "
            f"patient-level bootstrap intervals ({n_resamples} resamples, seed {seed}).\n\n"),
            markdown_table(result.summary),
            ("\nPointing game: the map's peak inside the box (tolerance 15 px at 1024 px). Energy in "
            "box: share of the map inside the box. Found at IoBB >= t: the map thresholded at 0.7 "
            "of its maximum, a region's box overlaps the radiologist's box by at least t of the "
            "region's area (Wang et al. 2017). Energy on lungs: share of the map on the lung "
            "fields (the uniform-over-lungs map has 1 by construction).\n"),
            ("\nMap sameness per label (median correlation of a map with the mean of the others; "
            f"flagged at >= {SAMENESS_FLAG}: the map hardly depends on the X-ray):\n\n"),
            sameness_markdown(result.sameness)]
    if not result.lung_energy.empty:
        text += [("\nEnergy on the lungs of each lung finding's map over every reviewed X-ray "
                  "(whatever its box), beside a map uniform over the crop box:\n\n"),
                 lung_energy_markdown(result.lung_energy)]
    if result.unknown:
        text.append(f"\nFindings not in the bundle's labels, skipped: {', '.join(result.unknown)}.\n")
    if result.failures:
        text.append("\nImages skipped: " + "; ".join(f"{n} ({e})" for n, e in result.failures) + ".\n")
    return "".join(text)


def write_results(result: LocalisationResult, out_dir: Path, n_resamples: int, seed: int) -> list[Path]:
    """The tables (CSV, Markdown) and the contact sheet into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result.summary.to_csv(out_dir / SUMMARY_CSV, index=False)
    result.boxes.to_csv(out_dir / BOXES_CSV, index=False)
    result.sameness.to_csv(out_dir / SAMENESS_CSV, index=False)
    result.lung_energy.to_csv(out_dir / LUNG_ENERGY_CSV, index=False)
    (out_dir / SUMMARY_MD).write_text(report_markdown(result, n_resamples, seed))
    (out_dir / SHEET_PNG).write_bytes(result.sheet)
    return [out_dir / name for name in (SUMMARY_CSV, BOXES_CSV, SAMENESS_CSV, LUNG_ENERGY_CSV,
                                        SUMMARY_MD, SHEET_PNG)]


def store_in_bundle(bundle: Bundle, result: LocalisationResult, n_resamples: int, seed: int) -> list[Path]:
    """Copy the tables into `<bundle>/metrics/` and record them in the manifest (`Bundle.update`)."""
    metrics_dir = bundle.path / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    result.summary.to_csv(metrics_dir / SUMMARY_CSV, index=False)
    result.sameness.to_csv(metrics_dir / SAMENESS_CSV, index=False)
    result.lung_energy.to_csv(metrics_dir / LUNG_ENERGY_CSV, index=False)
    (metrics_dir / SUMMARY_MD).write_text(report_markdown(result, n_resamples, seed))
    if result.sheet:
        (metrics_dir / SHEET_PNG).write_bytes(result.sheet)
    overall = result.summary[result.summary["finding"] == "overall"].set_index("measure")
    model_rows = result.boxes[result.boxes["source"] == "model"]
    bundle.update(metrics={"localisation": {
        "boxes": len(model_rows), "images": int(model_rows["image"].nunique()),
        "patients": int(model_rows["patient"].nunique()),
        "findings": sorted(model_rows["finding"].unique()), "unknown_findings": result.unknown,
        "resamples": n_resamples, "seed": seed, "map_method": result.map_method,
        "overall": {measure: {"model": row["model"], "model_low": row["model_low"],
                              "model_high": row["model_high"], "uniform_lungs": row["uniform_lungs"],
                              "average_map": row["average_map"]}
                    for measure, row in overall.iterrows()},
        "flagged_labels": result.sameness.loc[result.sameness["flagged"], "label"].tolist(),
        "lung_energy": _lung_energy_entry(result.lung_energy),
        "tables": {"summary": f"metrics/{SUMMARY_CSV}", "sameness": f"metrics/{SAMENESS_CSV}",
                   "lung_energy": f"metrics/{LUNG_ENERGY_CSV}",
                   "markdown": f"metrics/{SUMMARY_MD}", "cases": f"metrics/{SHEET_PNG}"},
    }})
    card = write_model_card(bundle)  # the card's localisation section; saves the manifest
    return [metrics_dir / SUMMARY_CSV, metrics_dir / SAMENESS_CSV, metrics_dir / LUNG_ENERGY_CSV,
            metrics_dir / SUMMARY_MD, metrics_dir / SHEET_PNG, card]


def _lung_energy_entry(table: pd.DataFrame) -> dict | None:
    """The all-lung-findings row of the lung-energy table, for the manifest (None without one)."""
    rows = table[table["finding"] == ALL_LUNG_FINDINGS] if not table.empty else table
    if rows.empty:
        return None
    row = rows.iloc[0]
    clean = lambda v: None if not np.isfinite(v) else round(float(v), 4)  # noqa: E731
    return {"xrays": int(row["xrays"]), "model": clean(row["energy_on_lungs"]),
            "model_low": clean(row["low"]), "model_high": clean(row["high"]),
            "uniform_crop": clean(row["uniform_crop"])}


def stored_localisation(bundle: Bundle) -> dict | None:
    """What `localise` stored in a bundle: the manifest entry, the summary, sameness and lung-energy
    tables and the contact sheet's PNG bytes (None when absent); None when the bundle has no entry."""
    entry = bundle.metrics.get("localisation")
    if not entry:
        return None
    tables = entry.get("tables", {})
    try:
        summary = pd.read_csv(bundle.path / tables["summary"])
        sameness = pd.read_csv(bundle.path / tables["sameness"])
    except (KeyError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"Bundle {bundle.bundle_id} names localisation tables it does not hold ({exc}).") from exc
    energy_path = bundle.path / tables.get("lung_energy", "")
    lung_energy = pd.read_csv(energy_path) if tables.get("lung_energy") and energy_path.is_file() else None
    sheet_path = bundle.path / tables.get("cases", "")
    sheet = sheet_path.read_bytes() if tables.get("cases") and sheet_path.is_file() else None
    return {"entry": entry, "summary": summary, "sameness": sameness, "sheet": sheet,
            "lung_energy": lung_energy}


def contact_sheet(records: pd.DataFrame, reviews: dict[str, Review], cases: int = SHEET_CASES) -> bytes:
    """PNG of the best and the worst boxes (by the model's energy in the box): the finding's map
    over the X-ray with the radiologist's box drawn in white."""
    import cv2
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from ..explain.overlay import overlay

    model = records[records["source"] == "model"].reset_index(drop=True)
    ranked = model.assign(score=model["energy_in_box"].fillna(-1) + model["pointing"].fillna(0))
    ranked = ranked.sort_values("score", ascending=False, kind="stable")
    best = ranked.head(cases)
    worst = ranked.iloc[::-1].head(min(cases, max(0, len(ranked) - len(best))))
    rows = [("best", best), ("worst", worst)] if len(worst) else [("best", best)]
    fig = Figure(figsize=(3 * cases, 3.3 * len(rows)))
    for r, (kind, chosen) in enumerate(rows):
        for c, case in enumerate(chosen.itertuples()):
            review = reviews[case.image]
            k = [label.strip().lower() for label in review.labels].index(case.finding)
            display = review.display_size()
            ax = fig.add_subplot(len(rows), cases, r * cases + c + 1)
            ax.imshow(overlay(review.display_pixels(), review.heatmap_display(k)))
            x, y, w, h = scale_box((case.x, case.y, case.w, case.h), review.image.original_size, display)
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="white", linewidth=1.5))
            ax.set_title(f"{kind}: {Path(case.image).name}\n{case.finding}, energy in box "
                         f"{case.energy_in_box:.2f}, peak {'in' if case.pointing >= 0.5 else 'out'}",
                         fontsize=7, loc="left")
            ax.axis("off")
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
