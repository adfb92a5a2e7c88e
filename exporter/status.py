"""What the status page and /api/v1/status show: a pure, typed model built
from the collectors' state and health, and its JSON form.

Nothing here talks to a vendor or renders HTML (exporter/statuspage.py does).
Every vendor-supplied or configured string passes through the Redactor of the
configured secrets on its way into the model, so no secret reaches the page or
the JSON, whatever a vendor puts into a job name or a failure text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from exporter.model import Status
from exporter.poller import TargetCollector
from exporter.state import DURATION_BUCKETS, JobState
from exporter.vendors.base import ERROR_REASONS

# BackupJobRunningTooLong (deploy/prometheus/alerts.yml): a run in progress for
# more than RUNNING_FACTOR times the RUNNING_QUANTILE of the job's finished
# durations (once the histogram holds RUNNING_MIN_RUNS runs), or for more than
# its RPO. The page uses the same rule so page and alerts agree.
RUNNING_FACTOR = 2.0
RUNNING_QUANTILE = 0.95
RUNNING_MIN_RUNS = 5

# Problem tokens, in the order the page lists them.
FAILED = "failed"
WARNING = "warning"
PAST_RPO = "past_rpo"
NEVER_SUCCEEDED = "never_succeeded"
RUNNING_TOO_LONG = "running_too_long"
PROBLEM_LABELS = {
    FAILED: "failed",
    WARNING: "warning",
    PAST_RPO: "past RPO",
    NEVER_SUCCEEDED: "never succeeded",
    RUNNING_TOO_LONG: "running too long",
}

Redact = Callable[[str], str]


def _no_redaction(text: str) -> str:
    return text


@dataclass(frozen=True)
class TargetStatus:
    name: str
    vendor: str
    url: str  # without userinfo, query or fragment
    state: str  # "up", "down" or "unknown" (not yet tried)
    last_success: float | None
    last_attempt: float | None
    next_poll: float | None
    last_error: str | None
    last_error_reason: str | None
    jobs: int
    consecutive_failures: int
    errors: dict[str, int]


@dataclass(frozen=True)
class JobProblem:
    target: str
    vendor: str
    job_name: str
    job_type: str
    problems: tuple[str, ...]  # tokens of PROBLEM_LABELS
    last_success: float | None
    rpo_seconds: float | None
    reason: str | None  # the vendor's text for a failed or warned last run
    running_seconds: float | None  # age of the oldest run in progress
    running_limit_seconds: float | None  # beyond this a run is too long


@dataclass(frozen=True)
class StatusReport:
    generated: float
    targets: tuple[TargetStatus, ...]
    jobs: tuple[JobProblem, ...]

    def count(self, state: str) -> int:
        return sum(1 for t in self.targets if t.state == state)


def build_status(collectors: Iterable[TargetCollector], now: float, redact: Redact = _no_redaction) -> StatusReport:
    collectors = list(collectors)
    return StatusReport(
        generated=now,
        targets=tuple(target_status(c, redact) for c in collectors),
        jobs=tuple(job_problems(collectors, now, redact)),
    )


def target_status(collector: TargetCollector, redact: Redact = _no_redaction) -> TargetStatus:
    health = collector.health
    state = "unknown" if health.up is None else ("up" if health.up else "down")
    return TargetStatus(
        name=collector.target.name,
        vendor=collector.target.vendor,
        url=redact(public_url(collector.target.url)),
        state=state,
        last_success=collector.state.last_success,
        last_attempt=health.last_attempt,
        next_poll=health.next_poll,
        # Redacted by the poller already; again here, in case a secret was
        # added by a reload after the error was recorded.
        last_error=None if health.last_error is None else redact(health.last_error),
        last_error_reason=health.last_error_reason,
        jobs=len(collector.state.jobs),
        consecutive_failures=health.consecutive_failures,
        errors={reason: health.errors_total.get(reason, 0) for reason in ERROR_REASONS},
    )


def public_url(url: str) -> str:
    """The URL without userinfo, query or fragment: those may hold credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def job_problems(collectors: Iterable[TargetCollector], now: float, redact: Redact = _no_redaction) -> list[JobProblem]:
    """Jobs whose last run failed or warned, that are past their RPO, never
    succeeded, or have a run in progress for too long.

    A job that never succeeded counts only once its target has been collected
    successfully: before that we know nothing yet.
    """
    found: list[JobProblem] = []
    for collector in collectors:
        collected = collector.state.last_success is not None
        for key in sorted(collector.state.jobs):
            job = collector.state.jobs[key]
            rpo_delta = collector.rpo_for(key)
            rpo = None if rpo_delta is None else rpo_delta.total_seconds()
            problems = problems_of(job, rpo, now, collected=collected)
            if not problems:
                continue
            reason = job.last.reason if job.last and problems[0] in (FAILED, WARNING) else None
            running = running_seconds(job, now)
            found.append(
                JobProblem(
                    target=collector.target.name,
                    vendor=collector.target.vendor,
                    job_name=redact(key.job_name),
                    job_type=redact(key.job_type),
                    problems=problems,
                    last_success=job.last_success_end,
                    rpo_seconds=rpo,
                    reason=None if reason is None else redact(reason),
                    running_seconds=running,
                    running_limit_seconds=running_limit(job, rpo),
                )
            )
    return found


def problems_of(job: JobState, rpo: float | None, now: float, *, collected: bool = True) -> tuple[str, ...]:
    problems: list[str] = []
    if job.last is not None and job.last.status in (Status.FAILED, Status.WARNING):
        problems.append(FAILED if job.last.status is Status.FAILED else WARNING)
    # Restores and pruning jobs create no recovery point: no RPO to miss.
    if rpo is not None and job.last_success_end is None and collected:
        # As BackupJobNeverSucceeded: a first run in progress and younger
        # than the RPO is not a problem yet, and a job whose schedule is
        # switched off is not expected to succeed.
        running = running_seconds(job, now)
        if not (running is not None and running <= rpo) and job.info.get("schedule_enabled") != "false":
            problems.append(NEVER_SUCCEEDED)
    elif rpo is not None and job.last_success_end is not None and now - job.last_success_end > rpo:
        problems.append(PAST_RPO)
    if is_running_too_long(job, rpo, now):
        problems.append(RUNNING_TOO_LONG)
    return tuple(problems)


def running_seconds(job: JobState, now: float) -> float | None:
    if not job.running or job.running_oldest_start is None:
        return None
    return max(0.0, now - job.running_oldest_start)


def running_limit(job: JobState, rpo: float | None) -> float | None:
    """How long a run may be in progress before it is too long; None: no limit known."""
    limits = [] if rpo is None else [rpo]
    if job.duration_count >= RUNNING_MIN_RUNS:
        quantile = histogram_quantile(RUNNING_QUANTILE, DURATION_BUCKETS, job.duration_buckets)
        if quantile is not None:
            limits.append(RUNNING_FACTOR * quantile)
    return min(limits, default=None)


def is_running_too_long(job: JobState, rpo: float | None, now: float) -> bool:
    running = running_seconds(job, now)
    limit = running_limit(job, rpo)
    return running is not None and limit is not None and running > limit


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """Prometheus' histogram_quantile over per-bucket (not cumulative) counts,
    the last one being +Inf: linear within the bucket, the highest finite
    bound when the rank falls into +Inf."""
    total = sum(counts)
    if total == 0 or len(counts) != len(bounds) + 1:
        return None
    rank = q * total
    below = 0
    for index, upper in enumerate(bounds):
        count = counts[index]
        if below + count >= rank:
            lower = 0.0 if index == 0 else bounds[index - 1]
            if count == 0:
                return lower
            return lower + (upper - lower) * (rank - below) / count
        below += count
    return bounds[-1]


# --- JSON --------------------------------------------------------------------------


def _time(ts: float | None) -> dict[str, Any] | None:
    if ts is None:
        return None
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"epoch": ts, "rfc3339": stamp}


def _since(now: float, ts: float | None) -> float | None:
    return None if ts is None else max(0.0, now - ts)


def status_json(report: StatusReport, *, version: str, links: dict[str, str]) -> dict[str, Any]:
    """The /api/v1/status document (documented in the README, "Status page and API")."""
    now = report.generated
    return {
        "version": version,
        "generated": _time(now),
        "summary": {
            "targets": len(report.targets),
            "up": report.count("up"),
            "down": report.count("down"),
            "unknown": report.count("unknown"),
            "jobs_needing_attention": len(report.jobs),
        },
        "targets": [
            {
                "name": t.name,
                "vendor": t.vendor,
                "url": t.url,
                "state": t.state,
                "last_success": _time(t.last_success),
                "since_last_success_seconds": _since(now, t.last_success),
                "last_attempt": _time(t.last_attempt),
                "next_poll": _time(t.next_poll),
                "last_error": t.last_error,
                "last_error_reason": t.last_error_reason,
                "jobs": t.jobs,
                "consecutive_failures": t.consecutive_failures,
                "errors": dict(t.errors),
                "probe": links["probe"] + "?target=" + quote(t.name, safe=""),
            }
            for t in report.targets
        ],
        "jobs": [
            {
                "target": j.target,
                "vendor": j.vendor,
                "job_name": j.job_name,
                "job_type": j.job_type,
                "problems": list(j.problems),
                "last_success": _time(j.last_success),
                "since_last_success_seconds": _since(now, j.last_success),
                "rpo_seconds": j.rpo_seconds,
                "reason": j.reason,
                "running_seconds": j.running_seconds,
                "running_limit_seconds": j.running_limit_seconds,
            }
            for j in report.jobs
        ],
        "links": dict(links),
    }
