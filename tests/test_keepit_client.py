"""KeepitClient over real HTTP against the Keepit simulator on loopback."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from exporter.config import Secret, TargetConfig
from exporter.model import Collection, Status
from exporter.simulators.keepit import DATASET, DEMO_PASSWORD, DEMO_USERNAME, KeepitDataset, create_app
from exporter.state import TargetState, apply_collection
from exporter.vendors.base import (
    AuthError,
    CollectionError,
    HttpClient,
    HTTPStatusError,
    ParseError,
    TargetConfigError,
)
from exporter.vendors.keepit import KeepitClient
from tests.simctl import SimControl, no_sleep

# A moment at which the dataset has runs of every status, two of them in progress.
T = datetime(2025, 3, 10, 17, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
COLLECTED = {"Microsoft 365 Backup", "Google Workspace", "Salesforce Production", "Jira Cloud"}
RANGE = "PUT /users/{acct}/devices/{dev}/history/range"
JOBS = "PUT /users/{acct}/devices/{dev}/jobs"
SECRETS = (DEMO_PASSWORD, base64.b64encode(f"{DEMO_USERNAME}:{DEMO_PASSWORD}".encode()).decode())


class Sim(SimControl):
    @property
    def url(self) -> str:
        return self.root + "/"

    @property
    def dataset(self) -> KeepitDataset:
        return self.app[DATASET]


@pytest.fixture
async def sim(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Sim]:
    app = create_app(seed=1, now=T)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as control:
        yield Sim(server, app, control)


@pytest.fixture
async def http(sim: Sim) -> AsyncIterator[HttpClient]:
    client = HttpClient(sim.url, sleep=no_sleep)
    yield client
    await client.close()


def make_target(url: str, password: str = DEMO_PASSWORD, **options: Any) -> TargetConfig:
    return TargetConfig(
        name="keepit-test",
        vendor="keepit",
        url=url,
        username=DEMO_USERNAME,
        password=Secret(password),
        lookback=WEEK,
        options=options,
    )


async def collect(sim: Sim, http: HttpClient, **options: Any) -> Collection:
    return await KeepitClient(make_target(sim.url, **options), http).collect(T - WEEK, T)


async def test_collection_has_every_status_and_skips_unusable_connectors(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http)

    statuses = {run.status for run in collection.runs}
    assert statuses == {Status.SUCCESS, Status.FAILED, Status.CANCELLED, Status.RUNNING, Status.QUEUED}
    # The inaccessible, the deleted and the system connector are skipped; the
    # nested cloud is no connector; the stray space in a name is gone.
    assert {job.job_name for job in collection.jobs} == COLLECTED
    assert {job.job_type for job in collection.jobs} == {"backup"}
    assert {run.job.job_name for run in collection.runs} == COLLECTED
    assert {run.job.job_type for run in collection.runs} == {"backup", "restore", "srestore"}
    assert collection.summary["connectors"] == 4
    assert len({run.run_id for run in collection.runs}) == len(collection.runs)
    assert all(run.end is not None for run in collection.runs if run.status.finished)

    running = [run for run in collection.runs if run.status is Status.RUNNING]
    assert all(run.progress is not None and 0 < run.progress < 1 for run in running)
    reasons = {run.reason for run in collection.runs if run.status is Status.FAILED}
    assert "api_limit_exceeded: Salesforce API request limit exceeded" in reasons
    assert any(r is not None and r.startswith("bad_token: ") for r in reasons)


async def test_demo_scenarios(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http)

    def backups(name: str) -> list[Any]:
        runs = [r for r in collection.runs if r.job.job_name == name and r.job.job_type == "backup"]
        return sorted((r for r in runs if r.status.finished), key=lambda r: r.end)

    assert backups("Google Workspace")[-1].status is Status.FAILED
    assert backups("Microsoft 365 Backup")[-1].status is Status.SUCCESS
    sforce = backups("Salesforce Production")
    last_success = max(r.end for r in sforce if r.status is Status.SUCCESS)
    assert T - last_success > timedelta(days=2, hours=12)
    jira = [s for s in collection.snapshots if s.job.job_name == "Jira Cloud"]
    assert jira[-1].size_bytes is not None
    assert jira[-2].size_bytes is not None
    assert jira[-1].size_bytes / jira[-2].size_bytes < 0.5


async def test_connectors_filter_by_name_and_guid(sim: Sim, http: HttpClient, caplog: pytest.LogCaptureFixture) -> None:
    sforce = next(d for d in sim.dataset.devices if d.name == "Salesforce Production")
    target = make_target(sim.url, connectors=["Jira Cloud", sforce.guid, "Dynamics 365", "nope"])
    client = KeepitClient(target, http)
    collection = await client.collect(T - WEEK, T)
    await client.collect(T - WEEK, T)

    assert {job.job_name for job in collection.jobs} == {"Jira Cloud", "Salesforce Production"}
    assert {run.job.job_name for run in collection.runs} == {"Jira Cloud", "Salesforce Production"}
    # "Dynamics 365" exists but is inaccessible, so it matches nothing collectable.
    assert collection.summary["connectors_unmatched"] == 2
    assert collection.summary["connectors"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "exporter.vendors.keepit"]
    assert len(warnings) == 1  # not once per poll
    assert "'Dynamics 365', 'nope'" in warnings[0]


async def test_snapshots_are_paged_completely(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http)

    requests = await sim.requests()
    assert requests[RANGE] == collection.summary["snapshot_pages"]
    # Three pages for the connector with hourly partial snapshots, one for each other.
    assert requests[RANGE] >= 3 + 3
    assert {s.job.job_name for s in collection.snapshots} == COLLECTED
    for device in sim.dataset.devices:
        if device.name.strip() not in COLLECTED:
            continue
        held = [s for s in sim.dataset.snapshots(device, T) if s.tstamp >= T - WEEK]
        got = [s for s in collection.snapshots if s.job.job_name == device.name.strip()]
        assert [(s.timestamp, s.size_bytes, s.complete) for s in got] == [
            (s.tstamp, s.size, s.type == "c") for s in held
        ]
    o365 = [s for s in collection.snapshots if s.job.job_name == "Microsoft 365 Backup"]
    assert len(o365) > 2 * 99
    assert {s.complete for s in o365} == {True, False}


async def test_job_paging_returns_every_run(sim: Sim, http: HttpClient) -> None:
    whole = await collect(sim, http)
    pages_whole = (await sim.requests())[JOBS]

    paged = await KeepitClient(make_target(sim.url), http, job_page_limit=7).collect(T - WEEK, T)

    assert pages_whole == 8  # finished + active, one page each, for 4 connectors
    assert (await sim.requests())[JOBS] - pages_whole > 20
    assert sorted(r.run_id for r in paged.runs) == sorted(r.run_id for r in whole.runs)
    assert {r.run_id: r for r in paged.runs} == {r.run_id: r for r in whole.runs}


async def test_incremental_collection_asks_for_less(sim: Sim, http: HttpClient) -> None:
    client = KeepitClient(make_target(sim.url), http)
    first = await client.collect(T - WEEK, T)
    second = await client.collect(T - timedelta(hours=12), T)

    assert 0 < len(second.runs) < len(first.runs) / 4
    assert {r.run_id for r in second.runs} <= {r.run_id for r in first.runs}
    assert len(second.snapshots) < len(first.snapshots)
    # The account is discovered once per client.
    assert (await sim.requests())["GET /users/"] == 1


async def test_run_in_progress_finishes_and_keeps_its_id(sim: Sim, http: HttpClient) -> None:
    client = KeepitClient(make_target(sim.url), http)
    state = TargetState("keepit")
    before = await client.collect(state.since(T, WEEK), T)
    apply_collection(state, before, T, job_retention=timedelta(days=30))
    running = {r.run_id: r for r in before.runs if r.status is Status.RUNNING}
    assert running

    await sim.advance(timedelta(hours=13).total_seconds())
    later = T + timedelta(hours=13)
    # The next poll starts where the state says: before the runs in progress
    # began (Keepit filters on <start>), so it finds them finished.
    since = state.since(later, WEEK)
    assert since <= min(r.query_time or T for r in running.values())
    after = {r.run_id: r for r in (await client.collect(since, later)).runs}

    for run_id, run in running.items():
        assert run_id in after
        finished = after[run_id]
        assert finished.status.finished
        assert finished.start == run.start
        assert finished.end is not None
        assert T < finished.end <= later
        assert finished.start is not None
        assert finished.start < T


async def test_configured_account_skips_discovery(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http, account=sim.dataset.account)
    assert collection.summary["connectors"] == 4
    assert "GET /users/" not in await sim.requests()


async def test_unknown_configured_account_is_a_config_error(sim: Sim, http: HttpClient) -> None:
    with pytest.raises(TargetConfigError, match="not found"):
        await collect(sim, http, account="zzzzzz-zzzzzz-zzzzzz")
    with pytest.raises(TargetConfigError):
        await collect(sim, http, account="../../admin")


async def test_missing_credentials_is_a_config_error(sim: Sim, http: HttpClient) -> None:
    target = TargetConfig(name="k", vendor="keepit", url=sim.url, username=DEMO_USERNAME)
    with pytest.raises(TargetConfigError):
        await KeepitClient(target, http).collect(T - WEEK, T)


# --- failures ----------------------------------------------------------------------


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(exc.__cause__), str(exc.__context__)):
        for secret in SECRETS:
            assert secret not in text


async def test_wrong_password_is_an_auth_error(sim: Sim, http: HttpClient) -> None:
    client = KeepitClient(make_target(sim.url, password=DEMO_PASSWORD + "x"), http)
    with pytest.raises(AuthError) as caught:
        await client.collect(T - WEEK, T)
    assert_no_secret(caught.value)
    # One retry after the 401 (HttpClient's re-login), then the error.
    assert (await sim.requests())["GET /users/"] == 2


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
    sim: Sim, http: HttpClient, fault: dict[str, Any], error: type[CollectionError]
) -> None:
    small = HttpClient(sim.url, sleep=no_sleep, max_body_bytes=1024 * 1024)
    try:
        client = KeepitClient(make_target(sim.url), small)
        await client.collect(T - WEEK, T)  # discovers the account, so faults hit later calls too
        await sim.fault(**fault)
        with pytest.raises(error) as caught:
            await client.collect(T - WEEK, T)
        assert_no_secret(caught.value)
    finally:
        await small.close()


async def test_server_errors_are_retried_then_reported(sim: Sim, http: HttpClient) -> None:
    await sim.fault(mode="500")
    with pytest.raises(HTTPStatusError) as caught:
        await collect(sim, http)
    assert caught.value.status == 500
    assert (await sim.requests())["GET /users/"] == 4  # 1 + HttpClient's 3 retries
    assert_no_secret(caught.value)


async def test_transient_faults_are_survived(sim: Sim) -> None:
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    http = HttpClient(sim.url, sleep=record)
    try:
        await sim.fault(mode="429", retry_after=2, count=2)
        collection = await collect(sim, http)
        assert collection.summary["connectors"] == 4
        assert delays == [2.0, 2.0]

        await sim.fault(mode="slow", delay=0.2, count=3)
        assert (await collect(sim, http)).summary["connectors"] == 4
    finally:
        await http.close()


async def test_a_counted_fault_clears_itself(sim: Sim, http: HttpClient) -> None:
    client = KeepitClient(make_target(sim.url), http)
    await sim.fault(mode="garbage", count=1)
    with pytest.raises(ParseError):
        await client.collect(T - WEEK, T)
    assert (await client.collect(T - WEEK, T)).summary["connectors"] == 4


async def test_vendor_clock_ahead_of_ours_loses_no_finished_run(sim: Sim, http: HttpClient) -> None:
    client = KeepitClient(make_target(sim.url), http)
    first = {r.run_id for r in (await client.collect(T - WEEK, T)).runs}
    await sim.advance(timedelta(days=1).total_seconds())
    ahead = T + timedelta(days=1)

    # Our clock still says T; the vendor has a day of runs more.
    later = await client.collect(T - timedelta(hours=1), T)

    expected = {
        job.guid
        for device in sim.dataset.devices
        for job in sim.dataset.jobs(device, ahead)
        if job.finished(ahead) and job.scheduled >= T - timedelta(hours=1)
    }
    found = {r.run_id for r in later.runs if r.status.finished}
    assert expected <= found
    assert expected - first
