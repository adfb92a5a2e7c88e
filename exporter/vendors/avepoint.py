"""AvePoint Cloud Backup for Microsoft 365: the client (AvePoint Graph API,
JSON, OAuth2 client credentials) and the pure parsers.

Job items carry no service and no job type (the API has only the
`objectType` and `jobType` filters), so the client asks once per configured
service and job type and labels what comes back: `job_name` is the service
(`Exchange Online`, ...), `job_type` the job type asked for (`backup`, ...).
Each query asks for every run that started since `since`, whatever its state,
so it holds the runs in progress as well: the state keeps `since` before the
start of every run that was in progress at the last poll. (The documentation
does not say which time `startTime` filters on; this assumes the start, as
its name says. No `finishTime` is sent: runs cannot start in the future, and
a bound would drop runs whenever the vendor's clock is ahead of ours.)

Requests per poll, with S services and J job types configured (defaults 5
and 1) and n(s, j) runs of a service and type started since `since`:

    sum over (s, j) of max(1, ceil(n(s, j) / page_size))    (page_size 100)
    + 1 token request when the cached token is about to expire (once an hour)

so 5 requests per poll with the defaults in steady state. On top of that come
HttpClient's retries, the repeat of a request after a 401 (with one token
request), and one repeated page per query when the server counts `pageIndex`
from 1 (see `_JobsQuery`).

Paging follows `nextLink` when it is a URL or a path; otherwise (empty, or an
opaque token) it asks for `pageIndex` 1, 2, ... until `totalCount` runs are
in hand. The documented default `pageIndex` is 0 while the documented sample
sends 1 for the first page, so the first request leaves it out.

Status (SPEC section 5): Finished -> success; Finished with Exception,
Partially Finished -> warning; Failed -> failed; In Progress -> running.
States are matched ignoring case, spaces and underscores (`FinishedWithException`
is how .NET writes the enum), and the numeric jobState enum is accepted too.
A state the documentation does not name is a warning when the run has a
finishTime (reason "unrecognised state ..."; an operator should look), and
running otherwise; the client logs each such state once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from yarl import URL

from exporter.model import Collection, JobKey, Run, Status
from exporter.timeutil import format_timestamp, parse_timestamp
from exporter.vendors.base import (
    AuthError,
    HttpClient,
    HTTPStatusError,
    ParseError,
    Response,
    TargetConfigError,
    VendorSpec,
)
from exporter.vendors.payload import INT64_LIMIT, load_json, short

if TYPE_CHECKING:
    from exporter.config import Secret, TargetConfig

log = logging.getLogger(__name__)

DEFAULT_TOKEN_URL = "https://identity.avepointonlineservices.com/connect/token"  # noqa: S105 - a URL
DEFAULT_SCOPE = "microsoft365backup.jobInfo.read.all"
DEFAULT_JOBS_PATH = "/backup/m365/cloudbackupjobs"

# The objectType filter enum (1-based; the serviceType attribute elsewhere in
# the API is 0-based and numbered differently). The names are job_name values.
SERVICES: Mapping[str, int] = {
    "Exchange Online": 1,
    "SharePoint Online": 2,
    "OneDrive": 3,
    "Microsoft 365 Groups": 4,
    "Project Online": 5,
    "Public Folder": 6,
    "Teams": 7,
    "Viva Engage": 8,
    "Teams Chat": 9,
    "Power BI": 10,
    "Power Automate": 11,
    "Power Apps": 12,
}
# Names operators use for the same services (product names old and new).
_SERVICE_ALIASES: Mapping[str, str] = {
    "onedrive for business": "OneDrive",
    "microsoft teams": "Teams",
    "yammer": "Viva Engage",
    "public folders": "Public Folder",
    "groups": "Microsoft 365 Groups",
}
# The jobType filter enum; the names are job_type values.
JOB_TYPES: Mapping[str, int] = {"backup": 1, "restore": 2, "export": 3, "deletion": 4, "retention": 5}

# Every query costs a request per page, so the defaults are the workloads a
# Cloud Backup subscription protects in nearly every tenant, and backups only:
# restores and exports are started by hand and have no RPO.
DEFAULT_SERVICES: tuple[str, ...] = (
    "Exchange Online",
    "SharePoint Online",
    "OneDrive",
    "Microsoft 365 Groups",
    "Teams",
)
DEFAULT_JOB_TYPES: tuple[str, ...] = ("backup",)

# The documented states, keyed by _state_key(); numbers are the jobState enum.
_STATES: Mapping[str, Status] = {
    "finished": Status.SUCCESS,
    "finishedwithexception": Status.WARNING,
    "partiallyfinished": Status.WARNING,
    "failed": Status.FAILED,
    "inprogress": Status.RUNNING,
}
_STATE_NUMBERS: Mapping[int, str] = {
    1: "In Progress",
    2: "Finished",
    3: "Failed",
    4: "Finished with Exception",
    5: "Partially Finished",
}

# Per item state of the model, the backupDetails keys that carry it, in order.
_ITEM_KEYS: tuple[tuple[str, tuple[str, str]], ...] = tuple(
    (state, (f"{state}count", f"{state}number")) for state in ("total", "successful", "failed", "skipped")
)

# Bound of Run.reason (the metrics cut at 120, too).
_REASON_MAX = 120
_STATE_SEPARATORS = re.compile(r"[\s_-]+")
_LOCATION = re.compile(r"^[A-Za-z]{2,32}$")
_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")
# ASCII only: str.isdigit() also takes "²", which int() refuses.
_DIGITS = re.compile(r"^[0-9]{1,18}$")
# Beyond this a count or a lifetime is nonsense, and big ints do not convert.
_HUGE = 10**12
# .NET writes an unset DateTime as 0001-01-01T00:00:00.
_UNSET_YEAR = 1970


def service_name(entry: str) -> str | None:
    """The canonical service name for a config entry (any case), or None."""
    wanted = " ".join(str(entry).split()).lower()
    for name in SERVICES:
        if name.lower() == wanted:
            return name
    return _SERVICE_ALIASES.get(wanted)


# --- parsing -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    # None when the server does not say: the token is then kept until a 401.
    expires_in: float | None


@dataclass(frozen=True, slots=True)
class ApiStatus:
    """An error the envelope reports in its `statusCode`, with HTTP 200 or not."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class JobsPage:
    """One page of the jobs endpoint, in either response shape."""

    runs: tuple[Run, ...] = ()
    # totalCount of the whole query; None when the server leaves it out.
    total: int | None = None
    # None when absent or empty: there is no link to follow.
    next_link: str | None = None
    error: ApiStatus | None = None
    # State strings this module does not know (mapped per the module docstring).
    unknown_states: frozenset[str] = frozenset()


def _object(value: Any, what: str) -> dict[str, Any]:
    """A JSON object with its keys folded to lower case: the API writes camelCase,
    ASP.NET can be configured to write PascalCase, and both mean the same."""
    if not isinstance(value, dict):
        raise ParseError(f"{what}: expected an object, got {_json_kind(value)}")
    return {str(key).lower(): item for key, item in value.items()}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}.get(
        type(value), "an object"
    )


def _first(node: Mapping[str, Any], *keys: str) -> Any:
    """The first of `keys` (lower case) present with a non-null value."""
    for key in keys:
        value = node.get(key)
        if value is not None:
            return value
    return None


def _string(node: Mapping[str, Any], key: str, what: str) -> str | None:
    """A string value, stripped; None when absent, null or blank."""
    value = node.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{what}: {key} is {_json_kind(value)}, expected a string")
    return value.strip() or None


def _count(value: Any, key: str, what: str) -> int | None:
    """A non-negative integer, also as a string of digits; None when null."""
    if type(value) is int and 0 <= value < INT64_LIMIT:
        # The common case first; tests hold it to _count_general.
        return value
    return _count_general(value, key, what)


def _count_general(value: Any, key: str, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and _DIGITS.match(value.strip()):
        return int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < INT64_LIMIT:
        raise ParseError(f"{what}: {key} is {short(repr(value), 40)}, expected a non-negative integer")
    return value


def _timestamp(node: Mapping[str, Any], key: str, what: str) -> datetime | None:
    value = _string(node, key, what)
    if value is None:
        return None
    try:
        parsed = parse_timestamp(value)
    except (ValueError, OverflowError):
        raise ParseError(f"{what}: {key} is {short(value, 40)!r}, not a timestamp") from None
    return None if parsed.year < _UNSET_YEAR else parsed


def _duration_seconds(node: Mapping[str, Any], what: str) -> float | None:
    """`duration` is hours as a decimal string ("0.011"); seconds, or None if blank."""
    value = node.get("duration")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ParseError(f"{what}: duration is {_json_kind(value)}, expected hours")
    try:
        hours = float(value)
    except (ValueError, OverflowError):
        raise ParseError(f"{what}: duration is {short(str(value), 40)!r}, expected hours") from None
    # 1e308 hours is a finite number of hours but infinitely many seconds.
    if not math.isfinite(hours * 3600) or hours < 0:
        raise ParseError(f"{what}: duration is {short(str(value), 40)!r}, expected hours")
    # Three decimals of hours are 3.6 s; the rounding only drops float noise.
    return round(hours * 3600, 3)


@functools.lru_cache(maxsize=256)
def _state_key(state: str) -> str:
    # Cached: a tenant has a handful of state strings and thousands of runs.
    return _STATE_SEPARATORS.sub("", state).lower()


def map_state(state: str | int, *, finished: bool) -> tuple[Status, bool]:
    """The status of a job state, and whether the state is a documented one.

    `finished` (the run has a finishTime) decides what an unknown state means.
    """
    if isinstance(state, int) and not isinstance(state, bool):
        state = _STATE_NUMBERS.get(state, str(state))
    status = _STATES.get(_state_key(str(state)))
    if status is not None:
        return status, True
    return (Status.WARNING if finished else Status.RUNNING), False


def summarise_errors(errors: Sequence[Mapping[str, Any]]) -> str | None:
    """One bounded, stable line for `jobErrors`: the most frequent error's
    text, cut to the reason limit; "job errors" when none has text; None
    when there are none. No occurrence counts: the reason labels the job's
    failure-info series, and a label that changes with every count would
    churn series and alerts without telling the operator anything new."""
    texts: list[tuple[int, str]] = []
    for error in errors:
        number = error.get("number")
        occurrences = 1
        if isinstance(number, int) and not isinstance(number, bool) and number > 0:
            occurrences = min(number, _HUGE)
        text = error.get("value")
        if isinstance(text, str) and text.strip():
            texts.append((occurrences, text))
    if not errors:
        return None
    if not texts:
        return "job errors"
    # max() keeps the first of equals: the API's own order breaks ties.
    _, text = max(texts, key=lambda item: item[0])
    return short(text, _REASON_MAX)


def _items(node: Mapping[str, Any], what: str) -> dict[str, int]:
    """backupDetails as the model's item counts; the keys come as *Count (list
    samples) or *Number (reference tables, job-detail sample)."""
    raw = node.get("backupdetails")
    if raw is None:
        return {}
    details = _object(raw, f"{what}: backupDetails")
    items: dict[str, int] = {}
    for state, keys in _ITEM_KEYS:
        for key in keys:
            value = _count(details.get(key), key, what)
            if value is not None:
                items[state] = value
                break
    return items


def _errors(node: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    raw = node.get("joberrors")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ParseError(f"{what}: jobErrors is {_json_kind(raw)}, expected a list")
    return [_object(error, f"{what}: jobErrors") for error in raw]


def _run_id(node: Mapping[str, Any], what: str) -> str:
    value = node.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise ParseError(f"{what}: job without id")
    return value.strip()


def _state(node: Mapping[str, Any], what: str) -> str | int:
    value = node.get("state")
    if isinstance(value, str) and value.strip():
        return " ".join(value.split())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ParseError(f"{what}: state is {_json_kind(value)}, expected a job state")


def _fallback_reason(state: str | int, items: Mapping[str, int]) -> str:
    """The reason of a run that did not succeed but lists no jobErrors."""
    text = _STATE_NUMBERS.get(state, str(state)) if isinstance(state, int) else state
    failed = items.get("failed")
    if failed:
        total = items.get("total")
        return f"{short(text, 40)}: {failed}{f' of {total}' if total else ''} objects failed"
    return short(text, 40)


def parse_job(node: Any, job: JobKey) -> tuple[Run, str | None]:
    """One job item as a Run of `job`, and its state if it is not a documented one."""
    where = f"avepoint {job.job_name} {job.job_type} jobs"
    item = _object(node, where)
    run_id = _run_id(item, where)
    what = f"avepoint job {short(run_id, 40)}"
    state = _state(item, what)
    end = _timestamp(item, "finishtime", what)
    status, known = map_state(state, finished=end is not None)
    if not status.finished:
        end = None
    items = _items(item, what)
    reason = summarise_errors(_errors(item, what))
    if not known:
        reason = f"unrecognised state {short(str(state), 40)!r}" + (f": {reason}" if reason else "")
    elif reason is None and status in (Status.WARNING, Status.FAILED):
        reason = _fallback_reason(state, items)
    duration = _duration_seconds(item, what)
    run = Run(
        run_id=run_id,
        job=job,
        status=status,
        start=_timestamp(item, "starttime", what),
        end=end,
        items=items,
        reason=reason,
        # The elapsed time of a run in progress is no duration yet.
        duration_seconds=duration if status.finished else None,
    )
    return run, None if known else str(state)


def parse_jobs_page(body: bytes | str, job: JobKey) -> JobsPage:
    """A page of `GET /backup/m365/cloudbackupjobs` (`{statusCode, data[],
    metadata: {totalCount, nextLink}}`) or of the older `GET /backup/m365/jobs`
    (`{totalCount, jobs[], nextLink}`), every run labelled with `job`."""
    what = f"avepoint {job.job_name} {job.job_type} jobs"
    doc = _object(load_json(body, what), what)
    code = doc.get("statuscode")
    if isinstance(code, int) and not isinstance(code, bool) and not 200 <= code < 300:
        message = doc.get("message")
        return JobsPage(error=ApiStatus(code, short(message, 80) if isinstance(message, str) else ""))
    if "data" in doc or "metadata" in doc:
        items = doc.get("data")
        meta = _object(doc.get("metadata") or {}, f"{what}: metadata")
    elif "jobs" in doc:
        items = doc.get("jobs")
        meta = doc
    else:
        raise ParseError(f"{what}: expected data[] (or jobs[] in the older shape)")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ParseError(f"{what}: the job list is {_json_kind(items)}, expected a list")
    runs: list[Run] = []
    unknown: set[str] = set()
    for node in items:
        run, state = parse_job(node, job)
        runs.append(run)
        if state is not None:
            unknown.add(state)
    total_key = "totalcount" if meta.get("totalcount") is not None else "totalnumber"
    # Some envelopes may carry paging beside metadata rather than in it.
    next_link = _string(meta, "nextlink", what) if "nextlink" in meta else _string(doc, "nextlink", what)
    return JobsPage(
        runs=tuple(runs),
        total=_count(_first(meta, "totalcount", "totalnumber"), total_key, what),
        next_link=next_link,
        unknown_states=frozenset(unknown),
    )


def parse_token(body: bytes | str) -> Token:
    """The token endpoint's answer: `{"token_type": "Bearer", "expires_in": 3600,
    "access_token": ...}`. Never puts the token into an error message."""
    what = "avepoint token"
    doc = load_json(body, what)
    if not isinstance(doc, dict):
        raise ParseError(f"{what}: expected an object, got {_json_kind(doc)}")
    access_token = doc.get("access_token")
    if not isinstance(access_token, str) or not access_token.strip() or any(c.isspace() for c in access_token):
        raise ParseError(f"{what}: no usable access_token")
    token_type = doc.get("token_type")
    if token_type is not None and (not isinstance(token_type, str) or token_type.strip().lower() != "bearer"):
        raise ParseError(f"{what}: token_type is {short(str(token_type), 20)!r}, expected Bearer")
    expires_in = doc.get("expires_in")
    if isinstance(expires_in, str) and _DIGITS.match(expires_in.strip()):
        expires_in = int(expires_in)
    if expires_in is None:
        return Token(access_token=access_token, expires_in=None)
    # NaN fails the range test; a huge int is refused before float() overflows.
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not 0 < expires_in <= _HUGE:
        raise ParseError(f"{what}: expires_in is {short(repr(expires_in), 20)}, expected seconds")
    return Token(access_token=access_token, expires_in=float(expires_in))


def parse_token_error(body: bytes | str) -> str | None:
    """The OAuth2 `error` code of a refused token request (`invalid_client`,
    `invalid_scope`, ...); None if the body carries none we can show."""
    try:
        doc = load_json(body, "avepoint token error")
    except ParseError:
        return None
    code = doc.get("error") if isinstance(doc, dict) else None
    # Only a code from OAuth2's vocabulary goes into a message, never free text.
    return code if isinstance(code, str) and _ERROR_CODE.match(code) else None


# --- options -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Settings:
    """The target's options, checked: what a query needs."""

    token_url: str
    client_id: str
    scope: str
    location: str | None
    jobs_path: str
    services: tuple[str, ...]
    job_types: tuple[str, ...]


def _settings(target: TargetConfig) -> _Settings:
    """Raises TargetConfigError naming the first bad option."""
    options = target.options
    token_url = _token_url(options.get("token_url"))
    client_id = str(options.get("client_id") or "").strip()
    if not client_id:
        raise TargetConfigError("avepoint needs client_id and client_secret (an AvePoint Online Services app)")
    location = _location(options.get("location"))
    return _Settings(
        token_url=token_url,
        client_id=client_id,
        scope=" ".join(str(options.get("scope") or DEFAULT_SCOPE).split()),
        location=location,
        jobs_path=_jobs_path(str(options.get("jobs_path") or DEFAULT_JOBS_PATH)),
        services=_names(options.get("services") or DEFAULT_SERVICES, service_name, "services", SERVICES),
        job_types=_names(
            options.get("job_types") or DEFAULT_JOB_TYPES, lambda e: str(e).strip().lower(), "job_types", JOB_TYPES
        ),
    )


def _token_url(value: Any) -> str:
    token_url = str(value or DEFAULT_TOKEN_URL).strip()
    parsed = URL(token_url)
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.user or parsed.password:
        raise TargetConfigError("token_url is not an http(s) URL without credentials")
    return token_url


def _location(value: Any) -> str | None:
    location = str(value or "").strip() or None
    if location is not None and not _LOCATION.match(location):
        raise TargetConfigError(f"location {short(location, 40)!r} is not a location code such as NAM or EUR")
    return location


def _jobs_path(path: str) -> str:
    path = "/" + path.strip().lstrip("/")
    # The bearer token goes with every jobs request: only ever to `url`'s host.
    if "://" in path or any(c in path for c in "?# ") or ".." in path:
        raise TargetConfigError("jobs_path must be a path on url's host, such as /backup/m365/cloudbackupjobs")
    return path


def _names(
    entries: Iterable[Any], canonical: Callable[[str], str | None], key: str, known: Mapping[str, int]
) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for entry in entries:
        name = canonical(str(entry))
        if name is None or name not in known:
            raise TargetConfigError(f"{key}: unknown entry {short(str(entry), 40)!r} (one of: {', '.join(known)})")
        names[name] = None
    return tuple(names)


# --- requests ------------------------------------------------------------------------


class _ClientCredentials:
    """OAuth2 client credentials: one token, kept until shortly before it
    expires, fetched again then or after a 401 (HttpClient calls `invalidate`)."""

    # Renew this long before expires_in runs out (a tenth of short lifetimes),
    # so no request goes out with a token that expires on the way.
    margin_seconds: ClassVar[float] = 60.0

    def __init__(self, settings: _Settings, secret: Secret | None, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._secret = secret
        self._clock = clock
        self._token: str | None = None
        self._renew_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetched = 0

    async def headers(self, http: HttpClient) -> Mapping[str, str]:
        async with self._lock:
            if self._token is None or (self._renew_at is not None and self._clock() >= self._renew_at):
                await self._fetch(http)
            assert self._token is not None
            return {"Authorization": f"Bearer {self._token}"}

    async def invalidate(self, http: HttpClient) -> None:
        self._token = None
        self._renew_at = None

    async def _fetch(self, http: HttpClient) -> None:
        if self._secret is None:
            raise TargetConfigError("avepoint needs client_id and client_secret (an AvePoint Online Services app)")
        self._token = None
        form = {
            "grant_type": "client_credentials",
            "client_id": self._settings.client_id,
            "client_secret": self._secret.reveal(),
            "scope": self._settings.scope,
        }
        path = URL(self._settings.token_url).path
        self.fetched += 1
        # 400 is how the identity server refuses credentials (RFC 6749 5.2).
        response = await http.request(
            "POST",
            self._settings.token_url,
            data=form,
            headers={"Accept": "application/json"},
            authenticate=False,
            ok=lambda status: status in (200, 400),
        )
        if response.status == 400:
            code = parse_token_error(response.body)
            hint = "check client_id, client_secret and scope"
            raise AuthError(f"POST {path}: HTTP 400{f' {code}' if code else ''} ({hint})")
        _expect_json(response, "POST", path)
        token = parse_token(response.body)
        now = self._clock()
        self._token = token.access_token
        if token.expires_in is None:
            self._renew_at = None
        else:
            margin = min(self.margin_seconds, token.expires_in / 10)
            self._renew_at = now + token.expires_in - margin


def _expect_json(response: Response, method: str, path: str) -> None:
    content_type = response.content_type
    # A proxy's login page or an HTML error page answers 200 as well.
    if content_type and "json" not in content_type:
        raise ParseError(f"{method} {path}: expected JSON, got Content-Type {short(content_type, 60)!r}")


@dataclass
class _Tally:
    """Counts of one collection, for Collection.summary."""

    requests: int = 0
    pages: int = 0
    repeated_first_pages: int = 0


@dataclass
class _JobsQuery:
    """Every page of one (service, job type) query.

    After the first page (sent without pageIndex, so the server's own default
    applies): follow nextLink when it is a URL on our host or a path; else ask
    for pageIndex 1, 2, ... while fewer than totalCount runs are in hand. A
    server counting from 1 answers pageIndex 1 with the first page again: that
    one repeat shifts the count by one; any other page bringing nothing new is
    a server repeating itself, a ParseError rather than an endless loop.
    """

    client: AvePointClient
    tally: _Tally
    job: JobKey
    params: dict[str, str]
    runs: dict[str, Run] = field(default_factory=dict)
    unknown_states: set[str] = field(default_factory=set)

    max_pages: ClassVar[int] = 1000

    async def run(self) -> list[Run]:
        page = await self.first_page()
        # Pages of the result in hand (a repeat is none), and 1 once the
        # server has shown that it counts pageIndex from 1.
        fetched, shift, requests = 1, 0, 1
        links: set[str] = set()
        while True:
            link = page.next_link
            params: dict[str, str] | None = None
            if link is not None and link.startswith(("http://", "https://", "/")):
                if link in links:
                    raise ParseError(f"{self._what}: nextLink repeats a page already fetched")
                links.add(link)
                target = self.client.own_link(link)
            elif self._complete(page):
                return list(self.runs.values())
            else:
                target = self.client.settings.jobs_path
                params = {**self.params, "pageIndex": str(fetched + shift)}
            if requests >= self.max_pages:
                raise ParseError(f"{self._what}: more than {self.max_pages} pages")
            before = len(self.runs)
            page = await self._page(target, params)
            requests += 1
            if page.runs and len(self.runs) == before:
                if params is not None and fetched == 1 and shift == 0:
                    shift = 1
                    self.tally.repeated_first_pages += 1
                    continue
                raise ParseError(f"{self._what}: page {requests} repeats runs already fetched")
            fetched += 1

    async def first_page(self) -> JobsPage:
        return await self._page(self.client.settings.jobs_path, self.params)

    def _complete(self, page: JobsPage) -> bool:
        if not page.runs:
            # Nothing more to fetch, whatever totalCount said (runs can age
            # out of the window while we page).
            return True
        if page.total is not None:
            return len(self.runs) >= page.total
        # Without totalCount, only a short page says it was the last.
        return len(page.runs) < self.client.page_size

    @property
    def _what(self) -> str:
        return f"avepoint {self.job.job_name} {self.job.job_type} jobs"

    async def _page(self, target: str, params: Mapping[str, str] | None) -> JobsPage:
        response = await self.client.get(self.tally, target, params)
        page = parse_jobs_page(response.body, self.job)
        if page.error is not None:
            path = URL(target).path
            message = f"GET {path}: API statusCode {page.error.code}" + (
                f" ({page.error.message})" if page.error.message else ""
            )
            if page.error.code in (401, 403):
                raise AuthError(message)
            raise HTTPStatusError(message, page.error.code)
        self.tally.pages += 1
        self.unknown_states |= page.unknown_states
        for run in page.runs:
            # Pages of a list sorted by time shift when a run is added between
            # two requests: the same run then comes twice.
            self.runs.setdefault(run.run_id, run)
        return page


class AvePointClient:
    """Collects the jobs of one AvePoint Online Services tenant (SPEC sections 5 and 6)."""

    # --check-config --connect: what to check when the login is refused.
    auth_hint: ClassVar[str] = (
        "check client_id, client_secret/client_secret_file and scope;"
        " the app needs the microsoft365backup.jobInfo.read.all permission, granted in AvePoint Online Services"
    )

    # AvePoint's tools ask for at most 100 per page; the server default is 10.
    default_page_size: ClassVar[int] = 100

    def __init__(
        self,
        target: TargetConfig,
        http: HttpClient,
        *,
        page_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self._http = http
        self.page_size = page_size or self.default_page_size
        self._config_error: TargetConfigError | None = None
        self._settings: _Settings | None = None
        self._auth: _ClientCredentials | None = None
        try:
            self._settings = _settings(target)
        except TargetConfigError as exc:
            # Raised from collect(), where the poller counts it as a config error.
            self._config_error = exc
        else:
            self._auth = _ClientCredentials(self._settings, target.options.get("client_secret"), clock)
            http.auth = self._auth
        self._unknown_logged: set[str] = set()
        if target.username is not None or target.password is not None:
            log.warning(
                "target %s: username and password are not used by avepoint (it signs in with client_id "
                "and client_secret)",
                target.name,
            )

    async def close(self) -> None:
        # Client-credential tokens have no session to end; they expire.
        return None

    @property
    def settings(self) -> _Settings:
        if self._settings is None:
            raise self._config_error or TargetConfigError("avepoint target options are invalid")
        return self._settings

    async def check(self, now: datetime) -> str:
        """--check-config --connect: a token and the first page of the first
        (service, job type) query, the least that proves the app may read jobs."""
        settings = self.settings
        job = JobKey(settings.services[0], settings.job_types[0])
        query = _JobsQuery(self, _Tally(), job, self._params(job.job_name, job.job_type, now - self._target.lookback))
        page = await query.first_page()
        count = page.total if page.total is not None else len(page.runs)
        queries = len(settings.services) * len(settings.job_types)
        return f"token ok, {count} {job.job_name} {job.job_type} jobs visible ({queries} queries per poll)"

    async def collect(self, since: datetime, now: datetime) -> Collection:
        settings = self.settings
        assert self._auth is not None
        tally = _Tally()
        fetched_before = self._auth.fetched
        runs: dict[str, Run] = {}
        unknown: set[str] = set()
        for service in settings.services:
            for job_type in settings.job_types:
                query = _JobsQuery(self, tally, JobKey(service, job_type), self._params(service, job_type, since))
                for run in await query.run():
                    # A run listed under two queries keeps the first label.
                    runs.setdefault(run.run_id, run)
                unknown |= query.unknown_states
        self._log_unknown(unknown)
        summary = {
            "services": len(settings.services),
            "queries": len(settings.services) * len(settings.job_types),
            "requests": tally.requests + self._auth.fetched - fetched_before,
            "pages": tally.pages,
            "runs": len(runs),
        }
        if tally.repeated_first_pages:
            summary["repeated_first_pages"] = tally.repeated_first_pages
        return Collection(
            runs=tuple(runs.values()),
            # Backups are scheduled: a service with none at all must still
            # show up, so that its RPO alert can fire.
            jobs=tuple(JobKey(s, "backup") for s in settings.services if "backup" in settings.job_types),
            summary=summary,
        )

    def _params(self, service: str, job_type: str, since: datetime) -> dict[str, str]:
        # No finishTime: no run can start in the future, and an upper bound
        # would drop runs whenever the vendor's clock is ahead of ours.
        params = {
            "startTime": format_timestamp(since),
            "objectType": str(SERVICES[service]),
            "jobType": str(JOB_TYPES[job_type]),
            "pageSize": str(self.page_size),
        }
        if self.settings.location is not None:
            params["location"] = self.settings.location
        return params

    def own_link(self, link: str) -> str:
        """A nextLink to follow; an absolute one only to the configured host,
        which is the only one that gets our bearer token."""
        if link.startswith("/"):
            return link
        try:
            same = URL(link).origin() == self._http.base_url.origin()
        except ValueError:
            same = False
        if not same:
            raise ParseError(f"avepoint jobs: nextLink points to another host than {self._http.base_url.host}")
        return link

    async def get(self, tally: _Tally, target: str, params: Mapping[str, str] | None) -> Response:
        tally.requests += 1
        response = await self._http.request("GET", target, params=params, headers={"Accept": "application/json"})
        _expect_json(response, "GET", URL(target).path)
        return response

    def _log_unknown(self, states: set[str]) -> None:
        new = states - self._unknown_logged
        if new:
            log.warning(
                "target %s: job states not in the AvePoint documentation: %s (mapped to warning when finished, "
                "else running)",
                self._target.name,
                ", ".join(repr(s) for s in sorted(new)),
            )
            self._unknown_logged |= new


def validate_options(target: TargetConfig) -> list[tuple[str, str]]:
    """Config-load checks of the option values (VendorSpec.validate), so
    --check-config reports a misspelt service instead of the first poll."""
    options = target.options
    problems: list[tuple[str, str]] = []
    checks: dict[str, Callable[[Any], object]] = {
        "services": lambda v: _names(v or DEFAULT_SERVICES, service_name, "services", SERVICES),
        "job_types": lambda v: _names(v or DEFAULT_JOB_TYPES, lambda e: str(e).strip().lower(), "job_types", JOB_TYPES),
        "jobs_path": lambda v: _jobs_path(str(v or DEFAULT_JOBS_PATH)),
        "token_url": _token_url,
        "location": _location,
    }
    for key, check in checks.items():
        try:
            check(options.get(key))
        except TargetConfigError as exc:
            problems.append((key, str(exc).removeprefix(f"{key}: ")))
    return problems


def describe_collection(options: Mapping[str, Any]) -> str:
    services = [str(s) for s in options["services"]]
    job_types = [str(t) for t in options["job_types"]]
    where = f" in location {options['location']}" if options.get("location") else ""
    return (
        f"services {', '.join(services)} x job types {', '.join(job_types)} = "
        f"{len(services) * len(job_types)} requests per poll (more when paged){where}, "
        f"plus a token from {options['token_url']} when it expired"
    )


SPEC = VendorSpec(
    name="avepoint",
    client=AvePointClient,
    options={
        "token_url": str,
        "client_id": str,
        "scope": str,
        "location": str,
        "jobs_path": str,
        "services": list[str],
        "job_types": list[str],
    },
    secrets=("client_secret",),
    required=("client_id", "client_secret"),
    defaults={
        "token_url": DEFAULT_TOKEN_URL,
        "scope": DEFAULT_SCOPE,
        "jobs_path": DEFAULT_JOBS_PATH,
        "services": list(DEFAULT_SERVICES),
        "job_types": list(DEFAULT_JOB_TYPES),
    },
    credentials=False,
    validate=validate_options,
    describe=describe_collection,
)
