"""Scale rehearsal: the PadChest path on a synthetic PadChest-format tree at two sizes.

For each size N: N rows drawn (seeded) from the real PadChest CSV's PA rows, all its columns
kept, given synthetic ImageIDs in `ImageDir` folders 0..54 with one generated 16-bit PNG each;
then prepare -> preprocess -> one training epoch of a compact member (train-ensemble, one
member, bundle) -> evaluate -> explain (every 8th test image, at most 64), each stage a fresh
CLI process.
Per stage: wall seconds, CPU seconds (self + children; the fair measure on a shared machine),
images/s and peak resident memory (the stage process and its largest child). From the two
sizes: per-image CPU cost and fixed cost per stage, and an extrapolation to the full PadChest
PA set on 2, 16 and 64 cores assuming the per-image work divides over the cores.

    nice -n 10 python -m benchmarks.bench_scale [N1 N2 ...]   (default 30 120)
Environment: CXR_SCALE_PX (PNG side, default 1024), CXR_SCALE_KEEP=1 keeps the temp tree,
CXR_SCALE_PARALLEL=1 runs the sizes at the same time (wall times then mean less; CPU seconds
and memory do not change).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from benchmarks.common import REPO, SHARED, write_result

PADCHEST = SHARED / "padchest"
CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
SIZES = (30, 120)
#: explain every EXPLAIN_EVERY-th test image, at most EXPLAIN_MAX (rendering a report is the
#: slowest step by far, and a few dozen images measure its per-image cost)
EXPLAIN_EVERY = 8
EXPLAIN_MAX = 64
CORES = (2, 16, 64)
ARCH, TRAIN_PX = "MobileNetV3Small", 128
STAGES = ("prepare", "preprocess", "train_epoch", "evaluate", "explain")


@functools.lru_cache(maxsize=2)
def _chest_template(size: int) -> np.ndarray:
    """Bright body, two darker lung fields with a rib-like texture (float32, [0, 1])."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = np.exp(-(((xx - 0.5) / 0.42) ** 2 + ((yy - 0.55) / 0.5) ** 4))
    lungs = sum(np.exp(-(((xx - cx) / 0.14) ** 2 + ((yy - 0.48) / 0.26) ** 2)) for cx in (0.33, 0.67))
    return (0.25 + 0.6 * body - 0.35 * lungs + 0.04 * np.sin(yy * 60) * lungs).astype(np.float32)


def synthetic_xray(rng: np.random.Generator, size: int) -> np.ndarray:
    """A 16-bit chest-like image: the template, shifted and scaled a little, plus noise."""
    image = np.roll(_chest_template(size), tuple(rng.integers(-size // 40, size // 40, 2)), (0, 1))
    image = image * rng.uniform(0.9, 1.1) + rng.normal(0, 0.015, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 4095 * 16).astype(np.uint16)  # 12 bits stored, as PadChest


def full_pa_rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The real CSV (all columns) and the ImageIDs `prepare` keeps (PA, adult, labelled)."""
    from cxr_core.data.padchest import filter_rows, read_padchest_csv

    raw = pd.read_csv(PADCHEST / CSV_NAME, low_memory=False)
    rows, _ = filter_rows(read_padchest_csv(PADCHEST / CSV_NAME))
    return raw, rows


def make_tree(root: Path, raw: pd.DataFrame, kept: pd.DataFrame, n: int, px: int, seed: int = 0) -> Path:
    """Write `root/padchest.csv.gz` (the real columns) and `root/images/<ImageDir>/<ImageID>`."""
    rng = np.random.default_rng(seed)
    ids = kept["ImageID"].sample(n, random_state=seed).tolist()
    rows = raw[raw["ImageID"].isin(ids)].drop_duplicates("ImageID").copy().reset_index(drop=True)
    rows["ImageID"] = [f"{i:07d}_synthetic.png" for i in range(len(rows))]
    rows["ImageDir"] = np.arange(len(rows)) % 55
    rows["Rows_DICOM"] = rows["Columns_DICOM"] = px
    rows.iloc[:, 0] = np.arange(len(rows))
    for image_id, folder in zip(rows["ImageID"], rows["ImageDir"]):
        (root / "images" / str(folder)).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / str(folder) / image_id), synthetic_xray(rng, px))
    rows.to_csv(root / "padchest.csv.gz", index=False)
    return root / "padchest.csv.gz"


def _run_stage(args: list[str], cwd: Path) -> dict:
    """One CLI command in a fresh process; wall/CPU seconds and peak memory."""
    command = [sys.executable, "-m", "benchmarks.bench_scale", "--child", *args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "",
                               "TF_CPP_MIN_LOG_LEVEL": "2"})
    wall = time.perf_counter() - started
    lines = [l for l in done.stdout.splitlines() if l.startswith("STAGE ")]
    if not lines:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return {"wall_s": round(wall, 1), **json.loads(lines[-1][6:])}


def child(args: list[str]) -> int:
    """Run `python -m cxr_core ARGS` here and print this process's resource use."""
    from cxr_core.cli import main as cli_main

    code = cli_main(args)
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print("STAGE " + json.dumps({
        "exit_code": code, "cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 1),
        "peak_rss_mb": round(me.ru_maxrss / 1024), "peak_child_rss_mb": round(kids.ru_maxrss / 1024)}))
    return 0


def rehearse(n: int, raw: pd.DataFrame, kept: pd.DataFrame, px: int, work: Path) -> dict:
    """The five stages on a fresh tree of `n` images; per-stage measurements (each also
    appended to `work/stages.jsonl` as it finishes)."""
    root = work / f"n{n}"

    def run_stage(args, cwd):
        stage = _run_stage(args, cwd)
        with open(work / "stages.jsonl", "a") as handle:
            handle.write(json.dumps({"n": n, "stage": args[0], **stage}) + "\n")
        return stage

    t0 = time.perf_counter()
    csv_path = make_tree(root, raw, kept, n, px)
    generated_s = time.perf_counter() - t0
    bytes_on_disk = sum(p.stat().st_size for p in (root / "images").rglob("*.png"))
    split = root / "prep" / "specific" / "split.csv"
    stages = {"prepare": run_stage(["prepare", "--csv", str(csv_path), "--term-tree",
                                    str(PADCHEST / "term_tree.txt"), "--out", str(root / "prep"),
                                    "--min-count", "3"], root)}
    table = pd.read_csv(split)
    test_ids = table[table["split"] == "test"].iloc[::EXPLAIN_EVERY].head(EXPLAIN_MAX)
    stages["preprocess"] = run_stage(["preprocess", "--images", str(root / "images"), "--split",
                                      str(split), "--out", str(root / "cache"), "--workers", "2"], root)
    stages["train_epoch"] = run_stage(
        ["train-ensemble", "--arch", ARCH, "--data", str(root / "cache"), "--split", str(split),
         "--out", str(root / "run"), "--epochs", "1", "--weights", "none", "--input-size",
         str(TRAIN_PX), "--batch-size", "32", "--no-lite", "--mixed-precision", "off"], root)
    stages["evaluate"] = run_stage(["evaluate", "--bundle", str(root / "run" / "bundle"), "--data",
                                    str(root / "cache"), "--split", str(split)], root)
    files = [str(root / "images" / str(d) / i) for i, d in zip(test_ids["ImageID"], test_ids["ImageDir"])]
    stages["explain"] = run_stage(["explain", *files, "--bundle", str(root / "run" / "bundle"),
                                   "--out", str(root / "reports"), "--engine", "tensorflow"], root)
    images = {"prepare": len(pd.read_csv(csv_path, usecols=["ImageID"])), "preprocess": len(table),
              "train_epoch": int((table["split"] == "train").sum()),
              "evaluate": int((table["split"] == "test").sum()), "explain": len(files)}
    for name, stage in stages.items():
        stage["images"] = images[name]
        stage["images_per_s"] = round(images[name] / stage["wall_s"], 2)
        stage["images_per_cpu_s"] = round(images[name] / max(stage["cpu_s"], 1e-3), 3)
    return {"n": n, "png_px": px, "png_mb_mean": round(bytes_on_disk / n / 1e6, 2),
            "generate_s": round(generated_s, 1), "labels": len(table.columns) - 4,
            "stages": stages}


def extrapolate(runs: list[dict], full_rows: int) -> dict:
    """Per stage: CPU seconds = fixed + per_image * images (fit through the smallest and largest
    run), images at full size scaled like the runs' stage/N ratio; hours on C cores assume the
    per-image part divides over C cores and the fixed part does not."""
    small, large = runs[0], runs[-1]
    out = {}
    for name in STAGES:
        a, b = small["stages"][name], large["stages"][name]
        per_image = max((b["cpu_s"] - a["cpu_s"]) / max(b["images"] - a["images"], 1), 0.0)
        fixed = max(a["cpu_s"] - per_image * a["images"], 0.0)
        images = round(full_rows * b["images"] / large["n"])
        out[name] = {"cpu_s_per_image": round(per_image, 4), "fixed_cpu_s": round(fixed, 1),
                     "images_full": images,
                     "memory_ratio_large_to_small": round(
                         max(b["peak_rss_mb"], b["peak_child_rss_mb"])
                         / max(a["peak_rss_mb"], a["peak_child_rss_mb"], 1), 2),
                     "hours": {str(c): round((fixed + per_image * images / c) / 3600, 2) for c in CORES}}
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    if not (PADCHEST / CSV_NAME).is_file():
        print(f"skipped: the PadChest CSV is not at {PADCHEST} (see ../shared/README.md)")
        return 0
    sizes = [int(a) for a in argv] or list(SIZES)
    px = int(os.environ.get("CXR_SCALE_PX", "1024"))
    raw, kept = full_pa_rows()
    work = Path(tempfile.mkdtemp(prefix="cxr-scale-"))
    print(f"working in {work}; stages are logged to {work / 'stages.jsonl'} as they finish", flush=True)
    try:
        if os.environ.get("CXR_SCALE_PARALLEL") == "1":
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(sizes)) as pool:
                runs = list(pool.map(lambda n: rehearse(n, raw, kept, px, work), sizes))
        else:
            runs = [rehearse(n, raw, kept, px, work) for n in sizes]
        for run in runs:
            print(json.dumps(run, indent=1), flush=True)
        result = {"sizes": sizes, "png_px": px, "arch": ARCH, "train_px": TRAIN_PX,
                  "full_pa_rows": int(len(kept)), "load_average_1m_at_end": os.getloadavg()[0],
                  "parallel_sizes": os.environ.get("CXR_SCALE_PARALLEL") == "1",
                  "runs": runs, "extrapolation": extrapolate(runs, len(kept))}
        write_result("scale", result)
    finally:
        if os.environ.get("CXR_SCALE_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
