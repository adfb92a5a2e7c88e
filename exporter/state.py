"""What the exporter knows about each target, and how a collection updates it.

Pure and synchronous: `apply_collection` folds one vendor `Collection` into a
`TargetState`; `store.py` persists the result. The rules that make counters
trustworthy live here:

- a finished run is counted once, ever: its id is remembered until it is too
  old to be returned by any later poll (see `prune_horizon`);
- "last run" facts move only forward in time, so a late or out-of-order run
  updates counters but never replaces a newer last run;
- the watermark the next poll asks from never passes the start of a run that
  is still in progress, or that run would vanish when it finishes; a run in
  progress that the vendor stops listing (its job deleted or hidden for a
  while) is waited for too, until its job expires or the run is older than
  the job retention; and a job of the vendor's inventory that comes back
  after missing from a poll or more makes the next poll ask from when it
  was last listed, for the runs it had while it was gone;
- a vendor clock ahead of ours is not believed: no time of a finished run lies
  more than MAX_CLOCK_SKEW past the poll that found it, and a poll showing the
  vendor's clock moved (a known run's times changed) or ahead (a run in
  progress that started in our future) leaves the watermark where it was,
  because where the next poll may start is measured in the vendor's clock and
  that clock just proved wrong.
  Under a lasting skew the windows widen until it ends; nothing is lost, and
  no run id is forgotten and counted again.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from exporter.model import FINISHED_STATUSES, Collection, JobKey, Repository, Run, Snapshot, Status
from exporter.timeutil import from_epoch, to_epoch

# Buckets of backup_job_run_duration_seconds: 1m .. 24h (SPEC 5).
DURATION_BUCKETS: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400)

# Asked again on every poll, so a run reported late (vendor clocks, slow
# indexing, a job that starts just before its scheduled time) is still seen.
OVERLAP = timedelta(hours=1)

# Seen run ids are kept this long past the oldest time a poll can ask for.
SEEN_RUN_MARGIN = timedelta(days=2)

# Runs "finishing" this far in our future are the vendor's clock, not time
# travel; we still count them, but do not let them push the watermark ahead.
MAX_CLOCK_SKEW = timedelta(minutes=10)


@dataclass(slots=True)
class LastRun:
    run_id: str
    status: Status
    start: float | None
    end: float | None
    duration: float | None
    processed_bytes: int | None = None
    stored_bytes: int | None = None
    items: dict[str, int] = field(default_factory=dict)
    reason: str | None = None

    @classmethod
    def from_run(cls, run: Run, ceiling: float) -> LastRun:
        """The run's facts, its times no later than `ceiling` (see MAX_CLOCK_SKEW)."""
        return cls(
            run_id=run.run_id,
            status=run.status,
            start=_capped(to_epoch(run.start), ceiling),
            end=_capped(to_epoch(run.end), ceiling),
            duration=run.duration,
            processed_bytes=run.processed_bytes,
            stored_bytes=run.stored_bytes,
            items=dict(run.items),
            reason=run.reason,
        )

    def sort_key(self) -> tuple[float, float]:
        return (self.end or self.start or 0.0, self.start or 0.0)


@dataclass(slots=True)
class JobState:
    key: JobKey
    last_seen: float
    last: LastRun | None = None
    last_success_end: float | None = None
    runs_total: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in FINISHED_STATUSES})
    # Per-bucket (not cumulative) counts; the last slot is +Inf.
    duration_buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    duration_count: int = 0
    running: int = 0
    running_oldest_start: float | None = None
    running_progress: float | None = None
    info: dict[str, str] = field(default_factory=dict)
    # Runs last seen in progress: run id -> the time the vendor's run queries
    # filter on. The watermark stays at or before these until the run is seen
    # finished, also while the vendor does not list it.
    holds: dict[str, float] = field(default_factory=dict)

    def observe(self, run: Run, ceiling: float) -> None:
        """Count a finished run; `ceiling` caps its times (see MAX_CLOCK_SKEW)."""
        self.runs_total[run.status.value] = self.runs_total.get(run.status.value, 0) + 1
        duration = run.duration
        if duration is not None:
            self.duration_buckets[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
            self.duration_sum += duration
            self.duration_count += 1
        candidate = LastRun.from_run(run, ceiling)
        if self.last is None or candidate.sort_key() >= self.last.sort_key():
            self.last = candidate
        if run.status is Status.SUCCESS:
            end = candidate.end or candidate.start
            if end is not None and (self.last_success_end is None or end > self.last_success_end):
                self.last_success_end = end


@dataclass(slots=True)
class SnapshotState:
    key: JobKey
    last_seen: float
    newest_timestamp: float | None = None
    newest_size: int | None = None
    previous_size: int | None = None
    last_complete: float | None = None
    last_partial: float | None = None

    def observe(self, snapshot: Snapshot) -> None:
        ts = snapshot.timestamp.timestamp()
        if snapshot.complete:
            self.last_complete = max(ts, self.last_complete or ts)
        else:
            self.last_partial = max(ts, self.last_partial or ts)
        if self.newest_timestamp is None or ts > self.newest_timestamp:
            self.newest_timestamp = ts
            if snapshot.size_bytes is not None:
                if self.newest_size is not None:
                    self.previous_size = self.newest_size
                self.newest_size = snapshot.size_bytes

    @property
    def change_ratio(self) -> float | None:
        if self.newest_size is None or not self.previous_size:
            return None
        return self.newest_size / self.previous_size


@dataclass
class TargetState:
    name: str
    jobs: dict[JobKey, JobState] = field(default_factory=dict)
    snapshots: dict[JobKey, SnapshotState] = field(default_factory=dict)
    repositories: dict[str, Repository] = field(default_factory=dict)
    # run id -> end (or start) time, to count every finished run once.
    seen_runs: dict[str, float] = field(default_factory=dict)
    # Where the next poll starts asking (before OVERLAP is taken off).
    watermark: float | None = None
    last_success: float | None = None
    # Changes not yet written by the store; kept until a write succeeds.
    dirty_jobs: set[JobKey] = field(default_factory=set)
    deleted_jobs: set[JobKey] = field(default_factory=set)
    new_seen: dict[str, float] = field(default_factory=dict)
    pruned_seen: set[str] = field(default_factory=set)

    def since(self, now: datetime, lookback: timedelta) -> datetime:
        """Where the next poll asks from: the watermark minus the overlap."""
        if self.watermark is None:
            return now - lookback
        watermark = from_epoch(self.watermark)
        assert watermark is not None
        return min(watermark - OVERLAP, now - OVERLAP)

    def mark_saved(self) -> None:
        self.dirty_jobs.clear()
        self.deleted_jobs.clear()
        self.new_seen.clear()
        self.pruned_seen.clear()


@dataclass(slots=True)
class TargetHealth:
    """How collecting from a target is going. Process-lifetime, not persisted,
    except `last_success`, which lives in TargetState."""

    up: bool | None = None  # None until the first collection has been tried
    last_attempt: float | None = None
    last_duration: float | None = None
    last_error: str | None = None
    last_error_reason: str | None = None
    next_poll: float | None = None
    consecutive_failures: int = 0
    errors_total: Counter[str] = field(default_factory=Counter)
    requests_total: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ApplyResult:
    """What changed, for the log line and the tests."""

    new_runs: int
    new_jobs: tuple[JobKey, ...]
    expired_jobs: tuple[JobKey, ...]


def apply_collection(
    state: TargetState,
    collection: Collection,
    now: datetime,
    *,
    job_retention: timedelta,
) -> ApplyResult:
    """Fold one successful collection into `state`. Pure apart from `state`."""
    now_ts = now.timestamp()
    new_jobs: list[JobKey] = []

    def job(key: JobKey) -> JobState:
        existing = state.jobs.get(key)
        if existing is None:
            existing = state.jobs[key] = JobState(key=key, last_seen=now_ts)
            state.deleted_jobs.discard(key)
            new_jobs.append(key)
        existing.last_seen = now_ts
        state.dirty_jobs.add(key)
        return existing

    # Before job() marks them seen now.
    returned = _returned(state, collection.jobs)
    for key in collection.jobs:
        job(key)
    for key, info in collection.job_info.items():
        job(key).info = dict(info)

    finished = [r for r in collection.runs if r.status.finished]
    active = [r for r in collection.runs if not r.status.finished]
    finished.sort(key=lambda r: to_epoch(r.end) or to_epoch(r.start) or 0.0)
    ceiling = (now + MAX_CLOCK_SKEW).timestamp()
    # Before counting: which runs are new decides what the times prove.
    clock_wrong = _vendor_clock_wrong(state, finished, active, ceiling)

    new_runs = 0
    for run in finished:
        if run.run_id in state.seen_runs:
            # Seen before (overlapping polls, or a restart): counted already.
            job(run.job)
            continue
        reference = _reference(run, now_ts)
        state.seen_runs[run.run_id] = reference
        state.new_seen[run.run_id] = reference
        job(run.job).observe(run, ceiling)
        new_runs += 1

    _apply_active(state, active, now_ts, job)
    holds = _update_holds(state, finished, active, now_ts - job_retention.total_seconds())
    for snapshot in collection.snapshots:
        snapshot_state = state.snapshots.get(snapshot.job)
        if snapshot_state is None:
            snapshot_state = state.snapshots[snapshot.job] = SnapshotState(key=snapshot.job, last_seen=now_ts)
        snapshot_state.last_seen = now_ts
        snapshot_state.observe(snapshot)
    state.repositories = {r.name: r for r in collection.repositories}

    if not clock_wrong:
        state.watermark = _next_watermark(state.watermark, finished, holds, now)
    if returned is not None and state.watermark is not None:
        state.watermark = min(state.watermark, returned)
    expired = _expire(state, now_ts - job_retention.total_seconds())
    _prune_seen(state)
    return ApplyResult(new_runs=new_runs, new_jobs=tuple(new_jobs), expired_jobs=expired)


def _apply_active(state: TargetState, active: Iterable[Run], now_ts: float, job: Callable[[JobKey], JobState]) -> None:
    running: dict[JobKey, list[Run]] = {}
    for run in active:
        if run.run_id in state.seen_runs:
            continue  # the vendor still lists as active a run it already reported finished
        job(run.job)
        if run.status is Status.RUNNING:
            running.setdefault(run.job, []).append(run)
    for key, job_state in state.jobs.items():
        runs = running.get(key, [])
        started = [r for r in runs if r.start is not None]
        oldest = min(started, key=lambda r: r.start or now_ts) if started else None
        new = (
            len(runs),
            to_epoch(oldest.start) if oldest else None,
            oldest.progress if oldest else (runs[0].progress if runs else None),
        )
        old = (job_state.running, job_state.running_oldest_start, job_state.running_progress)
        if new != old:
            job_state.running, job_state.running_oldest_start, job_state.running_progress = new
            state.dirty_jobs.add(key)


def _query_time(run: Run) -> float | None:
    return to_epoch(run.query_time or run.start)


def _capped(value: float | None, ceiling: float) -> float | None:
    return None if value is None else min(value, ceiling)


def _reference(run: Run, now_ts: float) -> float:
    """What a seen run id is remembered by: its end (or start)."""
    return to_epoch(run.end) or to_epoch(run.start) or now_ts


def _vendor_clock_wrong(state: TargetState, finished: list[Run], active: list[Run], ceiling: float) -> bool:
    """Whether this collection shows the vendor's clock moved since an earlier
    poll, or ahead of ours by more than MAX_CLOCK_SKEW.

    Moved: a run already seen whose time changed by more than MAX_CLOCK_SKEW,
    as every known run's does when the vendor's clock jumps or is put right.
    Ahead: a run in progress that started past `ceiling`. Queued runs do not
    count (they may be scheduled ahead), nor do finished runs new to us: one
    run with a nonsense time must not stop the watermark (it is kept out of
    it, see _next_watermark).
    """
    tolerance = MAX_CLOCK_SKEW.total_seconds()
    for run in finished:
        seen = state.seen_runs.get(run.run_id)
        if seen is not None and abs(_reference(run, seen) - seen) > tolerance:
            return True
    return any(
        run.status is Status.RUNNING and (ts := to_epoch(run.start)) is not None and ts > ceiling for run in active
    )


def _returned(state: TargetState, listed: Iterable[JobKey]) -> float | None:
    """When the vendor last listed the jobs of its inventory that it lists again
    after leaving them out of one poll or more (a connector or job deleted,
    hidden or out of reach for a while), if any: the next poll asks from there,
    so that the runs they had meanwhile are counted too."""
    previous_poll = max((job.last_seen for job in state.jobs.values()), default=None)
    gone = [
        state.jobs[key].last_seen
        for key in listed
        if key in state.jobs and previous_poll is not None and state.jobs[key].last_seen < previous_poll
    ]
    return min(gone, default=None)


def _update_holds(state: TargetState, finished: list[Run], active: list[Run], horizon: float) -> list[float]:
    """Record the runs in progress in their jobs' holds, release the runs seen
    finished, forget holds older than `horizon`; every hold left."""
    holder = {run_id: job for job in state.jobs.values() for run_id in job.holds}
    for run in finished:
        job = holder.pop(run.run_id, None)
        if job is not None:
            del job.holds[run.run_id]
            state.dirty_jobs.add(job.key)
    for run in active:
        ts = _query_time(run)
        if run.run_id in state.seen_runs or ts is None or run.job not in state.jobs:
            continue
        previous = holder.pop(run.run_id, None)
        if previous is not None and previous.key != run.job:
            del previous.holds[run.run_id]
            state.dirty_jobs.add(previous.key)
        job = state.jobs[run.job]
        if job.holds.get(run.run_id) != ts:
            job.holds[run.run_id] = ts
            state.dirty_jobs.add(job.key)
    # Left in `holder`: runs in progress at an earlier poll that this one did
    # not list at all. Waited for, but not for ever.
    for run_id, job in holder.items():
        ts = job.holds[run_id]
        if not isinstance(ts, int | float) or ts < horizon:
            del job.holds[run_id]
            state.dirty_jobs.add(job.key)
    return [ts for job in state.jobs.values() for ts in job.holds.values()]


def _next_watermark(current: float | None, finished: list[Run], holds: list[float], now: datetime) -> float | None:
    ceiling = (now + MAX_CLOCK_SKEW).timestamp()
    starts = [ts for r in finished if (ts := _query_time(r)) is not None and ts <= ceiling]
    candidate = max([*starts, *([current] if current is not None else [])], default=None)
    if holds:
        oldest_active = min(holds)
        candidate = oldest_active if candidate is None else min(candidate, oldest_active)
    return candidate


def _expire(state: TargetState, horizon: float) -> tuple[JobKey, ...]:
    expired = tuple(key for key, job in state.jobs.items() if job.last_seen < horizon)
    for key in expired:
        del state.jobs[key]
        state.dirty_jobs.discard(key)
        state.deleted_jobs.add(key)
    for key in [k for k, s in state.snapshots.items() if s.last_seen < horizon]:
        del state.snapshots[key]
    return expired


def _prune_seen(state: TargetState) -> None:
    """Forget run ids no later poll can return: older than where the next poll
    asks from (the new watermark less the overlap), with a margin for vendors
    that report runs late."""
    if state.watermark is None:
        return
    horizon = state.watermark - (OVERLAP + SEEN_RUN_MARGIN).total_seconds()
    old = [run_id for run_id, ts in state.seen_runs.items() if ts < horizon]
    for run_id in old:
        del state.seen_runs[run_id]
        state.new_seen.pop(run_id, None)
        state.pruned_seen.add(run_id)
    if len(old) > len(state.seen_runs):
        # A dict never gives back the room of deleted keys: after the first
        # poll's lookback (30 days of runs) is pruned to a few days, the
        # table would keep its peak size for the life of the process.
        state.seen_runs = dict(state.seen_runs)
