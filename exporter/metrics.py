"""TargetState -> metric families. Knows the model, never a vendor payload.

Sample of what one Keepit job produces (labels shortened):

    backup_job_last_status{target="keepit-dk",vendor="keepit",job_name="Acme M365",job_type="backup",status="success"} 1
    backup_job_last_status{...,status="failed"} 0
    backup_job_last_success_timestamp_seconds{...} 1.7327e+09
    backup_job_runs_total{...,status="success"} 41
    backup_job_run_duration_seconds_bucket{...,le="60.0"} 3
    backup_job_rpo_seconds{...} 93600
    backup_target_up{target="keepit-dk",vendor="keepit"} 1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from exporter.config import TargetConfig
from exporter.exposition import Family, FragmentWriter, format_labels, with_label
from exporter.model import FINISHED_STATUSES, ITEM_STATES, JobKey, Status
from exporter.state import DURATION_BUCKETS, JobState, TargetHealth, TargetState
from exporter.vendors.base import ERROR_REASONS

FAILURE_REASON_MAX = 120

# The `le` label values of the duration histogram, +Inf last.
_BUCKET_LE: tuple[str, ...] = (*(f"{float(bound)}" for bound in DURATION_BUCKETS), "+Inf")

_CACHED = " Cached from the last successful poll of the target."

JOB_LAST_STATUS = Family(
    "backup_job_last_status",
    "gauge",
    "Outcome of the last finished run, one series per status (1 = this one)." + _CACHED,
)
JOB_LAST_SUCCESS = Family(
    "backup_job_last_success_timestamp_seconds",
    "gauge",
    "End of the last successful run, as reported by the vendor; survives exporter restarts.",
)
JOB_LAST_START = Family(
    "backup_job_last_run_start_timestamp_seconds", "gauge", "Start of the last finished run." + _CACHED
)
JOB_LAST_END = Family("backup_job_last_run_end_timestamp_seconds", "gauge", "End of the last finished run." + _CACHED)
JOB_LAST_DURATION = Family("backup_job_last_duration_seconds", "gauge", "Duration of the last finished run." + _CACHED)
JOB_LAST_PROCESSED = Family(
    "backup_job_last_processed_bytes", "gauge", "Bytes the last finished run processed, where the vendor reports it."
)
JOB_LAST_STORED = Family(
    "backup_job_last_stored_bytes", "gauge", "Bytes the last finished run stored, where the vendor reports it."
)
JOB_LAST_ITEMS = Family(
    "backup_job_last_items", "gauge", "Objects of the last finished run by state, where the vendor reports them."
)
JOB_RUNS_TOTAL = Family(
    "backup_job_runs_total",
    "counter",
    "Finished runs by status, each counted once across polls and restarts.",
)
JOB_RUN_DURATION = Family(
    "backup_job_run_duration_seconds", "histogram", "Durations of finished runs, counted once each."
)
JOB_RUNNING = Family("backup_job_running", "gauge", "Runs in progress at the last poll." + _CACHED)
JOB_RUNNING_SECONDS = Family(
    "backup_job_running_seconds", "gauge", "Age of the oldest run in progress at the last poll (0 if none)."
)
JOB_RUNNING_PROGRESS = Family(
    "backup_job_running_progress_ratio",
    "gauge",
    "Progress (0..1) of the oldest run in progress, where the vendor reports it.",
)
JOB_RPO = Family(
    "backup_job_rpo_seconds",
    "gauge",
    "Configured recovery point objective (global, target or override), of jobs whose runs create recovery points.",
)
JOB_INFO = Family(
    "backup_job_info",
    "gauge",
    "Descriptive attributes of the job reported by the vendor (always 1); join on target, job_name, job_type.",
)
JOB_FAILURE_INFO = Family(
    "backup_job_last_failure_info",
    "gauge",
    f"Present (1) while the last finished run failed or warned; reason cut to {FAILURE_REASON_MAX} characters.",
)
SNAPSHOT_LAST_TIMESTAMP = Family(
    "backup_snapshot_last_timestamp_seconds", "gauge", "Time of the newest snapshot, by snapshot_type."
)
SNAPSHOT_LAST_SIZE = Family("backup_snapshot_last_size_bytes", "gauge", "Size of the newest snapshot.")
SNAPSHOT_CHANGE_RATIO = Family(
    "backup_snapshot_size_change_ratio",
    "gauge",
    "Size of the newest snapshot divided by the previous one (a sudden drop hints at mass deletion).",
)
REPOSITORY_CAPACITY = Family(
    "backup_repository_capacity_bytes", "gauge", "Capacity of a backup repository, where known." + _CACHED
)
REPOSITORY_FREE = Family(
    "backup_repository_free_bytes", "gauge", "Free space of a backup repository, where known." + _CACHED
)
TARGET_UP = Family("backup_target_up", "gauge", "1 if the last collection of the target succeeded, else 0.")
TARGET_LAST_SUCCESS = Family(
    "backup_target_last_success_timestamp_seconds", "gauge", "When the last successful collection of the target ended."
)
TARGET_COLLECTION_DURATION = Family(
    "backup_target_collection_duration_seconds", "gauge", "How long the last collection of the target took."
)
TARGET_ERRORS = Family(
    "backup_target_collection_errors_total",
    "counter",
    "Failed collections of the target by reason (timeout, auth, http, parse, connection, config), since start.",
)
TARGET_REQUESTS = Family(
    "backup_target_api_requests_total",
    "counter",
    "Requests made to the vendor API by HTTP code ('error' when no response came back), since start.",
)

FAMILIES: tuple[Family, ...] = (
    JOB_LAST_STATUS,
    JOB_LAST_SUCCESS,
    JOB_LAST_START,
    JOB_LAST_END,
    JOB_LAST_DURATION,
    JOB_LAST_PROCESSED,
    JOB_LAST_STORED,
    JOB_LAST_ITEMS,
    JOB_RUNS_TOTAL,
    JOB_RUN_DURATION,
    JOB_RUNNING,
    JOB_RUNNING_SECONDS,
    JOB_RUNNING_PROGRESS,
    JOB_RPO,
    JOB_INFO,
    JOB_FAILURE_INFO,
    SNAPSHOT_LAST_TIMESTAMP,
    SNAPSHOT_LAST_SIZE,
    SNAPSHOT_CHANGE_RATIO,
    REPOSITORY_CAPACITY,
    REPOSITORY_FREE,
    TARGET_UP,
    TARGET_LAST_SUCCESS,
    TARGET_COLLECTION_DURATION,
    TARGET_ERRORS,
    TARGET_REQUESTS,
)

Labels = Sequence[tuple[str, str]]


def target_labels(target: TargetConfig) -> list[tuple[str, str]]:
    return [("target", target.name), ("vendor", target.vendor), *sorted(target.labels.items())]


def job_labels(target: TargetConfig, key: JobKey) -> list[tuple[str, str]]:
    return [
        ("target", target.name),
        ("vendor", target.vendor),
        ("job_name", key.job_name),
        ("job_type", key.job_type),
        *sorted(target.labels.items()),
    ]


def render_target(
    target: TargetConfig,
    state: TargetState,
    health: TargetHealth,
    rpo_for: Callable[[JobKey], timedelta | None],
    now: float,
) -> dict[str, bytes]:
    """Every series of one target, as per-family fragments."""
    out = FragmentWriter()
    for key in sorted(state.jobs):
        _render_job(out, job_labels(target, key), state.jobs[key], rpo_for(key), now)
    for key in sorted(state.snapshots):
        snapshot = state.snapshots[key]
        labels = job_labels(target, key)
        for snapshot_type, ts in (("complete", snapshot.last_complete), ("partial", snapshot.last_partial)):
            if ts is not None:
                out.sample(SNAPSHOT_LAST_TIMESTAMP, [*labels, ("snapshot_type", snapshot_type)], ts)
        if snapshot.newest_size is not None:
            out.sample(SNAPSHOT_LAST_SIZE, labels, snapshot.newest_size)
        if (ratio := snapshot.change_ratio) is not None:
            out.sample(SNAPSHOT_CHANGE_RATIO, labels, ratio)
    base = target_labels(target)
    for name in sorted(state.repositories):
        repository = state.repositories[name]
        labels = [*base, ("repository", name)]
        if repository.capacity_bytes is not None and repository.capacity_bytes >= 0:
            out.sample(REPOSITORY_CAPACITY, labels, repository.capacity_bytes)
        if repository.free_bytes is not None and repository.free_bytes >= 0:
            out.sample(REPOSITORY_FREE, labels, repository.free_bytes)
    _render_health(out, base, state, health)
    return out.fragments()


def _render_job(out: FragmentWriter, labels: Labels, job: JobState, rpo: timedelta | None, now: float) -> None:
    # Escaped once: every series of the job shares these labels.
    text = format_labels(labels)
    last = job.last
    if last is not None:
        for status in FINISHED_STATUSES:
            out.line(JOB_LAST_STATUS, with_label(text, "status", status.value), 1 if last.status is status else 0)
        if last.start is not None:
            out.line(JOB_LAST_START, text, last.start)
        if last.end is not None:
            out.line(JOB_LAST_END, text, last.end)
        if last.duration is not None:
            out.line(JOB_LAST_DURATION, text, last.duration)
        if last.processed_bytes is not None:
            out.line(JOB_LAST_PROCESSED, text, last.processed_bytes)
        if last.stored_bytes is not None:
            out.line(JOB_LAST_STORED, text, last.stored_bytes)
        for state in ITEM_STATES:
            if state in last.items:
                out.line(JOB_LAST_ITEMS, with_label(text, "state", state), last.items[state])
        if last.status in (Status.FAILED, Status.WARNING):
            reason = " ".join((last.reason or "unknown").split())[:FAILURE_REASON_MAX]
            out.line(JOB_FAILURE_INFO, with_label(text, "reason", reason), 1)
    if job.last_success_end is not None:
        out.line(JOB_LAST_SUCCESS, text, job.last_success_end)
    for status in FINISHED_STATUSES:
        out.line(JOB_RUNS_TOTAL, with_label(text, "status", status.value), job.runs_total.get(status.value, 0))
    cumulative = 0
    for le, count in zip(_BUCKET_LE, job.duration_buckets, strict=True):
        cumulative += count
        out.line(JOB_RUN_DURATION, with_label(text, "le", le), cumulative, suffix="_bucket")
    out.line(JOB_RUN_DURATION, text, job.duration_sum, suffix="_sum")
    out.line(JOB_RUN_DURATION, text, job.duration_count, suffix="_count")
    out.line(JOB_RUNNING, text, job.running)
    oldest = job.running_oldest_start
    out.line(JOB_RUNNING_SECONDS, text, max(0.0, now - oldest) if job.running and oldest else 0)
    if job.running and job.running_progress is not None:
        out.line(JOB_RUNNING_PROGRESS, text, min(1.0, max(0.0, job.running_progress)))
    if rpo is not None:
        out.line(JOB_RPO, text, rpo.total_seconds())
    if job.info:
        out.sample(JOB_INFO, [*labels, *sorted(job.info.items())], 1)


def _render_health(out: FragmentWriter, labels: Labels, state: TargetState, health: TargetHealth) -> None:
    if health.up is not None:
        out.sample(TARGET_UP, labels, 1 if health.up else 0)
    if state.last_success is not None:
        out.sample(TARGET_LAST_SUCCESS, labels, state.last_success)
    if health.last_duration is not None:
        out.sample(TARGET_COLLECTION_DURATION, labels, health.last_duration)
    for reason in ERROR_REASONS:
        out.sample(TARGET_ERRORS, [*labels, ("reason", reason)], health.errors_total.get(reason, 0))
    for code in sorted(health.requests_total):
        out.sample(TARGET_REQUESTS, [*labels, ("code", code)], health.requests_total[code])
