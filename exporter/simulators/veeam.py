"""A Veeam Backup Enterprise Manager simulator: answers like the EM REST API
(`/api`, XML or JSON by Accept, JSON in the v12 PascalCase or the v13
camelCase shape), over a deterministic dataset that is a pure function of
(seed, origin), origin being the simulated now when the app was created.

The dataset (what --demo shows), two backup servers, ~780 sessions in 30 days:

- "SQL Backup" (vbr01, Backup): every 2 h, healthy; a failed session is
  retried (IsRetry) ten minutes after it ends.
- "Exchange Backup" (vbr01, Backup): daily; the last session that ended
  before origin failed, and every later one fails too (last-run alert).
- "File Server Backup" (vbr02, Backup): daily; every session since
  origin - 3 d failed (RPO breach).
- "Offsite Copy" (vbr02, BackupCopy): every 6 h; from the last session that
  ended before origin on, each ends with a warning; some sessions pause and
  resume on the way.
- "DR Copy" (vbr01, ImmediateBackupCopy), "Laptops" (vbr01, AgentBackup, long
  runs), "NAS Archive" (vbr02, NasBackup, runs most of the day, pauses too).
- "Backup Job 1" on both servers (Veeam's default job name): one job name,
  two jobs.
- "Web Servers Backup" (vbr02, Backup): created just before origin, so it has
  no session yet; its first is its first daily run after origin.
- "Test Lab Backup" (vbr01, Backup, Hyper-V): disabled (ScheduleEnabled
  false) since origin - 16 d; its older sessions stay in the history.
- "SQL Backup" on vbr02 (Backup): deleted at origin - 20 d (the job moved to
  vbr01); not in the job inventory, its sessions stay in the history.
  Both lie beyond the demo's lookback of 14 d, so that the demo alerts on
  the scenarios above only.
- "Exchange Replica" (vbr01, Replica): in the job inventory only, as its runs
  are ReplicaJobSessions, which this simulator does not serve.
- Repositories: a "Default Backup Repository" on each server, and an S3
  capacity tier whose size is unknown (-1).

The job inventory (`query?type=Job`) lists every job but the deleted one,
with JobType, Platform, ScheduleConfigured, ScheduleEnabled, NextRun (none
while disabled) and nested JobScheduleOptions. Sessions are created at fixed
offsets from 2024-01-01 and exist from now - 30 d up to now, so the clock
moving reveals new ones; session k of a job keeps its UID and its outcome
whatever the clock says. A session in progress is
Starting for its first minute or two, Stopping for its last, Pausing then
Resuming for a few minutes half-way when it pauses, Working otherwise.
Payload quirks of the real API are reproduced: fractional seconds of 0, 3, 6
or 7 digits, no EndTimeUTC while a session runs, Result None while running
and when stopped by a user, `&amp;` in paging links,
PascalCase JSON with null siblings, the token being base64 of the SessionId,
the session cookie winning over the header, pages of 100 when not asked,
and (create_app(bom=True)) a UTF-8 BOM before every body. Captures show a
running session's EndTimeUTC both as null and missing, without saying which
version does which: JSON v12 sends nulls, v13 leaves null fields out, XML
leaves the element out, so clients meet every form.

Control routes besides the shared ones (never faulted, counted nor authenticated):

- `GET|POST /_sim/veeam/expire`: `{"after": N}` makes every logon session,
  current and future, expire after N more authenticated requests (the next
  one gets 401); `{"after": null}` switches it off.
- `GET /_sim/veeam/sessions`: live logon sessions, logons, logouts, expiries.
- `GET|POST /_sim/veeam/paging`: `{"ignore_page": true}` answers page 1
  whatever page was asked for (a server repeating a page).
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
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.simulators.base import SimulatorSpec, control_json, create_sim_app, is_control, sim_now
from exporter.simulators.datafaults import (
    DataFaults,
    add_data_fault_routes,
    arranged,
    data_faults,
    doubled,
    prepare,
    vendor_now,
)
from exporter.timeutil import parse_timestamp

DEMO_USERNAME = "LAB\\svc-backup-exporter"
# A colon (Basic auth splits at the first one only), URL-special characters
# and a non-ASCII one: the logon must encode the raw UTF-8 string.
DEMO_PASSWORD = "Dæmo:Veeam%+&pw"  # noqa: S105 - the simulator's published demo credential

NAMESPACE = "http://www.veeam.com/ent/v1.0"
SESSION_HEADER = "X-RestSvcSessionId"
HISTORY = timedelta(days=30)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
IDLE_TIMEOUT = timedelta(minutes=15)
DEFAULT_PAGE_SIZE = 100
SUPPORTED_VERSIONS = ("v1_5", "v1_6", "v1_7")
JSON_STYLES = ("v12", "v13")
BOM = b"\xef\xbb\xbf"
RETRY_DELAY = timedelta(minutes=10)
ZERO = timedelta(0)

HEALTHY = "healthy"
LAST_FAILED = "last_failed"
FAILING = "failing_3d"
WARNING = "warning"

STATES = ("Starting", "Stopping", "Working", "Pausing", "Resuming", "Stopped")
RESULTS = ("Success", "Warning", "Failed")

_FAILURES = (
    "Error: Failed to create VM snapshot: insufficient free space on datastore ds-prod-02",
    "Error: Unable to allocate processing resources: backup proxy px01 is unavailable",
    "Error: Failed to connect to guest OS of vm-app-07: the network path was not found",
)
_WARNINGS = (
    "Warning: Changed block tracking is disabled for vm-app-03; the whole disk was read",
    "Warning: 1 of 12 machines processed with warnings: vm-legacy-02 is powered off",
)
_STOPPED_BY_USER = "Job has been stopped by user LAB\\veeam-admin"
_SCENARIO_MESSAGES = {
    LAST_FAILED: "Error: Failed to prepare guest for hot backup: Exchange VSS writer is in a failed state (exch01)",
    FAILING: "Error: Not enough free space on backup repository 'Default Backup Repository' (vbr02)",
    WARNING: "Warning: Restore point of vm-sql-02 is locked by another task; it will be copied next interval",
}


@dataclass(frozen=True)
class BackupServer:
    key: str
    name: str


SERVERS: tuple[BackupServer, ...] = (
    BackupServer("vbr01", "vbr01.lab.local"),
    BackupServer("vbr02", "vbr02.lab.local"),
)


@dataclass(frozen=True)
class JobPlan:
    key: str
    name: str
    job_type: str
    server: str
    period: timedelta
    offset: timedelta
    minutes: tuple[int, int]
    scenario: str = HEALTHY
    retries: bool = False
    pauses: bool = False
    platform: str = "VMware"
    # Runs are scheduled from origin + first_run on, and up to origin +
    # last_run (None: no such bound).
    first_run: timedelta | None = None
    last_run: timedelta | None = None
    schedule_enabled: bool = True
    deleted: bool = False  # gone from the inventory; its sessions stay


PLANS: tuple[JobPlan, ...] = (
    JobPlan("sql", "SQL Backup", "Backup", "vbr01", timedelta(hours=2), timedelta(minutes=10), (8, 25), retries=True),
    JobPlan(
        "exch", "Exchange Backup", "Backup", "vbr01", timedelta(days=1), timedelta(hours=22), (40, 90), LAST_FAILED
    ),
    JobPlan(
        "fs",
        "File Server Backup",
        "Backup",
        "vbr02",
        timedelta(days=1),
        timedelta(hours=23, minutes=30),
        (30, 120),
        FAILING,
    ),
    JobPlan(
        "copy",
        "Offsite Copy",
        "BackupCopy",
        "vbr02",
        timedelta(hours=6),
        timedelta(hours=1, minutes=5),
        (20, 140),
        WARNING,
        pauses=True,
    ),
    JobPlan("dr", "DR Copy", "ImmediateBackupCopy", "vbr01", timedelta(hours=12), timedelta(hours=3), (15, 70)),
    JobPlan("laptops", "Laptops", "AgentBackup", "vbr01", timedelta(days=1), timedelta(hours=8), (600, 840)),
    JobPlan(
        "nas",
        "NAS Archive",
        "NasBackup",
        "vbr02",
        timedelta(days=1),
        timedelta(hours=18),
        (1200, 1410),
        pauses=True,
    ),
    JobPlan("b1a", "Backup Job 1", "Backup", "vbr01", timedelta(days=1), timedelta(hours=1), (10, 40)),
    JobPlan("b1b", "Backup Job 1", "Backup", "vbr02", timedelta(days=1), timedelta(hours=2), (10, 40)),
    JobPlan(
        "web", "Web Servers Backup", "Backup", "vbr02", timedelta(days=1), timedelta(hours=21), (20, 45), first_run=ZERO
    ),
    JobPlan(
        "lab",
        "Test Lab Backup",
        "Backup",
        "vbr01",
        timedelta(days=1),
        timedelta(hours=4),
        (10, 30),
        platform="HyperV",
        last_run=-timedelta(days=16),
        schedule_enabled=False,
    ),
    JobPlan(
        "sql_old",
        "SQL Backup",
        "Backup",
        "vbr02",
        timedelta(days=1),
        timedelta(hours=20),
        (15, 40),
        last_run=-timedelta(days=20),
        deleted=True,
    ),
    JobPlan("replica", "Exchange Replica", "Replica", "vbr01", timedelta(hours=4), timedelta(minutes=30), (5, 15)),
)
# Job types whose runs are not BackupJobSessions (not served here).
SESSIONLESS_JOB_TYPES = frozenset({"Replica"})


@dataclass(frozen=True)
class RepositoryPlan:
    key: str
    name: str
    server: str
    kind: str
    capacity: int  # -1: unknown
    free: int  # at origin; -1: unknown
    daily_change: int = 0


GB = 1024**3
REPOSITORY_PLANS: tuple[RepositoryPlan, ...] = (
    RepositoryPlan("r1", "Default Backup Repository", "vbr01", "WindowsLocal", 1024 * GB, 412 * GB, -3 * GB),
    RepositoryPlan("r2", "Default Backup Repository", "vbr02", "WindowsLocal", 512 * GB, 9 * GB, -1 * GB),
    RepositoryPlan("r3", "Hardened Linux Repo", "vbr02", "LinuxHardened", 8192 * GB, 5120 * GB, -20 * GB),
    RepositoryPlan("r4", "Capacity Tier S3", "vbr01", "AmazonS3", -1, -1),
)


def _digest(seed: int, *parts: object) -> int:
    text = "|".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


def _unit(seed: int, *parts: object) -> float:
    """A deterministic draw in [0, 1)."""
    return (_digest(seed, *parts) >> 64) / 2**64


def _guid(seed: int, *parts: object) -> str:
    return str(uuid.UUID(int=_digest(seed, "guid", *parts)))


@dataclass(frozen=True)
class Stamp:
    """A timestamp as the server renders it: `value` is exactly what `text` says."""

    value: datetime
    text: str


def _stamp(when: datetime, digits: int, seventh: int = 0) -> Stamp:
    """`when` cut to `digits` fractional digits (0, 3, 6 or 7, .NET's ticks)."""
    base = when.strftime("%Y-%m-%dT%H:%M:%S")
    micro = when.microsecond
    if digits == 0:
        return Stamp(when.replace(microsecond=0), base + "Z")
    if digits == 3:
        micro -= micro % 1000
        return Stamp(when.replace(microsecond=micro), f"{base}.{micro // 1000:03d}Z")
    # Seven digits carry 100 ns more than a datetime holds; parsers drop it.
    extra = f"{seventh}" if digits == 7 else ""
    return Stamp(when, f"{base}.{micro:06d}{extra}Z")


@dataclass(frozen=True)
class SimSession:
    uid: str
    job_uid: str
    plan: JobPlan
    index: int
    retry: bool
    created: Stamp
    ends: Stamp
    outcome: str  # Success | Warning | Failed | None, once `ends` has passed
    final_progress: int
    message: str | None
    starting: timedelta
    stopping: timedelta
    pause_at: datetime | None
    pause_length: timedelta

    @property
    def name(self) -> str:
        return f"{self.plan.name}@{self.created.value.strftime('%Y-%m-%d %H:%M:%S')}"

    def finished(self, now: datetime) -> bool:
        return now >= self.ends.value

    def state(self, now: datetime) -> str:
        if self.finished(now):
            return "Stopped"
        if now - self.created.value < self.starting:
            return "Starting"
        if self.ends.value - now <= self.stopping:
            return "Stopping"
        if self.pause_at is not None and self.pause_at <= now < self.pause_at + 2 * self.pause_length:
            return "Pausing" if now < self.pause_at + self.pause_length else "Resuming"
        return "Working"

    def result(self, now: datetime) -> str:
        return self.outcome if self.finished(now) else "None"

    def progress(self, now: datetime) -> int:
        if self.finished(now):
            return self.final_progress
        done = (now - self.created.value) / (self.ends.value - self.created.value)
        return max(0, min(99, math.floor(done * 100)))

    def failure_message(self, now: datetime) -> str | None:
        return self.message if self.finished(now) else None


@dataclass(frozen=True)
class SimJob:
    uid: str
    plan: JobPlan
    next_run: datetime | None  # None: the schedule is disabled


@dataclass(frozen=True)
class SimRepository:
    uid: str
    plan: RepositoryPlan
    capacity: int
    free: int


class VeeamDataset:
    """The backup servers, jobs, sessions and repositories at any simulated now."""

    def __init__(self, seed: int, origin: datetime) -> None:
        self.seed = seed
        self.origin = origin.astimezone(UTC)
        self.servers = {server.key: server for server in SERVERS}
        self.server_uids = {server.key: _guid(seed, "server", server.key) for server in SERVERS}
        self.job_uids = {plan.key: _guid(seed, "job", plan.key) for plan in PLANS}
        self._cache: dict[tuple[str, int, bool], SimSession] = {}
        # Per job: the index of the last main session that ended before
        # origin; the scenarios are defined relative to it.
        self._last_before_origin = {plan.key: self._last_ended(plan) for plan in PLANS}

    def _last_ended(self, plan: JobPlan) -> int:
        limit = self.origin if plan.last_run is None else min(self.origin, self.origin + plan.last_run)
        index = math.floor((limit - EPOCH - plan.offset) / plan.period)
        while self._timing(plan, index, retry=False)[1].value > limit:
            index -= 1
        return index

    def _scheduled(self, plan: JobPlan, index: int) -> datetime:
        return EPOCH + plan.offset + index * plan.period

    def _index(self, plan: JobPlan, when: datetime) -> int:
        """The last main session scheduled at or before `when`."""
        return math.floor((when - EPOCH - plan.offset) / plan.period)

    def _from_first(self, plan: JobPlan, index: int) -> int:
        """`index`, or the plan's first main session if that comes later."""
        if plan.first_run is None:
            return index
        return max(index, math.ceil((self.origin + plan.first_run - EPOCH - plan.offset) / plan.period))

    def _indexes(self, plan: JobPlan, since: datetime, now: datetime) -> range:
        """The main sessions scheduled from `since` (the one before it too)
        up to `now` that the plan runs at all."""
        end = now if plan.last_run is None else min(now, self.origin + plan.last_run)
        return range(self._from_first(plan, self._index(plan, since)), self._index(plan, end) + 1)

    def _timing(self, plan: JobPlan, index: int, *, retry: bool) -> tuple[Stamp, Stamp]:
        """(created, ends), independent of the outcome."""
        key = (plan.key, index, retry)
        seed = self.seed
        if retry:
            created = self._timing(plan, index, retry=False)[1].value + RETRY_DELAY
        else:
            created = EPOCH + plan.offset + index * plan.period
        created += timedelta(
            seconds=2 + 28 * _unit(seed, "delay", *key), microseconds=_digest(seed, "us", *key) % 10**6
        )
        low, high = (2, 10) if retry else plan.minutes
        seconds = 60 * (low + (high - low) * _unit(seed, "duration", *key))
        ends = created + timedelta(seconds=seconds, microseconds=_digest(seed, "end-us", *key) % 10**6)
        return self._stamp(created, "created", key), self._stamp(ends, "ends", key)

    def _stamp(self, when: datetime, what: str, key: tuple[str, int, bool]) -> Stamp:
        digits = (0, 3, 6, 7)[_digest(self.seed, "digits", what, *key) % 4]
        return _stamp(when, digits, _digest(self.seed, "tick", what, *key) % 10)

    def _outcome(self, plan: JobPlan, index: int, created: datetime, *, retry: bool) -> str:
        last = self._last_before_origin[plan.key]
        draw = _unit(self.seed, "outcome", plan.key, index, retry)
        if plan.scenario == LAST_FAILED and index >= last:
            return "Failed"
        if plan.scenario == FAILING and created >= self.origin - timedelta(days=3):
            return "Failed"
        if plan.scenario == WARNING and index >= last:
            return "Warning"
        if retry:
            return "Success" if draw < 0.85 else "Failed"
        if plan.scenario == HEALTHY and index in (last - 1, last):
            # A clean demo: only the scenarios above alert.
            return "Success"
        return "Success" if draw < 0.80 else "Warning" if draw < 0.90 else "Failed" if draw < 0.96 else "None"

    def _message(self, plan: JobPlan, outcome: str, key: tuple[str, int, bool]) -> str | None:
        if outcome == "Success":
            return None
        if outcome == "None":
            return _STOPPED_BY_USER
        if plan.scenario in _SCENARIO_MESSAGES and outcome == ("Warning" if plan.scenario == WARNING else "Failed"):
            return _SCENARIO_MESSAGES[plan.scenario]
        choices = _FAILURES if outcome == "Failed" else _WARNINGS
        return choices[_digest(self.seed, "message", *key) % len(choices)]

    def session(self, plan: JobPlan, index: int, *, retry: bool = False) -> SimSession:
        key = (plan.key, index, retry)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        seed = self.seed
        created, ends = self._timing(plan, index, retry=retry)
        outcome = self._outcome(plan, index, created.value, retry=retry)
        duration = ends.value - created.value
        pauses = plan.pauses and not retry and _unit(seed, "pause", *key) < 0.3
        final_progress = 100 if outcome in ("Success", "Warning") else int(5 + 90 * _unit(seed, "stop", *key))
        session = SimSession(
            uid="urn:veeam:BackupJobSession:" + _guid(seed, "session", *key),
            job_uid="urn:veeam:Job:" + self.job_uids[plan.key],
            plan=plan,
            index=index,
            retry=retry,
            created=created,
            ends=ends,
            outcome=outcome,
            final_progress=final_progress,
            message=self._message(plan, outcome, key),
            starting=timedelta(seconds=45 + 75 * _unit(seed, "starting", *key)),
            stopping=timedelta(seconds=20 + 70 * _unit(seed, "stopping", *key)),
            pause_at=created.value + duration / 2 if pauses else None,
            pause_length=min(duration / 8, timedelta(minutes=3 + 7 * _unit(seed, "pause-length", *key))),
        )
        self._cache[key] = session
        return session

    def sessions(self, now: datetime) -> list[SimSession]:
        """Every session created from now - 30 d up to now, oldest first."""
        found: list[SimSession] = []
        for plan in PLANS:
            if plan.job_type in SESSIONLESS_JOB_TYPES:
                continue
            # One early: its retry may fall inside the window.
            for index in self._indexes(plan, now - HISTORY - plan.period, now):
                main = self.session(plan, index)
                candidates = [main]
                if plan.retries and main.outcome == "Failed" and main.finished(now):
                    candidates.append(self.session(plan, index, retry=True))
                found += [s for s in candidates if now - HISTORY <= s.created.value <= now]
        return sorted(found, key=lambda s: (s.created.value, s.uid))

    def jobs(self, now: datetime) -> list[SimJob]:
        """The job inventory: every job not deleted, in plan order."""
        found = []
        for plan in PLANS:
            if plan.deleted:
                continue
            next_run = None
            if plan.schedule_enabled:
                next_run = self._scheduled(plan, self._from_first(plan, self._index(plan, now) + 1))
            found.append(SimJob("urn:veeam:Job:" + self.job_uids[plan.key], plan, next_run))
        return found

    def repositories(self, now: datetime) -> list[SimRepository]:
        days = (now - self.origin).total_seconds() / 86400
        repositories = []
        for plan in REPOSITORY_PLANS:
            free = plan.free
            if free >= 0:
                noise = (_unit(self.seed, "free", plan.key, int(now.timestamp()) // 3600) - 0.5) * GB
                free = max(0, min(plan.capacity, int(plan.free + plan.daily_change * days + noise)))
            uid = "urn:veeam:Repository:" + _guid(self.seed, "repository", plan.key)
            repositories.append(SimRepository(uid, plan, plan.capacity, free))
        return repositories


# --- state of the simulated server ----------------------------------------------


@dataclass
class LogonSession:
    session_id: str
    token: str
    user: str
    last_used: datetime
    # Authenticated requests left before it expires; None: no limit.
    budget: int | None = None


@dataclass
class EmState:
    username: str
    password: str
    json_style: str
    bom: bool
    default_page_size: int
    sessions: dict[str, LogonSession] = field(default_factory=dict)
    expire_after: int | None = None
    ignore_page: bool = False
    logons: int = 0
    logouts: int = 0
    expired: int = 0


DATASET = web.AppKey("veeam_dataset", VeeamDataset)
STATE = web.AppKey("veeam_state", EmState)
CURRENT_SESSION = web.RequestKey("veeam_logon_session", LogonSession)


# --- rendering ---------------------------------------------------------------------


def camel_case(name: str) -> str:
    """.NET's camelCase naming policy, which the v13 JSON follows:
    UID -> uid, CreationTimeUTC -> creationTimeUTC, PagingInfo -> pagingInfo."""
    chars = list(name)
    for i, char in enumerate(chars):
        if i == 1 and not char.isupper():
            break
        if i > 0 and i + 1 < len(chars) and not chars[i + 1].isupper():
            break
        chars[i] = char.lower()
    return "".join(chars)


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {camel_case(key): _camel_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_camel_keys(item) for item in value]
    return value


@dataclass(frozen=True)
class Link:
    rel: str
    href: str
    type: str | None = None
    name: str | None = None

    def xml(self) -> str:
        attrs = {"Rel": self.rel, "Type": self.type, "Href": self.href, "Name": self.name}
        return f"<Link{_attrs(attrs)} />"

    def json(self) -> dict[str, Any]:
        return {"Rel": self.rel, "Href": self.href, "Name": self.name, "Type": self.type}


def _attrs(attrs: Mapping[str, str | None]) -> str:
    return "".join(f" {key}={quoteattr(value)}" for key, value in attrs.items() if value is not None)


def _links_xml(links: Sequence[Link]) -> str:
    return "<Links>" + "".join(link.xml() for link in links) + "</Links>"


def _element(name: str, value: object) -> str:
    """An element; a mapping becomes one with child elements."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return f"<{name}>" + "".join(_element(key, item) for key, item in value.items()) + f"</{name}>"
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"<{name}>{escape(text)}</{name}>"


@dataclass(frozen=True)
class Entity:
    """One entity in both renderings: XML attributes + elements, JSON fields."""

    tag: str
    attributes: Mapping[str, str]  # Href, Type, Name, UID
    links: Sequence[Link]
    # (name, value): XML leaves out None, JSON v12 writes null, v13 leaves out.
    fields: Sequence[tuple[str, object]]

    def xml(self) -> str:
        body = _links_xml(self.links) + "".join(_element(name, value) for name, value in self.fields)
        return f"<{self.tag}{_attrs(self.attributes)}>{body}</{self.tag}>"

    def json(self, style: str) -> dict[str, Any]:
        item: dict[str, Any] = {name: value for name, value in self.fields if value is not None or style == "v12"}
        item.update(
            Name=self.attributes.get("Name"),
            UID=self.attributes.get("UID"),
            Links=[link.json() for link in self.links],
            Href=self.attributes.get("Href"),
            Type=self.attributes.get("Type"),
        )
        return item


class Renderer:
    """Renders answers in the format the request asked for."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.state = request.app[STATE]
        self.json = "application/json" in request.headers.get("Accept", "").lower()
        self.base = f"{request.scheme}://{request.host}/api"

    def respond(self, xml: str, document: dict[str, Any], *, status: int = 200) -> web.Response:
        if self.json:
            if self.state.json_style == "v13":
                document = _camel_keys(document)
            body = json.dumps(document, ensure_ascii=False).encode()
            content_type = "application/json"
        else:
            body = ('<?xml version="1.0" encoding="utf-8"?>\n' + xml).encode()
            content_type = "application/xml"
        if self.state.bom:
            body = BOM + body
        return web.Response(status=status, body=body, content_type=content_type, charset="utf-8")

    def error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
        phrase = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(status, "Error")
        xml = (
            f'<Error xmlns="{NAMESPACE}"{_attrs({"Message": message, "StatusCode": str(status), "Status": phrase})} />'
        )
        document = {
            "FirstChanceExceptionMessage": None,
            "StackTrace": None,
            "Message": message,
            "StatusCode": status,
            "Status": phrase,
        }
        response = self.respond(xml, document, status=status)
        response.headers.update(headers or {})
        return response


def _session_entity(renderer: Renderer, dataset: VeeamDataset, session: SimSession, now: datetime) -> Entity:
    base = renderer.base
    plan = session.plan
    server = dataset.servers[plan.server]
    guid = session.uid.rsplit(":", 1)[1]
    job_guid = session.job_uid.rsplit(":", 1)[1]
    links = [
        Link("Up", f"{base}/backupServers/{dataset.server_uids[server.key]}", "BackupServerReference", server.name),
        Link("Up", f"{base}/jobs/{job_guid}", "JobReference", plan.name),
        Link("Alternate", f"{base}/backupSessions/{guid}", "BackupJobSessionReference", session.name),
        Link("Down", f"{base}/backupSessions/{guid}/taskSessions", "BackupTaskSessionReferenceList"),
    ]
    finished = session.finished(now)
    if not finished:
        links.append(Link("Stop", f"{base}/backupSessions/{guid}?action=stop"))
    end = session.ends.text if finished else None
    fields: list[tuple[str, object]] = [
        ("IsRetry", session.retry),
        ("JobUid", session.job_uid),
        ("JobName", plan.name),
        ("JobType", plan.job_type),
        ("CreationTimeUTC", session.created.text),
        ("EndTimeUTC", end),
        ("State", session.state(now)),
        ("Result", session.result(now)),
        ("Progress", session.progress(now)),
        ("FailureMessage", session.failure_message(now)),
    ]
    if not renderer.json:
        # The XML schema orders JobUid first; IsRetry comes after Progress.
        fields = [*fields[1:9], fields[0], fields[9]]
    attributes = {
        "Href": f"{base}/backupSessions/{guid}?format=Entity",
        "Type": "BackupJobSession",
        "Name": session.name,
        "UID": session.uid,
    }
    return Entity("BackupJobSession", attributes, links, fields)


def _schedule_options(plan: JobPlan) -> dict[str, Any]:
    retry = {"RetrySpecified": plan.retries, "RetryTimes": 3, "RetryTimeout": 10}
    if plan.period >= timedelta(days=1):
        time_of_day = (datetime.min + plan.offset % timedelta(days=1)).strftime("%H:%M:%S")
        return {"RetryOptions": retry, "OptionsDaily": {"Enabled": True, "Kind": "Everyday", "Time": time_of_day}}
    hours = plan.period // timedelta(hours=1)
    return {"RetryOptions": retry, "OptionsPeriodically": {"Enabled": True, "Kind": "Hours", "FullPeriod": hours}}


def _job_entity(renderer: Renderer, dataset: VeeamDataset, job: SimJob) -> Entity:
    base = renderer.base
    plan = job.plan
    server = dataset.servers[plan.server]
    guid = job.uid.rsplit(":", 1)[1]
    links = [
        Link("Up", f"{base}/backupServers/{dataset.server_uids[server.key]}", "BackupServerReference", server.name),
        Link("Alternate", f"{base}/jobs/{guid}", "JobReference", plan.name),
        Link("Down", f"{base}/jobs/{guid}/includes", "ObjectInJobReferenceList"),
        Link("Down", f"{base}/jobs/{guid}/backupSessions", "BackupJobSessionReferenceList"),
        Link("Start", f"{base}/jobs/{guid}?action=start"),
        Link("ToggleScheduleEnabled", f"{base}/jobs/{guid}?action=toggleScheduleEnabled"),
    ]
    attributes = {
        "Href": f"{base}/jobs/{guid}?format=Entity",
        "Type": "Job",
        "Name": plan.name,
        "UID": job.uid,
    }
    fields: list[tuple[str, object]] = [
        ("JobType", plan.job_type),
        ("Platform", plan.platform),
        ("Description", "Created by LAB\\veeam-admin."),
        ("ScheduleConfigured", True),
        ("ScheduleEnabled", plan.schedule_enabled),
        ("NextRun", None if job.next_run is None else _stamp(job.next_run, 0).text),
        ("JobScheduleOptions", _schedule_options(plan)),
    ]
    return Entity("Job", attributes, links, fields)


def _repository_entity(renderer: Renderer, dataset: VeeamDataset, repository: SimRepository) -> Entity:
    base = renderer.base
    server = dataset.servers[repository.plan.server]
    guid = repository.uid.rsplit(":", 1)[1]
    links = [
        Link("Up", f"{base}/backupServers/{dataset.server_uids[server.key]}", "BackupServerReference", server.name),
        Link("Alternate", f"{base}/repositories/{guid}", "RepositoryReference", repository.plan.name),
    ]
    attributes = {
        "Href": f"{base}/repositories/{guid}?format=Entity",
        "Type": "Repository",
        "Name": repository.plan.name,
        "UID": repository.uid,
    }
    fields = [("Capacity", repository.capacity), ("FreeSpace", repository.free), ("Kind", repository.plan.kind)]
    return Entity("Repository", attributes, links, fields)


# Entity kinds a JSON QueryResult lists, all null but the one answered.
_JSON_ENTITY_KINDS = (
    "BackupJobSessions",
    "BackupTaskSessions",
    "BackupServers",
    "Jobs",
    "Repositories",
    "ReplicaJobSessions",
    "RestoreSessions",
)


# --- the query service -------------------------------------------------------------


class QueryError(Exception):
    """A 400 of the query service."""


@dataclass(frozen=True)
class FieldSpec:
    kind: str  # "time", "text", "number" or "enum"
    read: Callable[[Any, datetime], Any]
    order: tuple[str, ...] = ()


SERVER_NAMES = {server.key: server.name for server in SERVERS}
_SESSION_FIELDS: Mapping[str, FieldSpec] = {
    "uid": FieldSpec("text", lambda s, now: s.uid),
    "name": FieldSpec("text", lambda s, now: s.name),
    "jobtype": FieldSpec("text", lambda s, now: s.plan.job_type),
    "jobname": FieldSpec("text", lambda s, now: s.plan.name),
    "jobuid": FieldSpec("text", lambda s, now: s.job_uid),
    "creationtime": FieldSpec("time", lambda s, now: s.created.value),
    "endtime": FieldSpec("time", lambda s, now: s.ends.value if s.finished(now) else None),
    "state": FieldSpec("enum", lambda s, now: s.state(now), STATES),
    # Enumerations compare by ordinal: Success < Warning < Failed.
    "result": FieldSpec("enum", lambda s, now: s.result(now), ("None", *RESULTS)),
    "isretry": FieldSpec("text", lambda s, now: str(s.retry).lower()),
    "backupservername": FieldSpec("text", lambda s, now: SERVER_NAMES[s.plan.server]),
}
_JOB_FIELDS: Mapping[str, FieldSpec] = {
    "uid": FieldSpec("text", lambda j, now: j.uid),
    "name": FieldSpec("text", lambda j, now: j.plan.name),
    "jobtype": FieldSpec("text", lambda j, now: j.plan.job_type),
    "platform": FieldSpec("text", lambda j, now: j.plan.platform),
    "scheduleconfigured": FieldSpec("text", lambda j, now: "true"),
    "scheduleenabled": FieldSpec("text", lambda j, now: str(j.plan.schedule_enabled).lower()),
    "nextrun": FieldSpec("time", lambda j, now: j.next_run),
    "backupservername": FieldSpec("text", lambda j, now: SERVER_NAMES[j.plan.server]),
}
_REPOSITORY_FIELDS: Mapping[str, FieldSpec] = {
    "uid": FieldSpec("text", lambda r, now: r.uid),
    "name": FieldSpec("text", lambda r, now: r.plan.name),
    "capacity": FieldSpec("number", lambda r, now: r.capacity),
    "freespace": FieldSpec("number", lambda r, now: r.free),
    "kind": FieldSpec("text", lambda r, now: r.plan.kind),
    "backupservername": FieldSpec("text", lambda r, now: SERVER_NAMES[r.plan.server]),
}
Predicate = Callable[[Any], bool]
_TOKEN = re.compile(
    r"""\s*(?:(?P<punct>[();,])|(?P<field>[A-Za-z]+)\s*(?P<op>==|!=|<=|>=|<|>)\s*"""
    r"""(?P<value>"(?:[^"]|"")*"|[^;,()"]*))"""
)
_OPERATORS: Mapping[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


class FilterParser:
    """The query service's filter: `;` is AND, `,` is OR (AND binds tighter),
    parentheses group, values with spaces are quoted ("" is a quote)."""

    def __init__(self, text: str, fields: Mapping[str, FieldSpec], now: datetime) -> None:
        self.tokens = self._tokenize(text)
        self.position = 0
        self.fields = fields
        self.now = now

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, ...]]:
        tokens: list[tuple[str, ...]] = []
        position = 0
        while position < len(text):
            if not text[position:].strip():
                break
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise QueryError(f"Invalid filter expression near position {position}")
            if match.group("punct"):
                tokens.append((match.group("punct"),))
            else:
                tokens.append(("cmp", match.group("field"), match.group("op"), match.group("value")))
            position = match.end()
        return tokens

    def parse(self) -> Predicate:
        predicate = self._or()
        if self.position != len(self.tokens):
            raise QueryError("Invalid filter expression: unexpected token")
        return predicate

    def _peek(self) -> tuple[str, ...] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._peek() == (",",):
            self.position += 1
            parts.append(self._and())
        return lambda item: any(part(item) for part in parts)

    def _and(self) -> Predicate:
        parts = [self._primary()]
        while self._peek() == (";",):
            self.position += 1
            parts.append(self._primary())
        return lambda item: all(part(item) for part in parts)

    def _primary(self) -> Predicate:
        token = self._peek()
        if token is None:
            raise QueryError("Invalid filter expression: unexpected end")
        self.position += 1
        if token == ("(",):
            inner = self._or()
            if self._peek() != (")",):
                raise QueryError("Invalid filter expression: missing )")
            self.position += 1
            return inner
        if token[0] != "cmp":
            raise QueryError(f"Invalid filter expression: unexpected {token[0]!r}")
        return self._comparison(token[1], token[2], token[3])

    def _comparison(self, name: str, op: str, raw: str) -> Predicate:
        spec = self.fields.get(name.lower())
        if spec is None:
            raise QueryError(f"Unknown filter field: {name}")
        text = raw.strip()
        if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
            text = text[1:-1].replace('""', '"')
        key, expected = self._key(spec, name, text)
        compare = _OPERATORS[op]
        now = self.now

        def predicate(item: Any) -> bool:
            value = spec.read(item, now)
            if value is None:
                return op == "!="
            return compare(key(value), expected)

        return predicate

    @staticmethod
    def _key(spec: FieldSpec, name: str, text: str) -> tuple[Callable[[Any], Any], Any]:
        if spec.kind == "time":
            try:
                return (lambda value: value), parse_timestamp(text)
            except ValueError:
                raise QueryError(f"Invalid DateTime value for {name}: {text}") from None
        if spec.kind == "number":
            try:
                return (lambda value: value), int(text)
            except ValueError:
                raise QueryError(f"Invalid number for {name}: {text}") from None
        if spec.kind == "enum":
            ordinals = {value.lower(): i for i, value in enumerate(spec.order)}
            if text.lower() not in ordinals:
                raise QueryError(f"Invalid value for {name}: {text}")
            return (lambda value: ordinals[value.lower()]), ordinals[text.lower()]
        return (lambda value: value.casefold()), text.casefold()


def _query_int(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"Parameter {name} must be an integer") from None
    if value < 1:
        raise QueryError(f"Parameter {name} must be positive")
    return value


def _select(request: web.Request, items: Iterable[Any], fields: Mapping[str, FieldSpec], now: datetime) -> list[Any]:
    selected = list(items)
    text = request.query.get("filter")
    if text:
        predicate = FilterParser(text, fields, now).parse()
        selected = [item for item in selected if predicate(item)]
    for parameter, reverse in (("sortAsc", False), ("sortDesc", True)):
        field_name = request.query.get(parameter)
        if field_name is None:
            continue
        spec = fields.get(field_name.lower())
        if spec is None:
            raise QueryError(f"Unknown sort field: {field_name}")
        # Ties keep the order by UID, whichever the direction; rows without
        # the field come last.
        selected.sort(key=lambda item: item.uid)
        present = [item for item in selected if spec.read(item, now) is not None]
        absent = [item for item in selected if spec.read(item, now) is None]
        present.sort(key=lambda item: _sort_key(spec, spec.read(item, now)), reverse=reverse)
        selected = present + absent
    return selected


def _sort_key(spec: FieldSpec, value: Any) -> Any:
    if spec.kind == "enum":
        return [v.lower() for v in spec.order].index(str(value).lower())
    if spec.kind == "text":
        return str(value).casefold()
    return value


def _page_links(renderer: Renderer, page: int, count: int, size: int) -> list[Link]:
    query = [(k, v) for k, v in renderer.request.query.items() if k.lower() not in ("page", "pagesize")]

    def href(number: int) -> str:
        parts = [f"{k}={quote(v, safe=';')}" for k, v in query] + [f"pageSize={size}", f"page={number}"]
        return f"{renderer.base}/query?" + "&".join(parts)

    links = [Link("First", href(1))]
    if page > 1:
        links.append(Link("Previous", href(page - 1)))
    if page < count:
        links.append(Link("Next", href(page + 1)))
    links.append(Link("Last", href(max(1, count))))
    return links


def _query_result(
    renderer: Renderer, plural: str, entities: Sequence[Entity], refs: bool, page: int, count: int, size: int
) -> web.Response:
    links = _page_links(renderer, page, count, size)
    paging_xml = f'<PagingInfo PageNum="{page}" PageSize="{size}" PagesCount="{count}">{_links_xml(links)}</PagingInfo>'
    paging_json = {"Links": [link.json() for link in links], "PageNum": page, "PageSize": size, "PagesCount": count}
    if refs:
        ref_xml = "".join(_ref_xml(entity) for entity in entities)
        xml = f'<QueryResult xmlns="{NAMESPACE}"><Refs>{ref_xml}</Refs>{paging_xml}</QueryResult>'
        document: dict[str, Any] = {
            "Refs": {"Refs": [_ref_json(entity) for entity in entities]},
            "Entities": None,
            "Resources": None,
            "Links": None,
            "PagingInfo": paging_json,
        }
        return renderer.respond(xml, document)
    items_xml = "".join(entity.xml() for entity in entities)
    xml = (
        f'<QueryResult xmlns="{NAMESPACE}"><Entities><{plural}>{items_xml}</{plural}></Entities>'
        f"{paging_xml}</QueryResult>"
    )
    style = renderer.state.json_style
    kinds: dict[str, Any] = dict.fromkeys(_JSON_ENTITY_KINDS)
    kinds[plural] = {plural: [entity.json(style) for entity in entities]}
    document = {"Refs": None, "Entities": kinds, "Resources": None, "Links": None, "PagingInfo": paging_json}
    return renderer.respond(xml, document)


def _ref_attributes(entity: Entity) -> dict[str, str]:
    href = entity.attributes["Href"].split("?", 1)[0]
    return {
        "Type": entity.attributes["Type"] + "Reference",
        "Href": href,
        "Name": entity.attributes["Name"],
        "UID": entity.attributes["UID"],
    }


def _ref_xml(entity: Entity) -> str:
    return f"<Ref{_attrs(_ref_attributes(entity))}>{_links_xml(entity.links)}</Ref>"


def _ref_json(entity: Entity) -> dict[str, Any]:
    return {"Links": [link.json() for link in entity.links], **_ref_attributes(entity)}


def _shifted_stamp(stamp: Stamp, skew: timedelta) -> Stamp:
    """The same instant `skew` later, written with as many fractional digits."""
    fraction = stamp.text[20:-1] if stamp.text[19] == "." else ""
    seventh = int(fraction[6]) if len(fraction) == 7 else 0
    return _stamp(stamp.value + skew, len(fraction), seventh)


def _shifted_session(session: SimSession, skew: timedelta) -> SimSession:
    return replace(
        session,
        created=_shifted_stamp(session.created, skew),
        ends=_shifted_stamp(session.ends, skew),
        pause_at=None if session.pause_at is None else session.pause_at + skew,
    )


def _flipped_session(session: SimSession) -> SimSession:
    """Another result: a success becomes a failure, anything else a success."""
    if session.outcome == "Success":
        return replace(session, outcome="Failed", message=_FAILURES[0])
    return replace(session, outcome="Success", message=None, final_progress=100)


def _session_names(session: SimSession) -> tuple[str]:
    return (session.plan.name,)


def _job_names(job: SimJob) -> tuple[str]:
    return (job.plan.name,)


def _query_rows(request: web.Request, kind: str, faults: DataFaults, now: datetime) -> tuple[list[Any], str]:
    """The rows a query pages over (data faults applied), and their plural."""
    dataset = request.app[DATASET]
    if kind == "backupjobsession":
        sessions = prepare(
            faults,
            dataset.sessions(sim_now(request)),
            names=_session_names,
            shift=_shifted_session,
            flip=_flipped_session,
        )
        return doubled(faults, _select(request, sessions, _SESSION_FIELDS, now)), "BackupJobSessions"
    if kind == "job":
        jobs = [job for job in dataset.jobs(sim_now(request)) if not faults.hides(_job_names(job))]
        return doubled(faults, _select(request, jobs, _JOB_FIELDS, now)), "Jobs"
    if kind == "repository":
        # Capacity is no run data: the skew leaves it alone.
        repositories = dataset.repositories(sim_now(request))
        return _select(request, repositories, _REPOSITORY_FIELDS, now), "Repositories"
    raise QueryError(f"Unsupported query type: {request.query.get('type')}")


async def _get_query(request: web.Request) -> web.Response:
    renderer = Renderer(request)
    dataset = request.app[DATASET]
    state = request.app[STATE]
    faults = data_faults(request)
    now = vendor_now(request)
    kind = request.query.get("type", "").lower()
    answer_format = request.query.get("format", "Refs").lower()
    try:
        if answer_format not in ("refs", "entities"):
            raise QueryError(f"Unsupported format: {request.query.get('format')}")
        rows, plural = _query_rows(request, kind, faults, now)
        size = _query_int(request, "pageSize", state.default_page_size)
        page = 1 if state.ignore_page else _query_int(request, "page", 1)
    except QueryError as exc:
        return renderer.error(400, str(exc))
    count = math.ceil(len(rows) / size)
    shown = arranged(faults, rows[(page - 1) * size : page * size])
    if plural == "Repositories":
        entities = [_repository_entity(renderer, dataset, row) for row in shown]
    elif plural == "Jobs":
        entities = [_job_entity(renderer, dataset, row) for row in shown]
    else:
        entities = [_session_entity(renderer, dataset, row, now) for row in shown]
    return _query_result(renderer, plural, entities, answer_format == "refs", page, count, size)


# --- root, logon and logout ----------------------------------------------------------


async def _get_root(request: web.Request) -> web.Response:
    renderer = Renderer(request)
    base = renderer.base
    links = [
        Link("Down", f"{base}/logonSessions", "LogonSessionList"),
        Link("Create", f"{base}/sessionMngr/?v=latest", "LogonSession"),
    ]
    versions_xml = "".join(
        f'<SupportedVersion Name="{version}">{_links_xml([Link("Create", f"{base}/sessionMngr/?v={version}")])}'
        "</SupportedVersion>"
        for version in SUPPORTED_VERSIONS
    )
    xml = (
        f'<EnterpriseManager xmlns="{NAMESPACE}">{_links_xml(links)}'
        f"<SupportedVersions>{versions_xml}</SupportedVersions></EnterpriseManager>"
    )
    document = {
        "SupportedVersions": {
            "SupportedVersions": [
                {"Links": [Link("Create", f"{base}/sessionMngr/?v={version}").json()], "Name": version}
                for version in SUPPORTED_VERSIONS
            ]
        },
        "Links": [link.json() for link in links],
        "Href": None,
        "Type": None,
    }
    return renderer.respond(xml, document)


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


async def _post_logon(request: web.Request) -> web.Response:
    renderer = Renderer(request)
    state = request.app[STATE]
    version = request.query.get("v", "latest")
    if version not in ("latest", *SUPPORTED_VERSIONS):
        return renderer.error(400, f"Unsupported API version: {version}")
    credentials = _basic_credentials(request.headers.get("Authorization"))
    if credentials is None or not (_same(credentials[0], state.username) and _same(credentials[1], state.password)):
        return renderer.error(
            401, "Authentication failed: invalid user name or password", {"WWW-Authenticate": "Basic Realm=RestSvc"}
        )
    session_id = str(uuid.uuid4())
    # Today's servers send base64 of the SessionId; clients copy it verbatim.
    token = base64.b64encode(session_id.encode()).decode("ascii")
    state.sessions[token] = LogonSession(session_id, token, credentials[0], sim_now(request), state.expire_after)
    state.logons += 1
    base = renderer.base
    links = [
        Link("Up", f"{base}/", "EnterpriseManager"),
        Link("Down", f"{base}/backupSessions", "BackupJobSessionReferenceList"),
        Link("Down", f"{base}/repositories", "RepositoryReferenceList"),
        Link("Delete", f"{base}/logonSessions/{session_id}"),
    ]
    attributes = {"Type": "LogonSession", "Href": f"{base}/logonSessions/{session_id}"}
    xml = (
        f'<LogonSession xmlns="{NAMESPACE}"{_attrs(attributes)}>{_links_xml(links)}'
        f"{_element('UserName', credentials[0])}{_element('SessionId', session_id)}</LogonSession>"
    )
    document = {
        "UserName": credentials[0],
        "SessionId": session_id,
        "Links": [link.json() for link in links],
        **attributes,
    }
    response = renderer.respond(xml, document, status=201)
    response.headers[SESSION_HEADER] = token
    response.set_cookie(SESSION_HEADER, token, path="/api")
    return response


async def _delete_logon_session(request: web.Request) -> web.Response:
    state = request.app[STATE]
    current = request[CURRENT_SESSION]
    wanted = request.match_info["id"]
    for token, session in list(state.sessions.items()):
        if session.session_id == wanted and session.user == current.user:
            del state.sessions[token]
            state.logouts += 1
            return web.Response(status=204)
    return Renderer(request).error(404, f"Logon session {wanted} was not found")


_PUBLIC = {("GET", "/api"), ("GET", "/api/"), ("POST", "/api/sessionMngr/"), ("POST", "/api/sessionMngr")}


def _session_middleware() -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_control(request) or (request.method, request.path) in _PUBLIC:
            return await handler(request)
        state = request.app[STATE]
        # The cookie wins over the header when a client sends both.
        token = request.cookies.get(SESSION_HEADER) or request.headers.get(SESSION_HEADER)
        session = state.sessions.get(token or "")
        now = sim_now(request)
        if session is not None and (now - session.last_used > IDLE_TIMEOUT or session.budget == 0):
            del state.sessions[session.token]
            state.expired += 1
            session = None
        if session is None:
            message = "Authentication required" if not token else "The session has expired or does not exist"
            return Renderer(request).error(401, message)
        session.last_used = now
        if session.budget is not None:
            session.budget -= 1
        request[CURRENT_SESSION] = session
        return await handler(request)

    return authenticate


# --- control -----------------------------------------------------------------------


async def _get_expire(request: web.Request) -> web.Response:
    return web.json_response({"after": request.app[STATE].expire_after})


async def _post_expire(request: web.Request) -> web.Response:
    payload = await control_json(request)
    after = payload.get("after")
    if set(payload) != {"after"} or not (
        after is None or (isinstance(after, int) and not isinstance(after, bool) and after >= 1)
    ):
        raise web.HTTPBadRequest(text='give {"after": N} with N >= 1, or {"after": null}\n')
    state = request.app[STATE]
    state.expire_after = after
    for session in state.sessions.values():
        session.budget = after
    return web.json_response({"after": after})


async def _get_sessions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "live": len(state.sessions),
            "logons": state.logons,
            "logouts": state.logouts,
            "expired": state.expired,
        }
    )


async def _get_paging(request: web.Request) -> web.Response:
    return web.json_response({"ignore_page": request.app[STATE].ignore_page})


async def _post_paging(request: web.Request) -> web.Response:
    payload = await control_json(request)
    ignore_page = payload.get("ignore_page")
    if set(payload) != {"ignore_page"} or not isinstance(ignore_page, bool):
        raise web.HTTPBadRequest(text='give {"ignore_page": true|false}\n')
    request.app[STATE].ignore_page = ignore_page
    return web.json_response({"ignore_page": ignore_page})


def create_app(
    *,
    seed: int = 1,
    now: datetime | None = None,
    username: str = DEMO_USERNAME,
    password: str = DEMO_PASSWORD,
    json_style: str = "v12",
    bom: bool = False,
    default_page_size: int = DEFAULT_PAGE_SIZE,
) -> web.Application:
    """The simulator; `now` fixes its clock (else it follows wall time).
    `json_style` is the shape of JSON answers: "v12" PascalCase, "v13" camelCase."""
    if json_style not in JSON_STYLES:
        raise ValueError(f"json_style must be one of {', '.join(JSON_STYLES)}")
    app = create_sim_app(now=now, middlewares=[_session_middleware()])
    app[DATASET] = VeeamDataset(seed, now or datetime.now(UTC))
    app[STATE] = EmState(username, password, json_style, bom, default_page_size)
    add_data_fault_routes(app)
    app.router.add_get("/api", _get_root)
    app.router.add_get("/api/", _get_root)
    app.router.add_post("/api/sessionMngr/", _post_logon)
    app.router.add_post("/api/sessionMngr", _post_logon)
    app.router.add_delete("/api/logonSessions/{id}", _delete_logon_session)
    app.router.add_get("/api/query", _get_query)
    app.router.add_get("/_sim/veeam/expire", _get_expire)
    app.router.add_post("/_sim/veeam/expire", _post_expire)
    app.router.add_get("/_sim/veeam/sessions", _get_sessions)
    app.router.add_get("/_sim/veeam/paging", _get_paging)
    app.router.add_post("/_sim/veeam/paging", _post_paging)
    return app


def demo_target(url: str) -> dict[str, Any]:
    return {
        "name": "veeam-demo",
        "vendor": "veeam",
        "url": url,
        "username": DEMO_USERNAME,
        "password": DEMO_PASSWORD,
        "format": "json",
        "labels": {},
    }


SIMULATOR = SimulatorSpec(name="veeam", create_app=create_app, demo_target=demo_target)
