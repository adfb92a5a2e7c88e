"""CommvaultClient over real HTTP against the Commvault simulator on loopback."""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.config import Secret, TargetConfig
from exporter.model import Collection, Run, Status
from exporter.simulators.commvault import (
    DATASET,
    DEMO_PASSWORD,
    DEMO_USERNAME,
    CommvaultDataset,
    SimJob,
    create_app,
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
from exporter.vendors.commvault import LOOKUP_MARGIN, STATUS_STRINGS, CommvaultClient, map_status
from tests.simctl import SimControl, no_sleep

# A moment at which the dataset shows every status string.
T = datetime(2025, 3, 10, 17, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
BASE = "/commandcenter/api"
JOB = f"GET {BASE}/Job"
LOGIN = f"POST {BASE}/Login"
RENEW = f"POST {BASE}/RenewLoginToken"
LOGOUT = f"POST {BASE}/Logout"
SECRETS = (DEMO_PASSWORD, base64.b64encode(DEMO_PASSWORD.encode()).decode())


class Sim(SimControl):
    @property
    def url(self) -> str:
        return self.root + BASE

    @property
    def dataset(self) -> CommvaultDataset:
        return self.app[DATASET]

    async def sessions(self) -> dict[str, Any]:
        async with self.control.get(self.server.make_url("/_sim/commvault/expire")) as response:
            state: dict[str, Any] = await response.json()
            return state


async def start_sim(aiohttp_server: Callable[..., Awaitable[TestServer]], **kwargs: Any) -> AsyncIterator[Sim]:
    app = create_app(seed=1, now=T, **kwargs)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as control:
        yield Sim(server, app, control)


@pytest.fixture
async def sim(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Sim]:
    async for value in start_sim(aiohttp_server):
        yield value


@pytest.fixture
async def http(sim: Sim) -> AsyncIterator[HttpClient]:
    client = HttpClient(sim.url, sleep=no_sleep)
    yield client
    await client.close()


def make_target(url: str, password: str = DEMO_PASSWORD, **options: Any) -> TargetConfig:
    return TargetConfig(
        name="commvault-test",
        vendor="commvault",
        url=url,
        username=DEMO_USERNAME,
        password=Secret(password),
        lookback=WEEK,
        options=options,
    )


def client_for(sim: Sim, http: HttpClient, **options: Any) -> CommvaultClient:
    return CommvaultClient(make_target(sim.url, **options), http)


async def collect(sim: Sim, http: HttpClient, **options: Any) -> Collection:
    return await client_for(sim, http, **options).collect(T - WEEK, T)


def expected_jobs(sim: Sim, since: datetime, now: datetime, *, types: tuple[str, ...] = ("Backup",)) -> list[SimJob]:
    """What the server holds for a poll asking from `since`: visible jobs finished
    inside the window (with the client's margin) and every job in progress."""
    window = now - since + LOOKUP_MARGIN
    return [
        job
        for job in sim.dataset.jobs(now)
        if job.visible and job.plan.job_type in types and (not job.finished(now) or job.ends >= now - window)
    ]


def ids(runs: tuple[Run, ...] | list[Run]) -> list[str]:
    return sorted(run.run_id for run in runs)


def by_id(sim: Sim, now: datetime = T) -> dict[str, SimJob]:
    return {str(job.job_id): job for job in sim.dataset.jobs(now)}


# --- formats, statuses, fields ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_every_status_string_is_collected_and_mapped(sim: Sim, http: HttpClient, fmt: str) -> None:
    collection = await collect(sim, http, format=fmt)

    expected = expected_jobs(sim, T - WEEK, T)
    assert ids(collection.runs) == sorted(str(job.job_id) for job in expected)
    assert len(expected) > 300
    jobs = by_id(sim)
    served = {jobs[run.run_id].status(T) for run in collection.runs}
    assert served == set(STATUS_STRINGS)
    for run in collection.runs:
        assert run.status is map_status(jobs[run.run_id].status(T))[0]
    assert {run.status for run in collection.runs} == set(Status)
    assert collection.summary["hidden_runs"] >= 3  # isVisible=false, left out
    assert collection.summary["logins"] == 1


async def test_json_and_xml_give_the_same_runs(sim: Sim, http: HttpClient) -> None:
    as_json = await collect(sim, http, format="json")
    as_xml = await collect(sim, http, format="xml")
    assert sorted(as_json.runs, key=lambda r: r.run_id) == sorted(as_xml.runs, key=lambda r: r.run_id)
    assert as_json.job_info == as_xml.job_info


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_times_sizes_and_items(sim: Sim, http: HttpClient, fmt: str) -> None:
    collection = await collect(sim, http, format=fmt)
    jobs = by_id(sim)
    with_errors = 0
    for run in collection.runs:
        job = jobs[run.run_id]
        assert run.start == job.submitted
        assert run.job.job_type == "backup"
        assert run.job.job_name == f"{job.plan.client}/{job.plan.backupset}/{job.plan.subclient}"
        if not run.status.finished:
            assert run.end is None
            assert run.query_time == T
            continue
        assert run.end == job.ends
        assert run.query_time == job.ends
        assert run.duration == (job.ends - job.submitted).total_seconds()
        assert run.processed_bytes == job.app_size
        assert run.stored_bytes == job.media_size
        assert run.items == {"total": job.files, "failed": job.failed_files}
        assert run.reason == (" ".join(job.reason.split()) if job.reason else None)
        with_errors += job.failed_files > 0
    assert with_errors > 0
    # The trailing space some jobs carry in the client name is gone.
    assert {r.job.job_name for r in collection.runs if r.job.job_name.startswith("NAS")} == {
        "NASFILER01/defaultBackupSet/home"
    }


async def test_job_info(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http)
    info = {key.job_name: labels for key, labels in collection.job_info.items()}
    assert info["SQLPROD01/defaultBackupSet/TransactionLogs"] == {
        "client_name": "SQLPROD01",
        "instance_name": "MSSQLSERVER",
        "backupset_name": "defaultBackupSet",
        "subclient_name": "TransactionLogs",
        "app_type": "SQL Server",
        "subclient_id": "13",
    }
    assert set(info) == {run.job.job_name for run in collection.runs}


async def test_demo_scenarios(sim: Sim, http: HttpClient) -> None:
    state = TargetState("commvault")
    apply_collection(state, await collect(sim, http), T, job_retention=timedelta(days=30))
    jobs = {key.job_name: job for key, job in state.jobs.items()}

    exchange = jobs["EXCH01/defaultBackupSet/default"].last
    assert exchange is not None
    assert exchange.status is Status.FAILED
    assert exchange.reason is not None
    assert exchange.reason.startswith("Error Code: [19:1341]")

    tier2 = jobs["vcenter01/defaultBackupSet/Tier2-VMs"]
    assert tier2.last is not None
    assert tier2.last.status in (Status.FAILED, Status.CANCELLED)
    assert tier2.last_success_end is not None
    assert T.timestamp() - tier2.last_success_end > timedelta(days=3).total_seconds()

    winter = jobs["WINTER/defaultBackupSet/default"].last
    assert winter is not None
    assert winter.status is Status.WARNING
    assert winter.reason is not None

    healthy = [
        "WINTER/defaultBackupSet/Documents",
        "SQLPROD01/defaultBackupSet/default",
        "SQLPROD01/defaultBackupSet/TransactionLogs",
        "ORAFIN01/default/default",
        "vcenter01/defaultBackupSet/Tier1-VMs",
        "NASFILER01/defaultBackupSet/home",
        *(f"FILESRV-LAB/lab/{name}" for name in ("home", "scratch", "exports", "mail-archive")),
    ]
    for name in healthy:
        last = jobs[name].last
        assert last is not None
        assert last.status is Status.SUCCESS, name
        assert jobs[name].last_success_end is not None
        assert T.timestamp() - (jobs[name].last_success_end or 0) < timedelta(hours=26).total_seconds()
    # The lab subclients show every in-progress status at any moment.
    assert sum(job.running for job in state.jobs.values()) >= 2


# --- paging ----------------------------------------------------------------------------


async def test_paging_by_headers_follows_every_page(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http)
    total = len(expected_jobs(sim, T - WEEK, T)) + collection.summary["hidden_runs"]
    pages = 1 + math.ceil((total - 100) / 95)  # 100 a page, overlapping by 5
    assert pages >= 4
    assert collection.summary["pages"] == pages
    assert (await sim.requests())[JOB] == pages

    small = await CommvaultClient(make_target(sim.url), http, page_limit=37).collect(T - WEEK, T)
    assert small.summary["pages"] == 1 + math.ceil((total - 37) / 32)  # still overlapping by 5
    assert len(small.runs) == len(set(ids(small.runs)))
    assert sorted(small.runs, key=lambda r: r.run_id) == sorted(collection.runs, key=lambda r: r.run_id)


async def test_paging_survives_a_shrinking_list(sim: Sim, http: HttpClient) -> None:
    whole = ids((await collect(sim, http)).runs)
    # Each later page request finds 3 more of the newest jobs gone: the rest
    # moves up by 3 places, which the pages' overlap of 5 absorbs.
    await sim.post("/_sim/commvault/paging", {"shift": 3})
    shifted = await collect(sim, http)
    assert ids(shifted.runs) == whole

    # Without the overlap, jobs fall between the pages (the reason it exists).
    await sim.post("/_sim/commvault/paging", {"shift": 3})
    bare = await CommvaultClient(make_target(sim.url), http, page_overlap=0).collect(T - WEEK, T)
    assert set(ids(bare.runs)) < set(whole)


async def test_a_server_ignoring_the_offset_is_a_parse_error(sim: Sim, http: HttpClient) -> None:
    await sim.post("/_sim/commvault/paging", {"ignore_offset": True})
    with pytest.raises(ParseError, match="offset"):
        await collect(sim, http)
    assert (await sim.requests())[JOB] == 2


async def test_wrapped_json_envelope(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> None:
    async for plain in start_sim(aiohttp_server):
        async for wrapped in start_sim(aiohttp_server, wrapped_json=True):
            http_plain = HttpClient(plain.url, sleep=no_sleep)
            http_wrapped = HttpClient(wrapped.url, sleep=no_sleep)
            try:
                a = await collect(plain, http_plain)
                b = await collect(wrapped, http_wrapped)
            finally:
                await http_plain.close()
                await http_wrapped.close()
            assert sorted(a.runs, key=lambda r: r.run_id) == sorted(b.runs, key=lambda r: r.run_id)
            assert b.summary["pages"] >= 4


# --- sessions ------------------------------------------------------------------------


async def test_one_login_for_many_polls_and_logout_on_close(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    for _ in range(3):
        await client.collect(T - timedelta(hours=2), T)
    await client.close()
    await client.close()  # nothing left to log out

    requests = await sim.requests()
    assert requests[LOGIN] == 1
    assert requests[LOGOUT] == 1
    assert RENEW not in requests
    assert (await sim.sessions())["live"] == 0


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_token_expiry_mid_paging_is_renewed(sim: Sim, http: HttpClient, fmt: str) -> None:
    baseline = await collect(sim, http, format=fmt)
    pages = baseline.summary["pages"]
    await sim.reset_requests()

    # Two page requests later, the token is dead: page 3 gets a 401.
    await sim.post("/_sim/commvault/expire", {"after": 2})
    renewed = await collect(sim, http, format=fmt)

    assert ids(renewed.runs) == ids(baseline.runs)
    assert len(renewed.runs) == len(set(ids(renewed.runs)))
    assert renewed.summary["renewals"] == 1
    assert renewed.summary["logins"] == 1  # a new client: its first login
    requests = await sim.requests()
    assert requests[LOGIN] == 1
    assert requests[RENEW] == 1
    assert requests[JOB] == pages + 1  # the refused page, asked again
    assert renewed.summary["requests"] == 1 + 1 + pages + 1  # login, renewal, pages


async def test_refused_renewal_logs_in_again_mid_paging(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    baseline = await client.collect(T - WEEK, T)
    await sim.post("/_sim/commvault/expire", {"after": 1, "renewable": False})
    again = await client.collect(T - WEEK, T)

    assert ids(again.runs) == ids(baseline.runs)
    assert again.summary["logins"] == 1
    assert again.summary["renewals"] == 0
    requests = await sim.requests()
    assert requests[LOGIN] == 2
    assert requests[RENEW] == 1


async def test_idle_session_is_renewed(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    await client.collect(T - WEEK, T)
    # 31 minutes without a request: the token idled out.
    await sim.advance(31 * 60)
    later = await client.collect(T - timedelta(hours=2), T + timedelta(minutes=31))
    assert (later.summary["logins"], later.summary["renewals"]) == (0, 1)


async def test_a_401_fault_costs_one_renewal(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    await client.collect(T - WEEK, T)
    await sim.fault(mode="401", count=1)
    collection = await client.collect(T - WEEK, T)
    assert collection.summary["renewals"] == 1


async def test_close_never_raises(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    await client.collect(T - timedelta(hours=1), T)
    await sim.fault(mode="500")
    await client.close()
    down = client_for(sim, http)
    await down.close()  # never logged in: no request at all
    assert (await sim.requests())[LOGOUT] == 4  # 1 + HttpClient's retries, then given up


# --- errors ------------------------------------------------------------------------------


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(exc.__cause__), str(exc.__context__)):
        for secret in SECRETS:
            assert secret not in text


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_wrong_password_is_an_auth_error(sim: Sim, http: HttpClient, fmt: str) -> None:
    client = CommvaultClient(make_target(sim.url, password=DEMO_PASSWORD + "x", format=fmt), http)
    with pytest.raises(AuthError, match="Invalid Username or Password") as caught:
        await client.collect(T - WEEK, T)
    assert_no_secret(caught.value)
    assert (await sim.requests())[LOGIN] == 1
    assert JOB not in await sim.requests()


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize("form", ["errorCode", "errList", "error"])
async def test_errors_with_http_200(sim: Sim, http: HttpClient, fmt: str, form: str) -> None:
    await sim.post("/_sim/commvault/error", {"form": form, "code": 2, "message": "Database busy", "count": 1})
    client = client_for(sim, http, format=fmt)
    with pytest.raises(HTTPStatusError, match="Commvault error 2: Database busy") as caught:
        await client.collect(T - WEEK, T)
    assert caught.value.status == 200
    assert_no_secret(caught.value)
    assert (await client.collect(T - WEEK, T)).summary["runs"] > 300


async def test_an_auth_error_body_gets_one_fresh_session(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    await sim.post("/_sim/commvault/error", {"code": 5, "message": "Access denied", "count": 1})
    collection = await client.collect(T - WEEK, T)
    assert collection.summary["renewals"] == 1

    await sim.post("/_sim/commvault/error", {"form": "errList", "code": 5, "message": "Access denied"})
    with pytest.raises(AuthError, match="Commvault error 5"):
        await client.collect(T - WEEK, T)


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
@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_faults_become_collection_errors(
    sim: Sim, fault: dict[str, Any], error: type[CollectionError], fmt: str
) -> None:
    small = HttpClient(sim.url, sleep=no_sleep, max_body_bytes=1024 * 1024)
    try:
        client = CommvaultClient(make_target(sim.url, format=fmt), small)
        await client.collect(T - WEEK, T)  # logged in, so faults hit the job pages
        await sim.fault(**fault)
        with pytest.raises(error) as caught:
            await client.collect(T - WEEK, T)
        assert_no_secret(caught.value)
    finally:
        await small.close()


async def test_faults_at_login(sim: Sim, http: HttpClient) -> None:
    for mode, error in (("garbage", ParseError), ("401", AuthError), ("wrong_content_type", ParseError)):
        await sim.fault(mode=mode, count=1)
        with pytest.raises(error) as caught:
            await collect(sim, http)
        assert_no_secret(caught.value)


async def test_server_errors_are_retried_then_reported(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    await client.collect(T - WEEK, T)
    await sim.reset_requests()
    await sim.fault(mode="500")
    with pytest.raises(HTTPStatusError) as caught:
        await client.collect(T - WEEK, T)
    assert caught.value.status == 500
    assert (await sim.requests())[JOB] == 4  # 1 + HttpClient's 3 retries


async def test_transient_faults_are_survived(sim: Sim) -> None:
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    http = HttpClient(sim.url, sleep=record)
    try:
        await sim.fault(mode="429", retry_after=2, count=2)
        collection = await collect(sim, http)
        assert collection.summary["runs"] > 300
        assert delays == [2.0, 2.0]

        await sim.fault(mode="slow", delay=0.2, count=2)
        assert (await collect(sim, http)).summary["runs"] > 300
    finally:
        await http.close()


# --- configuration and options ----------------------------------------------------------


async def test_webconsole_base(sim: Sim) -> None:
    http = HttpClient(sim.root + "/webconsole/api/", sleep=no_sleep)
    try:
        client = CommvaultClient(make_target(sim.root + "/webconsole/api/"), http)
        collection = await client.collect(T - WEEK, T)
        await client.close()
    finally:
        await http.close()
    assert collection.summary["runs"] > 300
    requests = await sim.requests()
    assert requests["POST /webconsole/api/Login"] == 1
    assert requests["POST /webconsole/api/Logout"] == 1


@pytest.mark.parametrize(
    ("url", "options", "key"),
    [
        ("", {}, "url"),
        ("/api", {}, "url"),
        (BASE, {"format": "yaml"}, "format"),
        (BASE, {"job_types": ["Backup,Restore"]}, "job_types"),
    ],
)
async def test_bad_settings_are_config_errors(sim: Sim, http: HttpClient, url: str, options: Any, key: str) -> None:
    client = CommvaultClient(make_target(sim.root + url, **options), http)
    with pytest.raises(TargetConfigError, match=f"^{key}: "):
        await client.collect(T - WEEK, T)
    assert await sim.requests() == {}


async def test_job_types(sim: Sim, http: HttpClient) -> None:
    both = await collect(sim, http, job_types=["Backup", "Restore"])
    restores = [run for run in both.runs if run.job.job_type == "restore"]
    assert restores
    assert {run.job.job_name for run in restores} == {"WINTER/defaultBackupSet/default"}
    expected = expected_jobs(sim, T - WEEK, T, types=("Backup", "Restore"))
    assert ids(both.runs) == sorted(str(job.job_id) for job in expected)
    # No types: everything the server has.
    assert ids((await collect(sim, http, job_types=[])).runs) == ids(both.runs)


# --- incremental collection ---------------------------------------------------------------


async def test_incremental_collection_asks_for_less(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    first = await client.collect(T - WEEK, T)
    second = await client.collect(T - timedelta(hours=12), T)

    assert 0 < len(second.runs) < len(first.runs) / 4
    assert second.summary["pages"] == 1
    assert ids(second.runs) == sorted(str(j.job_id) for j in expected_jobs(sim, T - timedelta(hours=12), T))


async def test_runs_in_progress_finish_under_their_id(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    state = TargetState("commvault")
    before = await client.collect(state.since(T, WEEK), T)
    apply_collection(state, before, T, job_retention=timedelta(days=30))
    active = {r.run_id: r for r in before.runs if not r.status.finished}
    assert len(active) >= 11

    # Runs in progress do not hold the watermark back (some began 13 h ago):
    # Commvault lists them whatever the window, and they end after this poll.
    assert min(r.start or T for r in active.values()) < T - timedelta(hours=12)
    assert all(r.query_time == T for r in active.values())
    assert state.since(T, WEEK) >= T - timedelta(hours=2)

    later = T + timedelta(hours=27)
    await sim.advance((later - T).total_seconds())
    since = state.since(later, WEEK)
    after = {r.run_id: r for r in (await client.collect(since, later)).runs}

    for run_id, run in active.items():
        finished = after[run_id]
        assert finished.status.finished
        assert finished.start == run.start
        assert finished.end is not None
        assert T < finished.end <= later


async def test_polls_over_two_days_count_every_run_once(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    state = TargetState("commvault")
    now = T
    pages = []
    while now <= T + timedelta(days=2):
        collection = await client.collect(state.since(now, WEEK), now)
        apply_collection(state, collection, now, job_retention=timedelta(days=30))
        pages.append(collection.summary["pages"])
        now += timedelta(hours=3)
        await sim.advance(3 * 3600)
    end = now - timedelta(hours=3)

    expected = [
        job
        for job in sim.dataset.jobs(end)
        if job.visible and job.plan.job_type == "Backup" and job.finished(end) and job.ends >= T - WEEK - LOOKUP_MARGIN
    ]
    counted = sum(sum(job.runs_total.values()) for job in state.jobs.values())
    assert counted == len(expected)
    # (The state forgets ids too old for any later poll to return.)
    assert set(state.seen_runs) <= {str(job.job_id) for job in expected}
    # Incremental: after the first poll, a page or two each time.
    assert pages[0] >= 4
    assert max(pages[1:]) <= 2
    assert (await sim.requests())[LOGIN] == 1


async def test_server_clock_ahead_of_ours_loses_no_finished_run(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    first = set(ids((await client.collect(T - WEEK, T)).runs))
    await sim.reset_requests()
    await sim.advance(timedelta(days=1).total_seconds())
    ahead = T + timedelta(days=1)

    # Our clock still says T; the server's says a day later. Its Date header
    # tells, and the first page is asked for again with the right window.
    later = await client.collect(T - timedelta(hours=1), T)

    expected = {
        str(job.job_id)
        for job in sim.dataset.jobs(ahead)
        if job.visible and job.plan.job_type == "Backup" and job.finished(ahead) and job.ends >= T - timedelta(hours=1)
    }
    found = set(ids(later.runs))
    assert expected <= found
    assert expected - first
    assert 86390 <= later.summary["server_ahead_seconds"] <= 86400
    assert later.summary["pages"] >= 2
    # The token idled out during the day: one more request, refused with a 401.
    assert later.summary["renewals"] == 1
    assert (await sim.requests())[JOB] == later.summary["pages"] + 1
    # Known from now on: no page asked twice.
    again = await client.collect(T - timedelta(hours=1), T)
    assert ids(again.runs) == ids(later.runs)


async def test_server_clock_days_behind_ours_counts_every_run_once(sim: Sim, http: HttpClient) -> None:
    # Our clock is 3 days ahead of the server's. `since` comes from the
    # server's run times, so the window must be counted back from the
    # server's now: counted back from ours it would reach 3 days further,
    # past the run ids the state still remembers, and count them again.
    client = client_for(sim, http)
    state = TargetState("commvault")
    skew = timedelta(days=3)
    server_now = T
    new_per_poll = []
    distinct: set[str] = set()
    while server_now <= T + timedelta(days=2):
        ours = server_now + skew
        collection = await client.collect(state.since(ours, WEEK), ours)
        distinct |= {run.run_id for run in collection.runs if run.status.finished}
        new_per_poll.append(apply_collection(state, collection, ours, job_retention=timedelta(days=30)).new_runs)
        server_now += timedelta(hours=3)
        await sim.advance(3 * 3600)
    end = server_now - timedelta(hours=3)

    assert -skew.total_seconds() - 10 <= collection.summary["server_ahead_seconds"] <= -skew.total_seconds() + 10
    finished = {
        str(job.job_id)
        for job in sim.dataset.jobs(end)
        if job.visible and job.plan.job_type == "Backup" and job.finished(end)
    }
    counted = sum(sum(job.runs_total.values()) for job in state.jobs.values())
    # Every distinct finished run counted, none twice.
    assert counted == len(distinct)
    assert distinct <= finished
    assert all(n < 40 for n in new_per_poll[1:]), new_per_poll


async def test_undocumented_status_is_logged_once(
    aiohttp_server: Callable[..., Awaitable[TestServer]], caplog: pytest.LogCaptureFixture
) -> None:
    async def login(request: web.Request) -> web.Response:
        return web.json_response({"token": "QSDK 00ff"})

    async def jobs(request: web.Request) -> web.Response:
        assert request.headers["Authtoken"] == "QSDK 00ff"
        job = {"jobId": 9, "status": "Frobnicated", "jobType": "Backup", "jobStartTime": 1700000000}
        return web.json_response({"totalRecordsWithoutPaging": 1, "jobs": [{"jobSummary": job}]})

    app = web.Application()
    app.router.add_post(BASE + "/Login", login)
    app.router.add_get(BASE + "/Job", jobs)
    server = await aiohttp_server(app)
    url = str(server.make_url(BASE))
    http = HttpClient(url, sleep=no_sleep)
    try:
        client = CommvaultClient(make_target(url), http)
        with caplog.at_level(logging.WARNING, logger="exporter.vendors.commvault"):
            for _ in range(2):
                (run,) = (await client.collect(T - WEEK, T)).runs
        assert run.status is Status.QUEUED
        warnings = [r.getMessage() for r in caplog.records if r.name == "exporter.vendors.commvault"]
        assert len(warnings) == 1
        assert "'Frobnicated' taken as queued" in warnings[0]
    finally:
        await http.close()
