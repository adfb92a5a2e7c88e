"""The Commvault simulator answers like the documented API, and its control routes work."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import xmltodict
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.config import parse_config
from exporter.simulators.base import start_simulator
from exporter.simulators.commvault import (
    ACCESS_DENIED,
    BAD_LOGIN,
    DATASET,
    DEMO_PASSWORD,
    DEMO_USERNAME,
    SIMULATOR,
    CommvaultDataset,
    create_app,
)
from exporter.vendors.base import HttpClient
from exporter.vendors.commvault import SPEC, STATUS_STRINGS, CommvaultClient, check_target

T = datetime(2025, 3, 10, 17, 0, tzinfo=UTC)
BASE = "/commandcenter/api"

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    return await aiohttp_client(create_app(seed=1, now=T))


def dataset(client: Client) -> CommvaultDataset:
    return client.app[DATASET] if client.app is not None else pytest.fail("no app")


def login_body(password: str = DEMO_PASSWORD, encode: bool = True) -> str:
    sent = base64.b64encode(password.encode()).decode() if encode else password
    return json.dumps({"username": DEMO_USERNAME, "password": sent, "deviceId": "test"})


async def token(client: Client) -> str:
    async with client.post(f"{BASE}/Login", data=login_body(), headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200
        value: str = (await r.json())["token"]
        return value


async def jobs(client: Client, auth: str, *, xml: bool = False, query: str = "", **headers: str) -> Any:
    accept = "application/xml" if xml else "application/json"
    async with client.get(f"{BASE}/Job{query}", headers={"Authtoken": auth, "Accept": accept, **headers}) as r:
        assert r.status == 200, await r.text()
        body = await r.read()
        if xml:
            assert r.content_type == "application/xml"
            doc = xmltodict.parse(body, force_list=("jobs",))["JobManager_JobListResponse"]
            return {
                "total": int(doc["@totalRecordsWithoutPaging"]),
                "ids": [j["jobSummary"]["@jobId"] for j in doc.get("jobs", [])],
            }
        payload = json.loads(body.decode("utf-8-sig"))
        ids = [str(j["jobSummary"]["jobId"]) for j in payload["jobs"]]
        return {"total": payload["totalRecordsWithoutPaging"], "ids": ids}


async def test_login(client: Client) -> None:
    for body in (login_body("wrong"), login_body(encode=False)):
        async with client.post(f"{BASE}/Login", data=body, headers={"Content-Type": "application/json"}) as r:
            payload = await r.json()
            assert r.status == 200
            assert "token" not in payload
            assert payload["errList"] == [{"errLogMessage": BAD_LOGIN}]
    assert (await token(client)).startswith("QSDK ")
    xml_request = (
        f'<DM2ContentIndexing_CheckCredentialReq username="{DEMO_USERNAME}" '
        f'password="{base64.b64encode(DEMO_PASSWORD.encode()).decode()}"/>'
    )
    headers = {"Content-Type": "application/xml", "Accept": "application/xml"}
    async with client.post(f"{BASE}/Login", data=xml_request, headers=headers) as r:
        doc = xmltodict.parse(await r.read())
        assert doc["DM2ContentIndexing_CheckCredentialResp"]["@token"].startswith("QSDK ")


async def test_sessions(client: Client) -> None:
    async with client.get(f"{BASE}/Job") as r:
        assert (r.status, await r.json()) == (401, ACCESS_DENIED)
    auth = await token(client)
    await jobs(client, auth)
    async with client.post(f"{BASE}/Logout", headers={"Authtoken": auth}) as r:
        assert (r.status, await r.text(), r.content_type) == (200, "User logged out", "text/plain")
    async with client.post(f"{BASE}/Logout", headers={"Authtoken": auth}) as r:
        assert r.status == 401
    async with client.get(f"{BASE}/Job", headers={"Authtoken": auth}) as r:
        assert r.status == 401


async def test_renewal(client: Client) -> None:
    auth = await token(client)
    async with client.post("/_sim/commvault/expire", json={"after": 0}) as r:
        assert r.status == 200
    async with client.get(f"{BASE}/Job", headers={"Authtoken": auth}) as r:
        assert r.status == 401
    # The wrong device cannot renew; the right one can, once.
    for device, ok in (("other", False), ("test", True), ("test", False)):
        body = json.dumps({"sessionId": auth, "deviceId": device})
        async with client.post(f"{BASE}/RenewLoginToken", data=body) as r:
            payload = await r.json()
            assert ("token" in payload) is ok, payload
            if ok:
                renewed = payload["token"]
    await jobs(client, renewed)


async def test_paging_by_headers_only(client: Client) -> None:
    auth = await token(client)
    whole = await jobs(client, auth)
    assert len(whole["ids"]) == 100  # the default page
    assert 1000 < whole["total"] < len(dataset(client).jobs(T))  # backups only, by default
    everything = await jobs(client, auth, limit="5000")
    assert len(everything["ids"]) == everything["total"] > 1000
    page = await jobs(client, auth, limit="10", offset="20")
    assert page["ids"] == everything["ids"][20:30]
    # Query parameters do not page.
    assert (await jobs(client, auth, query="?limit=10&offset=20"))["ids"] == whole["ids"]
    # Newest first.
    assert everything["ids"] == sorted(everything["ids"], key=int, reverse=True)
    xml = await jobs(client, auth, xml=True, limit="10", offset="20")
    assert xml == page


async def test_filters(client: Client) -> None:
    auth = await token(client)
    day = await jobs(client, auth, query="?completedJobLookupTime=86400", limit="1000")
    active = await jobs(client, auth, query="?jobCategory=Active", limit="1000")
    finished = await jobs(client, auth, query="?completedJobLookupTime=86400&jobCategory=finished", limit="1000")
    assert sorted(day["ids"]) == sorted(active["ids"] + finished["ids"])
    assert 11 <= active["total"] < 20
    held = {str(j.job_id): j for j in dataset(client).jobs(T)}
    assert all(held[i].ends >= T - timedelta(days=1) for i in finished["ids"])
    backups = await jobs(client, auth, limit="5000")
    every = await jobs(client, auth, query="?jobFilter=", limit="5000")
    both = await jobs(client, auth, query="?jobFilter=backup,RESTORE", limit="5000")
    assert every == both
    assert every["total"] > backups["total"]
    client_only = await jobs(client, auth, query="?clientId=9", limit="5000")
    assert {held[i].plan.client for i in client_only["ids"]} == {"EXCH01"}


async def test_bad_input_is_an_error_body(client: Client) -> None:
    auth = await token(client)
    for query, headers in (("?jobCategory=Some", {}), ("?completedJobLookupTime=x", {}), ("", {"limit": "-1"})):
        async with client.get(f"{BASE}/Job{query}", headers={"Authtoken": auth, **headers}) as r:
            assert r.status == 200
            assert (await r.json())["errorCode"] == 2


async def test_error_switch(client: Client) -> None:
    auth = await token(client)
    async with client.post("/_sim/commvault/error", json={"form": "errList", "code": 7, "count": 1}) as r:
        assert r.status == 200
    async with client.get(f"{BASE}/Job", headers={"Authtoken": auth, "Accept": "application/xml"}) as r:
        doc = xmltodict.parse(await r.read())
        assert doc["JobManager_JobListResponse"]["errList"]["@errorCode"] == "7"
    await jobs(client, auth)  # the count is used up


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/_sim/commvault/expire", {"after": -1}),
        ("/_sim/commvault/expire", {"renewable": "no"}),
        ("/_sim/commvault/expire", {"when": 1}),
        ("/_sim/commvault/error", {"form": "loud"}),
        ("/_sim/commvault/error", {"count": 0}),
        ("/_sim/commvault/error", {"message": 1}),
        ("/_sim/commvault/paging", {"shift": "x"}),
        ("/_sim/commvault/paging", [1]),
    ],
)
async def test_control_routes_validate(client: Client, path: str, payload: Any) -> None:
    async with client.post(path, json=payload) as r:
        assert r.status == 400


async def test_date_header_follows_the_simulated_clock(client: Client) -> None:
    auth = await token(client)
    async with client.post("/_sim/clock", json={"advance": 86400}) as r:
        assert r.status == 200
    async with client.post(f"{BASE}/Login", data=login_body(), headers={"Content-Type": "application/json"}) as r:
        assert parsedate_to_datetime(r.headers["Date"]) == T + timedelta(days=1)
    assert auth


def test_dataset_is_deterministic_and_stable() -> None:
    a, b = CommvaultDataset(1, T), CommvaultDataset(1, T)
    assert a.jobs(T) == b.jobs(T)
    # jobIds follow the schedule; the seed draws outcomes, durations and sizes.
    assert CommvaultDataset(2, T).jobs(T) != a.jobs(T)
    later = T + timedelta(days=2)
    before = {j.job_id: j for j in a.jobs(T)}
    after = {j.job_id: j for j in a.jobs(later)}
    running = [j for j in before.values() if not j.finished(T)]
    assert running
    for job in running:
        assert after[job.job_id] == job  # same id, same facts
        assert after[job.job_id].finished(later)
    assert max(after) > max(before)  # the clock reveals new jobs
    assert {j.status(T) for j in a.jobs(T)} == set(STATUS_STRINGS)
    week = [j for j in a.jobs(later) if not j.finished(later) or j.ends >= later - timedelta(days=7)]
    assert {j.status(later) for j in week} == set(STATUS_STRINGS)


async def test_demo_target_collects() -> None:
    runner, url = await start_simulator(SIMULATOR.create_app(now=T))
    try:
        raw = SIMULATOR.demo_target(url)
        assert raw["name"] == "commvault-demo"
        config = parse_config(yaml.safe_dump({"targets": [raw]}), "<demo>", environ={}, vendors={"commvault": SPEC})
        (target,) = config.targets
        assert check_target(target) == []
        http = HttpClient(target.url)
        try:
            collection = await CommvaultClient(target, http).collect(T - timedelta(days=7), T)
        finally:
            await http.close()
        assert collection.summary["runs"] > 300
    finally:
        await runner.cleanup()
