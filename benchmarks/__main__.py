"""`make bench`: figures with ratios to a baseline measured in the same run.

Machines here are shared and noisy (single runs vary by up to +-50%), so
every figure is the median of several repetitions and is printed next to a
baseline taken in the same process moments before.
"""

from __future__ import annotations

import argparse

from benchmarks.render import bench_render


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmarks still run")
    args = parser.parse_args()
    results = bench_render(quick=args.quick)
    width = max(len(r.name) for r in results)
    print(f"{'benchmark':<{width}}  {'figure':>14}  {'baseline':>14}  ratio")
    for r in results:
        print(f"{r.name:<{width}}  {r.figure:>14}  {r.baseline:>14}  {r.ratio:.3f}x  ({r.note})")


if __name__ == "__main__":
    main()
