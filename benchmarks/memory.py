"""Benchmark 5: resident memory of the real state machinery at 500 targets x
200 jobs with 30 days of runs, and its growth over 1,000 further collections.

Runs in a fresh interpreter (a subprocess) so that RSS holds nothing but what
is measured. The child does what the poller does, minus the network: every
collection goes through `apply_collection` (run-id dedup, watermark, holds,
seen-run pruning), the store's successful save is stood for by
`mark_saved()`, and the target is re-rendered into an `Exposition`. A scrape
(`Exposition.body()`) is taken at every measuring point, as Prometheus would.

Workload: every job runs once a day, jobs of a target spread over the day,
~1 h long; 90% succeed, 5% warn, 5% fail with a reason. The first collection
of a target asks for 30 days (the lookback) and gets 30 runs per job; then the
clock advances 30 s per collection, round robin over targets, so each later
collection brings the runs that started since the target's previous one (plus
the 1 h overlap) and the runs still in progress.

Figures: RSS after loading, against the bare interpreter with the same
imports (measured in the same child before loading); and RSS growth from the
end of a 200-collection warm-up to the end of the 1,000 collections, with the
count of live Python blocks next to it (a leak grows those; RSS also moves
with what the C allocator keeps of freed buffers).
Issue 8 targets: RSS under 300 MB, no growth after warm-up.

The issue calls 500 x 200 "the 100k-series case", but 500 x 200 is 100k jobs
of ~34 series each: ~3.4M series and a ~500 MB body. Both are reported: the
500 x 200 case as asked, and 500 targets x 6 jobs (~100k series).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.common import Result, verdict

TARGET_MB = 300.0
# "No growth": allow for allocator noise, not for a per-collection leak.
GROWTH_TOLERANCE_MB = 5.0
DAY = 86400.0
RUN_SECONDS = 3600.0
LOOKBACK = timedelta(days=30)
STEP_SECONDS = 30.0
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _status_kb() -> dict[str, int]:
    fields: dict[str, int] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    # Python objects alive: what a leak grows. RSS also moves with the C
    # allocator keeping freed memory (the body rebuild thread's big buffers).
    fields["blocks"] = sys.getallocatedblocks()
    return fields


def _job_name(t: int, j: int) -> str:
    return f"Tenant {t:03d} connector {j:03d} (Microsoft 365)"


class _Vendor:
    """A vendor's answers for one target: daily runs per job, computed, not stored."""

    def __init__(self, t: int, jobs: int) -> None:
        from exporter.model import JobKey

        self.t = t
        self.keys = [JobKey(_job_name(t, j), "backup") for j in range(jobs)]
        self.offsets = [(j * DAY / jobs + t * 7.0) % DAY for j in range(jobs)]
        self.info = {
            key: {"connector_type": "o365", "connector_guid": f"g{t:04d}{j:04d}"} for j, key in enumerate(self.keys)
        }

    def runs(self, since: datetime, now: datetime) -> Iterator[Any]:
        """Runs that started in [since, now]: finished, or running when not over yet."""
        from exporter.model import Run, Status

        lo, hi = since.timestamp(), now.timestamp()
        for j, key in enumerate(self.keys):
            offset = self.offsets[j]
            first = int((lo - offset) // DAY) + 1
            for day in range(first, int((hi - offset) // DAY) + 1):
                start_ts = day * DAY + offset
                run_id = str(uuid.UUID(int=(self.t << 80) | (j << 40) | (day & 0xFFFFFFFFFF)))
                start = datetime.fromtimestamp(start_ts, UTC)
                end_ts = start_ts + RUN_SECONDS * (0.5 + (day * 7 + j) % 10 / 10)
                if end_ts > hi:
                    yield Run(
                        run_id, key, Status.RUNNING, start, progress=(hi - start_ts) / RUN_SECONDS, query_time=start
                    )
                    continue
                roll = (day * 31 + j * 17 + self.t) % 20
                status = Status.FAILED if roll == 0 else Status.WARNING if roll == 1 else Status.SUCCESS
                yield Run(
                    run_id,
                    key,
                    status,
                    start,
                    datetime.fromtimestamp(end_ts, UTC),
                    processed_bytes=1_000_000_000 + day * 1000 + j,
                    stored_bytes=50_000_000 + day * 100 + j,
                    items={"total": 1000 + j, "successful": 990 + j, "failed": 10},
                    reason="Mailbox quota exceeded for 3 users" if status is not Status.SUCCESS else None,
                    query_time=start,
                )


def _child(targets: int, jobs: int, collections: int, warmup: int, pin: int) -> dict[str, Any]:
    """Runs in the fresh interpreter: load, then collect, measuring RSS."""
    from exporter.allocator import pin_mmap_threshold
    from exporter.config import TargetConfig
    from exporter.exposition import Exposition
    from exporter.metrics import FAMILIES, render_target
    from exporter.model import Collection
    from exporter.state import TargetHealth, TargetState, apply_collection

    if pin:
        pin_mmap_threshold()  # as exporter.cli does at start
    gc.collect()
    bare = _status_kb()
    rpo = timedelta(hours=26)
    retention = timedelta(days=30)
    exposition = Exposition(FAMILIES)
    configs = [
        TargetConfig(name=f"tenant-{t:03d}", vendor="keepit", url="https://keepit.invalid") for t in range(targets)
    ]
    vendors = [_Vendor(t, jobs) for t in range(targets)]
    states = [TargetState(c.name) for c in configs]
    healths = [TargetHealth() for _ in configs]

    def collect(i: int, now: datetime) -> None:
        state, vendor = states[i], vendors[i]
        since = state.since(now, LOOKBACK)
        collection = Collection(runs=tuple(vendor.runs(since, now)), jobs=tuple(vendor.keys), job_info=vendor.info)
        apply_collection(state, collection, now, job_retention=retention)
        state.last_success = now.timestamp()
        state.mark_saved()  # the store's save succeeded
        healths[i].up = True
        healths[i].requests_total["200"] += 3
        exposition.set_target(
            configs[i].name, render_target(configs[i], state, healths[i], lambda k: rpo, now.timestamp())
        )

    def measure() -> tuple[dict[str, int], int, int]:
        # The body is rebuilt in a background thread: wait for the current one.
        while exposition.snapshot().version != exposition.version:
            time.sleep(0.01)
        body = exposition.body()  # a scrape
        lines = body.count(b"\n") - body.count(b"\n#") - (1 if body.startswith(b"#") else 0)
        size = len(body)
        del body
        gc.collect()
        return _status_kb(), lines, size

    started = time.monotonic()
    for i in range(targets):
        collect(i, T0)
    loaded, series, body_bytes = measure()
    load_seconds = time.monotonic() - started
    seen = sum(len(s.seen_runs) for s in states)
    now = T0
    warm: dict[str, int] = {}
    # After every target's first collection since the load (which prunes
    # what the 30-day lookback left): the steadier point to measure from.
    round_one: dict[str, int] = {}
    for n in range(collections):
        now += timedelta(seconds=STEP_SECONDS)
        collect(n % targets, now)
        if n + 1 == warmup:
            warm, _, _ = measure()
        if n + 1 == targets:
            round_one, _, _ = measure()
    end, series_end, _ = measure()
    return {
        "bare": bare,
        "loaded": loaded,
        "warm": warm,
        "round_one": round_one or end,
        "body_bytes": body_bytes,
        "end": end,
        "series": series,
        "series_end": series_end,
        "jobs": sum(len(s.jobs) for s in states),
        "seen_runs": seen,
        "load_seconds": load_seconds,
        "total_seconds": time.monotonic() - started,
    }


def _run_child(targets: int, jobs: int, collections: int, warmup: int, *, pin: bool = True) -> dict[str, Any]:
    args = [str(targets), str(jobs), str(collections), str(warmup), str(int(pin))]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", *args],
        capture_output=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _mb(kb: int) -> float:
    return kb / 1024


def bench_memory(*, quick: bool = False) -> list[Result]:
    targets, jobs, collections, warmup = (20, 20, 100, 20) if quick else (500, 200, 1000, 200)
    r = _run_child(targets, jobs, collections, warmup)
    bare, loaded = _mb(r["bare"]["VmRSS"]), _mb(r["loaded"]["VmRSS"])
    warm, round_one, end = _mb(r["warm"]["VmRSS"]), _mb(r["round_one"]["VmRSS"]), _mb(r["end"]["VmRSS"])
    hwm = _mb(r["end"]["VmHWM"])
    growth = end - warm
    size = (
        f"{r['jobs']} jobs, {r['series']} series, body {r['body_bytes'] / 2**20:.0f} MB, {r['seen_runs']} seen run ids"
    )
    results = [
        Result(
            f"RSS after 30 days of runs, {targets}x{jobs}",
            f"{loaded:.0f} MB",
            f"{bare:.0f} MB bare",
            loaded / bare,
            f"{size}; peak {hwm:.0f} MB; load {r['load_seconds']:.0f}s; "
            f"target < {TARGET_MB:.0f} MB: {verdict(loaded < TARGET_MB)}",
        ),
        Result(
            f"RSS growth over {collections - warmup} collections after warm-up",
            f"{growth:+.1f} MB",
            f"{warm:.0f} MB warm",
            end / warm,
            f"end {end:.0f} MB; from collection {targets} (all re-polled once) {end - round_one:+.1f} MB; "
            f"Python blocks alive {r['end']['blocks'] - r['warm']['blocks']:+d} of {r['warm']['blocks']}; "
            f"target ~0 (<= {GROWTH_TOLERANCE_MB:g} MB): {verdict(growth <= GROWTH_TOLERANCE_MB)}",
        ),
    ]
    if not quick:
        results.append(_issue_series_case(pin=True))
        results.append(_issue_series_case(pin=False))
    return results


def _issue_series_case(*, pin: bool) -> Result:
    """The issue's "100k-series case" read literally: 500 targets with ~100k
    series in all (6 jobs each, ~34 series per job)."""
    # Without exporter.allocator's pinned mmap threshold too, side by side:
    # the growth it prevents is the allocator's, not objects kept alive.
    r = _run_child(500, 6, 1000, 200, pin=pin)
    bare, loaded = _mb(r["bare"]["VmRSS"]), _mb(r["loaded"]["VmRSS"])
    growth = _mb(r["end"]["VmRSS"]) - _mb(r["warm"]["VmRSS"])
    fixed = growth <= GROWTH_TOLERANCE_MB
    how = "" if pin else ", glibc's dynamic mmap threshold (not pinned)"
    return Result(
        f"RSS at ~100k series, 500x6{how}",
        f"{loaded:.0f} MB",
        f"{bare:.0f} MB bare",
        loaded / bare,
        f"{r['series']} series; growth after warm-up {growth:+.1f} MB ({verdict(fixed)}), Python blocks alive "
        f"{r['end']['blocks'] - r['warm']['blocks']:+d}; target < {TARGET_MB:.0f} MB: {verdict(loaded < TARGET_MB)}",
    )


if __name__ == "__main__":
    print(json.dumps(_child(*(int(a) for a in sys.argv[1:6]))))
