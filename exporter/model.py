"""The vendor-neutral model every vendor module translates its payloads into.

Data flows one way: vendor payload -> parse_* -> these types -> state -> metrics.
All datetimes are timezone-aware UTC; all sizes are bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    SUCCESS = "success"
    WARNING = "warning"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RUNNING = "running"
    QUEUED = "queued"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES: tuple[Status, ...] = (
    Status.SUCCESS,
    Status.WARNING,
    Status.FAILED,
    Status.CANCELLED,
)

# The item states of backup_job_last_items{state}.
ITEM_STATES: tuple[str, ...] = ("total", "successful", "failed", "skipped")


@dataclass(frozen=True, slots=True, order=True)
class JobKey:
    """What an operator schedules and alerts on; the identity labels of a job."""

    job_name: str
    job_type: str


@dataclass(frozen=True, slots=True)
class Run:
    """One execution of a job, as reported by the vendor in one poll."""

    run_id: str
    job: JobKey
    status: Status
    start: datetime | None
    end: datetime | None = None
    processed_bytes: int | None = None
    stored_bytes: int | None = None
    items: Mapping[str, int] = field(default_factory=dict)
    progress: float | None = None
    reason: str | None = None
    # Some vendors report an elapsed time that excludes queueing; prefer it.
    duration_seconds: float | None = None
    # The time the vendor's run queries filter on, where that is not `start`
    # (Keepit filters on when a job was created, Commvault on when it ended).
    # The next poll never asks from later than this for a run in progress,
    # nor from later than the newest finished run's, so nothing is missed. A
    # vendor whose queries return runs in progress whatever the window
    # (Commvault's jobCategory=All) sets it to now for them, so a run
    # suspended for weeks does not hold every poll back by weeks.
    query_time: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end", "query_time"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"Run.{name} must be timezone-aware, got {value!r}")

    @property
    def duration(self) -> float | None:
        """Seconds the run took: the vendor's figure, else end - start."""
        if self.duration_seconds is not None:
            return self.duration_seconds
        if self.start is not None and self.end is not None:
            return max(0.0, (self.end - self.start).total_seconds())
        return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One point in a job's snapshot history (Keepit history/range)."""

    job: JobKey
    timestamp: datetime
    size_bytes: int | None
    complete: bool

    @property
    def snapshot_type(self) -> str:
        return "complete" if self.complete else "partial"


@dataclass(frozen=True, slots=True)
class Repository:
    """A backup repository with its capacity (Veeam EM). None means unknown."""

    name: str
    capacity_bytes: int | None
    free_bytes: int | None


@dataclass(frozen=True, slots=True)
class Collection:
    """Everything one collection of one target found.

    `runs` holds the finished runs the vendor returned since the requested
    watermark (possibly overlapping earlier polls: the state dedupes by run id)
    and every run still in progress. `jobs` names jobs known to exist even when
    they have no run in the window (a Keepit connector with no backup yet), so
    their RPO series exist and a job that never succeeds can alert.
    """

    runs: tuple[Run, ...] = ()
    jobs: tuple[JobKey, ...] = ()
    snapshots: tuple[Snapshot, ...] = ()
    repositories: tuple[Repository, ...] = ()
    # Descriptive attributes of jobs (Keepit connector type, Veeam backup
    # server), exported on backup_job_info and joined in PromQL; the label
    # names must be declared in the vendor's VendorSpec.info_labels.
    job_info: Mapping[JobKey, Mapping[str, str]] = field(default_factory=dict)
    # Human-readable facts for the first-run log line: "3 connectors, 2 pages".
    summary: Mapping[str, int] = field(default_factory=dict)
