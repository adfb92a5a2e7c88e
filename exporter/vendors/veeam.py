"""Veeam Backup Enterprise Manager: the client (REST API on :9398/api, XML or
JSON, session logon) and the pure parsers.

Calls per collection, each paged with `pageSize`/`page` and sorted:

1. `GET /api/query?type=BackupJobSession&format=Entities&filter=State!=Stopped`:
   every session still in progress, however old;
2. `GET /api/query?type=BackupJobSession&format=Entities&filter=CreationTime>="T"`
   with T the older of `since` and the oldest session in progress: finished
   runs since the watermark, and the sessions of (1) again, finished or not;
3. `GET /api/query?type=Job&format=Entities`: the job inventory of every
   backup server, so that a job with no session in the window (new, weekly,
   or never succeeding) still has its series and its RPO alert; asked after
   the sessions, so that the job of every session found already exists;
4. `GET /api/query?type=Repository&format=Entities`: capacity and free space.

Requests per poll: L + P(jobs) + P(active) + P(since) + P(repositories),
where P(n) = max(1, ceil(n / page_size)) with page_size 100, and L is one
`POST /api/sessionMngr/?v=latest` when there is no live session plus at most
one more per request answered 401 (sessions expire after 15 idle minutes,
also in the middle of paging). HttpClient adds at most 3 retries per request.
Paging stops with a ParseError past `max_pages` (1000) pages per query, and
when the server repeats a page (a page number other than the one asked for,
or a page of rows all seen before).

Sessions are paged over a result sorted by ascending CreationTime, so
sessions created while we page only append to the end: nothing shifts, and
re-logon in the middle of paging loses or repeats no session (the retried
request asks for the same page again). Jobs have no creation time to sort
on (they are sorted by Name): a job deleted while more than one page of
jobs is being read can make that one poll miss another job, whose sessions
then count as those of an unlisted job (below), and whose twin of the same
name, if it has one, goes by its plain name for that poll.

Job names (SPEC section 5 says job_name is JobName): Enterprise Manager
collects several backup servers, and Veeam names every new job "Backup Job
1", so two servers' jobs often share a name. Their runs must not share one
job series, where one server's failure hides behind the other's later
success. So job_name is the JobName where no other backup server has a job
of that name, and "JobName (backup server)" for every job of a name found on
more than one backup server (on one server, job names are unique). The rule
is applied to the complete job inventory of each poll, never to the
sessions a poll happens to see, so a name does not change from poll to poll
nor across restarts; it changes only when the inventory does (a second
server gets a job of that name, which is logged as a warning once, or the
last twin goes away). A session is attributed to its inventory job by
JobUid, and takes that job's name (after a rename, the job's older sessions
follow it). A session whose job is not in the inventory (a deleted job's,
whose history Enterprise Manager keeps) still counts, named by the same rule
over the inventory and the other such sessions of the poll. A backup server
without a name (no BackupServerReference link) is told apart by the job's
UID instead. job_type is JobType in snake_case, a run's from its session
(child sessions such as ImmediateBackupCopyWorker keep series of their own,
as before) and a job's from the inventory. Replication jobs (JobType Replica)
are left out of the inventory: their runs are ReplicaJobSessions, which are
not collected, so they would look like jobs that never ran.

backup_job_info: `backup_server` (the BackupServerReference link's name),
and `schedule_enabled` ("true"/"false", the inventory's ScheduleEnabled) for
jobs in the inventory. A disabled job (Veeam's "Disable", which keeps the
job but stops its schedule) keeps its series and would breach its RPO; alert
rules that should ignore disabled jobs join on it:

    (time() - backup_job_last_success_timestamp_seconds > backup_job_rpo_seconds)
      unless on (target, job_name, job_type) backup_job_info{schedule_enabled="false"}

Status (SPEC section 5, case-insensitive): State Stopped with Result Success,
Warning, Failed gives success, warning, failed; Stopped with Result None (or
none at all) gives cancelled; any other State gives running. Veeam EM has no
queued state. A Stopped session with a Result we do not know is counted as
failed, with the unknown result as its reason: an alert is better than a
silent hole in the history.

Format: `format: xml` (the default) or `json` chooses the Accept header. XML
is the documented default of the API (no Accept header means XML) and the
payloads in Veeam's reference; its element names did not change between v12
and v13, whereas the JSON field names went from PascalCase (v12) to
camelCase (v13). Both JSON casings are read without being told which: keys
are matched case-insensitively, and XML attributes and elements alike.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import quote

from exporter.model import Collection, JobKey, Repository, Run, Status
from exporter.timeutil import format_timestamp, parse_timestamp
from exporter.vendors.base import (
    HttpClient,
    ParseError,
    Response,
    TargetConfigError,
    VendorSpec,
)
from exporter.vendors.payload import INT64_LIMIT, load_json, load_xml, short

if TYPE_CHECKING:
    from exporter.config import Secret, TargetConfig

log = logging.getLogger(__name__)

NAMESPACE = "http://www.veeam.com/ent/v1.0"
SESSION_HEADER = "X-RestSvcSessionId"
FORMATS: Mapping[str, str] = {"xml": "application/xml", "json": "application/json"}
DEFAULT_FORMAT = "xml"
# The server ends a session after 15 idle minutes; past this we log on again
# at once instead of spending a request on the 401.
IDLE_LOGON_SECONDS = 14 * 60

# Every element that may repeat, so that one child still comes back as a list.
_FORCE_LIST = ("BackupJobSession", "Job", "Repository", "Link", "Ref")
# A SessionId ends up in the logout URL path: refuse anything but a GUID-like id.
_SESSION_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,63}$")
# ASCII digits only: int() also takes "1_000" and other scripts' digits.
_INTEGER = re.compile(r"[-+]?[0-9]{1,20}")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_RESULTS: Mapping[str, Status] = {"success": Status.SUCCESS, "warning": Status.WARNING, "failed": Status.FAILED}
_BOM = "\ufeff"
# Job types (snake_case) whose runs are not BackupJobSessions: replication
# runs are ReplicaJobSessions. Kept out of the inventory, or they would look
# like jobs that never ran.
_SESSIONLESS_JOB_TYPES = frozenset({"replica"})

T = TypeVar("T")


# --- parsing -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Paging:
    """A result's PagingInfo; None where the server left it out."""

    page_num: int | None = None
    page_size: int | None = None
    pages_count: int | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """A BackupJobSession: the run (named by its JobName), the backup server
    that ran it, and the UID of its job."""

    run: Run
    backup_server: str | None
    job_uid: str | None = None


@dataclass(frozen=True, slots=True)
class JobEntity:
    """A Job of the inventory (`query?type=Job`)."""

    uid: str
    name: str
    job_type: str  # snake_case
    backup_server: str | None
    schedule_enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class RepositoryEntity:
    uid: str
    name: str
    backup_server: str | None
    capacity_bytes: int | None
    free_bytes: int | None


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: tuple[Session, ...]
    paging: Paging


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: tuple[JobEntity, ...]
    paging: Paging


@dataclass(frozen=True, slots=True)
class RepositoryPage:
    repositories: tuple[RepositoryEntity, ...]
    paging: Paging


def _load(body: bytes | str, root: str, what: str) -> dict[str, Any]:
    """The document's root object with folded keys, from XML or JSON alike.

    The format is sniffed, not taken from Content-Type: the first character
    after a UTF-8 BOM and whitespace says which.
    """
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ParseError(f"{what}: body is not UTF-8") from None
    else:
        text = body.removeprefix(_BOM)
    text = text.lstrip()
    if text.startswith("<"):
        return _load_xml(text, root, what)
    if text.startswith(("{", "[")):
        return _load_json(text, what)
    if not text:
        raise ParseError(f"{what}: empty body")
    raise ParseError(f"{what}: neither XML nor JSON ({short(text, 40)!r})")


def _load_xml(text: str, root: str, what: str) -> dict[str, Any]:
    # The Veeam namespace is stripped; other namespaces match nothing.
    doc = load_xml(text, what, force_list=_FORCE_LIST, namespaces={NAMESPACE: None})
    found = next(iter(doc))
    if found == "Error":
        raise ParseError(
            f"{what}: the server answered with an error: {_error_message(_fold(doc['Error'], what), what)}"
        )
    if found != root:
        raise ParseError(f"{what}: expected <{root}>, got <{short(str(found), 60)}>")
    return _fold(doc[root], what)


def _load_json(text: str, what: str) -> dict[str, Any]:
    doc = load_json(text, what)
    if not isinstance(doc, dict):
        raise ParseError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    folded = _fold(doc, what)
    if "statuscode" in folded and "message" in folded:
        raise ParseError(f"{what}: the server answered with an error: {_error_message(folded, what)}")
    return folded


def _error_message(error: Mapping[str, Any], what: str) -> str:
    return short(_text(error, "message", what) or "(no message)", 120)


def _fold(node: Any, what: str) -> dict[str, Any]:
    """`node` with keys lower-cased and XML's `@` dropped, so that a JSON v12
    `CreationTimeUTC`, a v13 `creationTimeUTC` and an XML attribute or element
    are one key. An empty XML element (None) is an empty object."""
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ParseError(f"{what}: expected an object, got {short(repr(node), 40)}")
    folded: dict[str, Any] = {}
    for key, value in node.items():
        name = str(key).removeprefix("@").lower()
        if name == "xmlns":
            continue
        if name in folded:
            raise ParseError(f"{what}: {key!r} appears more than once")
        folded[name] = value
    return folded


def _text(node: Mapping[str, Any], key: str, what: str) -> str | None:
    """The stripped text of field `key` (folded); None when absent, null or empty."""
    value = node.get(key)
    if type(value) is str:
        # The common case first (a plain value); tests hold it to _text_general.
        return value.strip() or None
    return _text_general(node, key, what)


def _text_general(node: Mapping[str, Any], key: str, what: str) -> str | None:
    value = node.get(key)
    if isinstance(value, dict):
        # An XML element with attributes; one with child elements is not a value.
        if any(not k.startswith("@") and k != "#text" for k in value):
            raise ParseError(f"{what}: {key} has child elements, expected a value")
        value = value.get("#text")
    if value is None:
        return None
    if isinstance(value, bool):
        raise ParseError(f"{what}: {key} is a boolean, expected text")
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise ParseError(f"{what}: {key} appears more than once or is not a value")
    return value.strip() or None


def _integer(node: Mapping[str, Any], key: str, what: str) -> int | None:
    """An Int64 (what EM's schema declares), from JSON or XML text."""
    value = node.get(key)
    number: int
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        text = _text(node, key, what)
        if text is None:
            return None
        if not _INTEGER.fullmatch(text):
            raise ParseError(f"{what}: {key} is {short(text, 40)!r}, not an integer")
        number = int(text)
    if not -INT64_LIMIT <= number < INT64_LIMIT:
        raise ParseError(f"{what}: {key} is {short(str(number), 40)}, out of the Int64 range")
    return number


def _number(node: Mapping[str, Any], key: str, what: str) -> float | None:
    text = _text(node, key, what)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ParseError(f"{what}: {key} is {short(text, 40)!r}, not a number") from None
    if not math.isfinite(number):
        raise ParseError(f"{what}: {key} is {short(text, 40)!r}")
    return number


def _boolean(node: Mapping[str, Any], key: str, what: str) -> bool | None:
    """JSON true/false, or XML text "true"/"false" in any case."""
    value = node.get(key)
    if isinstance(value, bool):
        return value
    text = _text(node, key, what)
    if text is None:
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ParseError(f"{what}: {key} is {short(text, 40)!r}, not a boolean")


def _timestamp(node: Mapping[str, Any], key: str, what: str) -> datetime | None:
    text = _text(node, key, what)
    if text is None:
        return None
    try:
        return parse_timestamp(text)
    except ValueError:
        raise ParseError(f"{what}: {key} is {short(text, 40)!r}, not a timestamp") from None


def _list(value: Any, what: str) -> list[dict[str, Any]]:
    """Items of a repeated element or a JSON array, each folded."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [_fold(item, what) for item in items]


def _collection(node: Mapping[str, Any], plural: str, singular: str, what: str) -> list[dict[str, Any]]:
    """The items of a collection: XML `<Plural><Singular/>...</Plural>`, JSON
    `{"Plural": {"Plural": [...]}}` (the list key repeats the plural), or a
    bare JSON array."""
    value = node.get(plural.lower())
    if value is None or isinstance(value, list):
        return _list(value, what)
    inner = _fold(value, what)
    key = singular.lower() if singular.lower() in inner else plural.lower()
    return _list(inner.get(key), what)


def _entities(root: Mapping[str, Any], plural: str, singular: str, what: str) -> list[dict[str, Any]]:
    if "entities" not in root or root.get("refs") is not None:
        raise ParseError(f"{what}: no Entities in the answer (format=Entities expected)")
    entities = _fold(root["entities"], what)
    if entities.get(plural.lower()) is None:
        # JSON lists every kind of entity, the others as null; any other kind
        # with content means the server answered another query.
        other = next((key for key, value in entities.items() if value not in (None, {}, [], "")), None)
        if other is not None:
            raise ParseError(f"{what}: expected {plural}, got {short(other, 40)}")
    return _collection(entities, plural, singular, what)


def _paging(root: Mapping[str, Any], what: str) -> Paging:
    if root.get("paginginfo") is None:
        return Paging()
    info = _fold(root["paginginfo"], what)
    values = {key: _integer(info, key, what) for key in ("pagenum", "pagesize", "pagescount")}
    for key, value in values.items():
        if value is not None and value < 0:
            raise ParseError(f"{what}: PagingInfo {key} is negative")
    return Paging(page_num=values["pagenum"], page_size=values["pagesize"], pages_count=values["pagescount"])


def _links(node: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    links = node.get("links")
    if links is None or isinstance(links, str):
        # An empty <Links/>, or one reduced to text (the notes elide them so).
        return []
    if isinstance(links, list):
        return _list(links, what)
    return _list(_fold(links, what).get("link"), what)


def _backup_server(node: Mapping[str, Any], what: str) -> str | None:
    """The backup server's name, from the link of Type BackupServerReference."""
    for link in _links(node, what):
        kind = _text(link, "type", what)
        if kind is not None and kind.lower() == "backupserverreference":
            return _text(link, "name", what)
    return None


@functools.lru_cache(maxsize=256)
def job_type_of(value: str) -> str:
    """JobType in snake_case: ImmediateBackupCopy -> immediate_backup_copy."""
    words = re.split(r"[\s_-]+", value.strip())
    return "_".join(_CAMEL_BOUNDARY.sub("_", word).lower() for word in words if word)


def map_status(state: str, result: str | None) -> Status:
    """SPEC section 5, case-insensitive. An unknown Result of a stopped
    session is a failure (see the module docstring)."""
    if state.strip().lower() != "stopped":
        return Status.RUNNING
    outcome = (result or "").strip().lower()
    if outcome in ("", "none"):
        return Status.CANCELLED
    return _RESULTS.get(outcome, Status.FAILED)


def _required(value: T | None, key: str, what: str) -> T:
    if value is None:
        raise ParseError(f"{what}: no {key}")
    return value


def _session(node: Mapping[str, Any]) -> Session:
    uid = _text(node, "uid", "veeam session")
    if uid is None:
        raise ParseError("veeam session: BackupJobSession without UID")
    what = f"veeam session {short(uid, 80)}"
    job_name = _required(_text(node, "jobname", what), "JobName", what)
    job_type = _required(_text(node, "jobtype", what), "JobType", what)
    state = _required(_text(node, "state", what), "State", what)
    start = _required(_timestamp(node, "creationtimeutc", what), "CreationTimeUTC", what)
    result = _text(node, "result", what)
    status = map_status(state, result)
    end = _timestamp(node, "endtimeutc", what) if status.finished else None
    if end is not None and end < start:
        # A placeholder such as 1900-01-01 rather than a real end.
        end = None
    reason = _text(node, "failuremessage", what)
    if status is Status.FAILED and result is not None and result.lower() not in _RESULTS:
        reason = reason or f"unrecognised session result {short(result, 40)!r}"
    progress = _number(node, "progress", what)
    run = Run(
        run_id=uid,
        job=JobKey(job_name=job_name, job_type=job_type_of(job_type)),
        status=status,
        # The query filters on CreationTime, which is `start`: no query_time needed.
        start=start,
        end=end,
        progress=None if progress is None else min(1.0, max(0.0, progress / 100)),
        reason=reason,
    )
    return Session(run=run, backup_server=_backup_server(node, what), job_uid=_text(node, "jobuid", what))


def parse_sessions(body: bytes | str) -> SessionPage:
    """The sessions and the paging of a `query?type=BackupJobSession&format=Entities` answer."""
    what = "veeam sessions"
    root = _load(body, "QueryResult", what)
    items = _entities(root, "BackupJobSessions", "BackupJobSession", what)
    return SessionPage(sessions=tuple(_session(item) for item in items), paging=_paging(root, what))


def _job(node: Mapping[str, Any]) -> JobEntity:
    what = "veeam job"
    uid = _text(node, "uid", what)
    name = _text(node, "name", what)
    if uid is None or name is None:
        raise ParseError(f"{what}: Job without UID or Name")
    what = f"veeam job {short(name, 60)!r}"
    return JobEntity(
        uid=uid,
        name=name,
        job_type=job_type_of(_required(_text(node, "jobtype", what), "JobType", what)),
        backup_server=_backup_server(node, what),
        schedule_enabled=_boolean(node, "scheduleenabled", what),
    )


def parse_jobs(body: bytes | str) -> JobPage:
    """The jobs and the paging of a `query?type=Job&format=Entities` answer."""
    what = "veeam jobs"
    root = _load(body, "QueryResult", what)
    items = _entities(root, "Jobs", "Job", what)
    return JobPage(jobs=tuple(_job(item) for item in items), paging=_paging(root, what))


def _repository(node: Mapping[str, Any]) -> RepositoryEntity:
    what = "veeam repository"
    uid = _text(node, "uid", what)
    name = _text(node, "name", what)
    if uid is None or name is None:
        raise ParseError(f"{what}: Repository without UID or Name")
    what = f"veeam repository {short(name, 60)!r}"

    def known(key: str) -> int | None:
        # -1 (or any negative figure) means unknown: S3, snapshot repositories.
        value = _integer(node, key, what)
        return None if value is None or value < 0 else value

    return RepositoryEntity(
        uid=uid,
        name=name,
        backup_server=_backup_server(node, what),
        capacity_bytes=known("capacity"),
        free_bytes=known("freespace"),
    )


def parse_repositories(body: bytes | str) -> RepositoryPage:
    """The repositories and the paging of a `query?type=Repository&format=Entities` answer."""
    what = "veeam repositories"
    root = _load(body, "QueryResult", what)
    items = _entities(root, "Repositories", "Repository", what)
    return RepositoryPage(repositories=tuple(_repository(item) for item in items), paging=_paging(root, what))


def parse_logon_session(body: bytes | str) -> str:
    """The SessionId of a LogonSession (the logon's answer), for the logout URL."""
    what = "veeam logon session"
    session_id = _text(_load(body, "LogonSession", what), "sessionid", what)
    if session_id is None or not _SESSION_ID.match(session_id):
        raise ParseError(f"{what}: missing or invalid SessionId ({short(str(session_id), 40)!r})")
    return session_id


def repositories_of(entities: Iterable[RepositoryEntity]) -> list[Repository]:
    """Repositories with unique names, the `repository` label: every backup
    server has a "Default Backup Repository", so a name found more than once
    is qualified with its backup server ("Name (server)"), or its UID where
    that does not tell them apart. The listing is complete on every poll, so
    the qualification does not come and go."""
    rows = sorted(entities, key=lambda r: (r.name, r.backup_server or "", r.uid))
    by_name = Counter(r.name for r in rows)
    by_server = Counter((r.name, r.backup_server) for r in rows)
    result: list[Repository] = []
    for row in rows:
        name = row.name
        if by_name[name] > 1:
            unique_server = row.backup_server is not None and by_server[name, row.backup_server] == 1
            name = f"{name} ({row.backup_server if unique_server else row.uid})"
        result.append(Repository(name=name, capacity_bytes=row.capacity_bytes, free_bytes=row.free_bytes))
    return result


@dataclass(frozen=True, slots=True)
class Attribution:
    """Runs under their job names, and every job, from one poll's job
    inventory and sessions (see "Job names" in the module docstring)."""

    runs: tuple[Run, ...]
    jobs: tuple[JobKey, ...]
    job_info: Mapping[JobKey, Mapping[str, str]]
    # JobNames of the inventory found on more than one backup server, with
    # those servers (None: a server without a name).
    colliding: Mapping[str, frozenset[str | None]]
    # Jobs of the inventory (replication jobs left out).
    listed_jobs: int
    # Sessions whose job is not in the inventory (deleted, or missed).
    unlisted_runs: int


def _uid_key(uid: str) -> str:
    """What identifies a job in a UID: the GUID of `urn:veeam:Job:<guid>`,
    in any case (a session's JobUid and the job's UID are one job)."""
    return uid.rsplit(":", 1)[-1].strip().lower()


def _servers_by_name(pairs: Iterable[tuple[str, str | None]]) -> dict[str, set[str | None]]:
    servers: dict[str, set[str | None]] = {}
    for name, server in pairs:
        servers.setdefault(name, set()).add(server)
    return servers


def _job_name(name: str, server: str | None, uid: str | None, servers: set[str | None]) -> str:
    """JobName, or "JobName (backup server)" where `servers` (those with a job
    of that name) holds more than one; a server without a name is told apart
    by the job's UID, failing that not at all."""
    if len(servers) <= 1:
        return name
    qualifier = server if server is not None else uid
    return name if qualifier is None else f"{name} ({qualifier})"


def attribute_sessions(jobs: Iterable[JobEntity], sessions: Iterable[Session]) -> Attribution:
    """Names every job of the inventory and every session's run by the job
    name rule, and gathers the jobs' backup_job_info. Pure."""
    inventory = {_uid_key(job.uid): job for job in jobs if job.job_type not in _SESSIONLESS_JOB_TYPES}
    listed_servers = _servers_by_name((job.name, job.backup_server) for job in inventory.values())
    names = {
        key: _job_name(job.name, job.backup_server, job.uid, listed_servers[job.name]) for key, job in inventory.items()
    }
    listed: list[tuple[Session, JobEntity]] = []
    unlisted: list[Session] = []
    for session in sessions:
        job = inventory.get(_uid_key(session.job_uid)) if session.job_uid else None
        if job is None:
            unlisted.append(session)
        else:
            listed.append((session, job))
    # Unlisted sessions are named over the inventory and each other; the
    # inventory's names never depend on them.
    all_servers = _servers_by_name(
        [
            *((job.name, job.backup_server) for job in inventory.values()),
            *((s.run.job.job_name, s.backup_server) for s in unlisted),
        ]
    )

    servers: dict[JobKey, set[str]] = {}
    enabled: dict[JobKey, set[bool]] = {}

    def describe(key: JobKey, server: str | None, schedule_enabled: bool | None) -> None:
        found = servers.setdefault(key, set())
        if server is not None:
            found.add(server)
        if schedule_enabled is not None:
            enabled.setdefault(key, set()).add(schedule_enabled)

    for key, job in inventory.items():
        describe(JobKey(names[key], job.job_type), job.backup_server, job.schedule_enabled)
    runs: list[Run] = []
    for session, job in listed:
        run = replace(session.run, job=JobKey(names[_uid_key(job.uid)], session.run.job.job_type))
        describe(run.job, job.backup_server or session.backup_server, job.schedule_enabled)
        runs.append(run)
    for session in unlisted:
        name = session.run.job.job_name
        qualified = _job_name(name, session.backup_server, session.job_uid, all_servers[name])
        run = replace(session.run, job=JobKey(qualified, session.run.job.job_type))
        describe(run.job, session.backup_server, None)
        runs.append(run)

    job_info: dict[JobKey, dict[str, str]] = {}
    for job_key, found in servers.items():
        info: dict[str, str] = {}
        if found:
            # Several only where one server has two jobs of one name and type.
            info["backup_server"] = ",".join(sorted(found))
        if job_key in enabled:
            # Enabled where any job of the key is: an alert rule that leaves
            # out disabled jobs must never leave out a scheduled one.
            info["schedule_enabled"] = "true" if True in enabled[job_key] else "false"
        if info:
            job_info[job_key] = info
    return Attribution(
        runs=tuple(runs),
        jobs=tuple(sorted(servers)),
        job_info=job_info,
        colliding={name: frozenset(found) for name, found in listed_servers.items() if len(found) > 1},
        listed_jobs=len(inventory),
        unlisted_runs=len(unlisted),
    )


# --- requests ------------------------------------------------------------------


def _query_path(api: str, kind: str, *, filter_: str | None, sort: str, page_size: int, page: int) -> str:
    # Percent-encoded like the links the server hands out, with `;` (AND) literal.
    parts = [f"type={kind}", "format=Entities"]
    if filter_ is not None:
        parts.append("filter=" + quote(filter_, safe=";"))
    parts += [f"sortAsc={sort}", f"pageSize={page_size}", f"page={page}"]
    return f"{api}query?" + "&".join(parts)


class _SessionAuth:
    """An Enterprise Manager logon session: logs on lazily with HTTP Basic,
    then sends the session token on every request until a 401 or 15 idle
    minutes; logs out on close."""

    def __init__(
        self,
        username: str | None,
        password: Secret | None,
        api: str,
        accept: str,
        monotonic: Callable[[], float],
    ) -> None:
        self._username = username
        self._password = password
        self._api = api
        self._accept = accept
        self._monotonic = monotonic
        self._token: str | None = None
        self._session_id: str | None = None
        self._last_used = 0.0
        self._lock = asyncio.Lock()
        self.logons = 0

    async def headers(self, http: HttpClient) -> Mapping[str, str]:
        async with self._lock:
            now = self._monotonic()
            if self._token is not None and now - self._last_used > IDLE_LOGON_SECONDS:
                # Expired on the server by now; its logout would only get a 401.
                self._forget()
            if self._token is None:
                await self._logon(http)
            assert self._token is not None
            self._last_used = now
            return {SESSION_HEADER: self._token}

    async def invalidate(self, http: HttpClient) -> None:
        self._forget()

    def _forget(self) -> None:
        self._token = None
        self._session_id = None

    async def _logon(self, http: HttpClient) -> None:
        if not self._username or self._password is None:
            raise TargetConfigError("veeam needs username and password (an Enterprise Manager account)")
        # Encode the raw UTF-8 (domain\user, any character in the password).
        raw = f"{self._username}:{self._password.reveal()}".encode()
        path = f"{self._api}sessionMngr/?v=latest"
        response = await http.request(
            "POST",
            path,
            headers={"Authorization": "Basic " + base64.b64encode(raw).decode("ascii"), "Accept": self._accept},
            data=b"",
            authenticate=False,
        )
        # Copied verbatim: the token is opaque (base64 of the SessionId on
        # today's servers, 16 random bytes on older ones), never computed.
        token = next((v for k, v in response.headers.items() if k.lower() == SESSION_HEADER.lower()), None)
        if not token:
            raise ParseError(f"POST /{path.split('?')[0]}: HTTP {response.status} without a {SESSION_HEADER} header")
        try:
            session_id: str | None = parse_logon_session(response.body)
        except ParseError as exc:
            # Only the logout needs the SessionId; the session itself works.
            log.debug("no SessionId in the logon answer, will not log out: %s", exc)
            session_id = None
        self._token, self._session_id = token, session_id
        self.logons += 1

    async def logout(self, http: HttpClient) -> None:
        """DELETE the logon session; never raises (the session expires anyway)."""
        async with self._lock:
            token, session_id = self._token, self._session_id
            self._forget()
        if token is None or session_id is None:
            return
        try:
            await http.request(
                "DELETE",
                f"{self._api}logonSessions/{session_id}",
                headers={SESSION_HEADER: token, "Accept": self._accept},
                authenticate=False,
                ok=lambda status: True,
            )
        except Exception as exc:
            log.debug("veeam logout failed: %s", type(exc).__name__)


@dataclass
class _Tally:
    """Counts of one collection, for Collection.summary."""

    requests: int = 0
    session_pages: int = 0
    job_pages: int = 0
    repository_pages: int = 0


class VeeamClient:
    """Collects one Veeam Backup Enterprise Manager (SPEC sections 5 and 6)."""

    # --check-config --connect: what to check when the login is refused.
    auth_hint: ClassVar[str] = (
        "check username and password/password_file;"
        " the account needs the Portal Administrator, Portal User or Restore Operator role in Enterprise Manager"
    )

    page_size: ClassVar[int] = 100
    max_pages: ClassVar[int] = 1000

    def __init__(
        self,
        target: TargetConfig,
        http: HttpClient,
        *,
        page_size: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self._http = http
        # The url is the EM base (https://em:9398); one ending in /api works too.
        self._api = "" if http.base_url.path.rstrip("/").endswith("/api") else "api/"
        self._format = str(target.options.get("format", DEFAULT_FORMAT)).strip().lower()
        self._accept = FORMATS.get(self._format, FORMATS[DEFAULT_FORMAT])
        self._page_size = page_size or self.page_size
        self._auth = _SessionAuth(target.username, target.password, self._api, self._accept, monotonic)
        http.auth = self._auth
        # JobNames found on several backup servers at the last poll.
        self._colliding: frozenset[str] = frozenset()

    async def close(self) -> None:
        await self._auth.logout(self._http)

    async def check(self, now: datetime) -> str:
        """--check-config --connect: logon and the first page of jobs, the
        least that proves the account can read what we collect."""
        self._check_format()
        response = await self._query(_Tally(), "Job", None, "Name", 1)
        page = parse_jobs(response.body)
        pages = page.paging.pages_count
        more = f" (page 1 of {pages})" if pages is not None and pages > 1 else ""
        return f"login ok, {len(page.jobs)} jobs visible{more}"

    def _check_format(self) -> None:
        if self._format not in FORMATS:
            raise TargetConfigError(f"format must be one of {', '.join(FORMATS)}, got {short(self._format, 20)!r}")

    async def collect(self, since: datetime, now: datetime) -> Collection:
        self._check_format()
        tally = _Tally()
        logons_before = self._auth.logons
        # In progress first: one that finishes before the second query is then
        # in it, as the second starts no later than the oldest of them.
        active = await self._sessions(tally, "State!=Stopped")
        lower = min([since, *(s.run.start for s in active if s.run.start is not None)])
        recent = await self._sessions(tally, f'CreationTime>="{format_timestamp(lower)}"')
        sessions = {s.run.run_id: s for s in active}
        sessions.update((s.run.run_id, s) for s in recent)
        jobs = await self._jobs(tally)
        repositories = await self._repositories(tally)

        attribution = attribute_sessions(jobs, sessions.values())
        self._log_collisions(attribution.colliding)
        runs = attribution.runs
        servers = {s.backup_server for s in sessions.values() if s.backup_server is not None}
        servers.update(job.backup_server for job in jobs if job.backup_server is not None)
        return Collection(
            runs=runs,
            jobs=attribution.jobs,
            repositories=tuple(repositories),
            job_info=attribution.job_info,
            summary={
                "requests": tally.requests,
                "logons": self._auth.logons - logons_before,
                "session_pages": tally.session_pages,
                "job_pages": tally.job_pages,
                "repository_pages": tally.repository_pages,
                "runs": len(runs),
                "running": sum(1 for run in runs if not run.status.finished),
                "listed_jobs": attribution.listed_jobs,
                "unlisted_job_runs": attribution.unlisted_runs,
                "backup_servers": len(servers),
                "repositories": len(repositories),
            },
        )

    def _log_collisions(self, colliding: Mapping[str, frozenset[str | None]]) -> None:
        """A warning once per JobName newly found on several backup servers:
        its jobs get new names, and the series of the old one stops."""
        for name in sorted(set(colliding) - self._colliding):
            log.warning(
                "target %s: jobs named %r exist on several backup servers (%s): each is collected as "
                "%r from now on, and a series named %r from before stops updating",
                self._target.name,
                name,
                ", ".join(sorted(server or "(unnamed)" for server in colliding[name])),
                f"{name} (<backup server>)",
                name,
            )
        for name in sorted(self._colliding - set(colliding)):
            log.info(
                "target %s: jobs named %r are no longer on several backup servers: collected as %r again",
                self._target.name,
                name,
                name,
            )
        self._colliding = frozenset(colliding)

    async def _query(self, tally: _Tally, kind: str, filter_: str | None, sort: str, page: int) -> Response:
        path = _query_path(self._api, kind, filter_=filter_, sort=sort, page_size=self._page_size, page=page)
        tally.requests += 1
        response = await self._http.request("GET", path, headers={"Accept": self._accept})
        content_type = response.content_type
        # A proxy's login page or an HTML error page answers 200 as well.
        if content_type and "xml" not in content_type and "json" not in content_type:
            where = f"{self._http.url(self._api + 'query').path}?type={kind}"
            raise ParseError(f"GET {where}: expected XML or JSON, got Content-Type {short(content_type, 60)!r}")
        return response

    async def _sessions(self, tally: _Tally, filter_: str) -> list[Session]:
        async def page(number: int) -> tuple[Sequence[Session], Paging]:
            response = await self._query(tally, "BackupJobSession", filter_, "CreationTime", number)
            tally.session_pages += 1
            result = parse_sessions(response.body)
            return result.sessions, result.paging

        return await self._all_pages("BackupJobSession", page, lambda s: s.run.run_id)

    async def _jobs(self, tally: _Tally) -> list[JobEntity]:
        async def page(number: int) -> tuple[Sequence[JobEntity], Paging]:
            response = await self._query(tally, "Job", None, "Name", number)
            tally.job_pages += 1
            result = parse_jobs(response.body)
            return result.jobs, result.paging

        return await self._all_pages("Job", page, lambda j: j.uid)

    async def _repositories(self, tally: _Tally) -> list[Repository]:
        async def page(number: int) -> tuple[Sequence[RepositoryEntity], Paging]:
            response = await self._query(tally, "Repository", None, "Name", number)
            tally.repository_pages += 1
            result = parse_repositories(response.body)
            return result.repositories, result.paging

        return repositories_of(await self._all_pages("Repository", page, lambda r: r.uid))

    async def _all_pages(
        self,
        kind: str,
        fetch: Callable[[int], Awaitable[tuple[Sequence[T], Paging]]],
        key: Callable[[T], str],
    ) -> list[T]:
        """Every row of a query, page by page up to PagesCount (re-read on
        every page: it grows when rows are added meanwhile)."""
        rows: dict[str, T] = {}
        number = 1
        while True:
            page, paging = await fetch(number)
            if paging.page_num is not None and paging.page_num != number:
                raise ParseError(f"veeam {kind} query: asked for page {number}, got page {paging.page_num}")
            added = 0
            for row in page:
                added += key(row) not in rows
                # A later page holds the fresher copy of a row seen twice.
                rows[key(row)] = row
            if not page or paging.pages_count is None or number >= paging.pages_count:
                return list(rows.values())
            if added == 0:
                raise ParseError(f"veeam {kind} query: page {number} repeats rows of earlier pages")
            if number >= self.max_pages:
                raise ParseError(f"veeam {kind} query: more than {self.max_pages} pages")
            number += 1


def describe_collection(options: Mapping[str, Any]) -> str:
    return (
        f"format={options['format']}; queries BackupJobSession (running, and created since the "
        "last poll), Job and Repository: at least 4 requests per poll, plus a logon when the session expired"
    )


SPEC = VendorSpec(
    name="veeam",
    client=VeeamClient,
    options={"format": str},
    secrets=(),
    required=("username", "password"),
    defaults={"format": DEFAULT_FORMAT},
    choices={"format": tuple(FORMATS)},
    info_labels=("backup_server", "schedule_enabled"),
    describe=describe_collection,
)
