"""Commvault: the client (Web Server / Command Center REST API, JSON or XML,
`Authtoken` sessions) and the pure parsers.

The target's `url` is the API base, ending in `/commandcenter/api` (current
releases) or `/webconsole/api` (older ones). Calls:

- `POST {base}/Login` once per session, the password base64-encoded; the
  `QSDK ...` token goes into an `Authtoken` header. On a 401 (the token idles
  out after 30 minutes) `POST {base}/RenewLoginToken` first, a fresh Login
  only if the renewal is refused. `POST {base}/Logout` in `close()`.
- `GET {base}/Job?completedJobLookupTime=<s>&jobCategory=All&jobFilter=<types>`,
  paged through the `limit` and `offset` REQUEST HEADERS until
  `totalRecordsWithoutPaging` is reached; consecutive pages overlap by a few
  jobs, so a job leaving the list mid-paging cannot push another one between
  two pages. `jobCategory=All` returns every job still in progress whatever
  its age. `completedJobLookupTime` counts seconds back from the SERVER's now:
  it is `now - since`, plus how far the server's clock is ahead of ours
  (negative when behind; from its `Date` header), plus a 10-minute margin;
  when the first page shows the server's clock jumped ahead, the first page
  is asked for again.

Requests per poll: P = 1 + ceil(max(0, T - L) / (L - K)) job pages, T being
`totalRecordsWithoutPaging`, L the page size (100) and K the page overlap (5);
plus one Login on the first poll; one RenewLoginToken (and a Login if that is
refused) and one repeated page per expired session; one repeated first page
when the server's clock jumps; plus HttpClient's retries (at most 3 per
request). Pages are capped at that P for the first page's T, plus 5 (then
ParseError), so a server that keeps growing its total cannot page forever.

Commvault reports many failures with HTTP 200 and an `errorCode` / `errList`
body; those become AuthError (credential and token errors, after one fresh
session) or HTTPStatusError with status 200 (anything else: the API answered,
it just refused), never data.

Status mapping per SPEC section 5, case-insensitive. A status string not in
the documented list is mapped by keyword (fail -> failed, kill -> cancelled,
complet/commit -> warning, running -> running), else warning when the job has
an end time and queued when it has none, and logged once per client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from yarl import URL

from exporter.model import Collection, JobKey, Run, Status
from exporter.vendors.base import (
    AuthError,
    CollectionError,
    HttpClient,
    HTTPStatusError,
    ParseError,
    Response,
    TargetConfigError,
    VendorSpec,
)
from exporter.vendors.payload import INT64_LIMIT, load_json, load_xml, short

if TYPE_CHECKING:
    from exporter.config import Secret, TargetConfig

log = logging.getLogger(__name__)

Format = Literal["json", "xml"]
FORMATS: tuple[Format, ...] = ("json", "xml")
ACCEPT: Mapping[Format, str] = {"json": "application/json", "xml": "application/xml"}
API_BASES = ("/commandcenter/api", "/webconsole/api")
DEFAULT_JOB_TYPES = ("Backup",)
TOKEN_PREFIX = "QSDK "  # noqa: S105 - the scheme of a token, not a secret
JOB_LIST_ROOT = "JobManager_JobListResponse"
LOGIN_ROOT = "DM2ContentIndexing_CheckCredentialResp"
# completedJobLookupTime is relative to the server's clock: a server ahead of
# ours, and the time paging takes, must not cut off the oldest runs we want.
LOOKUP_MARGIN = timedelta(minutes=10)
# "Access denied" (SP36 logout and 401 bodies). Commvault documents no other
# numeric credential codes, so messages are matched as well.
AUTH_ERROR_CODES = frozenset({5})
_AUTH_WORDS = (
    "access denied",
    "authorization token",
    "authtoken",
    "token expired",
    "session expired",
    "invalid session",
    "not logged in",
    "password",
    "authentication",
)
_FORCE_LIST = ("jobs", "jobSummary", "errList")
# The exact types of a JSON value or an XML text, which _scalar returns as they are.
_PLAIN = frozenset({str, int, float, bool})
_ABSENT = object()
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
# A token goes into a header: printable ASCII after the QSDK prefix, no spaces.
_TOKEN = re.compile(r"^QSDK [\x21-\x7e]{1,8192}$")
_JOB_TYPE = re.compile(r"^[A-Za-z0-9 _-]+$")
# Without a total to go by, a server could hand out new pages for ever.
MAX_PAGES_WITHOUT_TOTAL = 1000

_STATUSES: Mapping[str, Status] = {
    "completed": Status.SUCCESS,
    "completed w/ one or more errors": Status.WARNING,
    "completed w/ one or more warnings": Status.WARNING,
    "committed": Status.WARNING,
    "failed": Status.FAILED,
    "failed to start": Status.FAILED,
    "abnormal terminated cleanup": Status.FAILED,
    "killed": Status.CANCELLED,
    "running": Status.RUNNING,
    "running (cannot be verified)": Status.RUNNING,
    "waiting": Status.QUEUED,
    "pending": Status.QUEUED,
    "queued": Status.QUEUED,
    "suspend": Status.QUEUED,
    "suspended": Status.QUEUED,
    "suspend pending": Status.QUEUED,
    "kill pending": Status.QUEUED,
    "interrupt pending": Status.QUEUED,
    "interrupted": Status.QUEUED,
}
# Documented status strings, in the notes' order; the simulator serves each.
STATUS_STRINGS: tuple[str, ...] = (
    "Running",
    "Waiting",
    "Pending",
    "Queued",
    "Suspend",
    "Suspended",
    "Suspend Pending",
    "Kill Pending",
    "Interrupt Pending",
    "Interrupted",
    "Running (cannot be verified)",
    "Completed",
    "Completed w/ one or more errors",
    "Completed w/ one or more warnings",
    "Committed",
    "Failed",
    "Failed to Start",
    "Killed",
    "Abnormal Terminated Cleanup",
)

INFO_LABELS = ("client_name", "instance_name", "backupset_name", "subclient_name", "app_type", "subclient_id")


# --- parsing -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiError:
    """A failure the API reported in a body (often with HTTP 200)."""

    code: int | None
    message: str

    @property
    def is_auth(self) -> bool:
        if self.code in AUTH_ERROR_CODES:
            return True
        text = self.message.lower()
        return any(word in text for word in _AUTH_WORDS)

    def describe(self) -> str:
        code = "" if self.code is None else f" {self.code}"
        return f"Commvault error{code}: {short(self.message) or 'no message'}"


@dataclass(frozen=True, slots=True)
class TokenResult:
    """A Login or RenewLoginToken answer: a token, or the error it reported."""

    token: str | None
    error: ApiError | None = None


@dataclass(frozen=True, slots=True)
class JobRow:
    """One `jobSummary`: the run, and what the client needs besides."""

    run: Run
    job_id: int
    visible: bool
    raw_status: str
    known_status: bool
    info: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of `GET Job`; `error` set means the API refused (no rows)."""

    total: int | None
    rows: tuple[JobRow, ...] = ()
    error: ApiError | None = None


def _load(body: bytes | str, fmt: Format, root: str, what: str) -> tuple[dict[str, Any], bool]:
    """The payload's top-level mapping, and whether it is the expected `root`.

    JSON comes bare or wrapped in `{root: {...}}`; XML always has a root
    element. Entities stay forbidden: a DTD with `<!ENTITY>` fails at once.
    """
    if fmt == "xml":
        doc = load_xml(body, what, force_list=_FORCE_LIST)
        if len(doc) != 1:
            raise ParseError(f"{what}: expected one root element")
        name, content = next(iter(doc.items()))
        if content is None:
            content = {}
        if not isinstance(content, dict):
            raise ParseError(f"{what}: <{short(str(name), 40)}> holds text, expected attributes or elements")
        return content, name == root
    doc = load_json(body, what)
    if not isinstance(doc, dict):
        raise ParseError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    wrapped = doc.get(root)
    if len(doc) == 1 and isinstance(wrapped, dict):
        return wrapped, True
    return doc, True


def _field(node: Mapping[str, Any], key: str) -> Any:
    """`key` as a JSON member, an xmltodict attribute (`@key`) or inside an
    `@attr` object (a JSON rendering of XML some servers use)."""
    if key in node:
        return node[key]
    if "@" + key in node:
        return node["@" + key]
    attrs = node.get("@attr")
    if isinstance(attrs, dict):
        return attrs.get(key, attrs.get("@" + key))
    return None


def _scalar(node: Mapping[str, Any], key: str, what: str) -> str | int | float | bool | None:
    value = node.get(key, _ABSENT)
    if type(value) in _PLAIN and "@" + key not in node:
        # The common case first (a JSON member, a value): what _field finds;
        # tests hold it to _scalar_general.
        return value  # type: ignore[no-any-return]
    return _scalar_general(node, key, what)


def _scalar_general(node: Mapping[str, Any], key: str, what: str) -> str | int | float | bool | None:
    if key in node and "@" + key in node:
        raise ParseError(f"{what}: {key} is both an attribute and an element")
    value = _field(node, key)
    if isinstance(value, dict):
        # An element with attributes and text; one with child elements is no value.
        if any(not k.startswith("@") and k != "#text" for k in value):
            raise ParseError(f"{what}: {key} holds an object, expected a value")
        value = value.get("#text")
    if isinstance(value, list):
        raise ParseError(f"{what}: {key} appears more than once")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ParseError(f"{what}: {key} has an unexpected type")


def _string(node: Mapping[str, Any], key: str, what: str) -> str | None:
    """The whitespace-trimmed value; None when absent or empty."""
    value = _scalar(node, key, what)
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = " ".join(str(value).split())
    return text or None


def _int(node: Mapping[str, Any], key: str, what: str) -> int | None:
    """A non-negative integer from a JSON number or a string ("12", "12.0")."""
    value = _scalar(node, key, what)
    if type(value) is int and 0 <= value < INT64_LIMIT:
        # The common case first; tests hold it to _whole_number.
        return value
    return _whole_number(value, key, what)


def _whole_number(value: str | int | float | bool | None, key: str, what: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ParseError(f"{what}: {key} is a boolean, expected a number")
    number: float | int
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise ParseError(f"{what}: {key} is {short(text, 40)!r}, not a number") from None
    else:
        number = value
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise ParseError(f"{what}: {key} is {number!r}, expected a whole number")
        number = int(number)
    if number < 0:
        raise ParseError(f"{what}: {key} is negative ({number})")
    if number >= INT64_LIMIT:
        raise ParseError(f"{what}: {key} is {short(str(number), 40)}, out of the Int64 range")
    return number


def _float(node: Mapping[str, Any], key: str, what: str) -> float | None:
    value = _scalar(node, key, what)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ParseError(f"{what}: {key} is a boolean, expected a number")
    try:
        number = float(value)
    except ValueError:
        raise ParseError(f"{what}: {key} is {short(str(value), 40)!r}, not a number") from None
    if not math.isfinite(number):
        raise ParseError(f"{what}: {key} is {value!r}")
    return number


def _bool(node: Mapping[str, Any], key: str, what: str) -> bool | None:
    value = _scalar(node, key, what)
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ParseError(f"{what}: {key} is {short(str(value), 40)!r}, expected true or false")


def _epoch(node: Mapping[str, Any], key: str, what: str) -> datetime | None:
    """Unix seconds as aware UTC; 0 means unset (a running job's end time)."""
    seconds = _int(node, key, what)
    if not seconds:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ParseError(f"{what}: {key} is {seconds}, not a plausible Unix time") from None


def _entries(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _api_error(node: Mapping[str, Any], what: str, *, outer: bool = True) -> ApiError | None:
    """The error a body reports: a non-zero `errorCode`, a non-empty `errList`,
    or either inside an `error` object (JobDetails, RenewLoginToken). Only
    one level of `error` is looked into: that is all the API nests, and an
    XML body can nest thousands, past the interpreter's recursion limit."""
    nested = _field(node, "error") if outer else None
    if isinstance(nested, dict):
        inner = _api_error(nested, what, outer=False)
        if inner is not None:
            return inner
        message = _string(nested, "errLogMessage", what) or _string(nested, "errorMessage", what)
        if message:
            return ApiError(None, message)
    message = _string(node, "errorMessage", what) or _string(node, "errLogMessage", what) or ""
    code_text = _string(node, "errorCode", what)
    code = _int_or_none(code_text)
    if code_text is not None and code != 0:
        return ApiError(code, message or code_text)
    for entry in _entries(_field(node, "errList")):
        if not isinstance(entry, dict):
            raise ParseError(f"{what}: errList entry is not an object")
        entry_message = _string(entry, "errLogMessage", what) or _string(entry, "errorMessage", what)
        entry_code = _int_or_none(_string(entry, "errorCode", what))
        if entry_message or entry_code:
            return ApiError(entry_code, entry_message or "")
    return None


def _int_or_none(text: str | None) -> int | None:
    """An error code as an integer ("5", "5.0"); None when it is none."""
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def parse_token(body: bytes | str, fmt: Format = "json") -> TokenResult:
    """A Login (`DM2ContentIndexing_CheckCredentialResp`) or RenewLoginToken
    answer. No token means a refusal: its error, or a generic one."""
    what = "commvault login"
    content, _ = _load(body, fmt, LOGIN_ROOT, what)
    if not isinstance(_scalar(content, "token", what), str | None):
        raise ParseError(f"{what}: the token is not a string")
    token = _string(content, "token", what)
    if token is None:
        data = _field(content, "data")
        if isinstance(data, dict) and _string(data, "authToken", what):
            # Commvault Cloud (SaaS) answers with a bearer token instead.
            raise ParseError(f"{what}: a SaaS bearer token (data.authToken), not a QSDK Authtoken")
        error = _api_error(content, what) or ApiError(None, "no token in the response")
        if _bool(content, "isAccountLocked", what):
            wait = _int(content, "remainingLockTime", what)
            suffix = f" ({wait} s left)" if wait else ""
            error = ApiError(error.code, f"account locked{suffix}: {error.message}")
        return TokenResult(token=None, error=error)
    if not token.startswith(TOKEN_PREFIX):
        # cvpysdk prepends the prefix when a server leaves it out.
        token = TOKEN_PREFIX + token
    if not _TOKEN.match(token):
        raise ParseError(f"{what}: the token is not a QSDK token")
    return TokenResult(token=token)


def map_status(text: str, *, has_end: bool = False) -> tuple[Status, bool]:
    """The normalised status of a Commvault status string, and whether the
    string is a documented one. See the module docstring for unknown ones."""
    key = " ".join(text.split()).lower()
    known = _STATUSES.get(key)
    if known is not None:
        return known, True
    # SPEC section 5's patterns: Suspend*, *Pending.
    if key.startswith("suspend") or key.endswith("pending"):
        return Status.QUEUED, True
    for words, status in (
        (("fail",), Status.FAILED),
        (("kill",), Status.CANCELLED),
        (("complet", "commit"), Status.WARNING),
        (("running",), Status.RUNNING),
    ):
        if any(word in key for word in words):
            return status, False
    return (Status.WARNING if has_end else Status.QUEUED), False


def job_type_of(text: str) -> str:
    """SPEC section 5: jobType lower-cased, spaces to `_`."""
    return "_".join(text.lower().split())


def _summaries(content: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    """Every `jobSummary`: `jobs` is a list of `{"jobSummary": {...}}` in JSON
    and repeated `<jobs><jobSummary .../></jobs>` in XML."""
    summaries: list[dict[str, Any]] = []
    for item in _entries(_field(content, "jobs")):
        if not isinstance(item, dict):
            raise ParseError(f"{what}: a jobs entry is not an object")
        inner = _field(item, "jobSummary")
        if inner is None and _field(item, "jobId") is not None:
            inner = item
        entries = _entries(inner)
        if not entries:
            raise ParseError(f"{what}: a jobs entry without jobSummary")
        for summary in entries:
            if not isinstance(summary, dict):
                raise ParseError(f"{what}: jobSummary is not an object")
            summaries.append(summary)
    return summaries


def _names(summary: Mapping[str, Any], what: str) -> tuple[dict[str, str], str]:
    """backup_job_info labels and the `client/backupset/subclient` job name.

    The nested `subclient` object is authoritative; the flat fields of the
    summary stand in where it is missing. A missing part is left empty.
    """
    sub = _field(summary, "subclient")
    if isinstance(sub, list):
        sub = sub[0] if sub else None
    sub = sub if isinstance(sub, dict) else {}
    client = _string(sub, "clientName", what) or _string(summary, "clientName", what)
    if client is None and not sub:
        client = _string(summary, "destClientName", what)
    backupset = _string(sub, "backupsetName", what) or _string(summary, "backupSetName", what)
    subclient = _string(sub, "subclientName", what) or _string(summary, "subclientName", what)
    info = {
        "client_name": client,
        "instance_name": _string(sub, "instanceName", what),
        "backupset_name": backupset,
        "subclient_name": subclient,
        "app_type": _string(sub, "appName", what) or _string(summary, "appTypeName", what),
        "subclient_id": _string(sub, "subclientId", what),
    }
    name = "/".join(part or "" for part in (client, backupset, subclient))
    return {k: v for k, v in info.items() if v is not None}, name


def _items(summary: Mapping[str, Any], what: str) -> dict[str, int]:
    items: dict[str, int] = {}
    total = _int(summary, "totalNumOfFiles", what)
    failed = _int(summary, "totalFailedFiles", what)
    if total is not None:
        items["total"] = total
    if failed is not None:
        items["failed"] = failed
    return items


def _end(
    summary: Mapping[str, Any], job_end: datetime | None, start: datetime | None, elapsed: int | None, what: str
) -> datetime | None:
    """jobEndTime (`job_end`); else start + jobElapsedTime (a lower bound:
    never later than the real end, so an RPO alert is never late); else
    lastUpdateTime. The documented XML example has no jobEndTime at all."""
    if job_end is not None:
        return job_end
    if start is not None and elapsed:
        try:
            return start + timedelta(seconds=elapsed)
        except OverflowError:
            raise ParseError(f"{what}: jobStartTime + jobElapsedTime is past year 9999") from None
    return _epoch(summary, "lastUpdateTime", what)


def parse_job(summary: Mapping[str, Any]) -> JobRow:
    """One `jobSummary` as a run."""
    job_id = _int(summary, "jobId", "commvault job")
    if not job_id:
        raise ParseError("commvault job: jobSummary without a jobId")
    what = f"commvault job {job_id}"
    raw_status = _string(summary, "status", what) or _string(summary, "localizedStatus", what)
    if raw_status is None:
        raise ParseError(f"{what}: no status")
    raw_type = _string(summary, "jobType", what) or _string(summary, "localizedOperationName", what)
    if raw_type is None:
        raise ParseError(f"{what}: no jobType")
    start = _epoch(summary, "jobStartTime", what)
    elapsed = _int(summary, "jobElapsedTime", what)
    job_end = _epoch(summary, "jobEndTime", what)
    status, known = map_status(raw_status, has_end=job_end is not None)
    info, name = _names(summary, what)
    finished = status.finished
    end = _end(summary, job_end, start, elapsed, what) if finished else None
    percent = _float(summary, "percentComplete", what)
    run = Run(
        run_id=str(job_id),
        job=JobKey(job_name=name, job_type=job_type_of(raw_type)),
        status=status,
        start=start,
        end=end,
        processed_bytes=_int(summary, "sizeOfApplication", what),
        stored_bytes=_int(summary, "sizeOfMediaOnDisk", what),
        items=_items(summary, what),
        progress=None if percent is None else min(1.0, max(0.0, percent / 100)),
        reason=_string(summary, "pendingReason", what),
        duration_seconds=float(elapsed) if finished and elapsed else None,
        # The server filters finished jobs on when they completed. A job in
        # progress is always listed (jobCategory=All) and will complete after
        # its last update: that is the earliest the next poll must reach.
        query_time=end if finished else (_epoch(summary, "lastUpdateTime", what) or start),
    )
    visible = _bool(summary, "isVisible", what)
    return JobRow(
        run=run,
        job_id=job_id,
        visible=visible is not False,
        raw_status=raw_status,
        known_status=known,
        info=info,
    )


def parse_job_list(body: bytes | str, fmt: Format = "json") -> JobPage:
    """A `GET Job` page (`JobManager_JobListResponse`), or the error it reports."""
    what = "commvault job list"
    content, is_root = _load(body, fmt, JOB_LIST_ROOT, what)
    error = _api_error(content, what)
    if error is not None:
        return JobPage(total=None, error=error)
    total = _int(content, "totalRecordsWithoutPaging", what)
    # An empty JSON object is how some releases answer "no jobs"; any other
    # object without the list's members is something else.
    unknown = total is None and _field(content, "jobs") is None and set(content) - {"processinginstructioninfo"}
    if not is_root or unknown:
        raise ParseError(f"{what}: expected {JOB_LIST_ROOT} (totalRecordsWithoutPaging, jobs)")
    rows = tuple(parse_job(summary) for summary in _summaries(content, what))
    return JobPage(total=total, rows=rows)


def format_of(response: Response, requested: Format) -> Format:
    """The format a response is in, from its Content-Type (servers may ignore
    Accept); the one asked for when there is none."""
    content_type = response.content_type
    if not content_type:
        return requested
    if "json" in content_type:
        return "json"
    if "xml" in content_type:
        return "xml"
    raise ParseError(
        f"{short(URL(response.url).path, 60)}: expected JSON or XML, got Content-Type {short(content_type, 60)!r}"
    )


# --- configuration -------------------------------------------------------------


def check_target(target: TargetConfig) -> list[tuple[str, str]]:
    """(key, problem) for each thing wrong in a target's Commvault settings.

    The config loader reports them at load (SPEC.validate); the client also
    raises them as a TargetConfigError for targets built in code.
    """
    problems: list[tuple[str, str]] = []
    path = URL(target.url).path.rstrip("/").lower()
    if not path.endswith(API_BASES):
        problems.append(("url", f"must be the API base, ending in {' or '.join(API_BASES)}"))
    fmt = target.options.get("format", "json")
    if not isinstance(fmt, str) or fmt.strip().lower() not in FORMATS:
        problems.append(("format", "must be json or xml"))
    job_types = target.options.get("job_types", list(DEFAULT_JOB_TYPES))
    if not isinstance(job_types, list) or not all(
        isinstance(kind, str) and _JOB_TYPE.match(kind.strip()) for kind in job_types
    ):
        problems.append(("job_types", "must be a list of job type names such as Backup or Restore (empty: all)"))
    if not target.username:
        problems.append(("username", "commvault needs username and password"))
    if target.password is None:
        problems.append(("password", "commvault needs username and password"))
    return problems


# --- the client ------------------------------------------------------------------


class _Session:
    """The Authtoken session: Login lazily, RenewLoginToken after a 401, a
    fresh Login only when the renewal is refused."""

    def __init__(self, username: str | None, password: Secret | None, device_id: str, fmt: Format) -> None:
        self._username = username or ""
        self._password = password
        self._device_id = device_id
        self._format = fmt
        self._lock = asyncio.Lock()
        self.token: str | None = None
        # The token the server refused, kept for RenewLoginToken.
        self.stale: str | None = None
        self.logins = 0
        self.renewals = 0

    async def headers(self, http: HttpClient) -> Mapping[str, str]:
        async with self._lock:
            if self.token is None:
                if self.stale is not None:
                    self.token = await self._renew(http, self.stale)
                    self.stale = None
                if self.token is None:
                    self.token = await self._login(http)
            return {"Authtoken": self.token}

    async def invalidate(self, http: HttpClient) -> None:
        if self.token is not None:
            self.stale, self.token = self.token, None

    def _headers(self) -> dict[str, str]:
        return {"Accept": ACCEPT[self._format], "Content-Type": "application/json"}

    async def _login(self, http: HttpClient) -> str:
        if self._password is None:
            raise TargetConfigError("commvault needs username and password")
        body = {
            "username": self._username,
            # The API expects the UTF-8 password base64-encoded.
            "password": base64.b64encode(self._password.reveal().encode()).decode("ascii"),
            "deviceId": self._device_id,
        }
        response = await http.request(
            "POST", "Login", headers=self._headers(), data=json.dumps(body).encode(), authenticate=False
        )
        result = parse_token(response.body, format_of(response, self._format))
        if result.token is None:
            error = result.error or ApiError(None, "no token")
            raise AuthError(f"POST {http.url('Login').path}: login refused ({error.describe()})")
        self.logins += 1
        return result.token

    async def _renew(self, http: HttpClient, stale: str) -> str | None:
        headers = {**self._headers(), "Authtoken": stale}
        body = json.dumps({"sessionId": stale, "deviceId": self._device_id}).encode()
        try:
            response = await http.request("POST", "RenewLoginToken", headers=headers, data=body, authenticate=False)
            result = parse_token(response.body, format_of(response, self._format))
        except (AuthError, HTTPStatusError, ParseError) as exc:
            # Older servers lack the call, and an idle-expired session may be
            # past renewing: log in afresh.
            log.debug("commvault token renewal failed, logging in again: %s", exc)
            return None
        if result.token is None:
            log.debug("commvault token renewal refused, logging in again")
            return None
        self.renewals += 1
        return result.token


def _in_window(run: Run, now: datetime) -> Run:
    """A run in progress must not hold the watermark back: Commvault lists every
    job in progress whatever the window (jobCategory=All), and one seen in
    progress completes after this poll, so it lies inside every later window.
    Holding back to when it began would make one job suspended for weeks page
    every poll through weeks of history."""
    return run if run.status.finished else replace(run, query_time=now)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass
class _Tally:
    """Counts of one collection, for Collection.summary."""

    started: float
    # HttpClient's request count when the collection began.
    requests_before: int = 0
    pages: int = 0


class CommvaultClient:
    """Collects the jobs of one CommServe (SPEC sections 5 and 6)."""

    # --check-config --connect: what to check when the login is refused.
    auth_hint: ClassVar[str] = (
        "check username and password/password_file (a Commvault user, not locked, no password change pending);"
        " it needs View on the clients whose jobs are collected"
    )

    page_limit: ClassVar[int] = 100
    # Consecutive pages overlap by this many jobs: a job leaving the list
    # between two page requests (it aged out of completedJobLookupTime) shifts
    # the rest up, and without overlap one job would fall between the pages.
    page_overlap: ClassVar[int] = 5
    # Pages allowed beyond what the first page's total announces.
    extra_pages: ClassVar[int] = 5

    def __init__(
        self,
        target: TargetConfig,
        http: HttpClient,
        *,
        page_limit: int | None = None,
        page_overlap: int | None = None,
    ) -> None:
        self._target = target
        self._http = http
        self._problems = check_target(target)
        fmt = str(target.options.get("format") or "json").strip().lower()
        self._format: Format = "xml" if fmt == "xml" else "json"
        types = target.options.get("job_types", list(DEFAULT_JOB_TYPES))
        self._job_filter = ",".join(str(t).strip() for t in types) if isinstance(types, list) else ""
        self._session = _Session(target.username, target.password, f"backup-exporter/{target.name}", self._format)
        http.auth = self._session
        self._limit = max(1, page_limit or self.page_limit)
        overlap = self.page_overlap if page_overlap is None else page_overlap
        self._overlap = max(0, min(overlap, self._limit // 4))
        self._unknown_logged: set[str] = set()
        # How far the server's clock is ahead of ours; negative when behind.
        # `since` comes from run times in the server's clock, so a server
        # days behind must not widen the window by days: runs older than
        # what the state still remembers would be counted again.
        self._server_ahead = timedelta()

    async def close(self) -> None:
        token = self._session.token
        self._session.token = self._session.stale = None
        if token is None:
            return
        try:
            await self._http.request(
                "POST", "Logout", headers={"Authtoken": token, "Accept": ACCEPT[self._format]}, authenticate=False
            )
        except CollectionError as exc:
            # Shutting down either way; the token idles out on the server.
            log.debug("commvault logout failed: %s", exc)

    async def check(self, now: datetime) -> str:
        """--check-config --connect: login and the first page of jobs within
        the lookback, the least that proves the account can read them."""
        if self._problems:
            raise TargetConfigError("; ".join(f"{key}: {problem}" for key, problem in self._problems))
        tally = _Tally(started=asyncio.get_running_loop().time(), requests_before=self._requests_made())
        page, _ = await self._page(tally, self._params(now - self._target.lookback, now), 0)
        count = page.total if page.total is not None else len(page.rows)
        return f"login ok, {count} jobs visible within the lookback"

    async def collect(self, since: datetime, now: datetime) -> Collection:
        if self._problems:
            raise TargetConfigError("; ".join(f"{key}: {problem}" for key, problem in self._problems))
        tally = _Tally(started=asyncio.get_running_loop().time(), requests_before=self._requests_made())
        logins, renewals = self._session.logins, self._session.renewals
        rows = await self._all_jobs(tally, since, now)
        visible = [row for row in rows if row.visible]
        self._log_unknown(visible)
        runs = tuple(_in_window(row.run, now) for row in visible)
        # The newest run of a job describes it.
        info: dict[JobKey, Mapping[str, str]] = {}
        for row in sorted(visible, key=lambda r: r.job_id):
            if row.info:
                info[row.run.job] = row.info
        summary = {
            # Every HTTP request: logins, renewals, retries and refused ones too.
            "requests": self._requests_made() - tally.requests_before,
            "pages": tally.pages,
            "runs": len(runs),
            "jobs": len({run.job for run in runs}),
            "hidden_runs": len(rows) - len(visible),
            "logins": self._session.logins - logins,
            "renewals": self._session.renewals - renewals,
            "server_ahead_seconds": int(self._server_ahead.total_seconds()),
        }
        return Collection(runs=runs, job_info=info, summary=summary)

    def _requests_made(self) -> int:
        return sum(self._http.stats.by_code.values())

    def _log_unknown(self, rows: Sequence[JobRow]) -> None:
        for row in rows:
            if not row.known_status and row.raw_status not in self._unknown_logged:
                self._unknown_logged.add(row.raw_status)
                log.warning(
                    "target %s: undocumented Commvault job status %r taken as %s",
                    self._target.name,
                    short(row.raw_status, 60),
                    row.run.status.value,
                )

    def _params(self, since: datetime, now: datetime) -> dict[str, str]:
        # The server counts completedJobLookupTime back from its own now.
        lookup = math.ceil((now + self._server_ahead - since).total_seconds() + LOOKUP_MARGIN.total_seconds())
        return {"completedJobLookupTime": str(max(1, lookup)), "jobCategory": "All", "jobFilter": self._job_filter}

    def _observe_clock(self, response: Response, tally: _Tally, now: datetime) -> bool:
        """Learn how far the server's clock is ahead of (or behind) ours from
        its Date header; True when it moved ahead by more than the margin
        allows for (the window asked for then started too late)."""
        server_now = _http_date(response.headers.get("Date"))
        if server_now is None:
            return False
        ours = now + timedelta(seconds=asyncio.get_running_loop().time() - tally.started)
        ahead = server_now - ours
        moved = ahead - self._server_ahead > LOOKUP_MARGIN / 2
        self._server_ahead = ahead
        return moved

    async def _all_jobs(self, tally: _Tally, since: datetime, now: datetime) -> list[JobRow]:
        """Every page, by the limit/offset headers, until the total is reached."""
        path = self._http.url("Job").path
        params = self._params(since, now)
        page, response = await self._page(tally, params, 0)
        if self._observe_clock(response, tally, now):
            # The server's clock jumped ahead: the window just asked for
            # starts too late on its clock. Start again with the right one.
            params = self._params(since, now)
            page, response = await self._page(tally, params, 0)
        max_pages = tally.pages + (MAX_PAGES_WITHOUT_TOTAL if page.total is None else self._pages_for(page.total))
        max_pages += self.extra_pages
        rows: dict[int, JobRow] = {}
        offset = 0
        while True:
            new = sum(1 for row in page.rows if row.job_id not in rows)
            # A job met twice (the list shifted between pages): the later sighting is fresher.
            rows.update((row.job_id, row) for row in page.rows)
            if not page.rows:
                return list(rows.values())
            if offset > 0 and new == 0 and len(page.rows) > self._overlap:
                raise ParseError(
                    f"GET {path}: the page at offset {offset} repeats jobs already seen (is the offset header ignored?)"
                )
            end = offset + len(page.rows)
            # Without a total, a short page is the last.
            last = len(page.rows) < self._limit if page.total is None else end >= page.total
            if last:
                return list(rows.values())
            if tally.pages >= max_pages:
                raise ParseError(f"GET {path}: more than {max_pages} pages, the job total keeps growing")
            offset = end - self._overlap if len(page.rows) > self._overlap else end
            page, _ = await self._page(tally, params, offset)

    def _pages_for(self, total: int) -> int:
        step = max(1, self._limit - self._overlap)
        return 1 + math.ceil(max(0, total - self._limit) / step)

    async def _page(self, tally: _Tally, params: Mapping[str, str], offset: int) -> tuple[JobPage, Response]:
        path = self._http.url("Job").path
        page, response = await self._fetch(tally, params, offset)
        if page.error is not None and page.error.is_auth:
            # A dead session reported in the body rather than as a 401: once
            # more with a renewed or new token, as HttpClient does on a 401.
            await self._session.invalidate(self._http)
            page, response = await self._fetch(tally, params, offset)
        if page.error is None:
            return page, response
        if page.error.is_auth:
            raise AuthError(f"GET {path}: {page.error.describe()} (check credentials and permissions)")
        status = response.status
        raise HTTPStatusError(f"GET {path}: {page.error.describe()} (with HTTP {status})", status)

    async def _fetch(self, tally: _Tally, params: Mapping[str, str], offset: int) -> tuple[JobPage, Response]:
        headers = {"Accept": ACCEPT[self._format], "limit": str(self._limit), "offset": str(offset)}
        response = await self._http.request("GET", "Job", params=params, headers=headers)
        tally.pages += 1
        return self._parse_page(response), response

    def _parse_page(self, response: Response) -> JobPage:
        if response.content_type.startswith("text/plain"):
            text = response.text()
            if "authorization token" in text.lower():
                # What 11.40 answers for a token it no longer knows.
                return JobPage(total=None, error=ApiError(None, short(text)))
        return parse_job_list(response.body, format_of(response, self._format))


def _config_problems(target: TargetConfig) -> list[tuple[str, str]]:
    # The loader reports missing credentials itself (SPEC.required).
    return [(key, message) for key, message in check_target(target) if key not in ("username", "password")]


def describe_collection(options: Mapping[str, Any]) -> str:
    types = options["job_types"]
    which = f"job types {', '.join(str(t) for t in types)}" if types else "all job types"
    return (
        f"{which}, format={options['format']}; GET Job back to the last poll, "
        f"{CommvaultClient.page_limit} jobs a page, plus a login when the token expired"
    )


SPEC = VendorSpec(
    name="commvault",
    client=CommvaultClient,
    options={"format": str, "job_types": list[str]},
    secrets=(),
    required=("username", "password"),
    defaults={"format": "json", "job_types": list(DEFAULT_JOB_TYPES)},
    info_labels=INFO_LABELS,
    choices={"format": tuple(FORMATS)},
    validate=_config_problems,
    describe=describe_collection,
)
