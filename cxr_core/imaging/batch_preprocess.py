"""`segment` and `preprocess`: run the one preprocessing path over folders and split tables.

`preprocess --shard I/N` processes a deterministic 1/N of a split (by a hash of each ImageID,
so N machines of an array job share the work without talking to each other); every shard
writes its crops into the same cache and its own log, and `verify_cache` (`preprocess-merge`)
then reports what is missing or failed across all shards.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import hashlib
from dataclasses import dataclass
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..base.errors import CxrError, DataError
from ..data.split_table import cache_path, lungs_cache_path, read_split
from .image_io import SUPPORTED_EXTENSIONS, load_image
from .preprocessing import CROP_VERSION, crop_to_box, segment_works, to_work

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {s for s in SUPPORTED_EXTENSIONS if s}


CACHE_IDENTITY = "cache_identity.json"


def segmenter_checksum(segmenter) -> str:
    """sha256 of the segmenter's weights (of its Lite file when it runs one): which segmenter
    cut a cache's crops."""
    digest = hashlib.sha256()
    model = getattr(segmenter, "model", None)
    if model is not None:
        for weights in model.get_weights():
            array = np.ascontiguousarray(weights)
            digest.update(str((array.dtype, array.shape)).encode())
            digest.update(array.tobytes())
    elif getattr(segmenter, "path", None) is not None:
        digest.update(Path(segmenter.path).read_bytes())
    else:
        raise CxrError("This segmenter has neither weights nor a model file to identify it by.")
    return digest.hexdigest()


def crop_identity(segmenter) -> dict:
    """What a cache's crops depend on besides the source images: the segmenter and the
    preprocessing version."""
    return {"segmenter_sha256": segmenter_checksum(segmenter), "crop_version": CROP_VERSION}


def cache_identity(cache_dir: str | Path) -> dict | None:
    """The identity `preprocess_split` recorded for a crop cache; None for a cache made before
    it was recorded (or not by `preprocess_split`)."""
    path = Path(cache_dir) / CACHE_IDENTITY
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is damaged; preprocess into a new folder.") from exc


def _record_identity(out_dir: Path, identity: dict) -> None:
    """Record the cache's identity; refuse to add crops of another segmenter or preprocessing
    version to a cache (resuming would mix the two kinds of crops)."""
    recorded = cache_identity(out_dir)
    if recorded is not None and recorded != identity:
        raise DataError(f"The crop cache {out_dir} was made with another lung segmenter or "
                        "preprocessing version; preprocess into a new folder.")
    has_crops = any(out_dir.glob("*.png"))
    if recorded is None and has_crops:
        log.warning("%s holds crops of an unknown segmenter (made before caches recorded it); "
                    "its identity stays unknown", out_dir)
        return
    tmp = out_dir / f"{CACHE_IDENTITY}.{os.getpid()}.tmp"  # shards may write it at once
    tmp.write_text(json.dumps(identity, indent=2))
    tmp.replace(out_dir / CACHE_IDENTITY)


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


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based, as SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> "Shard":
        """Read `I/N` (0 <= I < N); None or empty means the whole split."""
        if not text:
            return cls()
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not match or not 0 <= int(match[1]) < int(match[2]):
            raise DataError(f"--shard must be I/N with 0 <= I < N (for example 3/16), not '{text}'.")
        return cls(int(match[1]), int(match[2]))

    def owns(self, image_id: str) -> bool:
        """Whether this shard processes `image_id` (stable across runs, machines and row order)."""
        return self.count == 1 or shard_of(image_id, self.count) == self.index

    @property
    def log_name(self) -> str:
        return (LOG_NAME if self.count == 1
                else f"preprocess_log.shard-{self.index:05d}-of-{self.count:05d}.csv")


LOG_NAME = "preprocess_log.csv"
LOG_COLUMNS = ["ImageID", "status", "fallback", "reason", "x0", "y0", "x1", "y1"]


def shard_of(image_id: str, count: int) -> int:
    """The shard (0..count-1) that owns an image: a 64-bit BLAKE2 hash of its ImageID modulo
    `count` (uniform even for ids that differ in one character, unlike CRC-32)."""
    digest = hashlib.blake2b(str(image_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def preprocess_split(images_dir: Path, split_csv: Path, out_dir: Path, segmenter,
                     batch_size: int = 16, workers: int | None = None,
                     shard: Shard | str | None = None) -> dict:
    """Write the 512 px 16-bit PNG crop of every row (of this shard) and its lung fields
    (`lungs/`, 8-bit, the crop's frame); skips rows already done (resumable; a crop without its
    mask, from before masks were kept, is done again) and appends one line per image to the
    shard's log in `out_dir`. The cache records which segmenter and preprocessing version made
    it (`cache_identity`)."""
    shard = shard if isinstance(shard, Shard) else Shard.parse(shard)
    table = read_split(split_csv).frame
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _record_identity(out_dir, crop_identity(segmenter))
    log_path = out_dir / shard.log_name
    mine = [(str(r.ImageID), getattr(r, "ImageDir", None)) for r in table.itertuples()
            if shard.owns(str(r.ImageID))]
    todo = [(i, d) for i, d in mine
            if not (cache_path(out_dir, i).is_file() and lungs_cache_path(out_dir, i).is_file())]
    (out_dir / "lungs").mkdir(exist_ok=True)
    summary = {"rows": len(mine), "split_rows": len(table), "shard": f"{shard.index}/{shard.count}",
               "already_done": len(mine) - len(todo), "written": 0,
               "fallbacks": 0, "failed": 0, "failures": []}
    new_log = not log_path.is_file()
    pool = _pool(workers)
    try:
        with open(log_path, "a", newline="") as handle, \
                tqdm(total=len(todo), desc="preprocess", unit="img", disable=None) as bar:
            writer = csv.writer(handle)
            if new_log:
                writer.writerow(LOG_COLUMNS)
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
                        _write_lungs(lungs_cache_path(out_dir, image_id), result)
                        summary["written"] += 1
                        summary["fallbacks"] += int(result.fallback)
                        writer.writerow([image_id, "ok", int(result.fallback), result.reason, *result.box])
                handle.flush()
                bar.update(len(chunk))
    finally:
        if pool:
            pool.shutdown()
    return summary


def _write_lungs(target: Path, result) -> None:
    """The lung fields (lungs plus the area below them) cut and sized like the crop, 0/255."""
    fields = crop_to_box(result.full.astype(np.float32), result.box) >= 0.5
    tmp = target.with_suffix(".tmp.png")
    cv2.imwrite(str(tmp), fields.astype(np.uint8) * 255)
    tmp.replace(target)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _crop_ok(path: Path) -> bool:
    """A crop file that exists and starts like a PNG (cheap: reads 8 bytes)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == PNG_SIGNATURE
    except OSError:
        return False


def read_logs(out_dir: Path) -> dict[str, dict]:
    """The last log line per ImageID over the unsharded log and every shard's log."""
    entries: dict[str, dict] = {}
    for path in sorted(Path(out_dir).glob("preprocess_log*.csv")):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("ImageID"):
                    entries[row["ImageID"]] = {**row, "log": path.name}
    return entries


def verify_cache(split_csv: Path, out_dir: Path, shards: int | None = None) -> dict:
    """Merge every shard's log and check the cache against the split: which rows have a crop,
    which failed (with the reason) and which no shard processed (with the shard that owns it);
    writes `preprocess_report.json` and `preprocess_missing.csv` into `out_dir`."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise DataError(f"Cache folder not found: {out_dir}")
    table = read_split(split_csv).frame
    logs = read_logs(out_dir)
    if shards is None:  # infer N from the shard logs' names
        counts = {int(m[1]) for p in out_dir.glob("preprocess_log.shard-*-of-*.csv")
                  if (m := re.search(r"-of-(\d+)\.csv$", p.name))}
        shards = max(counts) if counts else 1
    present = failed = missing = fallbacks = 0
    problems: list[dict] = []
    for image_id in table["ImageID"].astype(str):
        entry = logs.get(image_id, {})
        if _crop_ok(cache_path(out_dir, image_id)):
            present += 1
            fallbacks += int(entry.get("fallback") in ("1", "True"))
            continue
        owner = shard_of(image_id, shards)
        if entry.get("status") == "failed":
            failed += 1
            problems.append({"ImageID": image_id, "problem": "failed", "shard": owner,
                             "reason": entry.get("reason", "")})
        else:
            missing += 1
            reason = ("crop file damaged" if cache_path(out_dir, image_id).exists()
                      else "not processed")
            problems.append({"ImageID": image_id, "problem": "missing", "shard": owner,
                             "reason": reason})
    incomplete = sorted({p["shard"] for p in problems if p["problem"] == "missing"})
    report = {"rows": len(table), "present": present, "failed": failed, "missing": missing,
              "fallbacks": fallbacks, "shards": shards, "shards_with_missing": incomplete,
              "complete": failed == 0 and missing == 0}
    (out_dir / "preprocess_report.json").write_text(json.dumps(report, indent=2))
    with open(out_dir / "preprocess_missing.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["ImageID", "problem", "shard", "reason"])
        writer.writeheader()
        writer.writerows(problems)
    report["problems"] = problems
    return report
