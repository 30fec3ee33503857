"""`segment` and `preprocess`: run the one preprocessing path over folders and split tables."""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..base.errors import CxrError
from ..data.split_table import cache_path, read_split
from .image_io import SUPPORTED_EXTENSIONS, load_image
from .preprocessing import crop_to_box, segment_works, to_work

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {s for s in SUPPORTED_EXTENSIONS if s}


def list_images(folder: Path) -> list[Path]:
    """Image files (by extension) directly in a folder, sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _load_work(path: str) -> tuple[np.ndarray | None, tuple[int, int] | None, str]:
    """Worker: decode and resize to 512 px; errors come back as text, never raised."""
    try:
        image = load_image(path)
        return to_work(image), image.original_size, ""
    except CxrError as exc:
        return None, None, str(exc)
    except Exception as exc:  # a worker must never take the whole batch down
        return None, None, f"unexpected error: {exc}"


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _pool(workers: int | None):
    workers = workers or max(1, (os.cpu_count() or 2) - 1)
    return ProcessPoolExecutor(max_workers=workers) if workers > 1 else None


def segment_folder(in_dir: Path, out_dir: Path, segmenter, lungs_only: bool = False,
                   batch_size: int = 8, workers: int | None = 1) -> list[tuple[str, str]]:
    """Write `<stem>.png` 0/255 masks at each input's own size; returns (file, error) failures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = list_images(in_dir)
    failures: list[tuple[str, str]] = []
    pool = _pool(workers)
    try:
        with tqdm(total=len(paths), desc="segment", unit="img", disable=None) as bar:
            for chunk in _chunks(paths, batch_size):
                mapper = pool.map if pool else map
                loaded = list(mapper(_load_work, [str(p) for p in chunk]))
                good = [(p, w, s) for p, (w, s, e) in zip(chunk, loaded) if w is not None]
                failures += [(p.name, e) for p, (w, s, e) in zip(chunk, loaded) if w is None]
                if good:
                    results = segment_works(np.stack([w for _, w, _ in good]), segmenter)
                    for (path, _, size), result in zip(good, results):
                        mask = result.lungs if lungs_only else result.full
                        full = cv2.resize(mask.astype(np.uint8) * 255, (size[1], size[0]),
                                          interpolation=cv2.INTER_NEAREST)
                        cv2.imwrite(str(out_dir / f"{path.stem}.png"), full)
                bar.update(len(chunk))
    finally:
        if pool:
            pool.shutdown()
    return failures


def source_path(images_dir: Path, image_id: str, image_dir: str | None) -> Path:
    """The file of a split row: under its ImageDir when that exists, else directly in images_dir."""
    if image_dir not in (None, "", "nan"):
        nested = images_dir / str(image_dir).split(".")[0] / image_id
        if nested.is_file():
            return nested
    return images_dir / image_id


def preprocess_split(images_dir: Path, split_csv: Path, out_dir: Path, segmenter,
                     batch_size: int = 16, workers: int | None = None) -> dict:
    """Write the 512 px 16-bit PNG crop of every row; skips rows already done (resumable)."""
    table = read_split(split_csv).frame
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "preprocess_log.csv"
    todo = [(str(r.ImageID), getattr(r, "ImageDir", None)) for r in table.itertuples()
            if not cache_path(out_dir, r.ImageID).is_file()]
    summary = {"rows": len(table), "already_done": len(table) - len(todo), "written": 0,
               "fallbacks": 0, "failed": 0, "failures": []}
    new_log = not log_path.is_file()
    pool = _pool(workers)
    try:
        with open(log_path, "a", newline="") as handle, \
                tqdm(total=len(todo), desc="preprocess", unit="img", disable=None) as bar:
            writer = csv.writer(handle)
            if new_log:
                writer.writerow(["ImageID", "status", "fallback", "reason", "x0", "y0", "x1", "y1"])
            for chunk in _chunks(todo, batch_size):
                paths = [str(source_path(images_dir, i, d)) for i, d in chunk]
                mapper = pool.map if pool else map
                loaded = list(mapper(_load_work, paths))
                good = [(i, w) for (i, _), (w, _, _) in zip(chunk, loaded) if w is not None]
                for (image_id, _), (w, _, err) in zip(chunk, loaded):
                    if w is None:
                        summary["failed"] += 1
                        summary["failures"].append((image_id, err))
                        writer.writerow([image_id, "failed", "", err, "", "", "", ""])
                if good:
                    results = segment_works(np.stack([w for _, w in good]), segmenter)
                    for (image_id, work), result in zip(good, results):
                        crop = crop_to_box(work, result.box)
                        target = cache_path(out_dir, image_id)
                        tmp = target.with_suffix(".tmp.png")
                        cv2.imwrite(str(tmp), (np.clip(crop, 0, 1) * 65535).round().astype(np.uint16))
                        tmp.replace(target)  # atomic: a crash never leaves half a file
                        summary["written"] += 1
                        summary["fallbacks"] += int(result.fallback)
                        writer.writerow([image_id, "ok", int(result.fallback), result.reason, *result.box])
                handle.flush()
                bar.update(len(chunk))
    finally:
        if pool:
            pool.shutdown()
    return summary
