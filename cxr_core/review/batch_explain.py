"""`explain`: reports and per-label predictions for many X-ray files, in batches."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ..base.errors import CxrError
from ..explain.report import report_pages, write_report
from ..imaging.batch_preprocess import list_images
from .dicom_out import write_dicom_results
from .pipeline import Reviewer
from .saved_maps import write_maps

log = logging.getLogger(__name__)


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given plus the image files inside given folders."""
    files: list[Path] = []
    for item in inputs:
        item = Path(item)
        files += list_images(item) if item.is_dir() else [item]
    return files


def explain_paths(inputs: list[Path], bundle_dir: Path, out_dir: Path, all_labels: bool = False,
                  uncertainty: bool = False, batch_size: int = 8,
                  reviewer: Reviewer | None = None, engine: str | None = None,
                  dicom_out: bool = False, force: bool = False,
                  save_maps: bool = False, map_method: str | None = None) -> list[tuple[str, str]]:
    """Write `<stem>_report.png/.pdf` per image and `predictions.csv/json`; with `dicom_out`,
    also `<stem>_findings_sr.dcm` and `<stem>_report_sc.dcm` for each DICOM input
    (`dicom_out.write_dicom_results`); with `save_maps`, `<stem>_maps.npz` (`saved_maps`).
    Returns failures.

    Images the input check refuses are skipped with its reason (listed under "refused" in
    predictions.json) unless `force`, which explains them with the refusal in the report.
    `map_method`: "gradcam" or "occlusion" (default: the bundle's choice)."""
    reviewer = reviewer or Reviewer.from_paths(bundle_dir, engine=engine, map_method=map_method)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = expand_inputs(inputs)
    failures: list[tuple[str, str]] = []
    records: list[dict] = []
    refused: list[dict] = []
    with tqdm(total=len(files), desc="explain", unit="img", disable=None) as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            loaded, names = [], []
            for path in chunk:
                try:
                    loaded.append(reviewer.load(path))
                    names.append(path)
                except CxrError as exc:
                    failures.append((path.name, str(exc)))
            if loaded:
                for path, review in zip(names, reviewer.review(loaded)):
                    if review.refused:
                        refused.append({"file": path.name, **review.input_check.record()})
                        if not force:
                            log.warning("skipped %s: %s (--force explains it anyway)", path.name,
                                        review.input_check.reason)
                            continue
                    dicom = dicom_out and review.image.dicom_ref is not None
                    pages = report_pages(review, include_all=all_labels,
                                         uncertainty=uncertainty) if dicom else None
                    write_report(review, out_dir, path.stem, pages=pages, include_all=all_labels,
                                 uncertainty=uncertainty)
                    if save_maps:
                        write_maps(review, out_dir, path.stem)
                    if dicom:  # the Secondary Capture: one frame per report page
                        write_dicom_results(review, pages, out_dir, path.stem)
                    elif dicom_out:
                        log.info("%s is not a DICOM image with UIDs: no DICOM results for it", path.name)
                    records += review.record(path.name)
            bar.update(len(chunk))
    frame = pd.DataFrame(records)
    frame.to_csv(out_dir / "predictions.csv", index=False)
    (out_dir / "predictions.json").write_text(json.dumps({
        "bundle_id": reviewer.bundle.bundle_id, "label_set": reviewer.bundle.label_set,
        "threshold_method": reviewer.bundle.threshold_method,
        "predictions": records, "refused": refused, "forced": force,
        "failures": [{"file": n, "error": e} for n, e in failures],
    }, indent=2))
    return failures
