"""AvePointClient over real HTTP against the AvePoint simulator on loopback."""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.config import ConfigError, Secret, TargetConfig, describe_targets, parse_config
from exporter.model import Collection, JobKey, Run, Status
from exporter.simulators.avepoint import (
    CURRENT_PATH,
    DATASET,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    OBJECT_TYPES,
    OLDER_PATH,
    TOKENS,
    AvePointDataset,
    create_app,
    demo_target,
)
from exporter.state import TargetState, apply_collection
from exporter.vendors.avepoint import (
    DEFAULT_SERVICES,
    JOB_TYPES,
    SERVICES,
    SPEC,
    AvePointClient,
)
from exporter.vendors.base import (
    AuthError,
    CollectionError,
    HttpClient,
    HTTPStatusError,
    ParseError,
    TargetConfigError,
)
from tests.simctl import SimControl, no_sleep

# A moment at which the dataset has runs of every state, two of them in progress.
T = datetime(2025, 3, 10, 17, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
TOKEN = "POST /connect/token"
CURRENT = f"GET {CURRENT_PATH}"
OLDER = f"GET {OLDER_PATH}"
ALL_SERVICES = tuple(SERVICES)
ALL_TYPES = tuple(JOB_TYPES)


class Sim(SimControl):
    @property
    def url(self) -> str:
        return self.root

    @property
    def dataset(self) -> AvePointDataset:
        return self.app[DATASET]

    async def expire_tokens(self, after: int) -> None:
        await self.post("/_sim/avepoint/expire", {"after": after})

    def expected(
        self,
        since: datetime,
        services: tuple[str, ...] = DEFAULT_SERVICES,
        job_types: tuple[str, ...] = ("backup",),
        now: datetime = T,
        location: str | None = None,
    ) -> dict[str, JobKey]:
        """Run id -> job, of what the client should find, straight from the dataset."""
        return {
            run.id: JobKey(service, job_type)
            for service in services
            for job_type in job_types
            for run in self.dataset.select(
                now, object_type=SERVICES[service], job_type=JOB_TYPES[job_type], start=since, location=location
            )
        }


StartSim = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def start_sim(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[StartSim]:
    sessions: list[aiohttp.ClientSession] = []

    async def start(**switches: Any) -> Sim:
        app = create_app(seed=1, now=T, **switches)
        server = await aiohttp_server(app)
        sessions.append(aiohttp.ClientSession())
        return Sim(server, app, sessions[-1])

    yield start
    for session in sessions:
        await session.close()


@pytest.fixture
async def sim(start_sim: StartSim) -> Sim:
    return await start_sim()


MakeHttp = Callable[..., HttpClient]


@pytest.fixture
async def make_http() -> AsyncIterator[MakeHttp]:
    clients: list[HttpClient] = []

    def make(url: str, **kwargs: Any) -> HttpClient:
        clients.append(HttpClient(url, **{"sleep": no_sleep, **kwargs}))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def http(sim: Sim, make_http: MakeHttp) -> HttpClient:
    return make_http(sim.url)


def make_target(url: str, secret: str = DEMO_CLIENT_SECRET, **options: Any) -> TargetConfig:
    return TargetConfig(
        name="avepoint-test",
        vendor="avepoint",
        url=url,
        lookback=WEEK,
        options={
            "token_url": url + "/connect/token",
            "client_id": DEMO_CLIENT_ID,
            "client_secret": Secret(secret),
            **options,
        },
    )


def client_for(sim: Sim, http: HttpClient, **options: Any) -> AvePointClient:
    page_size = options.pop("page_size", None)
    clock = options.pop("clock", None)
    extra: dict[str, Any] = {"clock": clock} if clock else {}
    return AvePointClient(make_target(sim.url, **options), http, page_size=page_size, **extra)


async def collect(sim: Sim, http: HttpClient, **options: Any) -> Collection:
    return await client_for(sim, http, **options).collect(T - WEEK, T)


def by_id(collection: Collection) -> dict[str, Run]:
    runs = {run.run_id: run for run in collection.runs}
    assert len(runs) == len(collection.runs), "a run came twice"
    return runs


def pages_for(sim: Sim, page_size: int, since: datetime = T - WEEK) -> int:
    """Pages the default services' backups take at `page_size` (100 at most on the server)."""
    size = min(page_size, 100)
    counts = [len(sim.expected(since, services=(s,))) for s in DEFAULT_SERVICES]
    return sum(max(1, math.ceil(n / size)) for n in counts)


def secrets_of(sim: Sim) -> list[str]:
    tokens = list(sim.app[TOKENS].tokens)
    return [DEMO_CLIENT_SECRET, urllib.parse.quote_plus(DEMO_CLIENT_SECRET), *tokens]


def assert_no_secret(sim: Sim, exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(exc.__cause__), str(exc.__context__)):
        for secret in secrets_of(sim):
            assert secret not in text


# --- what is collected -----------------------------------------------------------------


def test_simulator_and_client_agree_on_the_documented_enums() -> None:
    assert {number: name for name, number in SERVICES.items()} == dict(OBJECT_TYPES)


async def test_every_state_labelled_by_service_and_job_type(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http, services=list(ALL_SERVICES), job_types=list(ALL_TYPES))

    runs = by_id(collection)
    expected = sim.expected(T - WEEK, ALL_SERVICES, ALL_TYPES)
    assert {run_id: run.job for run_id, run in runs.items()} == expected
    assert {run.status for run in runs.values()} == {Status.SUCCESS, Status.WARNING, Status.FAILED, Status.RUNNING}
    assert {run.job.job_type for run in runs.values()} == set(ALL_TYPES)
    # Every configured service is a backup job, runs or not.
    assert set(collection.jobs) == {JobKey(service, "backup") for service in ALL_SERVICES}
    assert collection.summary["queries"] == len(ALL_SERVICES) * len(ALL_TYPES)
    assert collection.summary["runs"] == len(runs)
    for run in runs.values():
        source = next(r for r in sim.dataset.runs(T) if r.id == run.run_id)
        assert run.start == source.started
        if run.status.finished:
            assert run.end == source.ends
            assert run.duration is not None
            # Three decimals of hours: within 1.8 s of the true duration.
            assert abs(run.duration - (source.ends - source.started).total_seconds()) <= 1.8 + 1e-9
            assert run.items["total"] == run.items["successful"] + run.items["failed"] + run.items["skipped"]
        else:
            assert run.end is None
            assert run.duration_seconds is None
        if run.status in (Status.FAILED, Status.WARNING):
            assert run.reason
            assert len(run.reason) <= 120


async def test_demo_scenarios(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http, services=list(ALL_SERVICES))

    def backups(service: str) -> list[Run]:
        runs = [r for r in collection.runs if r.job == JobKey(service, "backup") and r.status.finished]
        return sorted(runs, key=lambda r: r.end or T)

    onedrive = backups("OneDrive")[-1]
    assert onedrive.status is Status.FAILED
    assert onedrive.reason is not None
    assert onedrive.reason.startswith("The app profile consent was revoked.")
    groups = backups("Microsoft 365 Groups")
    last_success = max(r.end for r in groups if r.status is Status.SUCCESS and r.end)
    assert T - last_success > timedelta(days=3)
    sharepoint = backups("SharePoint Online")[-1]
    assert sharepoint.status is Status.WARNING
    assert sharepoint.reason is not None
    assert "checked out" in sharepoint.reason
    for healthy in ("Exchange Online", "Teams", "Public Folder", "Power BI"):
        assert backups(healthy)[-1].status is Status.SUCCESS
    assert any(r.status is Status.RUNNING for r in collection.runs if r.job.job_name == "Teams")


@pytest.mark.parametrize("path", [CURRENT_PATH, OLDER_PATH])
@pytest.mark.parametrize("detail_keys", ["count", "number"])
@pytest.mark.parametrize("paging", ["absolute", "relative", "index"])
async def test_both_paths_shapes_spellings_and_paging_modes(
    start_sim: StartSim, make_http: MakeHttp, path: str, detail_keys: str, paging: str
) -> None:
    reference = await start_sim()
    baseline = by_id(await collect(reference, make_http(reference.url)))
    sim = await start_sim(detail_keys=detail_keys, paging=paging)

    runs = by_id(await collect(sim, make_http(sim.url), jobs_path=path))

    assert runs == baseline
    assert {run_id: run.job for run_id, run in runs.items()} == sim.expected(T - WEEK)
    assert all(len(run.items) == 4 for run in runs.values())
    requests = await sim.requests()
    # Exchange Online's backups take three pages of 100; every other service one.
    assert requests == {TOKEN: 1, f"GET {path}": 3 + 4}
    assert pages_for(sim, 100) == 7


async def test_many_pages_lose_and_repeat_nothing(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http, page_size=10)

    assert {run_id: run.job for run_id, run in by_id(collection).items()} == sim.expected(T - WEEK)
    pages = pages_for(sim, 10)
    assert pages > 30
    assert (await sim.requests())[CURRENT] == pages == collection.summary["pages"]
    assert collection.summary["requests"] == pages + 1


async def test_server_capping_page_size_loses_nothing(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http, page_size=500)
    assert set(by_id(collection)) == set(sim.expected(T - WEEK))
    assert (await sim.requests())[CURRENT] == pages_for(sim, 500) == 7


@pytest.mark.parametrize("paging", ["index", "absolute"])
async def test_page_index_counted_from_one(start_sim: StartSim, make_http: MakeHttp, paging: str) -> None:
    sim = await start_sim(page_base=1, paging=paging)
    collection = await collect(sim, make_http(sim.url), page_size=10)

    assert set(by_id(collection)) == set(sim.expected(T - WEEK))
    if paging == "index":
        # One repeated first page per query with more than one page.
        multi = sum(1 for s in DEFAULT_SERVICES if len(sim.expected(T - WEEK, services=(s,))) > 10)
        assert collection.summary["repeated_first_pages"] == multi
        assert (await sim.requests())[CURRENT] == pages_for(sim, 10) + multi
    else:
        # Links built by the server need no guessing.
        assert "repeated_first_pages" not in collection.summary
        assert (await sim.requests())[CURRENT] == pages_for(sim, 10)


@pytest.mark.parametrize("paging", ["stuck", "loop"])
async def test_server_repeating_a_page_is_a_parse_error(start_sim: StartSim, make_http: MakeHttp, paging: str) -> None:
    sim = await start_sim(paging=paging)
    with pytest.raises(ParseError, match=r"Exchange Online backup jobs: page [23] repeats runs already fetched"):
        await collect(sim, make_http(sim.url))
    # Exchange Online's first query: its first page, then at most two more.
    assert (await sim.requests())[CURRENT] <= 3


async def test_next_link_cycle_of_empty_pages_is_a_parse_error(start_sim: StartSim, make_http: MakeHttp) -> None:
    sim = await start_sim(paging="loop")
    with pytest.raises(ParseError, match="nextLink repeats a page"):
        await collect(sim, make_http(sim.url), services=["Teams"], job_types=["deletion"])
    # The first page, then the page its link names, whose link names itself.
    assert (await sim.requests())[CURRENT] == 2


def test_next_links_only_to_the_configured_host() -> None:
    http = HttpClient("https://graph-us.avepointonlineservices.com")
    client = AvePointClient(make_target("https://graph-us.avepointonlineservices.com"), http)
    own = "https://graph-us.avepointonlineservices.com/backup/m365/cloudbackupjobs?pageIndex=1"
    assert client.own_link(own) == own
    assert client.own_link("/backup/m365/jobs?pageIndex=2") == "/backup/m365/jobs?pageIndex=2"
    for other in (
        "https://graph-eu.avepointonlineservices.com/backup/m365/jobs?pageIndex=1",
        "http://graph-us.avepointonlineservices.com/backup/m365/jobs",
        "https://graph-us.avepointonlineservices.com:8443/backup/m365/jobs",
    ):
        with pytest.raises(ParseError, match="another host"):
            client.own_link(other)


async def test_location_is_passed_through(sim: Sim, http: HttpClient) -> None:
    eur = await collect(sim, http, location="EUR", services=list(ALL_SERVICES))
    assert {r.run_id: r.job for r in eur.runs} == sim.expected(T - WEEK, ALL_SERVICES, location="EUR")
    assert {r.job.job_name for r in eur.runs} == {"Teams", "Power BI"}

    primary = await collect(sim, http, location="PrimaryGeoLocation")
    assert {r.run_id for r in primary.runs} == set(sim.expected(T - WEEK, location="NAM"))

    # A code the API does not know: its HTTP 400, reported as such.
    with pytest.raises(HTTPStatusError) as caught:
        await collect(sim, http, location="MARS")
    assert caught.value.status == 400


async def test_incremental_collection_asks_for_less(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    first = await client.collect(T - WEEK, T)
    second = await client.collect(T - timedelta(hours=12), T)

    assert 0 < len(second.runs) < len(first.runs) / 4
    assert {r.run_id for r in second.runs} <= {r.run_id for r in first.runs}
    assert second.summary["requests"] == len(DEFAULT_SERVICES)  # one page each, the token reused


async def test_run_in_progress_finishes_and_keeps_its_id(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    state = TargetState("avepoint")
    before = await client.collect(state.since(T, WEEK), T)
    apply_collection(state, before, T, job_retention=timedelta(days=30))
    running = {r.run_id: r for r in before.runs if r.status is Status.RUNNING}
    assert running

    await sim.advance(timedelta(hours=13).total_seconds())
    later = T + timedelta(hours=13)
    since = state.since(later, WEEK)
    assert since <= min(r.start or T for r in running.values())
    after = by_id(await client.collect(since, later))

    for run_id, run in running.items():
        finished = after[run_id]
        assert finished.status.finished
        assert finished.job == run.job
        assert finished.start == run.start
        assert finished.end is not None
        assert T < finished.end <= later


# --- tokens ----------------------------------------------------------------------------


async def test_token_is_reused(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    for _ in range(3):
        await client.collect(T - WEEK, T)
    assert (await sim.requests())[TOKEN] == 1


async def test_token_is_renewed_shortly_before_it_expires(sim: Sim, http: HttpClient) -> None:
    now = [1000.0]
    client = client_for(sim, http, clock=lambda: now[0])
    await client.collect(T - WEEK, T)
    # expires_in 3600; renewed in its last minute, not before.
    now[0] += 3600 - 61
    await client.collect(T - WEEK, T)
    assert (await sim.requests())[TOKEN] == 1
    now[0] += 1
    await client.collect(T - WEEK, T)
    assert (await sim.requests())[TOKEN] == 2
    assert "401" not in http.stats.by_code


async def test_short_lived_tokens_are_renewed_early(start_sim: StartSim, make_http: MakeHttp) -> None:
    sim = await start_sim(token_lifetime=30)
    now = [0.0]
    http = make_http(sim.url)
    client = client_for(sim, http, clock=lambda: now[0])
    await client.collect(T - WEEK, T)
    now[0] = 26.0  # a tenth of the lifetime before it ends
    await client.collect(T - WEEK, T)
    assert (await sim.requests())[TOKEN] == 1
    now[0] = 27.0
    await client.collect(T - WEEK, T)
    assert (await sim.requests())[TOKEN] == 2


async def test_token_expired_on_the_server_is_fetched_again(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    await client.collect(T - WEEK, T)
    # Two hours pass on the vendor's clock, none on ours: the server says 401.
    await sim.advance(2 * 3600)
    later = await client.collect(T - WEEK, T + timedelta(hours=2))

    assert set(by_id(later)) == set(sim.expected(T - WEEK, now=T + timedelta(hours=2)))
    assert (await sim.requests())[TOKEN] == 2
    assert http.stats.by_code["401"] == 1


@pytest.mark.parametrize("after", [0, 5, 20])
async def test_token_revoked_mid_paging_loses_and_repeats_nothing(sim: Sim, make_http: MakeHttp, after: int) -> None:
    http = make_http(sim.url)
    client = client_for(sim, http, page_size=10)
    baseline = by_id(await client.collect(T - WEEK, T))
    # The token is revoked `after` requests into the next collection.
    await sim.expire_tokens(after)
    runs = by_id(await client.collect(T - WEEK, T))

    assert runs == baseline
    requests = await sim.requests()
    assert requests[TOKEN] == 2
    assert requests[CURRENT] == 2 * pages_for(sim, 10) + 1  # the refused request, repeated
    assert http.stats.by_code["401"] == 1


async def test_wrong_secret_is_an_auth_error_without_the_secret(sim: Sim, http: HttpClient) -> None:
    client = AvePointClient(make_target(sim.url, secret=DEMO_CLIENT_SECRET[:-1]), http)
    with pytest.raises(AuthError, match="invalid_client") as caught:
        await client.collect(T - WEEK, T)
    assert_no_secret(sim, caught.value)
    assert "client_secret" in str(caught.value)
    # A refusal is not retried.
    assert await sim.requests() == {TOKEN: 1}


async def test_unknown_scope_is_an_auth_error(sim: Sim, http: HttpClient) -> None:
    with pytest.raises(AuthError, match="invalid_scope"):
        await collect(sim, http, scope="backup.graph.all")


async def test_token_without_job_scope_is_an_auth_error(sim: Sim, http: HttpClient) -> None:
    with pytest.raises(AuthError, match="HTTP 403") as caught:
        await collect(sim, http, scope="microsoft365backup.settings.read.all")
    assert_no_secret(sim, caught.value)


async def test_several_scopes_in_one_token(sim: Sim, http: HttpClient) -> None:
    scope = "microsoft365backup.jobInfo.read.all  microsoft365backup.settings.read.all"
    assert (await collect(sim, http, scope=scope)).summary["runs"] > 0


# --- faults ----------------------------------------------------------------------------


async def test_retry_after_of_429_is_honoured(sim: Sim, make_http: MakeHttp) -> None:
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    http = make_http(sim.url, sleep=record)
    client = client_for(sim, http)
    # The first two requests: the token endpoint, then its retry.
    await sim.fault(mode="429", retry_after=7, count=2)
    first = await client.collect(T - WEEK, T)
    assert delays == [7.0, 7.0]
    requests = await sim.requests()
    assert requests[TOKEN] == 3

    # Mid-paging, on the jobs endpoint.
    await sim.fault(mode="429", retry_after=3, count=1)
    second = await client.collect(T - WEEK, T)
    assert delays == [7.0, 7.0, 3.0]
    assert by_id(second) == by_id(first)
    assert http.stats.by_code["429"] == 3


async def test_retry_after_beyond_the_limit_fails_at_once(sim: Sim, http: HttpClient) -> None:
    await sim.fault(mode="503", retry_after=600)
    with pytest.raises(HTTPStatusError, match="no time left") as caught:
        await collect(sim, http)
    assert caught.value.status == 503
    assert await sim.requests() == {TOKEN: 1}


@pytest.mark.parametrize("where", ["token", "jobs"])
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
    sim: Sim, make_http: MakeHttp, where: str, fault: dict[str, Any], error: type[CollectionError]
) -> None:
    http = make_http(sim.url, max_body_bytes=1024 * 1024)
    client = client_for(sim, http)
    if where == "jobs":
        await client.collect(T - WEEK, T)  # the token is cached: the fault hits the jobs endpoint
    await sim.fault(**fault)
    with pytest.raises(error) as caught:
        await client.collect(T - WEEK, T)
    assert_no_secret(sim, caught.value)
    if where == "token":
        assert set(await sim.requests()) == {TOKEN}


async def test_server_errors_are_retried_then_reported(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    await client.collect(T - WEEK, T)
    await sim.control.delete(sim.server.make_url("/_sim/requests"))
    await sim.fault(mode="500")
    with pytest.raises(HTTPStatusError) as caught:
        await client.collect(T - WEEK, T)
    assert caught.value.status == 500
    assert await sim.requests() == {CURRENT: 4}  # 1 + HttpClient's 3 retries


async def test_transient_faults_are_survived(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    baseline = by_id(await client.collect(T - WEEK, T))
    for fault in ({"mode": "500", "count": 2}, {"mode": "slow", "delay": 0.2, "count": 2}, {"mode": "401", "count": 1}):
        await sim.fault(**fault)
        assert by_id(await client.collect(T - WEEK, T)) == baseline


async def test_a_counted_fault_clears_itself(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    await sim.fault(mode="garbage", count=1)
    with pytest.raises(ParseError):
        await client.collect(T - WEEK, T)
    assert (await client.collect(T - WEEK, T)).summary["runs"] > 0


async def test_close_never_raises(sim: Sim, http: HttpClient) -> None:
    client = client_for(sim, http)
    await client.close()
    await client.collect(T - WEEK, T)
    await client.close()


# --- configuration -------------------------------------------------------------------


def test_config_keys_defaults_and_secret_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(DEMO_CLIENT_SECRET + "\n", encoding="utf-8")
    text = (
        "targets:\n"
        "  - name: avepoint-us\n"
        "    vendor: avepoint\n"
        "    url: https://graph-us.avepointonlineservices.com\n"
        f"    client_id: {DEMO_CLIENT_ID}\n"
        "    client_secret_file: secret\n"
    )
    config = parse_config(text, "test.yml", environ={}, vendors={"avepoint": SPEC}, base_dir=tmp_path)
    (target,) = config.targets
    assert target.username is None
    assert target.password is None
    assert target.options["client_secret"] == Secret(DEMO_CLIENT_SECRET)
    assert target.options["token_url"] == "https://identity.avepointonlineservices.com/connect/token"
    assert target.options["scope"] == "microsoft365backup.jobInfo.read.all"
    assert target.options["jobs_path"] == "/backup/m365/cloudbackupjobs"
    assert target.options["services"] == list(DEFAULT_SERVICES)
    assert target.options["job_types"] == ["backup"]
    assert "location" not in target.options
    assert DEMO_CLIENT_SECRET not in describe_targets(config)
    assert "client_secret=<secret>" in describe_targets(config)


def test_config_requires_client_credentials() -> None:
    text = "targets:\n  - {name: a, vendor: avepoint, url: 'https://graph-us.avepointonlineservices.com'}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yml", environ={}, vendors={"avepoint": SPEC})
    assert [message for _, message in caught.value.problems] == [
        "missing required key 'client_id' (required by vendor avepoint)",
        "missing required key 'client_secret' (required by vendor avepoint)",
    ]


def test_demo_target_is_a_valid_config() -> None:
    config = parse_config(
        f"targets: [{demo_target('http://127.0.0.1:1')!r}]".replace("'", '"'),
        "demo",
        environ={},
        vendors={"avepoint": SPEC},
    )
    (target,) = config.targets
    assert target.options["token_url"] == "http://127.0.0.1:1/connect/token"
    assert set(target.options["job_types"]) == set(JOB_TYPES)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"services": ["Exchange Online", "Dropbox"]}, "services: unknown entry 'Dropbox'"),
        ({"job_types": ["backup", "snapshot"]}, "job_types: unknown entry 'snapshot'"),
        ({"jobs_path": "https://elsewhere.example/backup/m365/jobs"}, "jobs_path"),
        ({"jobs_path": "/backup/m365/jobs?pageSize=5"}, "jobs_path"),
        ({"token_url": "ftp://identity.example/connect/token"}, "token_url"),
        ({"token_url": "https://user:pw@identity.example/connect/token"}, "token_url"),
        ({"location": "N A M"}, "location"),
        ({"client_id": " "}, "client_id"),
    ],
)
async def test_bad_options_are_config_errors(sim: Sim, http: HttpClient, options: dict[str, Any], message: str) -> None:
    client = client_for(sim, http, **options)
    with pytest.raises(TargetConfigError, match=message):
        await client.collect(T - WEEK, T)
    assert await sim.requests() == {}


async def test_missing_secret_is_a_config_error(sim: Sim, http: HttpClient) -> None:
    target = TargetConfig(name="a", vendor="avepoint", url=sim.url, options={"client_id": DEMO_CLIENT_ID})
    with pytest.raises(TargetConfigError, match="client_secret"):
        await AvePointClient(target, http).collect(T - WEEK, T)


async def test_service_aliases_and_duplicates(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http, services=["onedrive for business", "OneDrive", "teams"])
    assert collection.summary["queries"] == 2
    assert {job.job_name for job in collection.jobs} == {"OneDrive", "Teams"}


async def test_no_backup_jobs_declared_without_backups(sim: Sim, http: HttpClient) -> None:
    collection = await collect(sim, http, job_types=["restore"])
    assert collection.jobs == ()
    assert {r.job.job_type for r in collection.runs} == {"restore"}


def test_username_and_password_are_unused_and_said_so(caplog: pytest.LogCaptureFixture) -> None:
    target = TargetConfig(
        name="a",
        vendor="avepoint",
        url="https://graph-us.avepointonlineservices.com",
        username="someone",
        password=Secret("pw"),
        options={"client_id": DEMO_CLIENT_ID, "client_secret": Secret(DEMO_CLIENT_SECRET)},
    )
    with caplog.at_level(logging.WARNING):
        AvePointClient(target, HttpClient(target.url))
    assert any("not used by avepoint" in r.getMessage() for r in caplog.records)


# --- answers the simulator does not give: a scripted server ---------------------------------


@dataclass
class Scripted:
    """Serves `pages[pageIndex]` (pageIndex absent: 0) at /jobs and any token."""

    url: str
    asked: list[str]


async def scripted(aiohttp_server: Callable[..., Awaitable[TestServer]], pages: list[Any]) -> Scripted:
    asked: list[str] = []

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"token_type": "Bearer", "expires_in": 3600, "access_token": "t0k3n"})

    async def jobs(request: web.Request) -> web.Response:
        index = request.query.get("pageIndex", "0")
        asked.append(index)
        return web.json_response(pages[int(index)])

    app = web.Application()
    app.router.add_post("/connect/token", token)
    app.router.add_get("/jobs", jobs)
    server = await aiohttp_server(app)
    return Scripted(str(server.make_url("")).rstrip("/"), asked)


def job(run_id: str, state: str = "Finished") -> dict[str, Any]:
    return {"id": run_id, "state": state, "startTime": "2025-03-10T12:00:00Z", "finishTime": "2025-03-10T12:05:00Z"}


async def collect_scripted(server: Scripted, make_http: MakeHttp, **options: Any) -> Collection:
    target = make_target(server.url, jobs_path="/jobs", services=["Teams"], **options)
    return await AvePointClient(target, make_http(server.url), page_size=2).collect(T - WEEK, T)


async def test_unknown_states_are_logged_once(
    aiohttp_server: Callable[..., Awaitable[TestServer]], make_http: MakeHttp, caplog: pytest.LogCaptureFixture
) -> None:
    server = await scripted(aiohttp_server, [{"data": [job("a", "Canceled"), job("b", "Stopped ")]}])
    target = make_target(server.url, jobs_path="/jobs", services=["Teams"])
    client = AvePointClient(target, make_http(server.url))
    with caplog.at_level(logging.WARNING):
        first = await client.collect(T - WEEK, T)
        await client.collect(T - WEEK, T)
    assert {run.status for run in first.runs} == {Status.WARNING}
    warnings = [r.getMessage() for r in caplog.records if r.name == "exporter.vendors.avepoint"]
    assert len(warnings) == 1
    assert "'Canceled', 'Stopped'" in warnings[0]


@pytest.mark.parametrize(("code", "error"), [(500, HTTPStatusError), (429, HTTPStatusError), (403, AuthError)])
async def test_error_status_inside_a_200_envelope(
    aiohttp_server: Callable[..., Awaitable[TestServer]], make_http: MakeHttp, code: int, error: type[Exception]
) -> None:
    server = await scripted(aiohttp_server, [{"statusCode": code, "message": "Tenant is locked", "data": None}])
    with pytest.raises(error, match=f"GET /jobs: API statusCode {code} \\(Tenant is locked\\)"):
        await collect_scripted(server, make_http)


async def test_without_total_count_a_short_page_is_the_last(
    aiohttp_server: Callable[..., Awaitable[TestServer]], make_http: MakeHttp
) -> None:
    pages = [{"jobs": [job("a"), job("b")]}, {"jobs": [job("c"), job("d")]}, {"jobs": [job("e")]}]
    server = await scripted(aiohttp_server, pages)
    collection = await collect_scripted(server, make_http)
    assert sorted(r.run_id for r in collection.runs) == ["a", "b", "c", "d", "e"]
    assert server.asked == ["0", "1", "2"]


async def test_page_index_resumes_after_links_run_out(
    aiohttp_server: Callable[..., Awaitable[TestServer]], make_http: MakeHttp
) -> None:
    # A link for the second page, then none although totalCount says more:
    # the next page is pageIndex 2, not 1 again. An opaque token is no link.
    pages = [
        {"data": [job("a"), job("b")], "metadata": {"totalCount": 7, "nextLink": "/jobs?pageIndex=1"}},
        {"data": [job("c"), job("d")], "metadata": {"totalCount": 7, "nextLink": ""}},
        {"data": [job("e"), job("f")], "metadata": {"totalCount": 7, "nextLink": "c2tpcHRva2Vu"}},
        {"data": [job("g")], "metadata": {"totalCount": 7, "nextLink": None}},
    ]
    server = await scripted(aiohttp_server, pages)
    collection = await collect_scripted(server, make_http)
    assert sorted(r.run_id for r in collection.runs) == list("abcdefg")
    assert server.asked == ["0", "1", "2", "3"]


async def test_next_link_to_another_host_is_not_followed(
    aiohttp_server: Callable[..., Awaitable[TestServer]], make_http: MakeHttp
) -> None:
    link = "https://collector.example/jobs?pageIndex=1"
    server = await scripted(aiohttp_server, [{"data": [job("a")], "metadata": {"totalCount": 2, "nextLink": link}}])
    with pytest.raises(ParseError, match="nextLink points to another host"):
        await collect_scripted(server, make_http)
    assert server.asked == ["0"]
