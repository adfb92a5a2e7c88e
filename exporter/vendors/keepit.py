"""Keepit: the client (API v4, XML, HTTP Basic auth) and the pure parsers.

Calls per collection: `GET /users/` once per client to discover the account
(unless configured), then `GET /users/{acct}/devices`, and per connector
`PUT .../jobs` (finished runs, then runs in progress, each paged by start
time) and `PUT .../history/range` (snapshots, paged by timestamp).

Keepit has no job status field: the outcome is whichever of `<succeeded>`,
`<failed>` or `<cancelled>` carries a timestamp (SPEC section 5).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from exporter.model import Collection, JobKey, Run, Snapshot, Status
from exporter.timeutil import format_timestamp, parse_timestamp
from exporter.vendors.base import (
    CollectionError,
    HttpClient,
    HTTPStatusError,
    ParseError,
    Response,
    TargetConfigError,
    VendorSpec,
)
from exporter.vendors.payload import INT64_LIMIT, load_xml, short

if TYPE_CHECKING:
    from exporter.config import Secret, TargetConfig

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.keepit.v4+xml"
SNAPSHOT_JOB_TYPE = "backup"

# Every element that may repeat, so that one child still comes back as a list.
_FORCE_LIST = ("job", "cloud", "backup", "stat")
# Account and connector GUIDs end up in URL paths: refuse anything else.
_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,63}$")
_DIGITS = re.compile(r"[0-9]{1,19}")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
# Bounded queries reach this far past our now: scheduled runs due soon show as
# queued, and a vendor clock slightly ahead of ours loses no snapshot.
_FUTURE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Connector:
    """A Keepit connector (`<cloud>`): one job_name of the model."""

    guid: str
    name: str
    type: str
    agent_type: str | None = None


# --- parsing -----------------------------------------------------------------


def _parse_xml(body: bytes | str, root: str, what: str) -> Any:
    """The content of the single `<root>` element, as xmltodict builds it.

    Entities stay forbidden (xmltodict's default): a DTD with `<!ENTITY>`
    fails at once instead of expanding into a billion laughs.
    """
    doc = load_xml(body, what, force_list=_FORCE_LIST)
    if root not in doc:
        raise ParseError(f"{what}: expected <{root}>, got <{short(str(next(iter(doc))))}>")
    content = doc[root]
    if isinstance(content, str):
        raise ParseError(f"{what}: <{root}> holds text, expected elements")
    return content


def _children(content: Any, name: str, what: str) -> list[dict[str, Any]]:
    """The `<name>` children of an element; an empty element has none."""
    if content is None:
        return []
    if not isinstance(content, dict):
        raise ParseError(f"{what}: unexpected content")
    items = content.get(name) or []
    if not isinstance(items, list):
        items = [items]
    result: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise ParseError(f"{what}: empty or text-only <{name}>")
        result.append(item)
    return result


def _text(node: Mapping[str, Any], key: str, what: str) -> str | None:
    """The stripped text of child `<key>`; None when absent or empty."""
    value = node.get(key)
    if type(value) is str:
        # The common case first (an element holding text); tests hold it to _text_general.
        return value.strip() or None
    return _text_general(node, key, what)


def _text_general(node: Mapping[str, Any], key: str, what: str) -> str | None:
    value = node.get(key)
    if isinstance(value, dict):
        # An element with attributes; an element with child elements is not a value.
        if any(not k.startswith("@") and k != "#text" for k in value):
            raise ParseError(f"{what}: <{key}> has child elements, expected a value")
        value = value.get("#text")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{what}: <{key}> appears more than once")
    return value.strip() or None


def _flag(node: Mapping[str, Any], key: str, what: str) -> bool:
    """A boolean child: `<x>true</x>`, or an empty `<x/>` meaning true."""
    if key not in node:
        return False
    value = _text(node, key, what)
    if value is None:
        return True
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ParseError(f"{what}: <{key}> is {short(value, 40)!r}, expected true or false")


def _timestamp(node: Mapping[str, Any], key: str, what: str) -> datetime | None:
    value = _text(node, key, what)
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        raise ParseError(f"{what}: <{key}> is {short(value, 40)!r}, not a timestamp") from None


def parse_account_id(body: bytes | str) -> str:
    """The account GUID from `GET /users/`: `<user><id>...</id></user>`."""
    content = _parse_xml(body, "user", "keepit account")
    account = _text(content or {}, "id", "keepit account")
    if account is None or not _ID.match(account):
        raise ParseError(f"keepit account: missing or invalid <id> ({short(str(account), 40)!r})")
    return account


def parse_devices(body: bytes | str) -> list[Connector]:
    """The connectors to collect from `GET /users/{acct}/devices`.

    Skipped: inaccessible ones, deleted ones (deletion-deadline set, listed
    with `?all=1`) and the `system` pseudo-connector. Only the direct children
    of each top-level `<cloud>` are read: connectors can nest clouds, whose
    `<name>` must not leak into their parent's.
    """
    what = "keepit devices"
    connectors: list[Connector] = []
    for cloud in _children(_parse_xml(body, "devices", what), "cloud", what):
        guid = _text(cloud, "guid", what)
        if guid is None or not _ID.match(guid):
            raise ParseError(f"{what}: <cloud> with missing or invalid <guid> ({short(str(guid), 40)!r})")
        item = f"{what}: connector {guid}"
        kind = _text(cloud, "type", item) or ""
        accessible = _text(cloud, "accessible", item)
        if (
            kind == "system"
            or (accessible is not None and accessible.lower() in _FALSE)
            or _text(cloud, "deletion-deadline", item) is not None
        ):
            continue
        connectors.append(
            Connector(
                guid=guid,
                # A connector without a name still needs a job_name.
                name=_text(cloud, "name", item) or guid,
                type=kind,
                agent_type=_text(cloud, "agent-type", item),
            )
        )
    return connectors


@dataclass(frozen=True, slots=True)
class _JobRow:
    run: Run
    # The raw `<start>`: the server filters and sorts on it, so paging does too
    # (Run.start prefers `<started>`, which is later).
    start: datetime | None


def decode_execsummary(text: str | None) -> str | None:
    """The `<summary>` of a job's execsummary (escaped XML in the job payload).

    The schema is undocumented: a plain-text execsummary is taken as the
    summary itself, an XML one without `<summary>` gives None.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    if not text.startswith("<"):
        return text
    content = load_xml(text, "keepit execsummary").get("execsummary")
    if not isinstance(content, dict):
        return None
    return _text(content, "summary", "keepit execsummary")


def _fail_reason(job: Mapping[str, Any], what: str) -> str | None:
    stats = job.get("stats")
    if not isinstance(stats, dict):
        return None
    for stat in _children(stats, "stat", what):
        if _text(stat, "name", what) == "fail_reason":
            return _text(stat, "value", what)
    return None


def _reason(job: Mapping[str, Any], what: str) -> str | None:
    fail_reason = _fail_reason(job, what)
    try:
        summary = decode_execsummary(_text(job, "execsummary", what))
    except ParseError:
        # An undocumented free-form field must not cost the whole collection.
        summary = None
    return ": ".join(part for part in (fail_reason, summary) if part) or None


def _status(job: Mapping[str, Any], what: str) -> tuple[Status, datetime | None]:
    for key, status in (("succeeded", Status.SUCCESS), ("failed", Status.FAILED), ("cancelled", Status.CANCELLED)):
        end = _timestamp(job, key, what)
        if end is not None:
            return status, end
    return (Status.RUNNING if _flag(job, "active", what) else Status.QUEUED), None


def _progress(job: Mapping[str, Any], what: str) -> float | None:
    value = _text(job, "progress", what)
    if value is None:
        return None
    try:
        progress = float(value)
    except ValueError:
        raise ParseError(f"{what}: <progress> is {short(value, 40)!r}, not a number") from None
    if not math.isfinite(progress):
        raise ParseError(f"{what}: <progress> is {value!r}")
    return min(1.0, max(0.0, progress))


def _job_row(job: Mapping[str, Any], connector_name: str) -> _JobRow:
    guid = _text(job, "guid", "keepit job")
    if guid is None:
        raise ParseError(f"keepit jobs of {connector_name!r}: <job> without <guid>")
    what = f"keepit job {short(guid, 40)}"
    job_type = _text(job, "type", what)
    if job_type is None:
        raise ParseError(f"{what}: no <type>")
    start = _timestamp(job, "start", what)
    status, end = _status(job, what)
    run = Run(
        run_id=guid,
        job=JobKey(job_name=connector_name, job_type=job_type),
        status=status,
        start=_timestamp(job, "started", what) or start,
        end=end,
        progress=_progress(job, what),
        reason=_reason(job, what),
        query_time=start,
    )
    return _JobRow(run=run, start=start)


def _parse_job_rows(body: bytes | str, connector_name: str) -> list[_JobRow]:
    what = f"keepit jobs of {connector_name!r}"
    return [_job_row(job, connector_name) for job in _children(_parse_xml(body, "jobs", what), "job", what)]


def parse_jobs(body: bytes | str, connector_name: str) -> list[Run]:
    """The runs in a `<jobs>` payload (PUT or GET .../jobs) of one connector."""
    return [row.run for row in _parse_job_rows(body, connector_name)]


def parse_history(body: bytes | str, connector_name: str) -> list[Snapshot]:
    """The snapshots in a `<history>` payload (PUT .../history/range)."""
    what = f"keepit history of {connector_name!r}"
    job = JobKey(job_name=connector_name, job_type=SNAPSHOT_JOB_TYPE)
    snapshots: list[Snapshot] = []
    for backup in _children(_parse_xml(body, "history", what), "backup", what):
        timestamp = _timestamp(backup, "tstamp", what)
        if timestamp is None:
            raise ParseError(f"{what}: <backup> without <tstamp>")
        snapshots.append(
            Snapshot(
                job=job,
                timestamp=timestamp,
                size_bytes=_size(backup, what),
                complete=_text(backup, "type", what) == "c",
            )
        )
    return snapshots


def _size(backup: Mapping[str, Any], what: str) -> int | None:
    """`<size>` in bytes. Plain ASCII digits only: int() would also take
    `-5`, `1_000` or Arabic-Indic digits, none of which is a size."""
    text = _text(backup, "size", what)
    if text is None:
        return None
    if not _DIGITS.fullmatch(text) or int(text) >= INT64_LIMIT:
        raise ParseError(f"{what}: <size> is {short(text, 40)!r}, not a size in bytes")
    return int(text)


def connector_info(connector: Connector) -> dict[str, str]:
    """backup_job_info labels: DSL connectors name their real kind in agent-type."""
    kind = connector.agent_type if connector.type == "dsl" and connector.agent_type else connector.type
    return {"connector_type": kind, "connector_guid": connector.guid}


def select_connectors(
    connectors: Sequence[Connector], wanted: Iterable[str] | None
) -> tuple[list[Connector], list[str]]:
    """The connectors matching the `connectors` option (by name or GUID), and
    the option entries that matched none. No option (or an empty one) selects all.
    """
    entries = [str(entry).strip() for entry in wanted or ()]
    if not entries:
        return list(connectors), []
    selected = [c for c in connectors if c.name in entries or c.guid in entries]
    unmatched = [e for e in entries if not any(e in (c.name, c.guid) for c in connectors)]
    return selected, unmatched


# --- requests ------------------------------------------------------------------


def _filter_body(start: datetime, end: datetime | None, *, active_only: bool, limit: int) -> str:
    to_time = "" if end is None else f"<to-time>{format_timestamp(end)}</to-time>"
    return (
        "<filter>"
        f"<from-time>{format_timestamp(start)}</from-time>"
        f"{to_time}"
        f"<active-only>{'true' if active_only else 'false'}</active-only>"
        f"<limit>{limit}</limit>"
        "<stats><name>fail_reason</name></stats>"
        "</filter>"
    )


def _range_body(start: datetime, span_seconds: int, count: int) -> str:
    return (
        f"<range><start>{format_timestamp(start)}</start><span>PT{span_seconds}S</span><count>{count}</count></range>"
    )


class _BasicAuth:
    """Keepit has no session: every request carries the API token's credentials."""

    def __init__(self, username: str | None, password: Secret | None) -> None:
        self._username = username
        self._password = password

    async def headers(self, http: HttpClient) -> Mapping[str, str]:
        if not self._username or self._password is None:
            raise TargetConfigError("keepit needs username and password (the API token's credentials)")
        # The token's name and password contain characters such as %+,?():
        # encode the raw UTF-8, never a URL-encoded form.
        raw = f"{self._username}:{self._password.reveal()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}

    async def invalidate(self, http: HttpClient) -> None:
        # Nothing to renew: the retried request carries the same credentials,
        # and a second 401 becomes AuthError in HttpClient.
        return None


@dataclass
class _Tally:
    """Counts of one collection, for Collection.summary."""

    requests: int = 0
    job_pages: int = 0
    snapshot_pages: int = 0


@dataclass
class _ConnectorResult:
    runs: list[Run] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)


class KeepitClient:
    """Collects one Keepit account (SPEC sections 5 and 6)."""

    # --check-config --connect: what to check when the login is refused.
    auth_hint: ClassVar[str] = (
        "check username and password/password_file:"
        " a Keepit API (secondary) token whose account may read its connectors and their jobs"
    )

    job_page_limit: ClassVar[int] = 1000
    # The API refuses a count of 100 or more.
    snapshot_page_count: ClassVar[int] = 99
    max_concurrent_connectors: ClassVar[int] = 4

    def __init__(self, target: TargetConfig, http: HttpClient, *, job_page_limit: int | None = None) -> None:
        self._target = target
        self._http = http
        http.auth = _BasicAuth(target.username, target.password)
        configured = target.options.get("account")
        self._configured_account = str(configured).strip() if configured else None
        self._account: str | None = None
        self._job_limit = job_page_limit or self.job_page_limit
        self._unmatched_logged: list[str] = []

    async def close(self) -> None:
        return None

    async def check(self, now: datetime) -> str:
        """--check-config --connect: the account and its connector list, the
        least that proves the token works and can see what we collect."""
        tally = _Tally()
        account = await self._account_id(tally)
        connectors = await self._devices(tally, account)
        selected, unmatched = select_connectors(connectors, self._target.options.get("connectors"))
        found = f"login ok, {len(connectors)} connectors visible, {len(selected)} to collect"
        if unmatched:
            found += f"; connectors filter entries matching none: {', '.join(repr(e) for e in unmatched)}"
        return found

    async def collect(self, since: datetime, now: datetime) -> Collection:
        tally = _Tally()
        account = await self._account_id(tally)
        connectors = await self._devices(tally, account)
        selected, unmatched = select_connectors(connectors, self._target.options.get("connectors"))
        if unmatched and unmatched != self._unmatched_logged:
            # Once per change, not on every poll.
            log.warning(
                "target %s: connectors filter entries match no collectable connector: %s",
                self._target.name,
                ", ".join(repr(entry) for entry in unmatched),
            )
        self._unmatched_logged = unmatched
        results = await self._collect_all(tally, account, selected, since, now)
        runs = tuple(run for result in results for run in result.runs)
        snapshots = tuple(s for result in results for s in result.snapshots)
        summary = {
            "connectors": len(selected),
            "requests": tally.requests,
            "job_pages": tally.job_pages,
            "snapshot_pages": tally.snapshot_pages,
            "runs": len(runs),
            "snapshots": len(snapshots),
        }
        if unmatched:
            summary["connectors_unmatched"] = len(unmatched)
        # Every job type of a connector shares its attributes.
        keys = {run.job for run in runs} | {JobKey(job_name=c.name, job_type=SNAPSHOT_JOB_TYPE) for c in selected}
        by_name = {c.name: c for c in selected}
        return Collection(
            runs=runs,
            jobs=tuple(JobKey(job_name=c.name, job_type=SNAPSHOT_JOB_TYPE) for c in selected),
            snapshots=snapshots,
            summary=summary,
            job_info={key: connector_info(by_name[key.job_name]) for key in keys if key.job_name in by_name},
        )

    async def _call(self, tally: _Tally, method: str, path: str, body: str | None = None) -> Response:
        headers = {"Accept": ACCEPT}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/xml"
            data = body.encode()
        tally.requests += 1
        response = await self._http.request(method, path, headers=headers, data=data)
        content_type = response.content_type
        # A proxy's login page or an HTML error page answers 200 as well.
        if content_type and "xml" not in content_type:
            raise ParseError(f"{method} /{path}: expected XML, got Content-Type {short(content_type, 60)!r}")
        return response

    async def _account_id(self, tally: _Tally) -> str:
        if self._configured_account is not None:
            if not _ID.match(self._configured_account):
                shown = short(self._configured_account, 40)
                raise TargetConfigError(f"account {shown!r} is not a Keepit account GUID")
            return self._configured_account
        if self._account is None:
            response = await self._call(tally, "GET", "users/")
            self._account = parse_account_id(response.body)
        return self._account

    async def _devices(self, tally: _Tally, account: str) -> list[Connector]:
        try:
            response = await self._call(tally, "GET", f"users/{account}/devices")
        except HTTPStatusError as exc:
            if exc.status == 404 and self._configured_account is not None:
                raise TargetConfigError(f"account {account} not found on {self._http.base_url.host}") from None
            raise
        return parse_devices(response.body)

    async def _collect_all(
        self, tally: _Tally, account: str, connectors: Sequence[Connector], since: datetime, now: datetime
    ) -> list[_ConnectorResult]:
        semaphore = asyncio.Semaphore(self.max_concurrent_connectors)

        async def one(connector: Connector) -> _ConnectorResult:
            async with semaphore:
                return await self._collect_connector(tally, account, connector, since, now)

        try:
            # A TaskGroup cancels the other connectors as soon as one fails.
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(connector)) for connector in connectors]
        except BaseExceptionGroup as errors:
            first = next((e for e in errors.exceptions if isinstance(e, CollectionError)), None)
            if first is None:
                raise
            raise first from None
        return [task.result() for task in tasks]

    async def _collect_connector(
        self, tally: _Tally, account: str, connector: Connector, since: datetime, now: datetime
    ) -> _ConnectorResult:
        path = f"users/{account}/devices/{connector.guid}"
        # Runs in progress first: one that finishes between the two queries is
        # then in the second, where a finished-first order would miss it.
        active_from = now - self._target.lookback
        active = await self._jobs(tally, path, connector.name, active_from, now + _FUTURE, active_only=True)
        # The state keeps `since` before the start of every run in progress at
        # the last poll; runs that began since then are covered here.
        finished_from = min([since, *(row.start for row in active if row.start is not None)])
        # No upper bound on finished runs: none can lie ahead, and a bound would
        # drop runs whenever the vendor's clock is ahead of ours.
        finished = await self._jobs(tally, path, connector.name, finished_from, None, active_only=False)
        rows = {row.run.run_id: row for row in active}
        rows.update((row.run.run_id, row) for row in finished)
        result = _ConnectorResult(runs=[row.run for row in rows.values()])
        result.snapshots = await self._snapshots(tally, path, connector.name, since, now)
        return result

    async def _jobs(
        self, tally: _Tally, path: str, name: str, start: datetime, end: datetime | None, *, active_only: bool
    ) -> list[_JobRow]:
        """Every job starting from `start` (up to `end`, if given), following
        pages: a full page means there may be more, asked for again from the
        newest start seen."""
        rows: dict[str, _JobRow] = {}
        page_start = start
        while True:
            body = _filter_body(page_start, end, active_only=active_only, limit=self._job_limit)
            response = await self._call(tally, "PUT", f"{path}/jobs", body)
            tally.job_pages += 1
            page = _parse_job_rows(response.body, name)
            added = 0
            for row in page:
                if row.run.run_id not in rows:
                    rows[row.run.run_id] = row
                    added += 1
            # More rows than asked for means the server ignored the limit and
            # sent everything.
            if len(page) != self._job_limit:
                return list(rows.values())
            if added == 0:
                raise ParseError(
                    f"keepit jobs of {name!r}: a full page from {format_timestamp(page_start)} "
                    "brought no new job; more than one page of jobs share one start time"
                )
            starts = [row.start for row in page if row.start is not None]
            if not starts:
                raise ParseError(f"keepit jobs of {name!r}: a full page without <start>, cannot page")
            page_start = max(starts)

    async def _snapshots(self, tally: _Tally, path: str, name: str, since: datetime, now: datetime) -> list[Snapshot]:
        """Every snapshot from since to now; a page of `count` rows means there
        may be more, from the newest timestamp + 1 s (how Keepit's tools page)."""
        found: dict[tuple[datetime, bool], Snapshot] = {}
        start = since
        end = now + _FUTURE
        count = self.snapshot_page_count
        while start < end:
            span = math.ceil((end - start).total_seconds())
            response = await self._call(tally, "PUT", f"{path}/history/range", _range_body(start, span, count))
            tally.snapshot_pages += 1
            page = parse_history(response.body, name)
            for snapshot in page:
                found.setdefault((snapshot.timestamp, snapshot.complete), snapshot)
            if len(page) < count:
                break
            next_start = max(s.timestamp for s in page).replace(microsecond=0) + timedelta(seconds=1)
            if next_start <= start:
                raise ParseError(f"keepit history of {name!r}: the server ignored <start> and repeated a full page")
            start = next_start
        return sorted(found.values(), key=lambda s: (s.timestamp, s.complete))


def describe_collection(options: Mapping[str, Any]) -> str:
    wanted = options.get("connectors")
    which = f"connectors {json.dumps(wanted, ensure_ascii=False)} only" if wanted else "all connectors"
    account = options.get("account")
    of = f"account {json.dumps(account, ensure_ascii=False)}" if account else "the token's own account"
    return (
        f"{which} of {of}; per connector: jobs running and finished since the last poll, "
        "and the snapshot history (at least 3 requests per connector per poll)"
    )


SPEC = VendorSpec(
    name="keepit",
    client=KeepitClient,
    options={"account": str, "connectors": list},
    secrets=(),
    required=("username", "password"),
    info_labels=("connector_type", "connector_guid"),
    describe=describe_collection,
)
