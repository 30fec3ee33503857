"""The shipped lung segmenter on X-rays from another hospital (nih-sample, no masks): how many
fall back or are flagged implausible, per view, and a contact sheet of outlines to look at."""

from __future__ import annotations

import logging
import sys
import time

import cv2
import numpy as np
import pandas as pd

from benchmarks.common import REPO, SHARED, write_result

log = logging.getLogger(__name__)
SHEET = REPO / "docs" / "segmentation" / "nih_contact_sheet.png"


def outline_tile(work: np.ndarray, lungs: np.ndarray, full: np.ndarray, fallback: bool,
                 size: int = 160) -> np.ndarray:
    """A thumbnail: lungs outlined in green, the added area below them in cyan, red frame when
    the mask fell back to the whole image."""
    tile = cv2.cvtColor((np.clip(work, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    below = ((full > 0) & (lungs == 0)).astype(np.uint8)
    for mask, colour in ((below, (255, 255, 0)), (lungs, (0, 220, 0))):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(tile, contours, -1, colour, 3)
    tile = cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA)
    if fallback:
        cv2.rectangle(tile, (0, 0), (size - 1, size - 1), (0, 0, 255), 6)
    return tile


def main(limit: int | None = None, segmenter_dir: str | None = None) -> int:
    from cxr_core.imaging.image_io import load_image
    from cxr_core.imaging.lung_geometry import geometry_problem, measure_lungs
    from cxr_core.imaging.preprocessing import preprocess_batch
    from cxr_core.imaging.segmentation import LungSegmenter

    data = SHARED / "nih-sample"
    if not (data / "metadata.csv").is_file():
        print(f"skipped: {data} is absent (see ../shared/README.md)")
        return 0
    meta = pd.read_csv(data / "metadata.csv")
    if limit:
        meta = meta.head(limit)
    segmenter = LungSegmenter.load(segmenter_dir) if segmenter_dir else LungSegmenter.load()
    rows, tiles = [], []
    start = time.perf_counter()
    for begin in range(0, len(meta), 16):
        part = meta.iloc[begin:begin + 16]
        images = [load_image(data / p) for p in part["image"]]
        for (_, row), pre in zip(part.iterrows(), preprocess_batch(images, segmenter)):
            components = cv2.connectedComponents(pre.mask.lungs.astype(np.uint8))[0] - 1
            rows.append({"image": row["image"], "view": row["view"], "fallback": pre.fallback,
                         "reason": pre.mask.reason, "lungs": components,
                         "lung_area": float(pre.mask.lungs.mean()),
                         "implausible": geometry_problem(pre.mask, measure_lungs(pre.mask.lungs))})
            tiles.append((pre.fallback, row["image"], outline_tile(pre.image, pre.mask.lungs,
                                                                   pre.mask.full, pre.fallback)))
    seconds = time.perf_counter() - start
    frame = pd.DataFrame(rows)
    # contact sheet: every fallback or implausible outline first, then a seeded random draw,
    # 64 tiles in 8 columns
    odd = set(frame.loc[frame["implausible"] != "", "image"])
    flagged = [t for t in tiles if t[0] or t[1] in odd]
    rest = [t for t in tiles if not t[0]]
    order = np.random.default_rng(0).permutation(len(rest))
    chosen = (flagged + [rest[i] for i in order])[:64]
    grid = [np.hstack([t[2] for t in chosen[i:i + 8]]) for i in range(0, len(chosen) - len(chosen) % 8, 8)]
    SHEET.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(SHEET), np.vstack(grid))
    result = {
        "images": len(frame), "seconds": round(seconds, 1),
        "fallback": int(frame["fallback"].sum()),
        "fallback_by_view": frame.groupby("view")["fallback"].sum().astype(int).to_dict(),
        "images_by_view": frame["view"].value_counts().to_dict(),
        "reasons": frame.loc[frame["fallback"], "reason"].value_counts().to_dict(),
        "not_two_lungs": int((frame["lungs"] != 2).sum()),
        # what the input check's lung test refuses (fallback included): one sentence per image
        "implausible": int((frame["implausible"] != "").sum()),
        "implausible_reasons": frame.loc[frame["implausible"] != "", "implausible"].value_counts().to_dict(),
        "lung_area_median": round(float(frame["lung_area"].median()), 3),
        "contact_sheet": str(SHEET.relative_to(REPO)),
    }
    write_result("segmentation_sources", result)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(segmenter_dir=sys.argv[1] if len(sys.argv) > 1 else None))
