"""Memory of the state: what a first poll's long lookback leaves behind once
its run ids are pruned, and that the smaller state still counts right."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from exporter.model import Collection, JobKey, Run, Status
from exporter.state import JobState, LastRun, TargetState, apply_collection

NOW = datetime(2026, 11, 30, tzinfo=UTC)
JOB = JobKey("Acme M365", "backup")
RETENTION = timedelta(days=30)


def daily_runs(days: int, until: datetime) -> tuple[Run, ...]:
    return tuple(
        Run(
            f"run-{day}",
            JOB,
            Status.SUCCESS,
            until - timedelta(days=day, hours=2),
            until - timedelta(days=day, hours=1),
        )
        for day in range(days)
    )


def test_pruning_a_long_lookback_gives_the_seen_run_table_back() -> None:
    state = TargetState("t")
    runs = daily_runs(2000, NOW)
    apply_collection(state, Collection(runs=runs), NOW, job_retention=timedelta(days=3000))
    kept = len(state.seen_runs)
    # What a dict of this many keys takes, built fresh.
    compact = sys.getsizeof(dict(state.seen_runs))
    assert 0 < kept < 10
    assert sys.getsizeof(state.seen_runs) <= compact
    assert state.jobs[JOB].runs_total["success"] == 2000


def test_pruned_state_still_counts_each_run_once() -> None:
    state = TargetState("t")
    apply_collection(state, Collection(runs=daily_runs(60, NOW)), NOW, job_retention=RETENTION)
    later = NOW + timedelta(hours=1)
    # The next poll's overlap returns the newest runs again: not counted twice.
    new = Run("run-new", JOB, Status.SUCCESS, NOW - timedelta(minutes=30), NOW)
    apply_collection(state, Collection(runs=(*daily_runs(3, NOW), new)), later, job_retention=RETENTION)
    assert state.jobs[JOB].runs_total["success"] == 61
    assert "run-0" in state.seen_runs
    assert "run-59" in state.pruned_seen


def test_state_records_refuse_unknown_attributes() -> None:
    # __slots__: a typo'd attribute fails loudly instead of costing a dict per job.
    job = JobState(key=JOB, last_seen=0.0)
    last = LastRun(run_id="r", status=Status.SUCCESS, start=None, end=None, duration=None)
    for record in (job, last):
        try:
            setattr(record, "lats_seen", 1.0)  # noqa: B010
        except AttributeError:
            continue
        raise AssertionError(f"{type(record).__name__} accepted an unknown attribute")
