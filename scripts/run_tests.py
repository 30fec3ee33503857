"""`make test`: every test file in its own pytest process, then one closing line for the whole suite.

A separate process per file keeps TensorFlow/Keras global state, Streamlit's module state and
memory from leaking from one test module into the next (the whole suite in one process grew past
7 GB and made later, unrelated tests order-dependent). Extra arguments go to every pytest run.

Each file's output is printed whole when it ends, headed by `== path (wall s)`; the closing lines
list the ten slowest files. Test files or folders among the arguments narrow the run to them
(`scripts/run_tests.py tests/evaluation -j 1`). `-j N` (or CXR_TEST_JOBS=N) runs N files at once
(default 2: one file at a time kept about one of 2 cores busy on average, 47.7 CPU-minutes in
50 minutes of CI, so two at a time use the idle one). Every server a test starts (PostgreSQL, Orthanc, Streamlit, the two-worker cluster) takes a free port
and a fresh temporary folder, so two files at once cannot collide; the files in EXCLUSIVE (page
timings, the load test, multi-process training) still run on their own, after the rest, so their
time limits are not judged on a machine shared with another file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")
DEFAULT_JOBS = 2
# run alone (after the concurrent part): wall-time targets, or several processes that fill both
# cores on their own and wait on each other under timeouts
EXCLUSIVE = {
    "tests/ui/test_browser.py",  # asserts page timings against targets
    "tests/ui/test_load.py",  # several browser sessions at once, their times reported
    "tests/modeling/test_distributed.py",  # a two-process cluster and two logical devices
}
# the slowest of the rest (measured), started first
START_FIRST = {
    "tests/modeling/test_training.py",
    "tests/review/test_retrain.py",
    "tests/explain/test_gradcam.py",
    "tests/modeling/test_model_building.py",
    "tests/modeling/test_runtime.py",
}


def _run(path: Path, extra: list[str]) -> tuple[Path, subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", str(path), *extra], cwd=REPO,
                         capture_output=True, text=True)
    return path, run, time.perf_counter() - started


def _jobs(argv: list[str]) -> tuple[int, list[str]]:
    jobs = int(os.environ.get("CXR_TEST_JOBS", DEFAULT_JOBS))
    rest = []
    it = iter(argv)
    for arg in it:
        if arg == "-j":
            jobs = int(next(it))
        elif arg.startswith("-j") and arg[2:].isdigit():
            jobs = int(arg[2:])
        else:
            rest.append(arg)
    return max(1, jobs), rest


def main(argv: list[str]) -> int:
    jobs, extra = _jobs(argv)
    # test files or folders among the arguments narrow the run to them
    roots = [REPO / a for a in extra if not a.startswith("-") and (REPO / a).exists()]
    extra = [a for a in extra if REPO / a not in roots]
    files = sorted({p.relative_to(REPO) for root in (roots or [REPO / "tests"])
                    for p in ([root] if root.is_file() else root.rglob("test_*.py"))})
    shared = [p for p in files if p.as_posix() not in EXCLUSIVE]
    alone = [p for p in files if p.as_posix() in EXCLUSIVE]
    totals: dict[str, int] = {}
    failed_files = []
    walls: dict[str, float] = {}
    started = time.perf_counter()

    def report(path: Path, run: subprocess.CompletedProcess, wall: float) -> None:
        walls[str(path)] = wall
        sys.stdout.write(f"== {path} ({wall:.1f} s)\n")
        sys.stdout.write(run.stdout[-20000:])
        sys.stdout.flush()
        sys.stderr.write(run.stderr[-5000:])
        sys.stderr.flush()
        tail = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
        for number, kind in COUNTS.findall(tail):
            kind = "errors" if kind.startswith("error") else kind
            totals[kind] = totals.get(kind, 0) + int(number)
        if run.returncode not in (0, 5):  # 5: the file holds no test
            failed_files.append(str(path))

    print(f"{len(files)} test files, {jobs} at a time ({len(alone)} of them alone)", flush=True)
    if jobs > 1:
        # the slow files first keeps the lanes evenly loaded; each output prints whole as its
        # file ends
        order = sorted(shared, key=lambda p: (p.as_posix() not in START_FIRST, str(p)))
        with ThreadPoolExecutor(jobs) as pool:
            for done in as_completed([pool.submit(_run, p, extra) for p in order]):
                report(*done.result())
    else:
        alone = files
    for path in alone:
        report(*_run(path, extra))
    minutes = (time.perf_counter() - started) / 60
    print(f"\n{len(files)} test files in {minutes:.1f} min ({jobs} at a time); failing files: "
          f"{', '.join(sorted(failed_files)) or 'none'}")
    print("slowest files: " + ", ".join(f"{name} {wall:.0f} s" for name, wall in
                                       sorted(walls.items(), key=lambda kv: -kv[1])[:10]))
    failed = totals.get("failed", 0) + totals.get("errors", 0)
    if failed_files and not failed:
        failed = len(failed_files)  # a file that crashed before reporting counts as failed
    print(f"{totals.get('passed', 0)} passed, {failed} failed, {totals.get('skipped', 0)} skipped")
    return 1 if failed_files else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
