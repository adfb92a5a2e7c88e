"""Render cost of the exposition against prometheus_client's generate_latest.

Baseline: the same series built as prometheus_client metric families inside a
collector and rendered by `generate_latest` on every scrape (what most Python
exporters do). Figures: (1) rendering one target's fragments after its
collection, plus assembling the full body; (2) serving the cached body.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.config import TargetConfig
from exporter.exposition import Exposition
from exporter.metrics import FAMILIES, render_target
from exporter.model import Collection, JobKey, Run, Status
from exporter.state import TargetHealth, TargetState, apply_collection


@dataclass(frozen=True)
class Result:
    name: str
    figure: str
    baseline: str
    ratio: float
    note: str


def _median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _targets(count: int, jobs: int) -> Iterator[tuple[TargetConfig, TargetState]]:
    now = datetime.now(UTC)
    for t in range(count):
        target = TargetConfig(name=f"target-{t}", vendor="keepit", url="https://example.invalid")
        state = TargetState(target.name)
        runs = tuple(
            Run(
                f"{t}-{j}-{k}",
                JobKey(f"job-{j}", "backup"),
                status,
                now - timedelta(hours=k + 1),
                now - timedelta(hours=k),
            )
            for j in range(jobs)
            for k, status in enumerate((Status.SUCCESS, Status.FAILED))
        )
        apply_collection(state, Collection(runs=runs), now, job_retention=timedelta(days=30))
        yield target, state


class _Baseline(Collector):
    """The same job series, built as prometheus_client families on every collect()."""

    def __init__(self, states: list[tuple[TargetConfig, TargetState]]) -> None:
        self.states = states

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = GaugeMetricFamily(
            "backup_job_last_status", "h", labels=["target", "vendor", "job_name", "job_type", "status"]
        )
        runs = CounterMetricFamily(
            "backup_job_runs", "h", labels=["target", "vendor", "job_name", "job_type", "status"]
        )
        success = GaugeMetricFamily(
            "backup_job_last_success_timestamp_seconds", "h", labels=["target", "vendor", "job_name", "job_type"]
        )
        for target, state in self.states:
            for key, job in state.jobs.items():
                base = [target.name, target.vendor, key.job_name, key.job_type]
                for s, n in job.runs_total.items():
                    status.add_metric([*base, s], 1 if job.last and job.last.status.value == s else 0)
                    runs.add_metric([*base, s], n)
                if job.last_success_end:
                    success.add_metric(base, job.last_success_end)
        yield status
        yield runs
        yield success


def bench_render(*, quick: bool = False) -> list[Result]:
    targets, jobs, repeat = (20, 10, 3) if quick else (200, 20, 5)
    states = list(_targets(targets, jobs))
    health = TargetHealth(up=True)
    exposition = Exposition(FAMILIES)
    for target, state in states:
        exposition.set_target(
            target.name, render_target(target, state, health, lambda k: timedelta(hours=26), time.time())
        )
    series = exposition.render().count(b"\n") - sum(2 for _ in FAMILIES)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Baseline(states))
    baseline_series = generate_latest(registry).count(b"\n")
    baseline = _median_seconds(lambda: generate_latest(registry), repeat)
    per_series_baseline = baseline / baseline_series

    target, state = states[0]

    def one_target_then_assemble() -> None:
        fragments = render_target(target, state, health, lambda k: timedelta(hours=26), time.time())
        exposition.set_target(target.name, fragments)
        exposition.body()

    update = _median_seconds(one_target_then_assemble, repeat)
    cached = _median_seconds(lambda: exposition.body(), repeat * 20)
    full_equivalent = per_series_baseline * series
    return [
        Result(
            f"render after 1 of {targets} targets ({series} series)",
            f"{update * 1e3:.2f} ms",
            f"{full_equivalent * 1e3:.2f} ms",
            update / full_equivalent,
            "baseline: generate_latest of all series, scaled per series",
        ),
        Result(
            "serve cached body",
            f"{cached * 1e6:.1f} us",
            f"{full_equivalent * 1e3:.2f} ms",
            cached / full_equivalent,
            "baseline: generate_latest on every scrape",
        ),
    ]
