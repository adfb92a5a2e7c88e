"""What every benchmark shares: the result row and a median timer.

Machines here are shared and noisy, so every figure is a median of several
repetitions and is reported next to a baseline measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """One printed line: a figure, its same-run baseline and figure/baseline."""

    name: str
    figure: str
    baseline: str
    ratio: float
    note: str


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def verdict(met: bool) -> str:
    """How every Result's note says whether its target was met."""
    return "met" if met else "NOT met"
