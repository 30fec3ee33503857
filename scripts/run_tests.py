"""`make test`: every test file in its own pytest process, then one closing line for the whole suite.

A separate process per file keeps TensorFlow/Keras global state, Streamlit's module state and
memory from leaking from one test module into the next (the whole suite in one process grew past
7 GB and made later, unrelated tests order-dependent). Extra arguments go to every pytest run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")


def main(extra: list[str]) -> int:
    files = sorted(p.relative_to(REPO) for p in (REPO / "tests").rglob("test_*.py"))
    totals: dict[str, int] = {}
    failed_files = []
    started = time.perf_counter()
    for path in files:
        print(f"== {path}", flush=True)
        run = subprocess.run([sys.executable, "-m", "pytest", str(path), *extra], cwd=REPO,
                             capture_output=True, text=True)
        sys.stdout.write(run.stdout[-20000:])
        sys.stderr.write(run.stderr[-5000:])
        tail = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
        for number, kind in COUNTS.findall(tail):
            kind = "errors" if kind.startswith("error") else kind
            totals[kind] = totals.get(kind, 0) + int(number)
        if run.returncode not in (0, 5):  # 5: the file holds no test
            failed_files.append(str(path))
    minutes = (time.perf_counter() - started) / 60
    print(f"\n{len(files)} test files in {minutes:.1f} min; failing files: "
          f"{', '.join(failed_files) or 'none'}")
    failed = totals.get("failed", 0) + totals.get("errors", 0)
    if failed_files and not failed:
        failed = len(failed_files)  # a file that crashed before reporting counts as failed
    print(f"{totals.get('passed', 0)} passed, {failed} failed, {totals.get('skipped', 0)} skipped")
    return 1 if failed_files else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
