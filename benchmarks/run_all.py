"""`make bench`: run every benchmark in turn; each writes benchmarks/results/<name>.json."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("bench_prepare", "bench_preprocess", "bench_training", "bench_explain", "bench_app_start")


def main(names: list[str]) -> int:
    failed = 0
    for name in names or BENCHMARKS:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        failed += int(module.main() != 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
