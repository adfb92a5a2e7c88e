"""An AvePoint Graph API simulator (Cloud Backup for Microsoft 365): the
identity server's token endpoint and both jobs endpoints, over a
deterministic dataset that is a pure function of (seed, origin), origin being
the simulated now when the app was created.

Routes:

- `POST /connect/token`: OAuth2 client credentials (form-encoded); 400
  `{"error": "invalid_client" | "invalid_scope" | ...}` when refused. Tokens
  expire `token_lifetime` seconds of simulated time after they are issued.
- `GET /backup/m365/cloudbackupjobs`: the current envelope
  (`{statusCode, message, data[], requestId, timestamp, metadata: {totalCount,
  nextLink}, traceId}`).
- `GET /backup/m365/jobs`: the older shape (`{totalCount, jobs[], nextLink}`).
- `POST /_sim/avepoint/expire` `{"after": N}`: the tokens issued so far stop
  working after N more jobs requests (0: at once); `GET` shows the countdown.
- `GET|POST /_sim/data`: data faults (duplicate, reversed, skewed, re-classified
  or hidden rows), see exporter/simulators/datafaults.py.

Both jobs routes take `startTime`/`finishTime` (on the run's start),
`objectType`, `jobType`, `jobState`, `location`, `pageIndex` and `pageSize`
(default 10, at most 100), with parameter names in any case as ASP.NET does.
Items carry no service nor job type, exactly like the real API.

Switches of `create_app`: `paging` ("absolute": nextLink is a URL; "relative":
a path; "index": always "" so clients page by pageIndex up to totalCount;
"stuck": pageIndex is ignored, a broken server; "loop": nextLink points at the
page itself), `detail_keys` (backupDetails as `*Count`, as in the list
samples, or `*Number`, as in the reference tables), `page_base` (pageIndex of
the first page: 0 as documented, or 1 as the sample suggests).

The dataset (what --demo shows), a multi-geo tenant (NAM primary, EUR):

- Exchange Online: a backup every 40 min (several pages of 100 in a week),
  restores, exports, deletions and retention jobs; healthy.
- SharePoint Online: every 6 h; the last backup that finished before origin
  ended "Finished with Exception" (the warning scenario).
- OneDrive: every 4 h; from the last backup that finished before origin on,
  every backup fails (last-run alert).
- Microsoft 365 Groups: every 8 h; every backup since origin - 3 d failed
  (RPO breach).
- Teams (EUR): every 12 h, runs of 9 to 11.5 h, so one is nearly always in
  progress; Public Folder and Power BI (EUR): daily.

Runs exist from now - 30 d up to now (a run is listed once it has started),
so the clock moving reveals new ones; run k of a schedule keeps its id and
outcome whatever the clock says. Every documented state occurs: Finished,
Finished with Exception, Partially Finished, Failed, In Progress.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.simulators.base import SimulatorSpec, create_sim_app, is_control, sim_now
from exporter.simulators.datafaults import add_data_fault_routes, arranged, data_faults, doubled, prepare, vendor_now
from exporter.timeutil import parse_timestamp

DEMO_CLIENT_ID = "3f1c9a52-7d4e-4b8a-9c21-5e6f7a8b9c0d"
# Characters that must be form-encoded, and a non-ASCII one.
DEMO_CLIENT_SECRET = "Dæmo~s3cret+/=&%?"  # noqa: S105 - the simulator's published demo credential

TOKEN_PATH = "/connect/token"  # noqa: S105 - a path
CURRENT_PATH = "/backup/m365/cloudbackupjobs"
OLDER_PATH = "/backup/m365/jobs"
JOB_INFO_SCOPE = "microsoft365backup.jobInfo.read.all"
SCOPES = frozenset(
    {
        JOB_INFO_SCOPE,
        "microsoft365backup.subscriptionInfo.read.all",
        "microsoft365backup.settings.read.all",
        "microsoft365backup.unusualActivity.read.all",
        "microsoft365backup.restore.readwrite.all",
    }
)
PAGING_MODES = ("absolute", "relative", "index", "stuck", "loop")
DETAIL_KEYS = ("count", "number")
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
DEFAULT_TOKEN_LIFETIME = 3600

# The API's enums, as documented for the query parameters.
OBJECT_TYPES: Mapping[int, str] = {
    1: "Exchange Online",
    2: "SharePoint Online",
    3: "OneDrive",
    4: "Microsoft 365 Groups",
    5: "Project Online",
    6: "Public Folder",
    7: "Teams",
    8: "Viva Engage",
    9: "Teams Chat",
    10: "Power BI",
    11: "Power Automate",
    12: "Power Apps",
}
JOB_TYPES: Mapping[int, str] = {1: "backup", 2: "restore", 3: "export", 4: "deletion", 5: "retention"}
IN_PROGRESS = "In Progress"
FINISHED = "Finished"
FAILED = "Failed"
WITH_EXCEPTION = "Finished with Exception"
PARTIALLY = "Partially Finished"
STATES: Mapping[int, str] = {1: IN_PROGRESS, 2: FINISHED, 3: FAILED, 4: WITH_EXCEPTION, 5: PARTIALLY}
PRIMARY_LOCATION = "NAM"
# The documented location codes (besides PrimaryGeoLocation).
LOCATIONS = (
    *("NAM", "EUR", "GBR", "JPN", "APC", "AUS", "CAN", "IND", "FRA", "ARE", "ZAF", "CHE", "KOR"),
    *("DEU", "BRA", "NOR", "SWE", "QAT", "POL", "ITA", "ISR", "MEX", "NZL", "ESP", "TWN"),
)

HISTORY = timedelta(days=30)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

HEALTHY = "healthy"
WARNING = "last_warning"
LAST_FAILED = "last_failed"
FAILING = "failing_3d"

_BACKUP_ERRORS = (
    ("The item exceeds the maximum size supported for backup and was skipped.", "CB-0103"),
    ("Microsoft 365 throttled the requests; the job will retry the remaining objects.", "CB-0201"),
    ("The object was not found. It may have been deleted during the backup.", None),
    ("The file is checked out by another user and was not backed up.", "CB-0310"),
)
_OTHER_ERRORS = (
    ("The destination already contains an item with the same name.", "CB-0402"),
    ("The selected object no longer exists in the backup data.", None),
)
_SCENARIO_ERRORS = {
    WARNING: ("Some files are checked out and were backed up in their last checked-in version.", "CB-0311"),
    LAST_FAILED: ("The app profile consent was revoked. Re-authorize the app profile.", "CB-0007"),
    FAILING: ("Access is denied. The service account has no access to the group sites.", "CB-0012"),
}


@dataclass(frozen=True)
class Schedule:
    job_type: int
    period: timedelta
    offset: timedelta
    minutes: tuple[int, int]


@dataclass(frozen=True)
class ServicePlan:
    object_type: int
    location: str
    objects: int  # how many objects a backup covers, roughly
    schedules: tuple[Schedule, ...]
    scenario: str = HEALTHY

    @property
    def name(self) -> str:
        return OBJECT_TYPES[self.object_type]


def _minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


PLANS: tuple[ServicePlan, ...] = (
    ServicePlan(
        1,
        PRIMARY_LOCATION,
        438,
        (
            Schedule(1, _minutes(40), _minutes(7), (4, 30)),
            Schedule(2, timedelta(hours=29), timedelta(hours=3, minutes=13), (3, 40)),
            Schedule(3, timedelta(hours=71), timedelta(hours=5, minutes=2), (10, 90)),
            Schedule(4, timedelta(days=7), timedelta(hours=20, minutes=45), (1, 5)),
            Schedule(5, timedelta(days=1), timedelta(hours=2, minutes=31), (2, 15)),
        ),
    ),
    ServicePlan(
        2,
        PRIMARY_LOCATION,
        1250,
        (
            Schedule(1, timedelta(hours=6), timedelta(hours=1, minutes=25), (20, 150)),
            Schedule(2, timedelta(hours=37), timedelta(hours=9, minutes=50), (5, 60)),
            Schedule(5, timedelta(days=1), timedelta(hours=2, minutes=47), (2, 20)),
        ),
        scenario=WARNING,
    ),
    ServicePlan(
        3,
        PRIMARY_LOCATION,
        512,
        (
            Schedule(1, timedelta(hours=4), _minutes(55), (15, 90)),
            Schedule(2, timedelta(hours=53), timedelta(hours=13, minutes=8), (3, 30)),
        ),
        scenario=LAST_FAILED,
    ),
    ServicePlan(
        4,
        PRIMARY_LOCATION,
        96,
        (Schedule(1, timedelta(hours=8), timedelta(hours=2, minutes=40), (10, 60)),),
        scenario=FAILING,
    ),
    ServicePlan(7, "EUR", 210, (Schedule(1, timedelta(hours=12), timedelta(hours=4, minutes=10), (540, 690)),)),
    ServicePlan(6, PRIMARY_LOCATION, 40, (Schedule(1, timedelta(days=1), timedelta(hours=3), (5, 20)),)),
    ServicePlan(10, "EUR", 25, (Schedule(1, timedelta(days=1), timedelta(hours=5, minutes=30), (3, 15)),)),
)


def _digest(seed: int, *parts: object) -> int:
    text = "|".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


def _unit(seed: int, *parts: object) -> float:
    """A deterministic draw in [0, 1)."""
    return (_digest(seed, *parts) >> 64) / 2**64


def _ts(value: datetime) -> str:
    """ISO UTC as the API writes it; sub-second values in .NET's 7 digits."""
    text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}0"
    return text + "Z"


@dataclass(frozen=True)
class SimError:
    value: str
    code: str | None
    number: int


@dataclass(frozen=True)
class SimRun:
    id: str
    object_type: int
    job_type: int
    location: str
    started: datetime
    ends: datetime
    outcome: str  # the state once `ends` has passed
    total: int
    failed: int
    skipped: int
    errors: tuple[SimError, ...]

    def finished(self, now: datetime) -> bool:
        return now >= self.ends

    def state(self, now: datetime) -> str:
        return self.outcome if self.finished(now) else IN_PROGRESS


class AvePointDataset:
    """The tenant's jobs at any simulated now."""

    def __init__(self, seed: int, origin: datetime) -> None:
        self.seed = seed
        self.origin = origin.astimezone(UTC)
        self._cache: dict[tuple[int, int, int], SimRun] = {}
        # Per (service, job type): the index of the last run that ended before
        # origin; the scenarios are defined relative to it.
        self._last_before_origin = {
            (plan.object_type, schedule.job_type): self._last_ended(plan, schedule)
            for plan in PLANS
            for schedule in plan.schedules
        }

    def _timing(self, plan: ServicePlan, schedule: Schedule, index: int) -> tuple[datetime, datetime]:
        key = (plan.object_type, schedule.job_type, index)
        scheduled = EPOCH + schedule.offset + index * schedule.period
        started = scheduled + timedelta(seconds=2 + round(178 * _unit(self.seed, "delay", *key)))
        if _unit(self.seed, "fraction", *key) < 0.3:
            started += timedelta(microseconds=1 + int(999_998 * _unit(self.seed, "micro", *key)))
        low, high = schedule.minutes
        seconds = round(60 * (low + (high - low) * _unit(self.seed, "duration", *key)))
        return started, started + timedelta(seconds=seconds)

    def _last_ended(self, plan: ServicePlan, schedule: Schedule) -> int:
        index = math.floor((self.origin - EPOCH + schedule.offset) / schedule.period)
        while self._timing(plan, schedule, index)[1] > self.origin:
            index -= 1
        return index

    def _outcome(self, plan: ServicePlan, schedule: Schedule, index: int, started: datetime) -> str:
        last = self._last_before_origin[plan.object_type, schedule.job_type]
        draw = _unit(self.seed, "outcome", plan.object_type, schedule.job_type, index)
        if schedule.job_type != 1:
            if index == last:
                return FINISHED
            return FINISHED if draw < 0.75 else PARTIALLY if draw < 0.85 else FAILED if draw < 0.93 else WITH_EXCEPTION
        if plan.scenario == LAST_FAILED and index >= last:
            return FAILED
        if plan.scenario == FAILING and started >= self.origin - timedelta(days=3):
            return FAILED
        if plan.scenario == WARNING and index == last:
            return WITH_EXCEPTION
        if index in (last - 1, last):
            # A clean demo: only the scenarios above alert.
            return FINISHED
        return FINISHED if draw < 0.80 else WITH_EXCEPTION if draw < 0.88 else PARTIALLY if draw < 0.94 else FAILED

    def run(self, plan: ServicePlan, schedule: Schedule, index: int) -> SimRun:
        key = (plan.object_type, schedule.job_type, index)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        started, ends = self._timing(plan, schedule, index)
        outcome = self._outcome(plan, schedule, index, started)
        total = round(plan.objects * (0.8 + 0.4 * _unit(self.seed, "objects", *key)))
        if schedule.job_type != 1:
            total = max(1, total // 40)
        skipped = round(total * 0.02 * _unit(self.seed, "skipped", *key))
        errors = self._errors(plan, schedule, index, outcome)
        failed = {
            FINISHED: 0,
            FAILED: total - skipped,
            WITH_EXCEPTION: min(total - skipped, sum(e.number for e in errors)),
            PARTIALLY: (total - skipped) // 3,
        }[outcome]
        if outcome == FAILED and plan.scenario == LAST_FAILED and schedule.job_type == 1:
            # Consent revoked: the job processed nothing at all.
            total = failed = skipped = 0
        run = SimRun(
            id=self._run_id(plan, schedule, index, started),
            object_type=plan.object_type,
            job_type=schedule.job_type,
            location=plan.location,
            started=started,
            ends=ends,
            outcome=outcome,
            total=total,
            failed=failed,
            skipped=skipped,
            errors=errors,
        )
        self._cache[key] = run
        return run

    def _run_id(self, plan: ServicePlan, schedule: Schedule, index: int, started: datetime) -> str:
        """A prefix and a timestamp, like FB20241015105312327583 or EFB..."""
        if schedule.job_type == 1:
            prefix = "FB" if index % 12 == 0 else "IB"
            if plan.object_type == 1:
                prefix = "E" + prefix
        else:
            prefix = {2: "RB", 3: "EX", 4: "DL", 5: "RT"}[schedule.job_type]
        digits = _digest(self.seed, "id", plan.object_type, schedule.job_type, index) % 1_000_000
        return f"{prefix}{started.strftime('%Y%m%d%H%M%S')}{digits:06d}"

    def _errors(self, plan: ServicePlan, schedule: Schedule, index: int, outcome: str) -> tuple[SimError, ...]:
        if outcome == FINISHED:
            return ()
        key = (plan.object_type, schedule.job_type, index)
        scenario = plan.scenario if schedule.job_type == 1 else HEALTHY
        if scenario in _SCENARIO_ERRORS and outcome in (FAILED, WITH_EXCEPTION):
            value, code = _SCENARIO_ERRORS[scenario]
            return (SimError(value, code, 1 + int(5 * _unit(self.seed, "number", *key))),)
        pool = _BACKUP_ERRORS if schedule.job_type == 1 else _OTHER_ERRORS
        kinds = 1 + int(min(len(pool), 3) * _unit(self.seed, "kinds", *key))
        first = int(len(pool) * _unit(self.seed, "first", *key))
        chosen = [pool[(first + i) % len(pool)] for i in range(kinds)]
        return tuple(
            SimError(value, code, 1 + int(40 * _unit(self.seed, "number", *key, i)))
            for i, (value, code) in enumerate(chosen)
        )

    def runs(self, now: datetime) -> list[SimRun]:
        """Every run started from now - 30 d up to now, newest first."""
        found: list[SimRun] = []
        for plan in PLANS:
            for schedule in plan.schedules:
                anchor = EPOCH + schedule.offset
                index = math.ceil((now - HISTORY - anchor) / schedule.period)
                while True:
                    run = self.run(plan, schedule, index)
                    if run.started > now:
                        break
                    if run.started >= now - HISTORY:
                        found.append(run)
                    index += 1
        return sorted(found, key=lambda r: (r.started, r.id), reverse=True)

    def select(
        self,
        now: datetime,
        *,
        object_type: int = 0,
        job_type: int = 0,
        job_state: int = 0,
        start: datetime | None = None,
        finish: datetime | None = None,
        location: str | None = None,
        runs: Sequence[SimRun] | None = None,
    ) -> list[SimRun]:
        """The runs a jobs query returns, before paging; 0 means any. `runs`
        (newest first) stands in for every run at `now`."""
        return [
            run
            for run in (self.runs(now) if runs is None else runs)
            if object_type in (0, run.object_type)
            and job_type in (0, run.job_type)
            and (job_state == 0 or STATES[job_state] == run.state(now))
            and (start is None or run.started >= start)
            and (finish is None or run.started <= finish)
            and (location is None or run.location == location)
        ]


# --- tokens ----------------------------------------------------------------------------


@dataclass
class TokenStore:
    client_id: str
    client_secret: str
    lifetime: int
    # token -> (expiry in simulated time, scopes)
    tokens: dict[str, tuple[datetime, frozenset[str]]] = field(default_factory=dict)
    # Jobs requests left before every token issued so far is revoked.
    expire_after: int | None = None

    def issue(self, now: datetime, scopes: frozenset[str]) -> str:
        # Expired tokens are forgotten, so a long demo does not pile them up.
        self.tokens = {token: entry for token, entry in self.tokens.items() if entry[0] > now}
        token = secrets.token_urlsafe(32)
        self.tokens[token] = (now + timedelta(seconds=self.lifetime), scopes)
        return token

    def check(self, token: str, now: datetime) -> frozenset[str] | None:
        """The token's scopes, or None if it is unknown, revoked or expired."""
        entry = self.tokens.get(token)
        if entry is None or now >= entry[0]:
            return None
        if self.expire_after is not None:
            if self.expire_after == 0:
                self.tokens.clear()
                self.expire_after = None
                return None
            self.expire_after -= 1
        return entry[1]


@dataclass(frozen=True)
class Behaviour:
    paging: str = "absolute"
    detail_keys: str = "count"
    page_base: int = 0


DATASET = web.AppKey("avepoint_dataset", AvePointDataset)
TOKENS = web.AppKey("avepoint_tokens", TokenStore)
BEHAVIOUR = web.AppKey("avepoint_behaviour", Behaviour)
# The serial part of requestId ("0HNEVHLNSPSEJ:00000002" in the notes' sample).
SERIAL = web.AppKey("avepoint_serial", list[int])


def _token_error(error: str, status: int = 400) -> web.Response:
    return web.json_response({"error": error}, status=status)


async def _post_token(request: web.Request) -> web.Response:
    store = request.app[TOKENS]
    if request.content_type != "application/x-www-form-urlencoded":
        return _token_error("invalid_request")
    form = await request.post()
    grant_type = form.get("grant_type")
    if grant_type != "client_credentials":
        return _token_error("unsupported_grant_type" if grant_type else "invalid_request")
    client_id = str(form.get("client_id", ""))
    client_secret = str(form.get("client_secret", ""))
    if not (
        hmac.compare_digest(client_id.encode(), store.client_id.encode())
        and hmac.compare_digest(client_secret.encode(), store.client_secret.encode())
    ):
        return _token_error("invalid_client")
    requested = frozenset(str(form.get("scope", "")).split()) or SCOPES
    if not requested <= SCOPES:
        return _token_error("invalid_scope")
    token = store.issue(sim_now(request), requested)
    return web.json_response(
        {
            "token_type": "Bearer",
            "expires_in": store.lifetime,
            "ext_expires_in": store.lifetime,
            "access_token": token,
            "scope": " ".join(sorted(requested)),
        }
    )


def _envelope_error(request: web.Request, status: int, message: str) -> web.Response:
    body = {
        "statusCode": status,
        "message": message,
        "errors": [message],
        "data": None,
        "requestId": _request_id(request),
        "timestamp": _ts(sim_now(request)),
    }
    return web.json_response(body, status=status)


def _request_id(request: web.Request) -> str:
    serial = request.app[SERIAL]
    serial[0] += 1
    return f"0HNEVHLNSPSEJ:{serial[0]:08X}"


def _auth_middleware() -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_control(request) or request.path == TOKEN_PATH:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            response = _envelope_error(request, 401, "Unauthorized")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        scopes = request.app[TOKENS].check(token.strip(), sim_now(request))
        if scopes is None:
            response = _envelope_error(request, 401, "The access token is invalid or has expired.")
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response
        if JOB_INFO_SCOPE not in scopes:
            return _envelope_error(request, 403, "The access token lacks the permission this API requires.")
        return await handler(request)

    return authenticate


# --- jobs ------------------------------------------------------------------------------


class _BadRequest(Exception):
    pass


def _query(request: web.Request) -> dict[str, str]:
    """Query parameters by lower-cased name: ASP.NET binds them in any case."""
    params: dict[str, str] = {}
    for key, value in request.query.items():
        params.setdefault(key.lower(), value)
    return params


def _enum(params: Mapping[str, str], key: str, known: Mapping[int, str]) -> int:
    text = params.get(key.lower(), "").strip()
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        raise _BadRequest(f"The value '{text}' is not valid for {key}.") from None
    if value != 0 and value not in known:
        raise _BadRequest(f"The value '{text}' is not valid for {key}.")
    return value


def _int(params: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    text = params.get(key.lower(), "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _BadRequest(f"The value '{text}' is not valid for {key}.") from None
    if value < minimum:
        raise _BadRequest(f"{key} must be at least {minimum}.")
    return value


def _time(params: Mapping[str, str], key: str) -> datetime | None:
    text = params.get(key.lower(), "").strip()
    if not text:
        return None
    try:
        return parse_timestamp(text)
    except ValueError:
        raise _BadRequest(f"The value '{text}' is not valid for {key}.") from None


def _location(params: Mapping[str, str]) -> str | None:
    text = params.get("location", "").strip()
    if not text:
        return None
    if text.lower() == "primarygeolocation":
        return PRIMARY_LOCATION
    for location in LOCATIONS:
        if location.lower() == text.lower():
            return location
    raise _BadRequest(f"The location '{text}' is not valid.")


def _render_run(run: SimRun, now: datetime, behaviour: Behaviour, *, older: bool) -> dict[str, Any]:
    finished = run.finished(now)
    end = run.ends if finished else now
    hours = (end - run.started).total_seconds() / 3600
    total, failed, skipped = run.total, run.failed, run.skipped
    if not finished:
        # Counted as the run goes; failures show once it ends.
        progress = (now - run.started) / (run.ends - run.started)
        failed, skipped = 0, 0
        successful = int(progress * (total - run.failed - run.skipped))
    else:
        successful = total - failed - skipped
    suffix = "Count" if behaviour.detail_keys == "count" else "Number"
    return {
        "id": run.id,
        "state": run.state(now),
        "startTime": _ts(run.started),
        # No finish yet: null in the current shape, "" in the older one.
        "finishTime": _ts(run.ends) if finished else ("" if older else None),
        "duration": f"{hours:.3f}",
        "backupDetails": {
            f"total{suffix}": total,
            f"failed{suffix}": failed,
            f"successful{suffix}": successful,
            f"skipped{suffix}": skipped,
        },
        "jobErrors": [
            {
                "isErrorCode": error.code is not None,
                "value": error.value,
                "url": f"https://cdn.avepointonlineservices.com/help/errorcode/{error.code}" if error.code else "",
                "number": error.number,
            }
            for error in (run.errors if finished else ())
        ],
    }


def _next_link(request: web.Request, behaviour: Behaviour, page_index: int, more: bool) -> str:
    if behaviour.paging == "loop":
        return str(request.url)
    if not more or behaviour.paging in ("index", "stuck"):
        return ""
    query: dict[str, str] = {}
    for key, value in request.query.items():
        if key.lower() != "pageindex":
            query.setdefault(key, value)
    query["pageIndex"] = str(page_index + 1)
    url = request.url.with_query(query)
    return str(url) if behaviour.paging == "absolute" else url.path_qs


def _shifted_run(run: SimRun, skew: timedelta) -> SimRun:
    return replace(run, started=run.started + skew, ends=run.ends + skew)


def _flipped_run(run: SimRun) -> SimRun:
    """Another final state: a finished run becomes failed, anything else finished."""
    if run.outcome == FINISHED:
        value, code = _BACKUP_ERRORS[1]
        error = SimError(value, code, max(1, run.total - run.skipped))
        return replace(run, outcome=FAILED, failed=run.total - run.skipped, errors=(error,))
    return replace(run, outcome=FINISHED, failed=0, errors=())


def _service_names(run: SimRun) -> tuple[str]:
    return (OBJECT_TYPES[run.object_type],)


def _vendor_runs(request: web.Request) -> list[SimRun]:
    """Every run as the (possibly faulty) tenant holds it, newest first."""
    return prepare(
        data_faults(request),
        request.app[DATASET].runs(sim_now(request)),
        names=_service_names,
        shift=_shifted_run,
        flip=_flipped_run,
    )


async def _get_jobs(request: web.Request) -> web.Response:
    older = request.path == OLDER_PATH
    behaviour = request.app[BEHAVIOUR]
    faults = data_faults(request)
    now = vendor_now(request)
    params = _query(request)
    try:
        selected = request.app[DATASET].select(
            now,
            runs=_vendor_runs(request),
            object_type=_enum(params, "objectType", OBJECT_TYPES),
            job_type=_enum(params, "jobType", JOB_TYPES),
            job_state=_enum(params, "jobState", STATES),
            start=_time(params, "startTime"),
            finish=_time(params, "finishTime"),
            location=_location(params),
        )
        size = min(_int(params, "pageSize", DEFAULT_PAGE_SIZE, 1), MAX_PAGE_SIZE)
        page_index = _int(params, "pageIndex", behaviour.page_base, 0)
    except _BadRequest as exc:
        return _envelope_error(request, 400, str(exc))
    selected = doubled(faults, selected)
    # A server counting from 1 takes 0 for the first page too.
    position = 0 if behaviour.paging == "stuck" else max(0, page_index - behaviour.page_base)
    page = arranged(faults, selected[position * size : (position + 1) * size])
    link = _next_link(request, behaviour, page_index, (position + 1) * size < len(selected))
    jobs = [_render_run(run, now, behaviour, older=older) for run in page]
    if older:
        return web.json_response({"totalCount": len(selected), "jobs": jobs, "nextLink": link})
    trace = _digest(request.app[DATASET].seed, "trace", request.path_qs)
    return web.json_response(
        {
            "statusCode": 200,
            "message": "",
            "data": jobs,
            "requestId": _request_id(request),
            "timestamp": _ts(now),
            "metadata": {"totalCount": len(selected), "nextLink": link},
            "traceId": f"00-{trace:032x}-{trace & 0xFFFFFFFFFFFFFFFF:016x}-00",
        }
    )


# --- control ---------------------------------------------------------------------------


async def _get_expire(request: web.Request) -> web.Response:
    store = request.app[TOKENS]
    return web.json_response({"tokens": len(store.tokens), "expire_after": store.expire_after})


async def _post_expire(request: web.Request) -> web.Response:
    try:
        payload = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON\n") from None
    after = payload.get("after") if isinstance(payload, dict) else None
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise web.HTTPBadRequest(text='give {"after": N}, N a non-negative integer\n')
    request.app[TOKENS].expire_after = after
    return await _get_expire(request)


def create_app(
    *,
    seed: int = 1,
    now: datetime | None = None,
    client_id: str = DEMO_CLIENT_ID,
    client_secret: str = DEMO_CLIENT_SECRET,
    paging: str = "absolute",
    detail_keys: str = "count",
    page_base: int = 0,
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
) -> web.Application:
    """The simulator; `now` fixes its clock (else it follows wall time)."""
    if paging not in PAGING_MODES:
        raise ValueError(f"paging must be one of {', '.join(PAGING_MODES)}")
    if detail_keys not in DETAIL_KEYS:
        raise ValueError(f"detail_keys must be one of {', '.join(DETAIL_KEYS)}")
    if page_base not in (0, 1):
        raise ValueError("page_base must be 0 or 1")
    app = create_sim_app(now=now, middlewares=[_auth_middleware()])
    app[DATASET] = AvePointDataset(seed, now or datetime.now(UTC))
    app[TOKENS] = TokenStore(client_id, client_secret, token_lifetime)
    app[BEHAVIOUR] = Behaviour(paging=paging, detail_keys=detail_keys, page_base=page_base)
    app[SERIAL] = [0]
    add_data_fault_routes(app)
    app.router.add_post(TOKEN_PATH, _post_token)
    app.router.add_get(CURRENT_PATH, _get_jobs)
    app.router.add_get(OLDER_PATH, _get_jobs)
    app.router.add_get("/_sim/avepoint/expire", _get_expire)
    app.router.add_post("/_sim/avepoint/expire", _post_expire)
    return app


def demo_target(url: str) -> dict[str, Any]:
    base = url.rstrip("/")
    return {
        "name": "avepoint-demo",
        "vendor": "avepoint",
        "url": base,
        "token_url": base + TOKEN_PATH,
        "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET,
        "services": [OBJECT_TYPES[plan.object_type] for plan in PLANS],
        "job_types": list(JOB_TYPES.values()),
        "labels": {},
    }


SIMULATOR = SimulatorSpec(name="avepoint", create_app=create_app, demo_target=demo_target)
