"""The AvePoint simulator answers like the documented API, and its switches work."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.config import parse_config
from exporter.model import Status
from exporter.simulators.avepoint import (
    CURRENT_PATH,
    DATASET,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    HISTORY,
    OLDER_PATH,
    SIMULATOR,
    STATES,
    TOKEN_PATH,
    AvePointDataset,
    create_app,
)
from exporter.simulators.base import start_simulator
from exporter.vendors.avepoint import SPEC, AvePointClient
from exporter.vendors.base import HttpClient

T = datetime(2025, 3, 10, 17, 0, tzinfo=UTC)
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
FORM = {"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}


@pytest.fixture
async def start(aiohttp_client: Callable[..., Awaitable[Client]]) -> MakeClient:
    async def make(**switches: Any) -> Client:
        return await aiohttp_client(create_app(seed=1, now=T, **switches))

    return make


@pytest.fixture
async def client(start: MakeClient) -> Client:
    return await start()


def dataset(client: Client) -> AvePointDataset:
    return client.app[DATASET] if client.app is not None else pytest.fail("no app")


async def token(client: Client, **form: str) -> str:
    async with client.post(TOKEN_PATH, data={**FORM, **form}) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == 3600
    access_token: str = body["access_token"]
    return access_token


async def get(client: Client, path: str, status: int = 200, bearer: str | None = None, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {bearer or await token(client)}"}
    async with client.get(path, params=params, headers=headers) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


# --- the dataset ---------------------------------------------------------------------


def test_dataset_has_every_state_hundreds_of_runs_and_stable_ids() -> None:
    data = AvePointDataset(1, T)
    runs = data.runs(T)
    assert len(runs) > 1000
    assert len({run.id for run in runs}) == len(runs)
    assert Counter(run.state(T) for run in runs).keys() == set(STATES.values())
    assert all(T - HISTORY <= run.started <= T for run in runs)

    # A day later: new runs, the old ones keep their ids, outcomes and times.
    later = T + timedelta(days=1)
    again = {run.id: run for run in AvePointDataset(1, T).runs(later)}
    for run in runs:
        if run.started >= later - HISTORY:
            assert again[run.id] == run
    assert len(set(again) - {run.id for run in runs}) > 30
    # The runs in progress at T have finished by then, under the same id.
    running = [run for run in runs if run.state(T) == "In Progress"]
    assert running
    assert all(again[run.id].state(later) != "In Progress" for run in running)
    # Another seed, another dataset.
    assert {run.id for run in AvePointDataset(2, T).runs(T)} != {run.id for run in runs}


def test_ids_look_like_the_documented_ones() -> None:
    for run in AvePointDataset(1, T).runs(T)[:200]:
        prefix = run.id.rstrip("0123456789")
        assert prefix in ("FB", "IB", "EFB", "EIB", "RB", "EX", "DL", "RT")
        assert run.id[len(prefix) :].startswith(run.started.strftime("%Y%m%d%H%M%S"))
        assert len(run.id) == len(prefix) + 20


# --- jobs endpoints --------------------------------------------------------------------


async def test_current_envelope(client: Client) -> None:
    body = await get(client, CURRENT_PATH, objectType=1, jobType=1, startTime="2025-03-10T00:00:00Z")
    assert set(body) == {"statusCode", "message", "data", "requestId", "timestamp", "metadata", "traceId"}
    assert body["statusCode"] == 200
    assert len(body["data"]) == 10  # the documented default page size
    total = body["metadata"]["totalCount"]
    assert total == len(dataset(client).select(T, object_type=1, job_type=1, start=T.replace(hour=0)))
    assert body["metadata"]["nextLink"].startswith(f"http://{client.host}:{client.port}{CURRENT_PATH}?")
    job = body["data"][0]
    # No service, no job type: the client must query per filter value.
    assert set(job) == {"id", "state", "startTime", "finishTime", "duration", "backupDetails", "jobErrors"}
    assert set(job["backupDetails"]) == {"totalCount", "failedCount", "successfulCount", "skippedCount"}


async def test_older_shape_and_number_spelling(start: MakeClient) -> None:
    client = await start(detail_keys="number", paging="relative")
    body = await get(client, OLDER_PATH, objectType=1, pageSize=100)
    assert set(body) == {"totalCount", "jobs", "nextLink"}
    assert len(body["jobs"]) == 100
    assert body["nextLink"].startswith(f"{OLDER_PATH}?")
    assert "pageIndex=1" in body["nextLink"]
    assert set(body["jobs"][0]["backupDetails"]) == {"totalNumber", "failedNumber", "successfulNumber", "skippedNumber"}


async def test_parameter_names_in_any_case_as_in_the_doc_sample(client: Client) -> None:
    # The request sample of the doc: PascalCase, dates without times.
    sample: dict[str, Any] = {"StartTime": "2025-03-03", "FinishTime": "2025-03-10", "ObjectType": 0, "PageSize": 50}
    body = await get(client, OLDER_PATH, **sample, PageIndex=1, Location="NAM")
    lower = await get(client, OLDER_PATH, **{k.lower(): v for k, v in sample.items()}, pageindex=1, location="nam")
    assert body["jobs"] == lower["jobs"]
    assert len(body["jobs"]) == 50
    start, end = datetime(2025, 3, 3, tzinfo=UTC), datetime(2025, 3, 10, tzinfo=UTC)
    assert body["totalCount"] == len(dataset(client).select(T, start=start, finish=end, location="NAM"))


@pytest.mark.parametrize("paging", ["index", "stuck"])
async def test_index_paging_has_no_links(start: MakeClient, paging: str) -> None:
    client = await start(paging=paging)
    first = await get(client, CURRENT_PATH, objectType=1, pageSize=20)
    second = await get(client, CURRENT_PATH, objectType=1, pageSize=20, pageIndex=1)
    assert first["metadata"]["nextLink"] == second["metadata"]["nextLink"] == ""
    assert (first["data"] == second["data"]) is (paging == "stuck")


async def test_page_base_one(start: MakeClient) -> None:
    client = await start(page_base=1, paging="index")
    default = await get(client, CURRENT_PATH, objectType=1)
    zero = await get(client, CURRENT_PATH, objectType=1, pageIndex=0)
    one = await get(client, CURRENT_PATH, objectType=1, pageIndex=1)
    two = await get(client, CURRENT_PATH, objectType=1, pageIndex=2)
    assert default["data"] == zero["data"] == one["data"] != two["data"]


async def test_runs_in_progress_and_filters(client: Client) -> None:
    bearer = await token(client)
    running = await get(client, CURRENT_PATH, bearer=bearer, jobState=1, pageSize=100)
    assert running["data"]
    for job in running["data"]:
        assert job["state"] == "In Progress"
        assert job["finishTime"] is None
    older = await get(client, OLDER_PATH, bearer=bearer, jobState=1, pageSize=100)
    assert {job["finishTime"] for job in older["jobs"]} == {""}
    failed = await get(client, CURRENT_PATH, bearer=bearer, jobState=3, objectType=3, jobType=1, pageSize=100)
    assert failed["data"]
    assert all(job["state"] == "Failed" and job["jobErrors"] for job in failed["data"])
    eur = await get(client, CURRENT_PATH, bearer=bearer, location="EUR", pageSize=100)
    assert eur["metadata"]["totalCount"] == len(dataset(client).select(T, location="EUR"))
    assert (await get(client, CURRENT_PATH, bearer=bearer, location="KOR"))["data"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"objectType": 13},
        {"jobType": "backup"},
        {"jobState": 6},
        {"pageSize": 0},
        {"pageIndex": -1},
        {"startTime": "yesterday"},
        {"location": "MARS"},
    ],
)
async def test_bad_parameters(client: Client, params: dict[str, Any]) -> None:
    body = await get(client, CURRENT_PATH, 400, **params)
    assert body["statusCode"] == 400
    assert body["data"] is None


# --- tokens and authentication -----------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"client_id": "someone-else"}, "invalid_client"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"scope": "backup.graph.all"}, "invalid_scope"),
    ],
)
async def test_token_refusals(client: Client, form: dict[str, str], error: str) -> None:
    async with client.post(TOKEN_PATH, data={**FORM, **form}) as response:
        assert response.status == 400
        assert await response.json() == {"error": error}


async def test_token_request_must_be_a_form(client: Client) -> None:
    async with client.post(TOKEN_PATH, json=FORM) as response:
        assert response.status == 400
        assert await response.json() == {"error": "invalid_request"}


async def test_authentication(client: Client) -> None:
    async with client.get(CURRENT_PATH) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    await get(client, CURRENT_PATH, 401, bearer="not-a-token")
    settings_only = await token(client, scope="microsoft365backup.settings.read.all")
    await get(client, CURRENT_PATH, 403, bearer=settings_only)
    # Control routes need no token.
    async with client.get("/_sim/avepoint/expire") as response:
        assert response.status == 200


async def test_tokens_expire_on_the_simulated_clock(client: Client) -> None:
    bearer = await token(client)
    await get(client, CURRENT_PATH, bearer=bearer)
    async with client.post("/_sim/clock", json={"advance": 3599}) as response:
        assert response.status == 200
    await get(client, CURRENT_PATH, bearer=bearer)
    async with client.post("/_sim/clock", json={"advance": 1}) as response:
        assert response.status == 200
    await get(client, CURRENT_PATH, 401, bearer=bearer)


async def test_expire_switch(client: Client) -> None:
    bearer = await token(client)
    async with client.post("/_sim/avepoint/expire", json={"after": 2}) as response:
        assert await response.json() == {"tokens": 1, "expire_after": 2}
    await get(client, CURRENT_PATH, bearer=bearer)
    await get(client, CURRENT_PATH, bearer=bearer)
    await get(client, CURRENT_PATH, 401, bearer=bearer)
    # Tokens issued later work.
    await get(client, CURRENT_PATH)
    for bad in ({"after": -1}, {"after": "2"}, {}, [1]):
        async with client.post("/_sim/avepoint/expire", json=bad) as response:
            assert response.status == 400


async def test_shared_faults_wrap_the_token_endpoint(client: Client) -> None:
    async with client.post("/_sim/fault", json={"mode": "429", "retry_after": 5, "count": 1}) as response:
        assert response.status == 200
    async with client.post(TOKEN_PATH, data=FORM) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "5"
    await token(client)
    async with client.get("/_sim/requests") as response:
        assert await response.json() == {f"POST {TOKEN_PATH}": 2}


def test_create_app_refuses_unknown_switches() -> None:
    for switches in ({"paging": "cursor"}, {"detail_keys": "Total"}, {"page_base": 2}):
        with pytest.raises(ValueError, match="must be"):
            create_app(**switches)


# --- the demo ----------------------------------------------------------------------------


async def test_demo_target_collects_from_the_simulator_at_wall_time() -> None:
    runner, url = await start_simulator(SIMULATOR.create_app(seed=3))
    try:
        document = {"targets": [SIMULATOR.demo_target(url)]}
        config = parse_config(yaml.safe_dump(document), "<demo>", environ={}, vendors={"avepoint": SPEC})
        (target,) = config.targets
        assert target.name == "avepoint-demo"
        http = HttpClient(target.url)
        try:
            now = datetime.now(UTC)
            collection = await AvePointClient(target, http).collect(now - target.lookback, now)
        finally:
            await http.close()
    finally:
        await runner.cleanup()
    statuses = {run.status for run in collection.runs}
    assert {Status.SUCCESS, Status.WARNING, Status.FAILED} <= statuses
    # Weekly deletions and exports every 71 h may fall just outside the window.
    assert {"backup", "restore", "retention"} <= {run.job.job_type for run in collection.runs}
    assert len(collection.jobs) == 7
