"""`make bench`: figures with ratios to a baseline measured in the same run.

Machines here are shared and noisy (single runs vary by up to +-50%), so
every figure is the median of several repetitions and is printed next to a
baseline taken in the same run moments before or after.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence

from benchmarks.common import Result

BenchFunction = Callable[..., list[Result]]

# Name -> "module:function". Imported lazily so that `--only` does not pay for
# (or break on) the others' imports.
BENCHMARKS: dict[str, str] = {
    "scrape": "benchmarks.scrape:bench_scrape",
    "scrape-under-collection": "benchmarks.scrape:bench_scrape_under_collection",
    "collect": "benchmarks.collect:bench_collect",
    "render": "benchmarks.render:bench_render",
    "memory": "benchmarks.memory:bench_memory",
    "cycle": "benchmarks.cycle:bench_cycle",
}


def load(name: str) -> BenchFunction:
    module_name, function_name = BENCHMARKS[name].split(":")
    function: BenchFunction = getattr(importlib.import_module(module_name), function_name)
    return function


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            kib = int(next(line.split()[1] for line in info if line.startswith("MemTotal")))
            memory = f", {kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs{memory}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def format_table(results: Sequence[Result]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'benchmark':<{width}}  {'figure':>18}  {'baseline':>18}  {'ratio':>8}  note"]
    lines += [f"{r.name:<{width}}  {r.figure:>18}  {r.baseline:>18}  {r.ratio:>7.3f}x  {r.note}" for r in results]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmarks still run")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only this benchmark (repeatable)"
    )
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    print(f"machine: {machine()}", flush=True)
    results: list[Result] = []
    started = time.monotonic()
    for name in names:
        begun = time.monotonic()
        print(f"running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        results += load(name)(quick=args.quick)
        print(f"  {name}: {time.monotonic() - begun:.0f} s", file=sys.stderr, flush=True)
    print(format_table(results))
    print(f"total: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
