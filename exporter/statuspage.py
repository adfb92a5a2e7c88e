"""The status page `/`: the StatusReport of exporter/status.py as HTML.

Server-rendered, no JavaScript and no build step. Every string that is not a
literal of this module goes through `_e` (html.escape, quotes included), so
a vendor-supplied job name or error text is shown as text, never as markup.
Tests and scripts can rely on the markup of the two tables: `#targets` has one
`<tr data-target="NAME" data-state="up|down|unknown">` per target, `#jobs`
one `<tr data-target="NAME" data-job="JOB" data-problems="failed ...">` per
problem job.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from urllib.parse import quote

from exporter.status import PROBLEM_LABELS, JobProblem, StatusReport, TargetStatus

# The README names no repository URL of its own; this is the project's home.
DOCS_URL = "https://github.com/backup-exporter/backup-exporter#readme"
API_PATH = "/api/v1/status"
PROBE_PATH = "/probe"
REFRESH_SECONDS = 30

_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.down,.problem{color:#b00;font-weight:bold}.up{color:#070}.unknown{color:#777}
.ok{color:#070;font-weight:bold}.summary{font-size:1.2em}.err{max-width:40em;word-break:break-word}"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def ago(seconds: float) -> str:
    """A short human duration: 45s, 3m, 5h 7m, 2d 18h."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when(ts: float | None, now: float, *, never: str = "never") -> str:
    """Relative time as text, the absolute UTC time in the title."""
    if ts is None:
        return _e(never)
    relative = f"in {ago(ts - now)}" if ts > now else f"{ago(now - ts)} ago"
    return f'<span title="{_e(utc(ts))}">{_e(relative)}</span>'


def summary_line(report: StatusReport) -> str:
    total = len(report.targets)
    parts = [f"{report.count('up')} up", f"{report.count('down')} down"]
    if report.count("unknown"):
        parts.append(f"{report.count('unknown')} not yet collected")
    jobs = len(report.jobs)
    if jobs == 0:
        attention = "no job needs attention"
    elif jobs == 1:
        attention = "1 job needs attention"
    else:
        attention = f"{jobs} jobs need attention"
    return f"{total} target{'' if total == 1 else 's'}: {', '.join(parts)} \u2014 {attention}"


def all_good(report: StatusReport) -> bool:
    return bool(report.targets) and report.count("up") == len(report.targets) and not report.jobs


def probe_href(name: str) -> str:
    return f"{PROBE_PATH}?target={quote(name, safe='')}"


def _target_row(target: TargetStatus, now: float) -> str:
    state = {"up": "up", "down": "DOWN", "unknown": "not yet tried"}[target.state]
    streak = target.consecutive_failures
    failures = f"<br><small>failed polls in a row: {streak}</small>" if streak else ""
    errors = ", ".join(f"{reason}: {count}" for reason, count in target.errors.items() if count)
    return (
        f'<tr data-target="{_e(target.name)}" data-state="{_e(target.state)}">'
        f"<td>{_e(target.name)}</td>"
        f"<td>{_e(target.vendor)}</td>"
        f'<td class="{_e(target.state)}">{_e(state)}</td>'
        f"<td>{_when(target.last_success, now)}</td>"
        f"<td>{_when(target.next_poll, now, never='not scheduled')}</td>"
        f"<td>{target.jobs}</td>"
        f'<td class="err">{_e(target.last_error or "")}{failures}</td>'
        f"<td>{_e(errors)}</td>"
        f'<td><a href="{_e(probe_href(target.name))}">probe</a></td>'
        "</tr>"
    )


def _job_row(job: JobProblem, now: float) -> str:
    labels = ", ".join(PROBLEM_LABELS[p] for p in job.problems)
    since = "never succeeded" if job.last_success is None else ago(now - job.last_success)
    running = ""
    if job.running_seconds is not None:
        running = f"running for {ago(job.running_seconds)}"
        if job.running_limit_seconds is not None:
            running += f" (limit {ago(job.running_limit_seconds)})"
    problems = " ".join(job.problems)
    return (
        f'<tr data-target="{_e(job.target)}" data-job="{_e(job.job_name)}" data-problems="{_e(problems)}">'
        f"<td>{_e(job.target)}</td>"
        f"<td>{_e(job.vendor)}</td>"
        f"<td>{_e(job.job_name)}</td>"
        f"<td>{_e(job.job_type)}</td>"
        f'<td class="problem">{_e(labels)}</td>'
        f"<td>{_e(since)}</td>"
        f"<td>{_e('never' if job.last_success is None else utc(job.last_success))}</td>"
        f"<td>{_e('none' if job.rpo_seconds is None else ago(job.rpo_seconds))}</td>"
        f'<td class="err">{_e(job.reason or "")}{"<br>" if job.reason and running else ""}{_e(running)}</td>'
        "</tr>"
    )


def render(report: StatusReport, *, version: str, telemetry_path: str) -> str:
    now = report.generated
    targets = "".join(_target_row(t, now) for t in report.targets) or (
        '<tr><td colspan="9">No targets configured.</td></tr>'
    )
    jobs = "".join(_job_row(j, now) for j in report.jobs) or (
        '<tr><td colspan="9">No job is failing, warned, past its RPO or running too long.</td></tr>'
    )
    verdict = '<p class="ok" id="all-good">All good.</p>' if all_good(report) else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>backup-exporter status</title>
<style>{_STYLE}</style></head>
<body><h1>backup-exporter {_e(version)}</h1>
<p class="summary" id="summary">{_e(summary_line(report))}</p>
{verdict}
<p><a href="{_e(telemetry_path)}">Metrics</a>
 &middot; <a href="{_e(API_PATH)}">Status as JSON</a>
 &middot; <a href="{_e(DOCS_URL)}">Documentation</a>
 &middot; <a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a>
 &middot; generated <span title="{_e(utc(now))}">{_e(utc(now))}</span></p>
<h2>Targets</h2>
<table id="targets"><tr><th>Target</th><th>Vendor</th><th>State</th><th>Last successful collection</th>
<th>Next poll</th><th>Jobs</th><th>Last error</th><th>Errors since start</th><th></th></tr>
{targets}
</table>
<h2>Jobs failing, warned, past their RPO or running too long</h2>
<table id="jobs"><tr><th>Target</th><th>Vendor</th><th>Job</th><th>Type</th><th>Problem</th>
<th>Since last success</th><th>Last success</th><th>RPO</th><th>Reason</th></tr>
{jobs}
</table></body></html>
"""
