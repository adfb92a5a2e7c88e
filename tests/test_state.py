"""The counting rules of state.apply_collection, and their persistence by store.Store."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from exporter.model import Collection, JobKey, Run, Snapshot, Status
from exporter.state import OVERLAP, TargetState, apply_collection
from exporter.store import Store

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
JOB = JobKey("Mailboxes", "backup")
RETENTION = timedelta(days=30)


def run(run_id: str, status: Status, start_h: float, end_h: float | None = None, **kw: object) -> Run:
    start = NOW - timedelta(hours=start_h)
    end = None if end_h is None else NOW - timedelta(hours=end_h)
    return Run(run_id=run_id, job=JOB, status=status, start=start, end=end, **kw)  # type: ignore[arg-type]


def apply(state: TargetState, *runs: Run, now: datetime = NOW, jobs: tuple[JobKey, ...] = ()) -> int:
    return apply_collection(state, Collection(runs=runs, jobs=jobs), now, job_retention=RETENTION).new_runs


def test_overlapping_polls_count_each_run_once() -> None:
    state = TargetState("t")
    first = (run("a", Status.SUCCESS, 30, 29), run("b", Status.FAILED, 6, 5))
    assert apply(state, *first) == 2
    assert apply(state, *first, run("c", Status.SUCCESS, 2, 1)) == 1
    job = state.jobs[JOB]
    assert job.runs_total == {"success": 2, "warning": 0, "failed": 1, "cancelled": 0}
    assert job.duration_count == 3
    assert job.duration_sum == pytest.approx(3 * 3600)


def test_last_success_is_kept_when_a_later_run_fails() -> None:
    state = TargetState("t")
    apply(state, run("a", Status.SUCCESS, 10, 9))
    apply(state, run("b", Status.FAILED, 2, 1, reason="disk full"))
    job = state.jobs[JOB]
    assert job.last is not None
    assert job.last.status is Status.FAILED
    assert job.last.reason == "disk full"
    assert job.last_success_end == (NOW - timedelta(hours=9)).timestamp()


def test_a_late_older_run_counts_but_does_not_become_the_last_run() -> None:
    state = TargetState("t")
    apply(state, run("new", Status.SUCCESS, 2, 1))
    apply(state, run("old", Status.FAILED, 20, 19))
    job = state.jobs[JOB]
    assert job.last is not None
    assert job.last.run_id == "new"
    assert job.runs_total["failed"] == 1


def test_running_run_is_counted_when_it_finishes_and_keeps_the_watermark_back() -> None:
    state = TargetState("t")
    apply(state, run("done", Status.SUCCESS, 3, 2), run("long", Status.RUNNING, 10, progress=0.4))
    job = state.jobs[JOB]
    assert (job.running, job.running_progress) == (1, 0.4)
    assert job.running_oldest_start == (NOW - timedelta(hours=10)).timestamp()
    # The next poll must still ask from before the running run started.
    assert state.since(NOW, timedelta(days=7)) <= NOW - timedelta(hours=10)
    assert apply(state, run("done", Status.SUCCESS, 3, 2), run("long", Status.SUCCESS, 10, 0.5)) == 1
    assert job.running == 0
    assert job.runs_total["success"] == 2


def test_watermark_follows_the_time_the_vendor_filters_on() -> None:
    # Queued 5 h before it began: a query from its start would miss it.
    created = NOW - timedelta(hours=15)
    state = TargetState("t")
    apply(state, Run("slow", JOB, Status.RUNNING, NOW - timedelta(hours=10), query_time=created))
    assert state.since(NOW, timedelta(days=7)) <= created


def test_queued_runs_are_not_running() -> None:
    state = TargetState("t")
    apply(state, run("q", Status.QUEUED, 1))
    assert state.jobs[JOB].running == 0


def test_watermark_ignores_runs_from_the_future() -> None:
    state = TargetState("t")
    apply(state, run("skewed", Status.SUCCESS, -48, -49), run("ok", Status.SUCCESS, 5, 4))
    assert state.watermark == (NOW - timedelta(hours=5)).timestamp()
    assert state.since(NOW, timedelta(days=7)) == NOW - timedelta(hours=5) - OVERLAP


def test_known_jobs_without_runs_exist_with_zero_counters() -> None:
    state = TargetState("t")
    apply(state, jobs=(JOB,))
    assert state.jobs[JOB].runs_total == {"success": 0, "warning": 0, "failed": 0, "cancelled": 0}
    assert state.jobs[JOB].last is None


def test_jobs_not_seen_for_the_retention_expire() -> None:
    state = TargetState("t")
    apply(state, run("a", Status.SUCCESS, 2, 1))
    apply(state, now=NOW + RETENTION + timedelta(hours=1))
    assert JOB not in state.jobs
    assert JOB in state.deleted_jobs


def test_seen_run_ids_are_pruned_only_beyond_what_a_poll_can_return() -> None:
    state = TargetState("t")
    apply(state, run("old", Status.SUCCESS, 24 * 6, 24 * 6 - 1))
    later = NOW + timedelta(days=20)
    apply(state, Run("fresh", JOB, Status.SUCCESS, later - timedelta(hours=2), later - timedelta(hours=1)), now=later)
    assert "old" not in state.seen_runs
    assert "fresh" in state.seen_runs
    # A poll asks from the watermark minus the overlap; everything it can return is still remembered.
    assert apply(state, Run("fresh", JOB, Status.SUCCESS, later - timedelta(hours=2), later), now=later) == 0


def test_snapshot_change_ratio_uses_newest_and_previous_size() -> None:
    state = TargetState("t")
    snaps = [
        Snapshot(JOB, NOW - timedelta(hours=h), size, complete=c)
        for h, size, c in ((30, 1000, True), (20, 1100, False), (10, 440, True))
    ]
    apply_collection(state, Collection(snapshots=tuple(snaps)), NOW, job_retention=RETENTION)
    # The same snapshots again (overlapping poll) change nothing.
    apply_collection(state, Collection(snapshots=tuple(snaps)), NOW, job_retention=RETENTION)
    snapshot = state.snapshots[JOB]
    assert (snapshot.newest_size, snapshot.previous_size) == (440, 1100)
    assert snapshot.change_ratio == pytest.approx(0.4)
    assert snapshot.last_complete == (NOW - timedelta(hours=10)).timestamp()
    assert snapshot.last_partial == (NOW - timedelta(hours=20)).timestamp()


async def test_store_round_trip_continues_counters_exactly(tmp_path) -> None:
    state = TargetState("t")
    apply(state, run("a", Status.SUCCESS, 5, 4, processed_bytes=10, items={"total": 3}), run("b", Status.FAILED, 2, 1))
    store = Store(tmp_path)
    await store.open()
    await store.save(state)
    await store.close()

    reopened = Store(tmp_path)
    await reopened.open()
    loaded = (await reopened.load())["t"]
    assert loaded.jobs == state.jobs
    assert loaded.seen_runs == state.seen_runs
    assert loaded.watermark == state.watermark
    # The restarted exporter sees the same runs again: nothing is counted twice.
    assert apply(loaded, run("a", Status.SUCCESS, 5, 4), run("b", Status.FAILED, 2, 1)) == 0
    await reopened.save(loaded)
    await reopened.close()


async def test_foreign_state_file_is_moved_aside(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    store = Store(tmp_path)
    await store.open()
    assert await store.load() == {}
    await store.close()
    assert list(tmp_path.glob("state.db.corrupt-*"))


async def test_garbage_state_file_is_moved_aside(tmp_path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not a database" * 100)
    store = Store(tmp_path)
    await store.open()
    assert await store.load() == {}
    await store.close()
    assert list(tmp_path.glob("state.db.corrupt-*"))
