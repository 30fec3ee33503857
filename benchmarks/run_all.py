"""`make bench`: run every benchmark (`benchmarks/bench_*.py`), or those named, in turn; each
writes benchmarks/results/<name>.json."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# run by hand, too long for a routine `make bench` (docs/benchmarks.md: scale rehearsal); the GPU check has its own
# target (`make gpu-check`)
SEPARATE = {"bench_scale"}
BENCHMARKS = tuple(sorted(p.stem for p in Path(__file__).resolve().parent.glob("bench_*.py")
                          if p.stem not in SEPARATE))


def main(names: list[str]) -> int:
    failed = 0
    for name in names or BENCHMARKS:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        failed += int(module.main() != 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
