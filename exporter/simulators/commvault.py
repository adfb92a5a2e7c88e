"""A Commvault Web Server / Command Center REST API simulator: Login,
RenewLoginToken, Logout and the job list, in JSON or XML by the Accept
header, under both `/commandcenter/api` and `/webconsole/api`.

The dataset is a pure function of (seed, origin), origin being the simulated
now when the app was created. Jobs are scheduled at fixed offsets from
2024-01-01 and exist from now - 30 d up to now, so the clock moving reveals
new ones; job k of a subclient keeps its jobId and outcome whatever the clock
says, and a job in progress at T has the same jobId when it finishes later.
About 1,700 jobs in 30 days (about 400 of them in a week), for 22 backup
subclients on 8 clients, newest (highest jobId) first:

- WINTER/defaultBackupSet/default (File System, every 8 h): the last job that
  finished before origin, and every later one, is "Completed w/ one or more
  warnings" (warning scenario). WINTER also has restores every 37 h (jobType
  Restore: listed only when jobFilter asks for them).
- SQLPROD01/defaultBackupSet/TransactionLogs (SQL Server, hourly): most jobs,
  and a fixed pattern every 50 jobs that yields every finished status string
  (and one job with isVisible=false), so any week holds all of them.
- EXCH01/defaultBackupSet/default (Exchange Database, every 12 h): the last
  job before origin failed, and every later one fails (last-run alert).
- vcenter01/defaultBackupSet/Tier2-VMs (Virtual Server, every 12 h): every
  job since origin - 3 d ends Failed, Failed to Start, Killed or Abnormal
  Terminated Cleanup (RPO breach).
- FILESRV-LAB/lab/* (11 subclients, daily, runs just over 24 h): one subclient
  per in-progress status string (Running, Running (cannot be verified),
  Waiting, Pending, Queued, Suspend, Suspended, Suspend Pending, Kill Pending,
  Interrupt Pending, Interrupted), so every one is on show at any moment.
- Healthy: WINTER/Documents, SQLPROD01/default, ORAFIN01/default/{default,
  ArchiveLog}, vcenter01/Tier1-VMs, NASFILER01/home, PGDB01/FSBasedBackupSet.

The Date response header follows the simulated clock. Payload quirks of the
real API: numbers as strings in attribute-only XML, the misspelled
"INCREMANTAL" backup level, no jobEndTime in XML on half the jobs (as in the
documented example), jobEndTime 0 while running, a UTF-8 BOM on XML and on
JSON pages at odd offsets, a `processinginstructioninfo` member, a trailing
space in one client name, hidden jobs (isVisible=false), failed logins and
errors as HTTP 200 with `errList` / `errorCode`, 401 `{"errorMessage":
"Access denied","errorCode":5}` for a dead token.

Control routes besides the shared ones (`/_sim/fault`, `/_sim/clock`,
`/_sim/requests`):

- `GET|POST /_sim/commvault/expire` `{"after": n, "renewable": true}`: after n
  more authenticated requests every token issued so far expires (401);
  `renewable: false` makes RenewLoginToken refuse, forcing a fresh Login.
  Tokens also expire after 30 minutes idle on the simulated clock.
- `POST /_sim/commvault/error` `{"code": 2, "message": "...", "form":
  "errorCode|errList|error|none", "count": n}`: the next n job list requests
  (all, without count) answer HTTP 200 with that error body.
- `POST /_sim/commvault/paging` `{"ignore_offset": bool, "shift": n}`: serve
  the first page whatever the offset header says; or drop the n newest jobs
  from the list on each later page request, as a list shrinking under a pager.
- `GET|POST /_sim/data`: data faults (duplicate, reversed, skewed, re-classified
  or hidden rows), see exporter/simulators/datafaults.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from xml.parsers.expat import ExpatError
from xml.sax.saxutils import quoteattr

import xmltodict
from aiohttp import web
from aiohttp.typedefs import Handler

from exporter.simulators.base import SimulatorSpec, control_json, create_sim_app, is_control, sim_now
from exporter.simulators.datafaults import (
    add_data_fault_routes,
    arranged,
    data_faults,
    doubled,
    prepare,
    vendor_now,
)

DEMO_USERNAME = "svc-backup-exporter"
# Non-ASCII and base64's own characters: the client must encode the UTF-8.
DEMO_PASSWORD = "Cømmvault+demo/pw="  # noqa: S105 - the simulator's published demo credential

BASES = ("/commandcenter/api", "/webconsole/api")
HISTORY = timedelta(days=30)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
IDLE_TIMEOUT = timedelta(minutes=30)
DEFAULT_LOOKUP_SECONDS = 31536000
DEFAULT_LIMIT = 100
JOB_ID_BASE = 1_000_000
SLOTS = 32
BOM = "\ufeff"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n '

HEALTHY = "healthy"
LAST_FAILED = "last_failed"
FAILING = "failing_3d"
WARNING = "warning"
LAB = "lab"

ACCESS_DENIED = {"errorMessage": "Access denied", "errorCode": 5}
BAD_LOGIN = "Invalid Username or Password"
ERROR_FORMS = ("none", "errorCode", "errList", "error")

COMPLETED = "Completed"
WITH_ERRORS = "Completed w/ one or more errors"
WITH_WARNINGS = "Completed w/ one or more warnings"
# Every 50 jobs of the hourly subclient: each rare finished status at least
# once a week, and one job hidden from the list (isVisible=false).
RARE_PATTERN = {
    3: "Committed",
    10: WITH_ERRORS,
    17: "Failed to Start",
    24: "Abnormal Terminated Cleanup",
    31: "Killed",
    38: "Failed",
    45: WITH_WARNINGS,
}
HIDDEN_SLOT = 47
FAILING_CYCLE = ("Failed", "Failed to Start", "Killed", "Abnormal Terminated Cleanup")
FAILED_STATUSES = frozenset({"Failed", "Failed to Start", "Abnormal Terminated Cleanup"})

_REASONS = {
    "Failed": (
        "Error Code: [19:857] Description: Failed to mount the disk media in library [DiskLib01]. "
        "Source: ma01, Process: cvd"
    ),
    "Failed to Start": "Error Code: [19:1400] Description: The job failed to start: the client is not reachable.",
    "Abnormal Terminated Cleanup": "Job terminated abnormally; cleanup completed. Source: cs01, Process: JobManager",
    "Killed": "Job was killed by user [admin].",
    "Committed": "Job was killed by user [admin]; the data backed up so far was committed.",
    WITH_WARNINGS: "Some items were skipped: files were open in another process.",
}
_SCENARIO_REASONS = {
    LAST_FAILED: (
        "Error Code: [19:1341] Description: The Exchange Information Store service is not responding on EXCH01. "
    ),
    FAILING: "Error Code: [91:68] Description: Unable to connect to vCenter [vc01.corp.example]: certificate expired.",
}
_WAIT_REASONS = {
    "Waiting": "Waiting for resources: no free streams on storage policy [SP-Disk-30d].",
    "Pending": "The MediaAgent [ma01] is not reachable. The job will be retried in 20 minutes.",
    "Queued": "Job is queued: another job of the same subclient is running.",
    "Suspend": "Backup job has been suspended by user admin.",
    "Suspended": "Backup job has been suspended by user admin.",
    "Suspend Pending": "Suspend requested by user admin.",
    "Kill Pending": "Kill requested by user admin.",
    "Interrupt Pending": "Interrupt requested: the client service is restarting.",
    "Interrupted": "The job was interrupted: the client service restarted.",
    "Running (cannot be verified)": "No progress update from the client for 15 minutes.",
}
_COLORS = {
    COMPLETED: "black",
    WITH_ERRORS: "orange",
    WITH_WARNINGS: "orange",
    "Committed": "orange",
    "Killed": "grey",
}
# The JSON levels are integers, the XML ones strings (misspelled as documented).
_LEVELS = {"Full": (1, "FULL"), "Incremental": (2, "INCREMANTAL"), "Differential": (4, "DIFFERENTIAL")}


@dataclass(frozen=True)
class Plan:
    """One subclient's schedule: a job_name of the model (and its slot in jobIds)."""

    key: str
    client: str
    client_id: int
    app: str
    app_id: int
    instance: str
    backupset: str
    backupset_id: int
    subclient: str
    subclient_id: int
    period: timedelta
    offset: timedelta
    minutes: tuple[float, float]
    job_type: str = "Backup"
    scenario: str = HEALTHY
    # What a job of a lab subclient shows for as long as it is in progress.
    active_status: str | None = None
    size: int = 50 * 2**30
    files: int = 100_000
    rare: bool = False
    # The vendor's stray trailing space, in a value that ends up in job_name.
    trailing_space: bool = False


_FS = ("File System", 33)
_LAB_STATUSES = (
    ("home", "Running"),
    ("projects", "Running (cannot be verified)"),
    ("scratch", "Waiting"),
    ("media", "Pending"),
    ("builds", "Queued"),
    ("archive", "Suspend"),
    ("exports", "Suspended"),
    ("vm-templates", "Suspend Pending"),
    ("mail-archive", "Kill Pending"),
    ("db-dumps", "Interrupt Pending"),
    ("logs", "Interrupted"),
)
HOUR = timedelta(hours=1)

PLANS: tuple[Plan, ...] = (
    Plan(
        "winter-default", "WINTER", 2, *_FS, "DefaultInstanceName", "defaultBackupSet", 3, "default", 2,
        period=8 * HOUR, offset=timedelta(hours=4, minutes=5), minutes=(8, 40), scenario=WARNING,
        size=120 * 2**30, files=480_000,
    ),
    Plan(
        "winter-docs", "WINTER", 2, *_FS, "DefaultInstanceName", "defaultBackupSet", 3, "Documents", 7,
        period=24 * HOUR, offset=timedelta(hours=21, minutes=15), minutes=(5, 25), size=35 * 2**30,
    ),
    Plan(
        "sql-full", "SQLPROD01", 5, "SQL Server", 81, "MSSQLSERVER", "defaultBackupSet", 11, "default", 12,
        period=24 * HOUR, offset=timedelta(hours=22, minutes=30), minutes=(30, 95), size=400 * 2**30, files=40,
    ),
    Plan(
        "sql-log", "SQLPROD01", 5, "SQL Server", 81, "MSSQLSERVER", "defaultBackupSet", 11, "TransactionLogs", 13,
        period=HOUR, offset=timedelta(minutes=7), minutes=(1, 6), size=3 * 2**30, files=4, rare=True,
    ),
    Plan(
        "ora-full", "ORAFIN01", 8, "Oracle", 22, "FINPROD", "default", 21, "default", 22,
        period=12 * HOUR, offset=timedelta(hours=1, minutes=45), minutes=(25, 80), size=900 * 2**30, files=300,
    ),
    Plan(
        "ora-arch", "ORAFIN01", 8, "Oracle", 22, "FINPROD", "default", 21, "ArchiveLog", 23,
        period=4 * HOUR, offset=timedelta(minutes=35), minutes=(3, 15), size=12 * 2**30, files=60,
    ),
    Plan(
        "exch", "EXCH01", 9, "Exchange Database", 53, "defaultInstanceName", "defaultBackupSet", 31, "default", 32,
        period=12 * HOUR, offset=timedelta(hours=3, minutes=10), minutes=(40, 140), scenario=LAST_FAILED,
        size=1200 * 2**30, files=12,
    ),
    Plan(
        "vm-tier1", "vcenter01", 10, "Virtual Server", 106, "VMware", "defaultBackupSet", 41, "Tier1-VMs", 42,
        period=12 * HOUR, offset=timedelta(hours=5, minutes=20), minutes=(120, 300), size=6 * 2**40, files=48,
    ),
    Plan(
        "vm-tier2", "vcenter01", 10, "Virtual Server", 106, "VMware", "defaultBackupSet", 41, "Tier2-VMs", 43,
        period=12 * HOUR, offset=timedelta(hours=6, minutes=40), minutes=(60, 200), scenario=FAILING,
        size=3 * 2**40, files=120,
    ),
    Plan(
        "nas-home", "NASFILER01", 12, "NAS", 13, "DefaultInstanceName", "defaultBackupSet", 51, "home", 52,
        period=24 * HOUR, offset=timedelta(hours=2), minutes=(60, 180), size=8 * 2**40, files=9_000_000,
        trailing_space=True,
    ),
    Plan(
        "pg", "PGDB01", 14, "PostgreSQL", 125, "pg15", "FSBasedBackupSet", 61, "default", 62,
        period=24 * HOUR, offset=timedelta(hours=23, minutes=40), minutes=(10, 45), size=80 * 2**30, files=2_400,
    ),
    *(
        Plan(
            f"lab-{name}", "FILESRV-LAB", 20, *_FS, "DefaultInstanceName", "lab", 71, name, 72 + i,
            period=24 * HOUR, offset=timedelta(hours=4, minutes=7 * i), minutes=(24 * 60 + 15, 25 * 60 + 30),
            scenario=LAB, active_status=status, size=(2 + i) * 2**30, files=20_000 + 1000 * i,
        )
        for i, (name, status) in enumerate(_LAB_STATUSES)
    ),
    Plan(
        "winter-restore", "WINTER", 2, *_FS, "DefaultInstanceName", "defaultBackupSet", 3, "default", 2,
        period=37 * HOUR, offset=timedelta(hours=11, minutes=13), minutes=(2, 25), job_type="Restore",
        size=2 * 2**30, files=800,
    ),
)  # fmt: skip
assert len(PLANS) <= SLOTS


def _digest(seed: int, *parts: object) -> int:
    text = "|".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


def _unit(seed: int, *parts: object) -> float:
    """A deterministic draw in [0, 1)."""
    return (_digest(seed, *parts) >> 64) / 2**64


def _epoch(value: datetime | None) -> int:
    return 0 if value is None else int(value.timestamp())


@dataclass(frozen=True)
class SimJob:
    job_id: int
    plan: Plan
    index: int
    submitted: datetime  # jobStartTime
    running_from: datetime  # after waiting in the queue
    ends: datetime
    outcome: str  # the status string once finished
    reason: str | None
    wait_status: str
    run_status: str
    level: str
    app_size: int
    media_size: int
    files: int
    failed_files: int
    visible: bool
    # Where a stuck lab job's progress stopped.
    stalled_at: float

    def finished(self, now: datetime) -> bool:
        return now >= self.ends

    def status(self, now: datetime) -> str:
        if self.finished(now):
            return self.outcome
        return self.wait_status if now < self.running_from else self.run_status

    def progress(self, now: datetime) -> float:
        """0..1 of the way through; a finished job's share of the data it got to."""
        if self.finished(now):
            return 1.0 if self.outcome not in FAILED_STATUSES | {"Killed"} else self.stalled_at
        if self.plan.scenario == LAB and self.run_status != "Running":
            return self.stalled_at
        if now < self.running_from:
            return 0.0
        return (now - self.running_from) / (self.ends - self.running_from)

    def last_update(self, now: datetime) -> datetime:
        if self.finished(now):
            return self.ends + timedelta(seconds=2)
        if now < self.running_from or (self.plan.scenario == LAB and self.run_status != "Running"):
            return self.submitted
        # The server updates a running job about once a minute.
        minutes = int((now - self.submitted).total_seconds() // 60)
        return self.submitted + timedelta(minutes=minutes)


class CommvaultDataset:
    """The CommServe's jobs at any simulated now."""

    def __init__(self, seed: int, origin: datetime) -> None:
        self.seed = seed
        self.origin = origin.astimezone(UTC)
        self._cache: dict[tuple[str, int], SimJob] = {}
        # Every page of a poll asks about the same simulated moment.
        self._listing: tuple[datetime, tuple[SimJob, ...]] | None = None
        # Per plan: the index of the last job that ended before origin; the
        # scenarios are defined relative to it.
        self._last_before_origin = {plan.key: self._last_ended(plan) for plan in PLANS}

    @staticmethod
    def _anchor(plan: Plan) -> datetime:
        return EPOCH + plan.offset

    def _last_ended(self, plan: Plan) -> int:
        index = math.floor((self.origin - self._anchor(plan)) / plan.period)
        while self._timing(plan, index)[2] > self.origin:
            index -= 1
        return index

    def _timing(self, plan: Plan, index: int) -> tuple[datetime, datetime, datetime, str]:
        """(submitted, running_from, ends, wait status): independent of the outcome."""
        seed, key = self.seed, (plan.key, index)
        nominal = self._anchor(plan) + index * plan.period
        submitted = nominal + timedelta(seconds=int(60 * _unit(seed, "jitter", *key)))
        wait_status = "Waiting"
        if plan.scenario == LAB:
            wait = 0
            wait_status = plan.active_status or "Running"
        elif _unit(seed, "queue", *key) < 0.06:
            # Now and then a job waits long for resources.
            wait = int(600 + 2400 * _unit(seed, "wait", *key))
            wait_status = ("Waiting", "Pending", "Queued")[int(3 * _unit(seed, "wait-kind", *key))]
        else:
            wait = int(20 * _unit(seed, "wait", *key))
        running_from = submitted + timedelta(seconds=wait)
        low, high = plan.minutes
        ends = running_from + timedelta(seconds=int(60 * (low + (high - low) * _unit(seed, "duration", *key))))
        return submitted, running_from, ends, wait_status

    def _outcome(self, plan: Plan, index: int, submitted: datetime) -> str:
        last = self._last_before_origin[plan.key]
        if plan.scenario == LAST_FAILED and index >= last:
            return "Failed"
        if plan.scenario == FAILING and submitted >= self.origin - timedelta(days=3):
            return FAILING_CYCLE[index % len(FAILING_CYCLE)]
        if plan.scenario == WARNING and index >= last:
            return WITH_WARNINGS
        if index in (last - 1, last):
            # A clean demo: only the scenarios above alert.
            return COMPLETED
        if plan.rare:
            return RARE_PATTERN.get(index % 50, COMPLETED)
        draw = _unit(self.seed, "outcome", plan.key, index)
        for limit, status in ((0.88, COMPLETED), (0.93, WITH_ERRORS), (0.96, WITH_WARNINGS), (0.985, "Failed")):
            if draw < limit:
                return status
        return "Killed"

    def _reason(self, plan: Plan, outcome: str, failed_files: int) -> str | None:
        if outcome == WITH_ERRORS:
            return f"Failed to back up {failed_files} files. See the failed items list of the job."
        if outcome in FAILED_STATUSES and plan.scenario in _SCENARIO_REASONS:
            return _SCENARIO_REASONS[plan.scenario]
        return _REASONS.get(outcome)

    def job(self, plan: Plan, index: int) -> SimJob:
        key = (plan.key, index)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        seed = self.seed
        submitted, running_from, ends, wait_status = self._timing(plan, index)
        outcome = self._outcome(plan, index, submitted)
        level = "Full" if index % 7 == 0 else "Incremental"
        if plan.job_type != "Backup":
            level = "Full"
        share = 1.0 if level == "Full" else 0.04 + 0.1 * _unit(seed, "share", *key)
        app_size = int(plan.size * share * (1 + 0.01 * _unit(seed, "size", *key)))
        files = max(1, int(plan.files * share))
        stalled_at = round(0.1 + 0.8 * _unit(seed, "stalled", *key), 4)
        failed_files = 0
        if outcome == WITH_ERRORS:
            failed_files = 1 + int(40 * _unit(seed, "failed-files", *key))
        if outcome == "Failed to Start":
            app_size, files = 0, 0
        elif outcome in FAILED_STATUSES | {"Killed", "Committed"}:
            app_size, files = int(app_size * stalled_at), int(files * stalled_at)
        nominal_minutes = int((submitted - EPOCH).total_seconds() // 60)
        job = SimJob(
            job_id=JOB_ID_BASE + nominal_minutes * SLOTS + PLANS.index(plan),
            plan=plan,
            index=index,
            submitted=submitted,
            running_from=running_from,
            ends=ends,
            outcome=outcome,
            reason=self._reason(plan, outcome, failed_files),
            wait_status=wait_status,
            run_status=plan.active_status or ("Running (cannot be verified)" if index % 37 == 5 else "Running"),
            level=level,
            app_size=app_size,
            media_size=int(app_size * (0.08 + 0.5 * _unit(seed, "dedupe", *key))),
            files=files,
            failed_files=failed_files,
            visible=not (plan.rare and index % 50 == HIDDEN_SLOT),
            stalled_at=stalled_at,
        )
        self._cache[key] = job
        return job

    def jobs(self, now: datetime) -> tuple[SimJob, ...]:
        """Every job submitted by now and not finished before now - 30 d, newest first."""
        if self._listing is not None and self._listing[0] == now:
            return self._listing[1]
        found: list[SimJob] = []
        for plan in PLANS:
            anchor = self._anchor(plan)
            longest = timedelta(minutes=plan.minutes[1]) + timedelta(hours=1)
            index = math.floor((now - HISTORY - longest - anchor) / plan.period)
            while True:
                job = self.job(plan, index)
                if job.submitted > now:
                    break
                if not job.finished(now) or job.ends >= now - HISTORY:
                    found.append(job)
                index += 1
        listing = tuple(sorted(found, key=lambda j: j.job_id, reverse=True))
        self._listing = (now, listing)
        return listing


# --- sessions and switches -------------------------------------------------------


@dataclass
class SimSession:
    token: str
    device_id: str
    last_used: datetime
    expired: bool = False
    ended: bool = False  # logged out or replaced by a renewal


@dataclass
class Sessions:
    seed: int
    tokens: dict[str, SimSession] = field(default_factory=dict)
    expire_after: int | None = None
    renewable: bool = True
    issued: int = 0

    def issue(self, device_id: str, now: datetime) -> str:
        self.issued += 1
        digest = hashlib.sha256(f"{self.seed}|token|{self.issued}".encode()).hexdigest()
        token = "QSDK " + digest + hashlib.sha256(digest.encode()).hexdigest()
        self.tokens[token] = SimSession(token, device_id, now)
        return token

    def accept(self, token: str | None, now: datetime) -> bool:
        """Whether an authenticated request may proceed; counts down the expiry switch."""
        if self.expire_after is not None:
            if self.expire_after == 0:
                for issued in self.tokens.values():
                    issued.expired = True
                self.expire_after = None
            else:
                self.expire_after -= 1
        session = self.tokens.get(token or "")
        if session is None or session.ended or session.expired:
            return False
        if now - session.last_used > IDLE_TIMEOUT:
            session.expired = True
            return False
        session.last_used = now
        return True

    def as_dict(self) -> dict[str, Any]:
        live = sum(1 for s in self.tokens.values() if not (s.ended or s.expired))
        return {"after": self.expire_after, "renewable": self.renewable, "issued": self.issued, "live": live}


@dataclass
class ErrorSwitch:
    form: str = "none"
    code: int = 2
    message: str = "Invalid input"
    count: int | None = None

    def take(self) -> ErrorSwitch | None:
        if self.form == "none":
            return None
        current = ErrorSwitch(self.form, self.code, self.message, self.count)
        if self.count is not None:
            self.count -= 1
            if self.count <= 0:
                self.form, self.count = "none", None
        return current


@dataclass
class PagingSwitch:
    ignore_offset: bool = False
    shift: int = 0
    # Page requests past the first since the last first-page request.
    later_pages: int = 0


DATASET = web.AppKey("commvault_dataset", CommvaultDataset)
SESSIONS = web.AppKey("commvault_sessions", Sessions)
ERRORS = web.AppKey("commvault_errors", ErrorSwitch)
PAGING = web.AppKey("commvault_paging", PagingSwitch)
WRAPPED_JSON = web.AppKey("commvault_wrapped_json", bool)
CREDENTIALS = web.AppKey("commvault_credentials", tuple)


# --- rendering ---------------------------------------------------------------------


def _wants_xml(request: web.Request) -> bool:
    return "xml" in request.headers.get("Accept", "").lower()


def _json(payload: Any, *, bom: bool = False) -> web.Response:
    text = json.dumps(payload)
    return web.Response(text=(BOM if bom else "") + text, content_type="application/json")


def _xml(root: str, attrs: Mapping[str, Any], children: str = "") -> web.Response:
    text = BOM + XML_DECLARATION + _element(root, attrs, children) + "\n"
    return web.Response(text=text, content_type="application/xml")


def _element(name: str, attrs: Mapping[str, Any], children: str = "") -> str:
    rendered = "".join(f" {key}={quoteattr(_xml_value(value))}" for key, value in attrs.items())
    if not children:
        return f"<{name}{rendered}/>"
    return f"<{name}{rendered}>{children}</{name}>"


def _xml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _summary(job: SimJob, now: datetime) -> dict[str, Any]:
    """A jobSummary as the JSON API renders it."""
    plan = job.plan
    finished = job.finished(now)
    status = job.status(now)
    progress = job.progress(now)
    scale = 1.0 if finished else progress
    app_size = int(job.app_size * scale)
    media = int(job.media_size * scale)
    client = plan.client + (" " if plan.trailing_space and job.index % 2 else "")
    if finished:
        reason = job.reason or ""
    elif now < job.running_from or plan.scenario == LAB:
        reason = _WAIT_REASONS.get(status, "")
    else:
        reason = ""
    return {
        "jobId": job.job_id,
        "status": status,
        "localizedStatus": status,
        "jobType": plan.job_type,
        "localizedOperationName": plan.job_type,
        "backupLevel": _LEVELS[job.level][0],
        "backupLevelName": job.level,
        "localizedBackupLevelName": job.level,
        "appTypeName": plan.app,
        "currentPhaseName": "" if finished else ("Scan" if now < job.running_from else plan.job_type),
        "jobStartTime": _epoch(job.submitted),
        "jobEndTime": _epoch(job.ends) if finished else 0,
        "lastUpdateTime": _epoch(job.last_update(now)),
        "jobElapsedTime": _epoch(job.ends if finished else now) - _epoch(job.submitted),
        "percentComplete": round(100 * progress, 6),
        "percentSavings": round(100 * (1 - media / app_size), 6) if app_size else 0.0,
        "sizeOfApplication": app_size,
        "sizeOfMediaOnDisk": media,
        "totalNumOfFiles": int(job.files * scale),
        "totalFailedFiles": job.failed_files if finished else 0,
        "totalFailedFolders": 0,
        "jobSubmitErrorCode": 0,
        "isVisible": job.visible,
        "isAged": finished and now - job.ends > timedelta(days=21),
        "statusColor": _COLORS.get(status, "red" if status in FAILED_STATUSES else "blue"),
        "pendingReason": reason,
        "destClientName": plan.client,
        "subclientName": plan.subclient,
        "backupSetName": plan.backupset,
        "userName": {"userName": "admin", "userId": 1},
        "subclient": {
            "clientName": client,
            "clientId": plan.client_id,
            "instanceName": plan.instance,
            "instanceId": 1,
            "backupsetName": plan.backupset,
            "backupsetId": plan.backupset_id,
            "subclientName": plan.subclient,
            "subclientId": plan.subclient_id,
            "appName": plan.app,
            "applicationId": plan.app_id,
        },
        "destinationClient": {"clientName": plan.client},
    }


def _xml_attrs(summary: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Mapping[str, Any]]]:
    """The scalar attributes and the child elements of an XML jobSummary."""
    attrs = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    attrs["backupLevel"] = _LEVELS[summary["backupLevelName"]][1]
    # The documented XML example has no jobEndTime; half the jobs follow it.
    if not attrs["jobEndTime"] or attrs["jobId"] % 2 == 0:
        del attrs["jobEndTime"]
    return attrs, {k: v for k, v in summary.items() if isinstance(v, dict)}


def _render_xml_jobs(summaries: Iterable[Mapping[str, Any]], total: int) -> web.Response:
    jobs = []
    for summary in summaries:
        attrs, children = _xml_attrs(summary)
        inner = "".join(_element(name, child) for name, child in children.items())
        jobs.append("<jobs>" + _element("jobSummary", attrs, inner) + "</jobs>")
    return _xml("JobManager_JobListResponse", {"totalRecordsWithoutPaging": total}, "".join(jobs))


def _render_wrapped_json(summaries: Iterable[Mapping[str, Any]], total: int) -> web.Response:
    """The xmltodict-style JSON some servers send: attributes as "@name", all strings."""

    def attributes(values: Mapping[str, Any]) -> dict[str, Any]:
        return {"@" + k: _xml_value(v) for k, v in values.items()}

    jobs = []
    for summary in summaries:
        attrs, children = _xml_attrs(summary)
        jobs.append({"jobSummary": {**attributes(attrs), **{k: attributes(v) for k, v in children.items()}}})
    return _json({"JobManager_JobListResponse": {"@totalRecordsWithoutPaging": str(total), "jobs": jobs}})


def _render_error(switch: ErrorSwitch, xml: bool) -> web.Response:
    entry = {"errorCode": switch.code, "errLogMessage": switch.message}
    if xml:
        if switch.form == "errorCode":
            return _xml("CVGui_GenericResp", {"errorCode": switch.code, "errorMessage": switch.message})
        child = "errList" if switch.form == "errList" else "error"
        return _xml("JobManager_JobListResponse", {}, _element(child, entry))
    if switch.form == "errorCode":
        return _json({"errorCode": switch.code, "errorMessage": switch.message})
    if switch.form == "errList":
        return _json({"errList": [entry]})
    return _json({"error": {"errList": [entry]}})


def _access_denied() -> web.Response:
    return web.json_response(ACCESS_DENIED, status=401)


# --- handlers ----------------------------------------------------------------------


async def _request_fields(request: web.Request, root: str) -> dict[str, str]:
    """The members of a JSON body, or the attributes of an XML `<root .../>` body."""
    body = await request.read()
    if "xml" in request.headers.get("Content-Type", ""):
        try:
            doc = xmltodict.parse(body, disable_entities=True)
        except (ExpatError, ValueError):
            return {}
        node = doc.get(root) if isinstance(doc, dict) else None
        if not isinstance(node, dict):
            return {}
        return {k.lstrip("@"): v for k, v in node.items() if isinstance(v, str)}
    try:
        payload = json.loads(body.decode("utf-8-sig"))
    except (ValueError, UnicodeError):
        return {}
    if not isinstance(payload, dict):
        return {}
    return {k: v for k, v in payload.items() if isinstance(v, str)}


def _password_matches(given: str, expected: str) -> bool:
    try:
        decoded = base64.b64decode(given.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeError):
        return False
    return hmac.compare_digest(decoded, expected.encode())


async def _login(request: web.Request) -> web.Response:
    fields = await _request_fields(request, "DM2ContentIndexing_CheckCredentialReq")
    username, password = request.app[CREDENTIALS]
    xml = _wants_xml(request)
    if fields.get("username") != username or not _password_matches(fields.get("password", ""), password):
        # The documented failure: HTTP 200, no token, the reason in errList.
        if xml:
            refused: dict[str, Any] = {"loginAttempts": 1, "remainingLockTime": 0, "isAccountLocked": False}
            errors = _element("errList", {"errLogMessage": BAD_LOGIN})
            return _xml("DM2ContentIndexing_CheckCredentialResp", refused, errors)
        return _json({"loginAttempts": 1, "remainingLockTime": 0, "errList": [{"errLogMessage": BAD_LOGIN}]})
    token = request.app[SESSIONS].issue(fields.get("deviceId", ""), sim_now(request))
    organization = {"GUID": "8f2c1c9e-6d0b-4a51-9a0e-3d2b7f4c1a00", "providerDomainName": "Commcell", "providerId": 0}
    if xml:
        attrs: dict[str, Any] = {
            "aliasName": "1",
            "userGUID": "3c8e8f9a-2a44-4d6b-8d57-0f3c0f6b2e11",
            "userName": username,
            "ccn": 0,
            "token": token,
            "forcePasswordChange": 0,
            "isAccountLocked": 0,
        }
        child = _element("ownerOrganization", {"providerId": 0, "providerDomainName": "Commcell"})
        return _xml("DM2ContentIndexing_CheckCredentialResp", attrs, child)
    return _json(
        {
            "aliasName": "1",
            "userGUID": "3c8e8f9a-2a44-4d6b-8d57-0f3c0f6b2e11",
            "loginAttempts": 0,
            "remainingLockTime": 0,
            "userName": username,
            "providerType": 1,
            "ccn": 0,
            "token": token,
            "capability": 4328650366975,
            "forcePasswordChange": False,
            "isAccountLocked": False,
            "errList": [],
            "ownerOrganization": organization,
            "providerOrganization": organization,
            "additionalResp": {"nameValues": [{"name": "USERNAME", "value": username}]},
        }
    )


async def _renew(request: web.Request) -> web.Response:
    fields = await _request_fields(request, "DM2ContentIndexing_RenewTokenReq")
    sessions = request.app[SESSIONS]
    session = sessions.tokens.get(fields.get("sessionId", ""))
    if not sessions.renewable or session is None or session.ended or session.device_id != fields.get("deviceId"):
        return _json({"error": {"errLogMessage": "Failed to renew the login token.", "errorCode": 1}})
    session.ended = True
    token = sessions.issue(session.device_id, sim_now(request))
    if _wants_xml(request):
        return _xml("DM2ContentIndexing_CheckCredentialResp", {"token": token})
    return _json({"token": token})


async def _logout(request: web.Request) -> web.Response:
    session = request.app[SESSIONS].tokens.get(request.headers.get("Authtoken", ""))
    if session is None or session.ended:
        return _access_denied()
    session.ended = True
    return web.Response(text="User logged out", content_type="text/plain")


def _bad_input(request: web.Request, message: str) -> web.Response:
    return _render_error(ErrorSwitch("errorCode", 2, message), _wants_xml(request))


def _header_int(request: web.Request, name: str, default: int) -> int | None:
    text = request.headers.get(name)
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _job_names(job: SimJob) -> tuple[str, str]:
    """What a hide fault may name: the client, or the job's `client/backupset/subclient`."""
    plan = job.plan
    return plan.client, f"{plan.client}/{plan.backupset}/{plan.subclient}"


def _shifted_job(job: SimJob, skew: timedelta) -> SimJob:
    return replace(job, submitted=job.submitted + skew, running_from=job.running_from + skew, ends=job.ends + skew)


def _flipped_job(job: SimJob) -> SimJob:
    """Another final status: a completed job becomes failed, anything else completed."""
    if job.outcome == COMPLETED:
        return replace(job, outcome="Failed", reason=_REASONS["Failed"])
    return replace(job, outcome=COMPLETED, reason=None, failed_files=0)


def _vendor_jobs(request: web.Request) -> list[SimJob]:
    """Every job as the (possibly faulty) CommServe holds it, newest first."""
    return prepare(
        data_faults(request),
        request.app[DATASET].jobs(sim_now(request)),
        names=_job_names,
        shift=_shifted_job,
        flip=_flipped_job,
    )


def _selected(request: web.Request, now: datetime) -> list[SimJob] | str:
    """The jobs the query asks for, newest first; a message when it is invalid."""
    query = request.query
    try:
        lookup = int(query.get("completedJobLookupTime", DEFAULT_LOOKUP_SECONDS))
    except ValueError:
        return "completedJobLookupTime must be a number of seconds"
    category = query.get("jobCategory", "All").strip().lower()
    if category not in ("all", "active", "finished"):
        return "jobCategory must be Active, Finished or All"
    type_filter = query.get("jobFilter", "Backup")
    types = {"_".join(t.lower().split()) for t in type_filter.split(",") if t.strip()}
    client_id = query.get("clientId")
    found = []
    for job in _vendor_jobs(request):
        finished = job.finished(now)
        if finished and (category == "active" or job.ends < now - timedelta(seconds=lookup)):
            continue
        if not finished and category == "finished":
            continue
        if types and "_".join(job.plan.job_type.lower().split()) not in types:
            continue
        if client_id and client_id != str(job.plan.client_id):
            continue
        found.append(job)
    return found


async def _get_jobs(request: web.Request) -> web.Response:
    # Tokens idle out on the real clock; jobs are told in the vendor's.
    if not request.app[SESSIONS].accept(request.headers.get("Authtoken"), sim_now(request)):
        return _access_denied()
    now = vendor_now(request)
    error = request.app[ERRORS].take()
    if error is not None:
        return _render_error(error, _wants_xml(request))
    limit = _header_int(request, "limit", DEFAULT_LIMIT)
    offset = _header_int(request, "offset", 0)
    if not limit or offset is None:
        return _bad_input(request, "limit and offset must be non-negative integers, limit positive")
    selected = _selected(request, now)
    if isinstance(selected, str):
        return _bad_input(request, selected)
    faults = data_faults(request)
    selected = doubled(faults, selected)
    paging = request.app[PAGING]
    if paging.ignore_offset:
        offset = 0
    if offset == 0:
        paging.later_pages = 0
    else:
        paging.later_pages += 1
        selected = selected[paging.shift * paging.later_pages :]
    page = arranged(faults, selected[offset : offset + limit])
    return _render_jobs(request, [_summary(job, now) for job in page], len(selected), offset)


async def _get_job(request: web.Request) -> web.Response:
    if not request.app[SESSIONS].accept(request.headers.get("Authtoken"), sim_now(request)):
        return _access_denied()
    now = vendor_now(request)
    wanted = request.match_info["jobId"]
    jobs = [_summary(job, now) for job in _vendor_jobs(request) if str(job.job_id) == wanted]
    return _render_jobs(request, jobs, len(jobs), 0)


def _render_jobs(request: web.Request, summaries: list[dict[str, Any]], total: int, offset: int) -> web.Response:
    if _wants_xml(request):
        return _render_xml_jobs(summaries, total)
    if request.app[WRAPPED_JSON]:
        return _render_wrapped_json(summaries, total)
    payload = {
        "totalRecordsWithoutPaging": total,
        "jobs": [{"jobSummary": summary} for summary in summaries],
        "processinginstructioninfo": {"attributes": [{"name": "exitval", "value": "0"}]},
    }
    # Some Windows servers put a BOM in front; here the pages at odd offsets.
    return _json(payload, bom=offset % 2 == 1)


@web.middleware
async def _server_date(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The Date header from the simulated clock, as a server whose clock that is."""
    response = await handler(request)
    if not is_control(request):
        # A CommServe whose clock is ahead says so in its Date header too.
        response.headers["Date"] = format_datetime(vendor_now(request), usegmt=True)
    return response


# --- control routes ----------------------------------------------------------------


def _count(payload: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = payload.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise web.HTTPBadRequest(text=f"{key} must be a non-negative integer\n")
    return value


def _flag(payload: Mapping[str, Any], key: str, default: bool) -> bool:
    value = payload.get(key, default)
    if not isinstance(value, bool):
        raise web.HTTPBadRequest(text=f"{key} must be true or false\n")
    return value


def _check_keys(payload: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(payload) - allowed
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown keys: {', '.join(sorted(unknown))}\n")


async def _get_expire(request: web.Request) -> web.Response:
    return web.json_response(request.app[SESSIONS].as_dict())


async def _post_expire(request: web.Request) -> web.Response:
    payload = await control_json(request)
    _check_keys(payload, {"after", "renewable"})
    sessions = request.app[SESSIONS]
    sessions.expire_after = _count(payload, "after", 0)
    sessions.renewable = _flag(payload, "renewable", True)
    return web.json_response(sessions.as_dict())


async def _post_error(request: web.Request) -> web.Response:
    payload = await control_json(request)
    _check_keys(payload, {"form", "code", "message", "count"})
    form = payload.get("form", "errorCode")
    if form not in ERROR_FORMS:
        raise web.HTTPBadRequest(text=f"form must be one of {', '.join(ERROR_FORMS)}\n")
    message = payload.get("message", "Invalid input")
    if not isinstance(message, str):
        raise web.HTTPBadRequest(text="message must be a string\n")
    code = _count(payload, "code", 2)
    count = _count(payload, "count", None)
    if count == 0:
        raise web.HTTPBadRequest(text="count must be positive\n")
    switch = request.app[ERRORS]
    switch.form, switch.code, switch.message, switch.count = form, code or 0, message, count
    return web.json_response({"form": switch.form, "code": switch.code, "count": switch.count})


async def _post_paging(request: web.Request) -> web.Response:
    payload = await control_json(request)
    _check_keys(payload, {"ignore_offset", "shift"})
    paging = request.app[PAGING]
    paging.ignore_offset = _flag(payload, "ignore_offset", False)
    paging.shift = _count(payload, "shift", 0) or 0
    paging.later_pages = 0
    return web.json_response({"ignore_offset": paging.ignore_offset, "shift": paging.shift})


def create_app(
    *,
    seed: int = 1,
    now: datetime | None = None,
    username: str = DEMO_USERNAME,
    password: str = DEMO_PASSWORD,
    wrapped_json: bool = False,
) -> web.Application:
    """The simulator; `now` fixes its clock (else it follows wall time);
    `wrapped_json` answers the job list in the form some servers use:
    `{"JobManager_JobListResponse": {"@totalRecordsWithoutPaging": "7", ...}}`,
    the XML's attributes as "@name" members holding strings."""
    app = create_sim_app(now=now, middlewares=[_server_date])
    app[DATASET] = CommvaultDataset(seed, now or datetime.now(UTC))
    app[SESSIONS] = Sessions(seed)
    app[ERRORS] = ErrorSwitch()
    app[PAGING] = PagingSwitch()
    app[WRAPPED_JSON] = wrapped_json
    app[CREDENTIALS] = (username, password)
    add_data_fault_routes(app)
    for base in BASES:
        app.router.add_post(base + "/Login", _login)
        app.router.add_post(base + "/RenewLoginToken", _renew)
        app.router.add_post(base + "/Logout", _logout)
        app.router.add_get(base + "/Job", _get_jobs)
        app.router.add_get(base + "/Job/{jobId}", _get_job)
    app.router.add_get("/_sim/commvault/expire", _get_expire)
    app.router.add_post("/_sim/commvault/expire", _post_expire)
    app.router.add_post("/_sim/commvault/error", _post_error)
    app.router.add_post("/_sim/commvault/paging", _post_paging)
    return app


def demo_target(url: str) -> dict[str, Any]:
    return {
        "name": "commvault-demo",
        "vendor": "commvault",
        "url": url.rstrip("/") + "/commandcenter/api",
        "username": DEMO_USERNAME,
        "password": DEMO_PASSWORD,
        "labels": {},
    }


SIMULATOR = SimulatorSpec(name="commvault", create_app=create_app, demo_target=demo_target)
