"""Benchmark 4: what a collection of one target among 1,000 costs to publish.

After a target's collection the poller renders that target's series into
per-family byte fragments (`render_target`) and hands them to the shared
`Exposition` (`set_target`); the body every scrape gets is assembled from
the cached fragments of all targets. The figure is the per-collection work
(render + set_target). The assembly is reported on its own line: it runs in
a background thread (exporter/exposition.py), off the collection path and
off the scrape path, so it is informative here, not part of the figure.

Baseline: a full render of all 1,000 targets by our own code (render_target
of every target plus the assembly), measured in the same run. Issue 8 target:
the figure is at most 5% of it.

An extra, informative line compares with prometheus_client's generate_latest
building the same kind of series on every scrape, as most Python exporters do.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from benchmarks.common import Result, median_seconds, verdict
from exporter.config import TargetConfig
from exporter.exposition import Exposition
from exporter.metrics import FAMILIES, render_target
from exporter.model import Collection, JobKey, Run, Status
from exporter.state import TargetHealth, TargetState, apply_collection

TARGET_RATIO = 0.05
RPO = timedelta(hours=26)


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
                processed_bytes=1_000_000 * (j + 1),
                items={"total": 100, "successful": 99, "failed": 1},
                reason="quota exceeded" if status is Status.FAILED else None,
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


def _verdict(ratio: float, target: float) -> str:
    return f"target <= {target:g}x: {verdict(ratio <= target)}"


def _wait_rebuilt(exposition: Exposition) -> None:
    """Until the background rebuild started by the last set_target is done."""
    while exposition.snapshot().version != exposition.version:
        time.sleep(0.005)


def _median_after_rebuild(exposition: Exposition, fn: Callable[[], None], repeat: int) -> float:
    """Median time of `fn`, each run started once the previous one's rebuild ended,
    so that rebuild (off the collection path) is not timed as part of the next run."""
    times = []
    for _ in range(repeat):
        _wait_rebuilt(exposition)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    _wait_rebuilt(exposition)
    return statistics.median(times)


def bench_render(*, quick: bool = False) -> list[Result]:
    targets, jobs, repeat = (50, 5, 3) if quick else (1000, 10, 5)
    states = list(_targets(targets, jobs))
    health = TargetHealth(up=True)
    exposition = Exposition(FAMILIES)

    def fragments(target: TargetConfig, state: TargetState) -> dict[str, bytes]:
        return render_target(target, state, health, lambda k: RPO, time.time())

    def full_render() -> None:
        # No set_target here: each would start a background rebuild competing
        # for the GIL with the timing; the assembly is done synchronously instead.
        for target, state in states:
            fragments(target, state)
        exposition.render()

    for target, state in states:
        exposition.set_target(target.name, fragments(target, state))
    _wait_rebuilt(exposition)
    body = exposition.render()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))

    middle = states[targets // 2]

    def render_one() -> None:
        exposition.set_target(middle[0].name, fragments(*middle))

    # Interleaved so that machine noise hits figure and baseline alike.
    full = median_seconds(full_render, repeat)
    one = _median_after_rebuild(exposition, render_one, repeat * 4)
    assembly = median_seconds(exposition.render, repeat * 2)
    full_again = median_seconds(full_render, repeat)
    baseline = min(full, full_again)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Baseline(states))
    pc_series = generate_latest(registry).count(b"\n")
    pc_per_series = median_seconds(lambda: generate_latest(registry), max(2, repeat // 2)) / pc_series
    pc_full = pc_per_series * series

    ratio = one / baseline
    return [
        Result(
            f"render after 1 of {targets} targets ({series} series)",
            f"{one * 1e3:.3f} ms",
            f"{baseline * 1e3:.1f} ms",
            ratio,
            f"render_target + set_target of one target vs full render of all; {_verdict(ratio, TARGET_RATIO)}",
        ),
        Result(
            f"assemble body of {targets} targets",
            f"{assembly * 1e3:.1f} ms",
            f"{baseline * 1e3:.1f} ms",
            assembly / baseline,
            "informative: join of cached fragments, done by a background thread "
            "(off the collection and scrape paths); no target",
        ),
        Result(
            "full render vs prometheus_client",
            f"{baseline * 1e3:.1f} ms",
            f"{pc_full * 1e3:.1f} ms",
            baseline / pc_full,
            "informative: baseline = generate_latest of the same series count, scaled per series; no target",
        ),
    ]
