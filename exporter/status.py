"""What needs a person's attention, for the status page: pure reads of state."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from exporter.model import Status
from exporter.poller import TargetCollector


@dataclass(frozen=True)
class JobProblem:
    target: str
    vendor: str
    job_name: str
    job_type: str
    problems: tuple[str, ...]  # "failed", "warning", "past RPO", "never succeeded"
    last_success: float | None
    rpo_seconds: float | None
    reason: str | None


def job_problems(collectors: Iterable[TargetCollector], now: float) -> list[JobProblem]:
    """Jobs whose last run failed or warned, or that are past their RPO.

    A job that never succeeded counts as past its RPO only once its target has
    been collected successfully: before that we know nothing yet.
    """
    found: list[JobProblem] = []
    for collector in collectors:
        collected = collector.state.last_success is not None
        for key in sorted(collector.state.jobs):
            job = collector.state.jobs[key]
            rpo_delta = collector.rpo_for(key)
            rpo = None if rpo_delta is None else rpo_delta.total_seconds()
            problems: list[str] = []
            if job.last is not None and job.last.status in (Status.FAILED, Status.WARNING):
                problems.append(job.last.status.value)
            # Restores and pruning jobs create no recovery point: no RPO to miss.
            if rpo is not None and job.last_success_end is None and collected:
                problems.append("never succeeded")
            elif rpo is not None and job.last_success_end is not None and now - job.last_success_end > rpo:
                problems.append("past RPO")
            if problems:
                found.append(
                    JobProblem(
                        target=collector.target.name,
                        vendor=collector.target.vendor,
                        job_name=key.job_name,
                        job_type=key.job_type,
                        problems=tuple(problems),
                        last_success=job.last_success_end,
                        rpo_seconds=rpo,
                        reason=job.last.reason if job.last and problems[0] in ("failed", "warning") else None,
                    )
                )
    return found
