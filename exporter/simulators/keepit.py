"""A Keepit API simulator: answers like the v4 XML API, over a deterministic
dataset that is a pure function of (seed, origin), origin being the
simulated now when the app was created.

The dataset (what --demo shows):

- "Microsoft 365 Backup" (o365-admin): healthy, a backup every 4 h, restores
  now and then, and a partial snapshot every hour, so a 7-day window holds
  well over 99 snapshots (history paging).
- "Google Workspace" (gsuite): every 6 h; the last backup that finished
  before origin failed, and every later one fails too (last-run alert).
- "Salesforce Production" (sforce): every 8 h; every backup since origin - 3 d
  failed (RPO breach).
- "Jira Cloud" (dsl, agent-type jira): every 12 h, long runs; its newest
  snapshot before origin is 40 % the size of the previous one.
- "Dynamics 365" is inaccessible, "Zendesk (retired)" deleted (listed only
  with ?all=1) and "system" a system pseudo-connector: clients skip all three.

Backups are scheduled at fixed offsets from 2024-01-01 and exist from now -
30 d up to the next one due, so the clock moving reveals new runs; run k of
a connector keeps its GUID and its outcome whatever the clock says.
Payload quirks of the real API are reproduced: escaped execsummary XML, stray
trailing spaces in `<tstamp>` and `<account>`, fractional seconds on some
timestamps, a nested `<cloud>` inside a connector.

Control routes besides the shared ones:

- `GET|POST /_sim/data`: data faults (duplicate, reversed, skewed, re-classified
  or hidden rows), see exporter/simulators/datafaults.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.parsers.expat import ExpatError
from xml.sax.saxutils import escape

import isodate
import xmltodict
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.simulators.base import SimulatorSpec, create_sim_app, is_control, sim_now
from exporter.simulators.datafaults import (
    DataFaults,
    add_data_fault_routes,
    arranged,
    data_faults,
    doubled,
    listed,
    prepare,
    vendor_now,
)
from exporter.timeutil import parse_timestamp

DEMO_USERNAME = "demo-api-token@keepit"
# The characters the vendor notes warn about, and a non-ASCII one: Basic auth
# must encode the raw UTF-8 string.
DEMO_PASSWORD = "Dæmo%+,?()pw"  # noqa: S105 - the simulator's published demo credential

HISTORY = timedelta(days=30)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
RESTORE_PERIOD = timedelta(hours=37)
DEFAULT_JOB_LIMIT = 100
MAX_HISTORY_COUNT = 99

HEALTHY = "healthy"
LAST_FAILED = "last_failed"
FAILING = "failing_3d"
SIZE_DROP = "size_drop"
SIZE_DROP_FACTOR = 0.4

ANONYMOUS_BODY = "Anonymous access denied - suggest authentication."
BAD_LOGIN_BODY = "User authentication error:\n Username or password is incorrect.\n"
NO_ACCOUNT_BODY = "Account not found."
NOT_FOUND_BODY = "Requested resource not found"

_BACKUP_FAILURES = (
    ("failed_to_backup_some_items", "Failed to process one or more items"),
    ("connection_timeout", "Timed out waiting for the service to respond"),
    ("login_failed", "Could not log in to the service with the connector credentials"),
)
_SCENARIO_FAILURES = {
    LAST_FAILED: ("bad_token", "The access token was revoked; authorise the connector again"),
    FAILING: ("api_limit_exceeded", "Salesforce API request limit exceeded"),
}
_RESTORE_FAILURE = ("failed_to_restore_some_items", "Failed to process one or more items")
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class ConnectorPlan:
    key: str
    name: str
    type: str
    agent_type: str | None = None
    accessible: bool = True
    deleted: bool = False
    period: timedelta = timedelta(hours=6)
    offset: timedelta = timedelta()
    minutes: tuple[int, int] = (10, 60)
    restores: bool = False
    hourly_partials: bool = False
    base_size: int = 1_000_000_000
    scenario: str = HEALTHY

    @property
    def has_jobs(self) -> bool:
        return self.accessible and not self.deleted and self.type != "system"


PLANS: tuple[ConnectorPlan, ...] = (
    ConnectorPlan(
        "o365",
        "Microsoft 365 Backup",
        "o365-admin",
        period=timedelta(hours=4),
        offset=timedelta(minutes=17),
        minutes=(20, 200),
        restores=True,
        hourly_partials=True,
        base_size=2_023_899_411,
    ),
    ConnectorPlan(
        "gsuite",
        # The vendor's stray trailing space, in a value that becomes a label.
        "Google Workspace ",
        "gsuite",
        period=timedelta(hours=6),
        offset=timedelta(minutes=41, milliseconds=245),
        minutes=(10, 120),
        restores=True,
        base_size=812_345_678,
        scenario=LAST_FAILED,
    ),
    ConnectorPlan(
        "sforce",
        "Salesforce Production",
        "sforce",
        period=timedelta(hours=8),
        offset=timedelta(hours=1, minutes=3),
        minutes=(5, 60),
        base_size=356_000_000,
        scenario=FAILING,
    ),
    ConnectorPlan(
        "jira",
        "Jira Cloud",
        "dsl",
        agent_type="jira",
        period=timedelta(hours=12),
        offset=timedelta(hours=2, minutes=30),
        # A large instance: a run takes most of the 12 h, so one is nearly always in progress.
        minutes=(540, 690),
        base_size=5_400_000_000,
        scenario=SIZE_DROP,
    ),
    ConnectorPlan("dyn", "Dynamics 365", "dynamics365", accessible=False),
    ConnectorPlan("zendesk", "Zendesk (retired)", "zendesk", deleted=True),
    ConnectorPlan("system", "system", "system"),
)


def _digest(seed: int, *parts: object) -> int:
    text = "|".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


def _unit(seed: int, *parts: object) -> float:
    """A deterministic draw in [0, 1)."""
    return (_digest(seed, *parts) >> 64) / 2**64


def _guid(seed: int, *parts: object, groups: int = 3) -> str:
    number = _digest(seed, "guid", *parts)
    chars = []
    for _ in range(groups * 6):
        number, digit = divmod(number, 36)
        chars.append(_ALPHABET[digit])
    return "-".join("".join(chars[i : i + 6]) for i in range(0, groups * 6, 6))


def _ts(value: datetime) -> str:
    text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond // 1000:03d}"
    return text + "Z"


@dataclass(frozen=True)
class Series:
    """A schedule of one job kind on one connector."""

    kind: str  # "backup" or "restore"
    anchor: datetime
    period: timedelta

    def index_at_or_after(self, when: datetime) -> int:
        return math.ceil((when - self.anchor) / self.period)

    def index_at_or_before(self, when: datetime) -> int:
        return math.floor((when - self.anchor) / self.period)


@dataclass(frozen=True)
class Device:
    guid: str
    plan: ConnectorPlan
    series: tuple[Series, ...]

    @property
    def name(self) -> str:
        return self.plan.name


@dataclass(frozen=True)
class SimJob:
    guid: str
    type: str
    description: str
    priority: int
    scheduled: datetime
    dispatched: datetime
    started: datetime
    ends: datetime
    outcome: str  # succeeded | failed | cancelled, once `ends` has passed
    fail_reason: str | None
    summary: str | None

    def finished(self, now: datetime) -> bool:
        return now >= self.ends

    def progress(self, now: datetime) -> float:
        if now >= self.ends:
            return 1.0
        if now < self.started:
            return 0.0
        return round((now - self.started) / (self.ends - self.started), 2)


@dataclass(frozen=True)
class SimSnapshot:
    tstamp: datetime
    type: str  # "c" complete, "p" partial
    size: int
    root: str


class KeepitDataset:
    """The account, its connectors, jobs and snapshots at any simulated now."""

    def __init__(self, seed: int, origin: datetime) -> None:
        self.seed = seed
        self.origin = origin.astimezone(UTC)
        self.account = _guid(seed, "account")
        self.devices = tuple(self._device(plan) for plan in PLANS)
        self._by_guid = {device.guid: device for device in self.devices}
        self._cache: dict[tuple[str, str, int], SimJob] = {}
        # Per (device, kind): the index of the last run that ended before origin;
        # the scenarios are defined relative to it.
        self._last_before_origin = {
            (device.guid, series.kind): self._last_ended(device, series)
            for device in self.devices
            for series in device.series
        }
        self._drop_at = {
            device.guid: self._timing(device, device.series[0], self._last_before_origin[device.guid, "backup"])[3]
            for device in self.devices
            if device.plan.scenario == SIZE_DROP
        }

    def _device(self, plan: ConnectorPlan) -> Device:
        series: list[Series] = []
        if plan.has_jobs:
            series.append(Series("backup", EPOCH + plan.offset, plan.period))
            if plan.restores:
                series.append(Series("restore", EPOCH + plan.offset + timedelta(hours=5, minutes=13), RESTORE_PERIOD))
        return Device(_guid(self.seed, "device", plan.key), plan, tuple(series))

    def device(self, guid: str) -> Device | None:
        return self._by_guid.get(guid)

    def _last_ended(self, device: Device, series: Series) -> int:
        index = series.index_at_or_before(self.origin)
        while self._timing(device, series, index)[3] > self.origin:
            index -= 1
        return index

    def _timing(self, device: Device, series: Series, index: int) -> tuple[datetime, datetime, datetime, datetime]:
        """(scheduled, dispatched, started, ends): independent of the outcome."""
        seed, key = self.seed, (device.guid, series.kind, index)
        scheduled = series.anchor + index * series.period
        if _unit(seed, "queue", *key) < 0.04:
            # Now and then a run waits for a free slot, and shows as queued.
            wait = 1200 + 3300 * _unit(seed, "wait", *key)
        else:
            wait = 2 + 238 * _unit(seed, "wait", *key)
        dispatched = scheduled + timedelta(seconds=round(wait))
        started = dispatched + timedelta(seconds=1 + round(14 * _unit(seed, "start", *key)))
        if _unit(seed, "fraction", *key) < 0.35:
            started += timedelta(milliseconds=1 + int(998 * _unit(seed, "ms", *key)))
        low, high = device.plan.minutes if series.kind == "backup" else (2, 25)
        seconds = round(60 * (low + (high - low) * _unit(seed, "duration", *key)))
        return scheduled, dispatched, started, started + timedelta(seconds=seconds)

    def _outcome(self, device: Device, series: Series, index: int, scheduled: datetime) -> str:
        last = self._last_before_origin.get((device.guid, series.kind))
        draw = _unit(self.seed, "outcome", device.guid, series.kind, index)
        if series.kind == "restore":
            if index == last:
                return "succeeded"
            return "succeeded" if draw < 0.75 else "failed" if draw < 0.95 else "cancelled"
        scenario = device.plan.scenario
        if scenario == LAST_FAILED and last is not None and index >= last:
            return "failed"
        if scenario == FAILING and scheduled >= self.origin - timedelta(days=3):
            return "failed"
        if scenario in (HEALTHY, SIZE_DROP) and last is not None and index in (last - 1, last):
            # A clean demo: only the scenarios above alert.
            return "succeeded"
        return "succeeded" if draw < 0.80 else "failed" if draw < 0.92 else "cancelled"

    def job(self, device: Device, series: Series, index: int) -> SimJob:
        key = (device.guid, series.kind, index)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        scheduled, dispatched, started, ends = self._timing(device, series, index)
        outcome = self._outcome(device, series, index, scheduled)
        fail_reason, summary = self._reason(device, series, index, outcome)
        kind = series.kind
        ctype = device.plan.type
        if kind == "restore":
            kind = "srestore" if _unit(self.seed, "restore-kind", *key) < 0.6 else "restore"
            description = f"[{kind}] [webui2] [user] [{ctype}] {{{device.name.strip()}}}"
        else:
            description = f"[backup][bl][auto][{ctype}]{{{device.name.strip()}({index % 12})}}"
        job = SimJob(
            guid=_guid(self.seed, "job", *key, groups=4),
            type=kind,
            description=description,
            priority=0 if kind == "backup" else 1,
            scheduled=scheduled,
            dispatched=dispatched,
            started=started,
            ends=ends,
            outcome=outcome,
            fail_reason=fail_reason,
            summary=summary,
        )
        self._cache[key] = job
        return job

    def _reason(self, device: Device, series: Series, index: int, outcome: str) -> tuple[str | None, str | None]:
        if outcome == "cancelled":
            return None, "Cancelled by user"
        if outcome != "failed":
            return None, None
        key = (device.guid, series.kind, index)
        if series.kind == "restore":
            fail_reason, summary = _RESTORE_FAILURE
        elif device.plan.scenario in _SCENARIO_FAILURES:
            fail_reason, summary = _SCENARIO_FAILURES[device.plan.scenario]
        else:
            choice = int(_unit(self.seed, "reason", *key) * len(_BACKUP_FAILURES))
            fail_reason, summary = _BACKUP_FAILURES[choice]
        # Either part is missing now and then: clients must cope with one alone.
        draw = _unit(self.seed, "reason-parts", *key)
        if draw < 0.1:
            return fail_reason, None
        if draw < 0.2:
            return None, summary
        return fail_reason, summary

    def jobs(self, device: Device, now: datetime) -> list[SimJob]:
        """Runs scheduled from now - 30 d, up to and including the next one due."""
        found: list[SimJob] = []
        for series in device.series:
            index = series.index_at_or_after(now - HISTORY)
            while True:
                job = self.job(device, series, index)
                found.append(job)
                if job.scheduled > now:
                    break
                index += 1
        return sorted(found, key=lambda j: (j.scheduled, j.guid))

    def snapshots(self, device: Device, now: datetime) -> list[SimSnapshot]:
        """A complete snapshot after each successful backup, a partial one
        after each cancelled backup and, where planned, hourly partial ones."""
        stamps: dict[datetime, str] = {}
        for job in self.jobs(device, now):
            if job.type != "backup" or not job.finished(now):
                continue
            tstamp = job.ends.replace(microsecond=0)
            if job.outcome == "succeeded":
                stamps[tstamp] = "c"
            elif job.outcome == "cancelled":
                stamps[tstamp] = "p"
        if device.plan.hourly_partials:
            anchor = EPOCH + timedelta(minutes=29, seconds=7)
            hour = timedelta(hours=1)
            tstamp = anchor + math.ceil((now - HISTORY - anchor) / hour) * hour
            while tstamp <= now:
                stamps.setdefault(tstamp, "p")
                tstamp += hour
        return [
            SimSnapshot(tstamp, kind, self._size(device, tstamp, kind), self._root(device, tstamp))
            for tstamp, kind in sorted(stamps.items())
            if now - HISTORY <= tstamp <= now
        ]

    def _size(self, device: Device, tstamp: datetime, kind: str) -> int:
        days = (tstamp - self.origin).total_seconds() / 86400
        noise = _unit(self.seed, "size", device.guid, tstamp.timestamp()) - 0.5
        size = device.plan.base_size * (1 + 0.002 * days) * (1 + 0.004 * noise)
        if kind == "p":
            size *= 0.995
        drop_at = self._drop_at.get(device.guid)
        if drop_at is not None and tstamp >= drop_at.replace(microsecond=0):
            size *= SIZE_DROP_FACTOR
        return int(size)

    def _root(self, device: Device, tstamp: datetime) -> str:
        return hashlib.sha256(f"{self.seed}|{device.guid}|{tstamp.isoformat()}".encode()).hexdigest()


DATASET = web.AppKey("keepit_dataset", KeepitDataset)


# --- request parsing -----------------------------------------------------------------


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message + "\n", content_type="text/plain")


async def _xml_body(request: web.Request, root: str) -> dict[str, Any]:
    body = await request.read()
    try:
        doc = xmltodict.parse(body, disable_entities=True, force_list=("type", "name"))
    except (ExpatError, ValueError) as exc:
        raise _bad_request(f"malformed XML: {exc}") from None
    content = doc.get(root) if isinstance(doc, dict) else None
    if content is None:
        raise _bad_request(f"expected <{root}>")
    if not isinstance(content, dict):
        raise _bad_request(f"<{root}> must hold elements")
    return content


def _value(node: Mapping[str, Any], key: str) -> str | None:
    value = node.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad_request(f"<{key}> must hold a value")
    return value.strip() or None


def _values(node: Mapping[str, Any], key: str) -> list[str]:
    value = node.get(key)
    items = value if isinstance(value, list) else [value]
    return [item.strip() for item in items if isinstance(item, str) and item.strip()]


def _flag(node: Mapping[str, Any], key: str) -> bool | None:
    """A request boolean: `<x>true</x>`, `<x>false</x>`, or an empty `<x/>` (true)."""
    if key not in node:
        return None
    value = _value(node, key)
    if value is None or value.lower() == "true":
        return True
    if value.lower() == "false":
        return False
    raise _bad_request(f"<{key}> must be true or false")


def _timestamp(node: Mapping[str, Any], key: str, *, required: bool) -> datetime | None:
    value = _value(node, key)
    if value is None:
        if required:
            raise _bad_request(f"<{key}> is mandatory")
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        raise _bad_request(f"<{key}> is not a timestamp") from None


def _int(node: Mapping[str, Any], key: str, default: int | None) -> int:
    value = _value(node, key)
    if value is None:
        if default is None:
            raise _bad_request(f"<{key}> is mandatory")
        return default
    try:
        return int(value)
    except ValueError:
        raise _bad_request(f"<{key}> must be an integer") from None


def _span_end(start: datetime, text: str | None, key: str) -> datetime:
    if text is None:
        raise _bad_request(f"<{key}> is mandatory")
    try:
        duration = isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError):
        raise _bad_request(f"<{key}> must be an ISO 8601 duration such as P1M or PT3600S") from None
    # isodate gives a Duration for months and years, a timedelta otherwise;
    # both add to a datetime.
    end: datetime = start + duration
    if end <= start:
        raise _bad_request(f"<{key}> must be positive")
    return end


# --- rendering -------------------------------------------------------------------


def _execsummary(job: SimJob) -> str:
    """Escaped XML, exactly as the vendor sends it (declaration, trailing comment)."""
    exitreason = "cancelled" if job.outcome == "cancelled" else "done"
    inner = (
        '<?xml version="1.0" encoding="utf-8"?><execsummary>'
        f"<summary>{escape(job.summary or '')}</summary><exitreason>{exitreason}</exitreason>"
        f"</execsummary><!-- End of Document {_ts(job.ends.replace(microsecond=0))} -->"
    )
    return escape(inner, {'"': "&quot;"})


def _render_job(job: SimJob, now: datetime, *, fail_reason_stat: bool) -> str:
    finished = job.finished(now)
    lines = [
        "    <job>",
        f"        <guid>{job.guid}</guid>",
        f"        <description>{escape(job.description)}</description>",
    ]
    if finished and job.summary is not None:
        lines.append(f"        <execsummary>{_execsummary(job)}</execsummary>")
    lines += [
        f"        <type>{job.type}</type>",
        f"        <priority>{job.priority}</priority>",
        f"        <active>{'true' if job.started <= now < job.ends else 'false'}</active>",
        f"        <start>{_ts(job.scheduled)}</start>",
        f"        <scheduled>{_ts(job.scheduled)}</scheduled>",
    ]
    if now >= job.dispatched:
        lines.append(f"        <dispatched>{_ts(job.dispatched)}</dispatched>")
    if now >= job.started:
        lines.append(f"        <started>{_ts(job.started)}</started>")
        if finished:
            lines.append(f"        <{job.outcome}>{_ts(job.ends)}</{job.outcome}>")
        lines.append(f"        <progress>{job.progress(now)}</progress>")
    if finished and fail_reason_stat and job.outcome == "failed" and job.fail_reason is not None:
        lines += [
            "        <stats>",
            "            <stat>",
            "                <name>fail_reason</name>",
            f"                <value>{escape(job.fail_reason)}</value>",
            "            </stat>",
            "        </stats>",
        ]
    lines.append("    </job>")
    return "\n".join(lines)


def _render_jobs(jobs: Iterable[SimJob], now: datetime, *, fail_reason_stat: bool) -> str:
    body = "\n".join(_render_job(job, now, fail_reason_stat=fail_reason_stat) for job in jobs)
    return f"<jobs>\n{body}\n</jobs>\n" if body else "<jobs/>\n"


def _render_snapshot(snapshot: SimSnapshot, account: str) -> str:
    # Every other timestamp carries the vendor's stray trailing space.
    pad = " " if int(snapshot.tstamp.timestamp()) % 2 == 0 else ""
    return (
        "    <backup>\n"
        f"        <tstamp>{_ts(snapshot.tstamp)}{pad}</tstamp>\n"
        f"        <root>{snapshot.root}</root>\n"
        f"        <type>{snapshot.type}</type>\n"
        f"        <size>{snapshot.size}</size>\n"
        f"        <account>{account} </account>\n"
        "    </backup>"
    )


def _render_device(device: Device, dataset: KeepitDataset) -> str:
    plan = device.plan
    lines = [
        "    <cloud>",
        f"        <guid>{device.guid}</guid>",
        f"        <name>{escape(plan.name)}</name>",
        f"        <type>{plan.type}</type>",
    ]
    if plan.agent_type:
        lines.append(f"        <agent-type>{plan.agent_type}</agent-type>")
    lines += [
        "        <created>2023-03-01T10:00:00Z</created>",
        f"        <accessible>{'true' if plan.accessible else 'false'}</accessible>",
        f"        <orglink>{_guid(dataset.seed, 'org', plan.key)}</orglink>",
        "        <backup-retention>P1Y</backup-retention>",
        "        <backup-retention-updated>2023-03-01T10:00:00Z</backup-retention-updated>",
    ]
    if plan.deleted:
        deadline = dataset.origin.replace(microsecond=0) + timedelta(days=21)
        lines.append(f"        <deletion-deadline>{_ts(deadline)}</deletion-deadline>")
    if plan.key == "o365":
        # Connectors nest clouds; a client must read only direct children.
        lines += [
            "        <cloud>",
            f"            <guid>{_guid(dataset.seed, 'nested', plan.key)}</guid>",
            "            <name>Teams archive (nested)</name>",
            "            <type>o365-admin</type>",
            "            <accessible>true</accessible>",
            "        </cloud>",
        ]
    lines.append("    </cloud>")
    return "\n".join(lines)


def _xml(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/xml")


# --- handlers ----------------------------------------------------------------------


def _dataset(request: web.Request) -> KeepitDataset:
    dataset = request.app[DATASET]
    if request.match_info.get("acct") not in (None, dataset.account):
        raise web.HTTPNotFound(text=NO_ACCOUNT_BODY, content_type="text/plain")
    return dataset


def _device_of(request: web.Request) -> tuple[KeepitDataset, Device]:
    dataset = _dataset(request)
    device = dataset.device(request.match_info["dev"])
    if device is None or data_faults(request).hides(_device_names(device)):
        raise web.HTTPNotFound(text=NOT_FOUND_BODY, content_type="text/plain")
    return dataset, device


def _device_names(device: Device) -> tuple[str, str]:
    return device.name, device.guid


def _shifted(job: SimJob, skew: timedelta) -> SimJob:
    return replace(
        job,
        scheduled=job.scheduled + skew,
        dispatched=job.dispatched + skew,
        started=job.started + skew,
        ends=job.ends + skew,
    )


def _flipped(job: SimJob) -> SimJob:
    """Another outcome: a success becomes a failure, anything else a success."""
    if job.outcome == "succeeded":
        fail_reason, summary = _BACKUP_FAILURES[0]
        return replace(job, outcome="failed", fail_reason=fail_reason, summary=summary)
    return replace(job, outcome="succeeded", fail_reason=None, summary=None)


def _device_jobs(request: web.Request, dataset: KeepitDataset, device: Device) -> tuple[list[SimJob], datetime]:
    """The connector's jobs as the (possibly faulty) vendor holds them, and its now."""
    jobs = prepare(
        data_faults(request),
        dataset.jobs(device, sim_now(request)),
        names=lambda job: (),
        shift=_shifted,
        flip=_flipped,
    )
    return jobs, vendor_now(request)


def _jobs_answer(faults: DataFaults, jobs: list[SimJob], now: datetime, *, fail_reason_stat: bool) -> web.Response:
    return _xml(_render_jobs(arranged(faults, jobs), now, fail_reason_stat=fail_reason_stat))


async def _get_self(request: web.Request) -> web.Response:
    return _xml(f"<user>\n    <id>{_dataset(request).account}</id>\n</user>\n")


async def _get_account(request: web.Request) -> web.Response:
    dataset = _dataset(request)
    return _xml(
        "<user>\n"
        "    <enabled>true</enabled>\n"
        "    <created>2023-02-27T11:03:16Z</created>\n"
        f"    <product>{_guid(dataset.seed, 'product')}</product>\n"
        f"    <parent>{_guid(dataset.seed, 'parent')}</parent>\n"
        "    <subscribed>true</subscribed>\n"
        "</user>\n"
    )


async def _get_devices(request: web.Request) -> web.Response:
    dataset = _dataset(request)
    include_deleted = request.query.get("all") == "1"
    devices = listed(
        data_faults(request),
        [d for d in dataset.devices if include_deleted or not d.plan.deleted],
        names=_device_names,
    )
    clouds = [_render_device(d, dataset) for d in devices]
    return _xml("<devices>\n" + "\n".join(clouds) + "\n</devices>\n")


async def _put_jobs(request: web.Request) -> web.Response:
    dataset, device = _device_of(request)
    jobs, now = _device_jobs(request, dataset, device)
    node = await _xml_body(request, "filter")
    start = _timestamp(node, "from-time", required=True)
    end = _timestamp(node, "to-time", required=False)
    types = set(_values(node, "type"))
    container = node.get("types")
    if isinstance(container, dict):
        types |= set(_values(container, "type"))
    active_only = _flag(node, "active-only")
    failed_only = _flag(node, "failed-only")
    limit = _int(node, "limit", DEFAULT_JOB_LIMIT)
    if limit < 1:
        raise _bad_request("<limit> must be positive")
    stats = node.get("stats")
    stat_names = _values(stats, "name") if isinstance(stats, dict) else []

    selected = []
    for job in jobs:
        finished = job.finished(now)
        if start is not None and job.scheduled < start:
            continue
        if end is not None and job.scheduled > end:
            continue
        # true: only active (not finished) jobs; false: only finished ones.
        if active_only is not None and active_only == finished:
            continue
        if failed_only and not (finished and job.outcome == "failed"):
            continue
        if types and job.type not in types:
            continue
        selected.append(job)
    if _flag(node, "reverse"):
        selected.reverse()
    faults = data_faults(request)
    page = doubled(faults, selected)[:limit]
    return _jobs_answer(faults, page, now, fail_reason_stat="fail_reason" in stat_names)


async def _get_jobs(request: web.Request) -> web.Response:
    dataset, device = _device_of(request)
    jobs, now = _device_jobs(request, dataset, device)
    active_only = request.headers.get("active-jobs-only", "false").strip().lower() == "true"
    recent = now - timedelta(hours=24)
    selected = [job for job in jobs if not job.finished(now) or (not active_only and job.ends >= recent)]
    faults = data_faults(request)
    return _jobs_answer(faults, doubled(faults, selected), now, fail_reason_stat=False)


def _snapshots_in_range(
    node: Mapping[str, Any], dataset: KeepitDataset, device: Device, now: datetime
) -> list[SimSnapshot]:
    start = _timestamp(node, "start", required=True)
    assert start is not None
    end = _span_end(start, _value(node, "span"), "span")
    kind = _value(node, "type")
    if kind not in (None, "p", "c"):
        raise _bad_request('<type> must be "p" or "c"')
    return [s for s in dataset.snapshots(device, now) if start <= s.tstamp < end and (kind is None or s.type == kind)]


async def _put_history_range(request: web.Request) -> web.Response:
    dataset, device = _device_of(request)
    now = sim_now(request)
    node = await _xml_body(request, "range")
    count = _int(node, "count", None)
    if not 1 <= count <= MAX_HISTORY_COUNT:
        raise _bad_request("<count> must be less than 100")
    reverse = bool(_flag(node, "reverse"))
    resolution_text = _value(node, "resolution")
    if reverse and resolution_text is not None:
        raise _bad_request("<reverse> cannot be combined with <resolution>")
    snapshots = _snapshots_in_range(node, dataset, device, now)
    if reverse:
        snapshots.reverse()
    if resolution_text is not None:
        snapshots = _thin(snapshots, _span_end(EPOCH, resolution_text, "resolution") - EPOCH)
    items = "\n".join(_render_snapshot(s, dataset.account) for s in snapshots[:count])
    return _xml(f"<history>\n{items}\n</history>\n" if items else "<history/>\n")


def _thin(snapshots: list[SimSnapshot], resolution: timedelta) -> list[SimSnapshot]:
    kept: list[SimSnapshot] = []
    for snapshot in snapshots:
        if not kept or snapshot.tstamp - kept[-1].tstamp >= resolution:
            kept.append(snapshot)
    return kept


async def _put_history_count(request: web.Request) -> web.Response:
    dataset, device = _device_of(request)
    node = await _xml_body(request, "range")
    count = len(_snapshots_in_range(node, dataset, device, sim_now(request)))
    return _xml(f"<history>\n    <count>{count}</count>\n</history>\n")


def _auth_middleware(username: str, password: str) -> Middleware:
    expected = ("Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")).encode()

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_control(request):
            return await handler(request)
        given = request.headers.get("Authorization")
        if not given:
            return web.Response(status=401, text=ANONYMOUS_BODY, headers={"WWW-Authenticate": 'Basic realm="Keepit"'})
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected):
            return web.Response(status=401, text=BAD_LOGIN_BODY, headers={"WWW-Authenticate": 'Basic realm="Keepit"'})
        try:
            return await handler(request)
        except web.HTTPNotFound as exc:
            if exc.text == NO_ACCOUNT_BODY:
                raise
            raise web.HTTPNotFound(text=NOT_FOUND_BODY, content_type="text/plain") from None

    return authenticate


def create_app(
    *,
    seed: int = 1,
    now: datetime | None = None,
    username: str = DEMO_USERNAME,
    password: str = DEMO_PASSWORD,
) -> web.Application:
    """The simulator; `now` fixes its clock (else it follows wall time)."""
    app = create_sim_app(now=now, middlewares=[_auth_middleware(username, password)])
    app[DATASET] = KeepitDataset(seed, now or datetime.now(UTC))
    add_data_fault_routes(app)
    devices = "/users/{acct}/devices"
    device = devices + "/{dev}"
    app.router.add_get("/users/", _get_self)
    app.router.add_get("/users/{acct}", _get_account)
    app.router.add_get(devices, _get_devices)
    app.router.add_put(device + "/jobs", _put_jobs)
    app.router.add_get(device + "/jobs", _get_jobs)
    app.router.add_put(device + "/history/range", _put_history_range)
    app.router.add_put(device + "/history/count", _put_history_count)
    return app


def demo_target(url: str) -> dict[str, Any]:
    return {
        "name": "keepit-demo",
        "vendor": "keepit",
        "url": url,
        "username": DEMO_USERNAME,
        "password": DEMO_PASSWORD,
        "labels": {},
    }


SIMULATOR = SimulatorSpec(name="keepit", create_app=create_app, demo_target=demo_target)
