"""VeeamClient over real HTTP against the Veeam EM simulator on loopback."""

from __future__ import annotations

import base64
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.config import ConfigError, Secret, TargetConfig, parse_config
from exporter.model import Collection, JobKey, Run, Status
from exporter.simulators.veeam import (
    DATASET,
    DEMO_PASSWORD,
    DEMO_USERNAME,
    NAMESPACE,
    RESULTS,
    STATES,
    JobPlan,
    SimSession,
    VeeamDataset,
    create_app,
    demo_target,
)
from exporter.state import TargetState, apply_collection
from exporter.vendors.base import (
    AuthError,
    CollectionError,
    HttpClient,
    HTTPStatusError,
    ParseError,
    TargetConfigError,
)
from exporter.vendors.veeam import SPEC, VeeamClient
from tests.simctl import SimControl, no_sleep

# A moment at which four sessions are in progress.
T = datetime(2025, 3, 10, 14, 30, tzinfo=UTC)
MONTH = timedelta(days=30)
WEEK = timedelta(days=7)
DAY = timedelta(days=1)
QUERY = "GET /api/query"
LOGON = "POST /api/sessionMngr/"
LOGOUT = "DELETE /api/logonSessions/{id}"
SECRETS = (DEMO_PASSWORD, base64.b64encode(f"{DEMO_USERNAME}:{DEMO_PASSWORD}".encode()).decode())

# SPEC section 5, written out by hand: (State, Result) -> status.
EXPECTED_STATUS = {
    ("Stopped", "Success"): Status.SUCCESS,
    ("Stopped", "Warning"): Status.WARNING,
    ("Stopped", "Failed"): Status.FAILED,
    ("Stopped", "None"): Status.CANCELLED,
    ("Starting", "None"): Status.RUNNING,
    ("Working", "None"): Status.RUNNING,
    ("Pausing", "None"): Status.RUNNING,
    ("Resuming", "None"): Status.RUNNING,
    ("Stopping", "None"): Status.RUNNING,
}
JOB_TYPES = {
    "Backup": "backup",
    "BackupCopy": "backup_copy",
    "ImmediateBackupCopy": "immediate_backup_copy",
    "AgentBackup": "agent_backup",
    "NasBackup": "nas_backup",
    "Replica": "replica",
}
# The job name rule, written out by hand for the simulator's jobs (by plan
# key; any other job is named by its JobName): "Backup Job 1" is on both
# backup servers, and the sessions of vbr02's deleted "SQL Backup" are told
# apart from those of vbr01's live one, which keeps its name.
JOB_NAMES = {
    "b1a": "Backup Job 1 (vbr01.lab.local)",
    "b1b": "Backup Job 1 (vbr02.lab.local)",
    "sql_old": "SQL Backup (vbr02.lab.local)",
}


class Sim(SimControl):
    @property
    def url(self) -> str:
        return self.root

    @property
    def dataset(self) -> VeeamDataset:
        return self.app[DATASET]


SimFactory = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def make_sim(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[SimFactory]:
    async with aiohttp.ClientSession() as control:

        async def make(**kwargs: Any) -> Sim:
            app = create_app(seed=1, now=T, **kwargs)
            return Sim(await aiohttp_server(app), app, control)

        yield make


@pytest.fixture
async def sim(make_sim: SimFactory) -> Sim:
    return await make_sim()


@dataclass
class Clients:
    """HttpClients made by a test, closed at its end."""

    made: list[HttpClient] = field(default_factory=list)

    def __call__(self, url: str, **kwargs: Any) -> HttpClient:
        client = HttpClient(url, sleep=kwargs.pop("sleep", no_sleep), **kwargs)
        self.made.append(client)
        return client


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    made = Clients()
    yield made
    for client in made.made:
        await client.close()


def make_target(
    url: str, password: str = DEMO_PASSWORD, username: str | None = DEMO_USERNAME, **options: Any
) -> TargetConfig:
    return TargetConfig(
        name="veeam-test",
        vendor="veeam",
        url=url,
        username=username,
        password=Secret(password),
        lookback=WEEK,
        options=options,
    )


def client_for(
    sim: Sim, clients: Clients, *, password: str = DEMO_PASSWORD, page_size: int | None = None, **options: Any
) -> VeeamClient:
    return VeeamClient(make_target(sim.url, password, **options), clients(sim.url), page_size=page_size)


def expected_window(dataset: VeeamDataset, since: datetime, now: datetime) -> dict[str, tuple[Any, ...]]:
    """What a poll at `now` from `since` must return: the sessions in progress,
    and every session created since the older of `since` and their start (to
    the second: the filter has no fractions)."""
    sessions = dataset.sessions(now)
    running = [s.created.value for s in sessions if not s.finished(now)]
    lower = min([since, *running]).replace(microsecond=0)
    return expected_runs([s for s in sessions if s.created.value >= lower or not s.finished(now)], now)


def job_key(plan: JobPlan) -> JobKey:
    return JobKey(JOB_NAMES.get(plan.key, plan.name), JOB_TYPES[plan.job_type])


def expected_runs(sessions: list[SimSession], now: datetime) -> dict[str, tuple[Any, ...]]:
    """What the client must report for each session, derived from the dataset."""
    result = {}
    for s in sessions:
        finished = s.finished(now)
        result[s.uid] = (
            job_key(s.plan),
            EXPECTED_STATUS[s.state(now), s.result(now)],
            s.created.value,
            s.ends.value if finished else None,
            s.progress(now) / 100,
            s.failure_message(now),
        )
    return result


def actual_runs(collection: Collection) -> dict[str, tuple[Any, ...]]:
    return {r.run_id: (r.job, r.status, r.start, r.end, r.progress, r.reason) for r in collection.runs}


def pages(rows: int, size: int = 100) -> int:
    return max(1, math.ceil(rows / size))


# --- what is collected -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer_format", "json_style", "bom"),
    [
        ("xml", "v12", False),
        ("xml", "v12", True),
        ("json", "v12", False),
        ("json", "v12", True),
        ("json", "v13", False),
        ("json", "v13", True),
    ],
)
async def test_collects_every_session_in_every_format(
    make_sim: SimFactory, clients: Clients, answer_format: str, json_style: str, bom: bool
) -> None:
    sim = await make_sim(json_style=json_style, bom=bom)
    collection = await client_for(sim, clients, format=answer_format).collect(T - MONTH, T)

    sessions = sim.dataset.sessions(T)
    assert len(sessions) > 700
    assert len(collection.runs) == len(sessions)
    assert actual_runs(collection) == expected_runs(sessions, T)
    assert {r.status for r in collection.runs} == set(Status) - {Status.QUEUED}
    running = [r for r in collection.runs if r.status is Status.RUNNING]
    assert len(running) == 4
    assert all(r.progress is not None and 0 < r.progress < 1 for r in running)

    # Active sessions, then 30 days at 100 a page, then the jobs and the repositories.
    requests = await sim.requests()
    assert requests == {LOGON: 1, QUERY: 1 + pages(len(sessions)) + 1 + 1}
    assert pages(len(sessions)) >= 3
    assert collection.summary["session_pages"] == 1 + pages(len(sessions))
    assert collection.summary["requests"] == requests[QUERY]
    assert collection.summary["logons"] == 1
    assert collection.summary["running"] == 4


async def test_paging_small_pages_loses_and_repeats_nothing(sim: Sim, clients: Clients) -> None:
    whole = await client_for(sim, clients).collect(T - MONTH, T)
    before = (await sim.requests())[QUERY]

    paged = await client_for(sim, clients, page_size=30).collect(T - MONTH, T)

    n = len(whole.runs)
    jobs = len(sim.dataset.jobs(T))
    assert (await sim.requests())[QUERY] - before == pages(4, 30) + pages(n, 30) + pages(jobs, 30) + pages(4, 30)
    assert sorted(r.run_id for r in paged.runs) == sorted(r.run_id for r in whole.runs)
    assert actual_runs(paged) == actual_runs(whole)
    assert paged.repositories == whole.repositories


async def test_session_expiring_mid_paging_logs_on_again(sim: Sim, clients: Clients) -> None:
    await sim.post("/_sim/veeam/expire", {"after": 3})
    http = clients(sim.url)
    collection = await VeeamClient(make_target(sim.url), http).collect(T - MONTH, T)

    sessions = sim.dataset.sessions(T)
    queries = 1 + pages(len(sessions)) + 1 + 1
    requests = await sim.requests()
    # Every 4th query met an expired session: a 401, a logon, the same page again.
    expired = (queries - 1) // 3
    assert requests[LOGON] == 1 + expired
    assert requests[QUERY] == queries + expired
    assert http.stats.by_code["401"] == expired
    assert expired >= 2
    assert collection.summary["logons"] == 1 + expired
    run_ids = [r.run_id for r in collection.runs]
    assert len(run_ids) == len(set(run_ids))
    assert actual_runs(collection) == expected_runs(sessions, T)
    assert (await sim.get("/_sim/veeam/sessions"))["expired"] == expired


async def test_session_expiring_on_every_request(sim: Sim, clients: Clients) -> None:
    await sim.post("/_sim/veeam/expire", {"after": 1})
    collection = await client_for(sim, clients, page_size=50).collect(T - MONTH, T)
    assert actual_runs(collection) == expected_runs(sim.dataset.sessions(T), T)
    requests = await sim.requests()
    assert requests[LOGON] == requests[QUERY] // 2 + 1


async def test_session_is_reused_and_expires_after_15_idle_minutes(sim: Sim, clients: Clients) -> None:
    http = clients(sim.url)
    client = VeeamClient(make_target(sim.url), http)
    await client.collect(T - DAY, T)
    await client.collect(T - DAY, T)
    assert (await sim.requests())[LOGON] == 1

    # The server's clock moves 16 minutes; ours does not see the idle time.
    later = T + timedelta(minutes=16)
    await sim.clock(later)
    await client.collect(T - DAY, later)
    assert (await sim.requests())[LOGON] == 2
    assert http.stats.by_code["401"] == 1


async def test_idle_session_is_replaced_without_a_401(sim: Sim, clients: Clients) -> None:
    ticks = [1000.0]
    http = clients(sim.url)
    client = VeeamClient(make_target(sim.url), http, monotonic=lambda: ticks[0])
    await client.collect(T - DAY, T)
    ticks[0] += 10 * 60
    await client.collect(T - DAY, T)
    assert (await sim.requests())[LOGON] == 1

    later = T + timedelta(minutes=26)
    await sim.clock(later)
    ticks[0] += 16 * 60
    collection = await client.collect(T - DAY, later)
    assert collection.summary["logons"] == 1
    assert (await sim.requests())[LOGON] == 2
    assert "401" not in http.stats.by_code


@pytest.mark.parametrize(("answer_format", "json_style"), [("xml", "v12"), ("json", "v12"), ("json", "v13")])
async def test_close_logs_out_once(make_sim: SimFactory, clients: Clients, answer_format: str, json_style: str) -> None:
    sim = await make_sim(json_style=json_style)
    client = client_for(sim, clients, format=answer_format)
    await client.close()  # never logged on: nothing to do
    assert await sim.requests() == {}

    await client.collect(T - DAY, T)
    assert (await sim.get("/_sim/veeam/sessions"))["live"] == 1
    await client.close()
    await client.close()
    assert (await sim.requests())[LOGOUT] == 1
    assert (await sim.get("/_sim/veeam/sessions")) == {"live": 0, "logons": 1, "logouts": 1, "expired": 0}

    # A client used after close logs on again.
    await client.collect(T - DAY, T)
    assert (await sim.requests())[LOGON] == 2


async def test_close_never_raises(sim: Sim, clients: Clients) -> None:
    client = client_for(sim, clients)
    await client.collect(T - DAY, T)
    await sim.fault(mode="500")
    await client.close()
    assert (await sim.requests())[LOGOUT] == 4  # 1 + HttpClient's retries

    await sim.fault(mode="none")
    await client.collect(T - DAY, T)
    await sim.post("/_sim/veeam/expire", {"after": 1})
    await sim.post("/_sim/clock", {"advance": 3600})
    await client.close()  # the session expired: a 401, swallowed
    assert (await sim.requests())[LOGOUT] == 5

    dead = client_for(sim, clients)
    await dead.collect(T - DAY, T)
    await sim.server.close()
    await dead.close()


async def test_session_cookie_is_ignored_and_the_header_rules(sim: Sim, clients: Clients) -> None:
    """EM sets a session cookie and prefers it to the header. HttpClient keeps
    no cookies (a host name, unlike an IP, would let aiohttp store one), so
    across expiry and re-logon only the header names the session."""
    url = sim.url.replace("127.0.0.1", "localhost")
    http = clients(url)
    client = VeeamClient(make_target(url), http)
    await sim.post("/_sim/veeam/expire", {"after": 4})
    collection = await client.collect(T - MONTH, T)
    assert actual_runs(collection) == expected_runs(sim.dataset.sessions(T), T)
    assert (await sim.requests())[LOGON] == 3  # 11 queries, sessions of 4 requests
    assert len(http.session.cookie_jar) == 0
    await client.close()
    assert (await sim.get("/_sim/veeam/sessions"))["live"] == 0


async def test_every_state_and_result_is_mapped(sim: Sim, clients: Clients) -> None:
    """Every Result at T; for each State, a moment at which some session is in
    it, collected there. The statuses come from the hand-written table."""
    dataset = sim.dataset
    client = client_for(sim, clients)
    collection = await client.collect(T - MONTH, T)
    seen = {(s.state(T), s.result(T)) for s in dataset.sessions(T)}

    moments: dict[str, tuple[datetime, str]] = {}
    second = timedelta(seconds=1)
    for s in dataset.sessions(T + timedelta(days=3)):
        if s.created.value < T:
            continue
        candidates = [
            s.created.value + second,
            s.created.value + (s.ends.value - s.created.value) / 4,
            s.ends.value - second,
        ]
        if s.pause_at is not None:
            candidates += [s.pause_at + second, s.pause_at + s.pause_length + second]
        for moment in candidates:
            moments.setdefault(s.state(moment), (moment, s.uid))
    assert set(moments) == set(STATES) - {"Stopped"}

    for state, (moment, uid) in sorted(moments.items()):
        await sim.clock(moment)
        since = moment - timedelta(hours=6)
        collection = await client.collect(since, moment)
        assert actual_runs(collection) == expected_window(dataset, since, moment)
        assert {r.run_id: r.status for r in collection.runs}[uid] is Status.RUNNING
        seen |= {(s.state(moment), s.result(moment)) for s in dataset.sessions(moment) if s.uid == uid}
        assert next(s for s in dataset.sessions(moment) if s.uid == uid).state(moment) == state
    assert seen == set(EXPECTED_STATUS)
    assert {result for _, result in seen} == {*RESULTS, "None"}


async def test_demo_scenarios(sim: Sim, clients: Clients) -> None:
    collection = await client_for(sim, clients).collect(T - WEEK, T)

    def finished(name: str) -> list[Run]:
        runs = [r for r in collection.runs if r.job.job_name == name and r.status.finished]
        return sorted(runs, key=lambda r: r.end or T)

    exchange = finished("Exchange Backup")[-1]
    assert exchange.status is Status.FAILED
    assert exchange.reason is not None
    assert "VSS writer" in exchange.reason
    file_server = finished("File Server Backup")
    successes = [r.end for r in file_server if r.status is Status.SUCCESS and r.end is not None]
    assert not successes or T - max(successes) > timedelta(days=2, hours=12)
    assert file_server[-1].status is Status.FAILED
    offsite = finished("Offsite Copy")[-1]
    assert offsite.status is Status.WARNING
    assert offsite.reason is not None
    assert offsite.reason.startswith("Warning: ")
    healthy = ("SQL Backup", "DR Copy", "Laptops", "NAS Archive", *(JOB_NAMES[key] for key in ("b1a", "b1b")))
    for name in healthy:
        assert finished(name)[-1].status is Status.SUCCESS, name
    cancelled = [r for r in collection.runs if r.status is Status.CANCELLED]
    assert cancelled
    assert all(r.reason == "Job has been stopped by user LAB\\veeam-admin" for r in cancelled)


def inventory_keys(dataset: VeeamDataset, now: datetime) -> set[JobKey]:
    """The jobs the inventory must give: every job listed but replication jobs."""
    return {job_key(job.plan) for job in dataset.jobs(now) if job.plan.job_type != "Replica"}


def veeam_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "exporter.vendors.veeam" and r.levelname == "WARNING"]


async def test_same_named_jobs_on_two_backup_servers_are_told_apart(
    sim: Sim, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(sim, clients)
    collection = await client.collect(T - MONTH, T)
    again = await client.collect(T - MONTH, T)

    sessions = sim.dataset.sessions(T)
    # Every session under its job's name, each once: nothing lost, merged or duplicated.
    assert sorted(r.run_id for r in collection.runs) == sorted(s.uid for s in sessions)
    assert Counter(r.job for r in collection.runs) == Counter(job_key(s.plan) for s in sessions)
    by_name = Counter(r.job.job_name for r in collection.runs)
    plans = Counter(s.plan.key for s in sessions)
    assert by_name["Backup Job 1 (vbr01.lab.local)"] == plans["b1a"] == 30
    assert by_name["Backup Job 1 (vbr02.lab.local)"] == plans["b1b"] == 30
    assert "Backup Job 1" not in by_name
    assert JobKey("Backup Job 1", "backup") not in collection.jobs
    # A name on one backup server only stays as it is.
    assert by_name["Offsite Copy"] == plans["copy"]
    assert by_name["SQL Backup"] == plans["sql"]

    info = {key.job_name: labels for key, labels in collection.job_info.items()}
    assert info["Backup Job 1 (vbr01.lab.local)"] == {"backup_server": "vbr01.lab.local", "schedule_enabled": "true"}
    assert info["Backup Job 1 (vbr02.lab.local)"] == {"backup_server": "vbr02.lab.local", "schedule_enabled": "true"}
    assert info["SQL Backup"] == {"backup_server": "vbr01.lab.local", "schedule_enabled": "true"}
    assert info["NAS Archive"]["backup_server"] == "vbr02.lab.local"
    assert set(collection.job_info) == set(collection.jobs)
    assert collection.summary["backup_servers"] == 2
    assert again.jobs == collection.jobs
    warnings = veeam_warnings(caplog)
    assert len(warnings) == 1  # once, not once per poll
    assert "'Backup Job 1'" in warnings[0]
    assert "vbr01.lab.local, vbr02.lab.local" in warnings[0]


@pytest.mark.parametrize(("answer_format", "json_style"), [("xml", "v12"), ("json", "v12"), ("json", "v13")])
async def test_job_inventory_in_every_format_and_paged(
    make_sim: SimFactory, clients: Clients, answer_format: str, json_style: str
) -> None:
    sim = await make_sim(json_style=json_style)
    since = T - timedelta(hours=1)
    collection = await client_for(sim, clients, page_size=3, format=answer_format).collect(since, T)

    dataset = sim.dataset
    listed = inventory_keys(dataset, T)
    assert len(listed) == len(dataset.jobs(T)) - 1 == 11
    run_keys = {r.job for r in collection.runs}
    assert set(collection.jobs) == listed | run_keys
    assert actual_runs(collection) == expected_window(dataset, since, T)
    # Jobs without a session in the window still have their series: the new
    # one has none at all, the disabled one none for 16 days.
    new = JobKey("Web Servers Backup", "backup")
    disabled = JobKey("Test Lab Backup", "backup")
    assert listed - run_keys == {new, disabled}
    assert not any(s.plan.key == "web" for s in dataset.sessions(T))
    assert collection.job_info[new] == {"backup_server": "vbr02.lab.local", "schedule_enabled": "true"}
    assert collection.job_info[disabled] == {"backup_server": "vbr01.lab.local", "schedule_enabled": "false"}
    # Replication runs are not BackupJobSessions: no series that would never run.
    assert not any(key.job_type == "replica" for key in collection.jobs)

    job_pages = pages(len(dataset.jobs(T)), 3)
    assert job_pages == 4
    assert collection.summary["job_pages"] == job_pages
    assert collection.summary["listed_jobs"] == len(listed)
    requests = await sim.requests()
    assert requests[QUERY] == collection.summary["requests"]
    assert requests[QUERY] == (collection.summary["session_pages"] + job_pages + pages(len(dataset.repositories(T)), 3))


async def test_a_disabled_job_keeps_its_series(sim: Sim, clients: Clients) -> None:
    state = TargetState("veeam")
    collection = await client_for(sim, clients).collect(T - MONTH, T)
    apply_collection(state, collection, T, job_retention=MONTH)
    disabled = state.jobs[JobKey("Test Lab Backup", "backup")]
    assert disabled.info == {"backup_server": "vbr01.lab.local", "schedule_enabled": "false"}
    assert disabled.last_success_end is not None
    assert T - timedelta(days=17) < datetime.fromtimestamp(disabled.last_success_end, UTC) < T - timedelta(days=16)
    never_ran = state.jobs[JobKey("Web Servers Backup", "backup")]
    assert never_ran.last is None
    assert never_ran.last_success_end is None


async def test_job_names_do_not_depend_on_the_window_nor_the_instance(
    sim: Sim, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    """A window holding vbr02's "Backup Job 1" session but not vbr01's names
    it as a whole month does, and so does a client started afresh."""
    dataset = sim.dataset

    def window(moment: datetime) -> tuple[datetime, set[str]]:
        """From just after vbr01's last session, widened (as the client
        does) to the oldest session in progress: the plans seen."""
        sessions = dataset.sessions(moment)
        since = (max(s.created.value for s in sessions if s.plan.key == "b1a") + timedelta(minutes=1)).replace(
            microsecond=0
        )
        lower = min([since, *(s.created.value for s in sessions if not s.finished(moment))]).replace(microsecond=0)
        return since, {s.plan.key for s in sessions if s.created.value >= lower or not s.finished(moment)}

    # Long sessions in progress widen most windows: find a moment without.
    moment = T
    while not ("b1b" in window(moment)[1] and "b1a" not in window(moment)[1]):
        moment += timedelta(minutes=30)
        assert moment < T + timedelta(days=3)
    since = window(moment)[0]

    state = TargetState("veeam")
    first = await client_for(sim, clients).collect(T - MONTH, T)
    apply_collection(state, first, T, job_retention=MONTH)
    # A restart: a new client, the same state.
    await sim.clock(moment)
    restarted = client_for(sim, clients)
    narrow = await restarted.collect(since, moment)
    apply_collection(state, narrow, moment, job_retention=MONTH)

    names = {r.job.job_name for r in narrow.runs}
    assert "Backup Job 1 (vbr02.lab.local)" in names
    assert not {"Backup Job 1", "Backup Job 1 (vbr01.lab.local)"} & names
    assert set(narrow.jobs) == set(first.jobs) - {JobKey("SQL Backup (vbr02.lab.local)", "backup")}
    assert narrow.job_info == {key: info for key, info in first.job_info.items() if key in narrow.jobs}
    assert actual_runs(narrow) == expected_window(dataset, since, moment)
    assert {key.job_name for key in state.jobs} == {key.job_name for key in first.jobs}
    assert "Backup Job 1" not in {key.job_name for key in state.jobs}
    # Each instance warns once.
    assert len(veeam_warnings(caplog)) == 2


async def test_sessions_of_a_deleted_job_still_count(sim: Sim, clients: Clients) -> None:
    collection = await client_for(sim, clients).collect(T - MONTH, T)
    deleted = [s for s in sim.dataset.sessions(T) if s.plan.key == "sql_old"]
    assert len(deleted) == 10
    assert not any(job.plan.key == "sql_old" for job in sim.dataset.jobs(T))

    old = JobKey("SQL Backup (vbr02.lab.local)", "backup")
    runs = {r.run_id: r for r in collection.runs if r.job == old}
    assert set(runs) == {s.uid for s in deleted}
    assert collection.summary["unlisted_job_runs"] == 10
    assert old in collection.jobs
    # Not in the inventory: its backup server, but no schedule.
    assert collection.job_info[old] == {"backup_server": "vbr02.lab.local"}
    # The live job of that name, on the other server, keeps its name.
    live = [r for r in collection.runs if r.job == JobKey("SQL Backup", "backup")]
    assert len(live) == sum(1 for s in sim.dataset.sessions(T) if s.plan.key == "sql")

    recent = await client_for(sim, clients).collect(T - WEEK, T)
    assert old not in recent.jobs
    assert recent.summary["unlisted_job_runs"] == 0


async def test_repositories(sim: Sim, clients: Clients) -> None:
    collection = await client_for(sim, clients).collect(T - WEEK, T)
    by_name = {r.name: r for r in collection.repositories}
    assert set(by_name) == {
        "Default Backup Repository (vbr01.lab.local)",
        "Default Backup Repository (vbr02.lab.local)",
        "Hardened Linux Repo",
        "Capacity Tier S3",
    }
    for repository in sim.dataset.repositories(T):
        name = repository.plan.name
        got = by_name.get(name) or by_name[f"{name} ({sim.dataset.servers[repository.plan.server].name})"]
        assert got.capacity_bytes == (None if repository.capacity < 0 else repository.capacity)
        assert got.free_bytes == (None if repository.free < 0 else repository.free)
    assert by_name["Capacity Tier S3"].capacity_bytes is None
    assert by_name["Default Backup Repository (vbr01.lab.local)"].capacity_bytes == 1024**4
    assert collection.summary["repository_pages"] == 1


async def test_incremental_poll_asks_for_less(sim: Sim, clients: Clients) -> None:
    client = client_for(sim, clients)
    first = await client.collect(T - WEEK, T)
    before = (await sim.requests())[QUERY]
    second = await client.collect(T - timedelta(hours=12), T)

    assert 0 < len(second.runs) < len(first.runs) / 4
    assert {r.run_id for r in second.runs} <= {r.run_id for r in first.runs}
    assert (await sim.requests())[QUERY] - before == 4


async def test_run_in_progress_finishes_and_keeps_its_id(sim: Sim, clients: Clients) -> None:
    client = client_for(sim, clients)
    state = TargetState("veeam")
    before = await client.collect(state.since(T, WEEK), T)
    apply_collection(state, before, T, job_retention=timedelta(days=30))
    running = {r.run_id: r for r in before.runs if r.status is Status.RUNNING}
    assert len(running) == 4

    later = T + timedelta(days=1)
    await sim.clock(later)
    since = state.since(later, WEEK)
    assert since <= min(r.start or T for r in running.values())
    after = {r.run_id: r for r in (await client.collect(since, later)).runs}
    for run_id, run in running.items():
        finished = after[run_id]
        assert finished.status.finished
        assert finished.start == run.start
        assert finished.end is not None
        assert T < finished.end <= later


async def test_old_session_in_progress_widens_the_window(sim: Sim, clients: Clients) -> None:
    """A session begun before `since` and still running is found, and its
    window includes it if it finishes meanwhile."""
    client = client_for(sim, clients)
    collection = await client.collect(T - timedelta(minutes=5), T)
    running = [r for r in collection.runs if r.status is Status.RUNNING]
    assert len(running) == 4
    assert min(r.start or T for r in running) < T - timedelta(hours=10)
    assert actual_runs(collection) == expected_window(sim.dataset, T - timedelta(minutes=5), T)
    assert any(r.status.finished for r in collection.runs)


async def test_api_suffix_in_the_url(sim: Sim, clients: Clients) -> None:
    url = sim.url + "/api/"
    collection = await VeeamClient(make_target(url), clients(url)).collect(T - DAY, T)
    assert collection.runs
    assert (await sim.requests())[LOGON] == 1


async def test_format_option(sim: Sim, clients: Clients) -> None:
    config = parse_config(
        f"targets:\n  - {{name: em, vendor: veeam, url: '{sim.url}', username: u, password: p}}\n"
        f"  - {{name: em2, vendor: veeam, url: '{sim.url}', username: u, password: p, format: json}}\n",
        "<test>",
        vendors={"veeam": SPEC},
    )
    assert [t.options["format"] for t in config.targets] == ["xml", "json"]
    with pytest.raises(ConfigError, match=r"targets\[0\]\.format"):
        parse_config(
            f"targets:\n  - {{name: em, vendor: veeam, url: '{sim.url}', username: u, password: p, format: 1}}\n",
            "<test>",
            vendors={"veeam": SPEC},
        )
    with pytest.raises(ConfigError, match="missing required key 'password'"):
        parse_config(
            f"targets:\n  - {{name: em, vendor: veeam, url: '{sim.url}', username: u}}\n",
            "<test>",
            vendors={"veeam": SPEC},
        )
    with pytest.raises(TargetConfigError, match="format must be one of xml, json, got 'yaml'"):
        await client_for(sim, clients, format="yaml").collect(T - DAY, T)
    assert await sim.requests() == {}
    assert (await client_for(sim, clients, format=" JSON ").collect(T - DAY, T)).runs


async def test_demo_target_is_a_valid_config(sim: Sim, clients: Clients) -> None:
    config = parse_config(yaml.safe_dump({"targets": [demo_target(sim.url)]}), "<demo>", vendors={"veeam": SPEC})
    (parsed,) = config.targets
    assert parsed.name == "veeam-demo"
    assert parsed.username == DEMO_USERNAME
    assert parsed.password == Secret(DEMO_PASSWORD)
    collection = await VeeamClient(parsed, clients(parsed.url)).collect(T - DAY, T)
    assert collection.runs


async def test_missing_credentials_is_a_config_error(sim: Sim, clients: Clients) -> None:
    target = TargetConfig(name="v", vendor="veeam", url=sim.url, username=DEMO_USERNAME)
    with pytest.raises(TargetConfigError):
        await VeeamClient(target, clients(sim.url)).collect(T - DAY, T)


# --- failures ----------------------------------------------------------------------


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(exc.__cause__), str(exc.__context__)):
        for secret in SECRETS:
            assert secret not in text


async def test_wrong_password_is_an_auth_error(sim: Sim, clients: Clients) -> None:
    client = client_for(sim, clients, password=DEMO_PASSWORD + "x")
    with pytest.raises(AuthError) as caught:
        await client.collect(T - DAY, T)
    assert "POST /api/sessionMngr/: HTTP 401" in str(caught.value)
    assert_no_secret(caught.value)
    assert await sim.requests() == {LOGON: 1}


@pytest.mark.parametrize("answer_format", ["xml", "json"])
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"mode": "500"}, HTTPStatusError),
        ({"mode": "503", "retry_after": 1}, HTTPStatusError),
        ({"mode": "401"}, AuthError),
        ({"mode": "403"}, AuthError),
        ({"mode": "garbage"}, ParseError),
        ({"mode": "truncated"}, ParseError),
        ({"mode": "empty"}, ParseError),
        ({"mode": "wrong_content_type"}, ParseError),
        ({"mode": "huge", "size": 3 * 1024 * 1024}, ParseError),
    ],
)
async def test_faults_become_collection_errors(
    sim: Sim, clients: Clients, answer_format: str, fault: dict[str, Any], error: type[CollectionError]
) -> None:
    small = clients(sim.url, max_body_bytes=1024 * 1024)
    client = VeeamClient(make_target(sim.url, format=answer_format), small)
    await client.collect(T - DAY, T)  # logged on, so faults hit the queries
    await sim.fault(**fault)
    with pytest.raises(error) as caught:
        await client.collect(T - DAY, T)
    assert_no_secret(caught.value)


@pytest.mark.parametrize("suffix", ["", "/api", "/api/"])
async def test_error_messages_name_the_request(sim: Sim, clients: Clients, suffix: str) -> None:
    url = sim.url + suffix
    client = VeeamClient(make_target(url), clients(url))
    await client.collect(T - DAY, T)
    await sim.fault(mode="wrong_content_type")
    with pytest.raises(ParseError) as caught:
        await client.collect(T - DAY, T)
    expected = "GET /api/query?type=BackupJobSession: expected XML or JSON, got Content-Type 'text/html'"
    assert str(caught.value) == expected


@pytest.mark.parametrize("mode", ["garbage", "empty", "truncated"])
async def test_unreadable_logon_answer_still_gives_a_session(sim: Sim, clients: Clients, mode: str) -> None:
    """Only the logout needs the SessionId from the body; the token is a header."""
    await sim.fault(mode=mode, count=1)
    client = client_for(sim, clients)
    assert (await client.collect(T - DAY, T)).runs
    await client.close()
    assert LOGOUT not in await sim.requests()


async def test_server_errors_are_retried_then_reported(sim: Sim, clients: Clients) -> None:
    client = client_for(sim, clients)
    first = await client.collect(T - DAY, T)
    await sim.fault(mode="500")
    with pytest.raises(HTTPStatusError) as caught:
        await client.collect(T - DAY, T)
    assert caught.value.status == 500
    # A whole poll, then the first query: 1 + HttpClient's 3 retries.
    assert (await sim.requests())[QUERY] == first.summary["requests"] + 4
    assert "/api/query" in str(caught.value)


async def test_transient_faults_are_survived(sim: Sim, clients: Clients) -> None:
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    http = clients(sim.url, sleep=record)
    client = VeeamClient(make_target(sim.url), http)
    await sim.fault(mode="429", retry_after=2, count=2)
    assert (await client.collect(T - DAY, T)).runs
    assert delays == [2.0, 2.0]

    await sim.fault(mode="slow", delay=0.05, count=3)
    assert (await client.collect(T - DAY, T)).runs

    # One 401 on a query: re-logon and the same query again.
    await sim.fault(mode="401", count=1)
    assert (await client.collect(T - DAY, T)).summary["logons"] == 1


async def test_a_server_repeating_page_one(sim: Sim, clients: Clients) -> None:
    await sim.post("/_sim/veeam/paging", {"ignore_page": True})
    with pytest.raises(ParseError, match="asked for page 2, got page 1"):
        await client_for(sim, clients).collect(T - MONTH, T)


def _session_xml(uid: str) -> str:
    return (
        f'<BackupJobSession UID="{uid}"><JobName>J</JobName><JobType>Backup</JobType>'
        "<CreationTimeUTC>2025-03-01T00:00:00Z</CreationTimeUTC><EndTimeUTC>2025-03-01T00:10:00Z</EndTimeUTC>"
        "<State>Stopped</State><Result>Success</Result></BackupJobSession>"
    )


async def _odd_server(
    aiohttp_server: Callable[..., Awaitable[TestServer]], logon_headers: dict[str, str], page: Callable[[int], str]
) -> str:
    """A server whose logon answers 201 with `logon_headers` and whose queries
    answer `page(n)` inside a QueryResult."""

    async def post_logon(request: web.Request) -> web.Response:
        return web.Response(status=201, text="welcome", headers=logon_headers)

    async def get_query(request: web.Request) -> web.Response:
        number = int(request.query.get("page", "1"))
        body = f'<QueryResult xmlns="{NAMESPACE}">{page(number)}</QueryResult>'
        return web.Response(text=body, content_type="application/xml")

    app = web.Application()
    app.router.add_post("/api/sessionMngr/", post_logon)
    app.router.add_get("/api/query", get_query)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


TOKEN = {"X-RestSvcSessionId": "t"}


async def test_a_server_repeating_rows_under_new_page_numbers(
    aiohttp_server: Callable[..., Awaitable[TestServer]], clients: Clients
) -> None:
    def page(number: int) -> str:
        rows = _session_xml("u1") + _session_xml("u2")
        return (
            f"<Entities><BackupJobSessions>{rows}</BackupJobSessions></Entities>"
            f'<PagingInfo PageNum="{number}" PageSize="2" PagesCount="9" />'
        )

    url = await _odd_server(aiohttp_server, TOKEN, page)
    with pytest.raises(ParseError, match="page 2 repeats rows of earlier pages"):
        await VeeamClient(make_target(url), clients(url)).collect(T - WEEK, T)


async def test_paging_is_bounded(aiohttp_server: Callable[..., Awaitable[TestServer]], clients: Clients) -> None:
    def page(number: int) -> str:
        return (
            f"<Entities><BackupJobSessions>{_session_xml(f'u{number}')}</BackupJobSessions></Entities>"
            f'<PagingInfo PageNum="{number}" PageSize="1" PagesCount="{number + 1}" />'
        )

    url = await _odd_server(aiohttp_server, TOKEN, page)

    class Bounded(VeeamClient):
        max_pages = 5

    client = Bounded(make_target(url), clients(url))
    with pytest.raises(ParseError, match="more than 5 pages"):
        await client.collect(T - WEEK, T)


async def test_logon_without_a_token_is_a_parse_error(
    aiohttp_server: Callable[..., Awaitable[TestServer]], clients: Clients
) -> None:
    url = await _odd_server(aiohttp_server, {}, lambda n: "")
    with pytest.raises(ParseError, match="without a X-RestSvcSessionId header"):
        await VeeamClient(make_target(url), clients(url)).collect(T - WEEK, T)


async def test_an_opaque_token_is_sent_verbatim(
    aiohttp_server: Callable[..., Awaitable[TestServer]], clients: Clients
) -> None:
    """Older servers hand out 16 random bytes, not base64 of the SessionId."""
    token = "O9Msj3rq7EGUhtSMBQx+mw=="
    sent: list[str | None] = []

    async def post_logon(request: web.Request) -> web.Response:
        return web.Response(status=201, headers={"x-restsvcsessionid": token})

    async def get_query(request: web.Request) -> web.Response:
        sent.append(request.headers.get("X-RestSvcSessionId"))
        body = f'<QueryResult xmlns="{NAMESPACE}"><Entities /></QueryResult>'
        return web.Response(text=body, content_type="application/xml")

    app = web.Application()
    app.router.add_post("/api/sessionMngr/", post_logon)
    app.router.add_get("/api/query", get_query)
    url = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    collection = await VeeamClient(make_target(url), clients(url)).collect(T - WEEK, T)
    assert collection.runs == ()
    assert sent == [token] * 4


def _job_xml(uid: str, name: str, server: str, job_type: str = "Backup") -> str:
    return (
        f'<Job Type="Job" Name="{name}" UID="urn:veeam:Job:{uid}"><Links>'
        f'<Link Rel="Up" Type="BackupServerReference" Name="{server}" Href="x" /></Links>'
        f"<JobType>{job_type}</JobType><ScheduleEnabled>true</ScheduleEnabled></Job>"
    )


async def test_a_name_newly_found_on_a_second_server_is_logged_once(
    aiohttp_server: Callable[..., Awaitable[TestServer]], clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    """The inventory changes between polls: a second server gets a job of a
    known name, loses it, gets it again."""
    jobs = [_job_xml("a1", "Nightly", "vbr01"), _job_xml("b1", "Weekly", "vbr01")]

    async def get_query(request: web.Request) -> web.Response:
        kind = request.query["type"]
        rows = "".join(jobs) if kind == "Job" else ""
        plural = {"Job": "Jobs", "BackupJobSession": "BackupJobSessions", "Repository": "Repositories"}[kind]
        body = f'<QueryResult xmlns="{NAMESPACE}"><Entities><{plural}>{rows}</{plural}></Entities></QueryResult>'
        return web.Response(text=body, content_type="application/xml")

    async def post_logon(request: web.Request) -> web.Response:
        return web.Response(status=201, headers=TOKEN)

    app = web.Application()
    app.router.add_post("/api/sessionMngr/", post_logon)
    app.router.add_get("/api/query", get_query)
    url = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    client = VeeamClient(make_target(url), clients(url))

    async def names() -> set[str]:
        return {key.job_name for key in (await client.collect(T - DAY, T)).jobs}

    assert await names() == {"Nightly", "Weekly"}
    jobs.append(_job_xml("a2", "Nightly", "vbr02"))
    assert await names() == {"Nightly (vbr01)", "Nightly (vbr02)", "Weekly"}
    assert await names() == {"Nightly (vbr01)", "Nightly (vbr02)", "Weekly"}
    assert len(veeam_warnings(caplog)) == 1
    assert "'Nightly' exist on several backup servers (vbr01, vbr02)" in veeam_warnings(caplog)[0]
    jobs.pop()
    assert await names() == {"Nightly", "Weekly"}
    # A replication job does not count: its runs are not collected.
    jobs.append(_job_xml("a3", "Nightly", "vbr03", job_type="Replica"))
    assert await names() == {"Nightly", "Weekly"}
    jobs.append(_job_xml("a4", "Nightly", "vbr04"))
    assert await names() == {"Nightly (vbr01)", "Nightly (vbr04)", "Weekly"}
    assert len(veeam_warnings(caplog)) == 2
