"""The Keepit simulator answers like the documented API, and its control routes work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import xmltodict
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.simulators import SIMULATORS, start_simulator
from exporter.simulators.keepit import (
    ANONYMOUS_BODY,
    BAD_LOGIN_BODY,
    DATASET,
    DEMO_PASSWORD,
    DEMO_USERNAME,
    NO_ACCOUNT_BODY,
    NOT_FOUND_BODY,
    KeepitDataset,
    create_app,
)

T = datetime(2025, 3, 10, 17, 0, tzinfo=UTC)
AUTH = {"Authorization": aiohttp.encode_basic_auth(DEMO_USERNAME, DEMO_PASSWORD)}

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    return await aiohttp_client(create_app(seed=1, now=T))


def dataset(client: Client) -> KeepitDataset:
    return client.app[DATASET] if client.app is not None else pytest.fail("no app")


def device_path(client: Client, name: str) -> str:
    data = dataset(client)
    device = next(d for d in data.devices if d.name.strip() == name)
    return f"/users/{data.account}/devices/{device.guid}"


async def xml(client: Client, method: str, path: str, body: str | None = None, headers: Any = None) -> Any:
    async with client.request(method, path, data=body, headers={**AUTH, **(headers or {})}) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/xml"
        return xmltodict.parse(await response.read(), force_list=("job", "backup", "cloud"))


async def status_and_text(client: Client, method: str, path: str, body: str | None = None) -> tuple[int, str]:
    async with client.request(method, path, data=body, headers=AUTH) as response:
        return response.status, await response.text()


def jobs_filter(**fields: str | None) -> str:
    """A <filter> body; a None value is sent as an empty element (a true boolean)."""
    parts = []
    for key, value in fields.items():
        tag = key.replace("_", "-")
        parts.append(f"<{tag}/>" if value is None else f"<{tag}>{value}</{tag}>")
    return "<filter>" + "".join(parts) + "</filter>"


async def test_authentication(client: Client) -> None:
    async with client.get("/users/") as response:
        assert (response.status, await response.text()) == (401, ANONYMOUS_BODY)
    wrong = {"Authorization": aiohttp.encode_basic_auth(DEMO_USERNAME, "wrong")}
    async with client.get("/users/", headers=wrong) as response:
        assert (response.status, await response.text()) == (401, BAD_LOGIN_BODY)
    doc = await xml(client, "GET", "/users/")
    assert doc["user"]["id"] == dataset(client).account
    # Control routes need no credentials.
    async with client.get("/_sim/fault") as response:
        assert response.status == 200


async def test_not_found_bodies(client: Client) -> None:
    assert await status_and_text(client, "GET", "/users") == (404, NOT_FOUND_BODY)
    assert await status_and_text(client, "GET", "/users/zzzzzz-zzzzzz-zzzzzz/devices") == (404, NO_ACCOUNT_BODY)
    account = dataset(client).account
    assert await status_and_text(client, "PUT", f"/users/{account}/devices/nope/jobs", "<filter/>") == (
        404,
        NOT_FOUND_BODY,
    )
    doc = await xml(client, "GET", f"/users/{account}")
    assert doc["user"]["enabled"] == "true"


async def test_devices(client: Client) -> None:
    account = dataset(client).account
    listed = (await xml(client, "GET", f"/users/{account}/devices"))["devices"]["cloud"]
    everything = (await xml(client, "GET", f"/users/{account}/devices?all=1"))["devices"]["cloud"]
    assert len(listed) == 6
    assert len(everything) == 7
    assert [c["name"] for c in everything if "deletion-deadline" in c] == ["Zendesk (retired)"]
    assert [c["name"] for c in listed if c["accessible"] == "false"] == ["Dynamics 365"]
    jira = next(c for c in listed if c["type"] == "dsl")
    assert jira["agent-type"] == "jira"


async def test_jobs_filter(client: Client) -> None:
    path = device_path(client, "Microsoft 365 Backup") + "/jobs"
    week = dict(from_time="2025-03-03T17:00:00Z", to_time="2025-03-10T18:00:00Z")

    finished = (await xml(client, "PUT", path, jobs_filter(**week, active_only="false", limit="1000")))["jobs"]["job"]
    active = (await xml(client, "PUT", path, jobs_filter(**week, active_only="true")))["jobs"]["job"]
    empty_form = (await xml(client, "PUT", path, jobs_filter(**week, active_only=None)))["jobs"]["job"]
    everything = (await xml(client, "PUT", path, jobs_filter(**week, limit="1000")))["jobs"]["job"]
    default_limit = (await xml(client, "PUT", path, jobs_filter(from_time="2025-01-01T00:00:00Z")))["jobs"]["job"]

    assert all(any(k in j for k in ("succeeded", "failed", "cancelled")) for j in finished)
    assert active == empty_form
    assert active
    assert not any(any(k in j for k in ("succeeded", "failed", "cancelled")) for j in active)
    assert len(everything) == len(finished) + len(active)
    assert len(default_limit) == 100
    starts = [j["start"] for j in everything]
    assert starts == sorted(starts)
    assert all("stats" not in j for j in everything)

    restores = await xml(client, "PUT", path, jobs_filter(**week, types="<type>restore</type><type>srestore</type>"))
    assert {j["type"] for j in restores["jobs"]["job"]} <= {"restore", "srestore"}
    reverse = (await xml(client, "PUT", path, jobs_filter(**week, limit="1000", reverse=None)))["jobs"]["job"]
    assert [j["guid"] for j in reverse] == [j["guid"] for j in reversed(everything)]


async def test_failed_jobs_carry_fail_reason_and_escaped_execsummary(client: Client) -> None:
    path = device_path(client, "Salesforce Production") + "/jobs"
    body = jobs_filter(
        from_time="2025-03-08T00:00:00Z", failed_only="true", stats="<name>fail_reason</name>", type="backup"
    )
    async with client.put(path, data=body, headers=AUTH) as response:
        raw = await response.text()
    assert "&lt;?xml version=&quot;1.0&quot; encoding=&quot;utf-8&quot;?&gt;&lt;execsummary&gt;" in raw
    assert "&lt;!-- End of Document " in raw
    jobs = xmltodict.parse(raw, force_list=("job",))["jobs"]["job"]
    assert jobs
    assert all("failed" in j for j in jobs)
    assert any(j.get("stats", {}).get("stat", {}).get("value") == "api_limit_exceeded" for j in jobs)


async def test_jobs_filter_rejects_bad_requests(client: Client) -> None:
    path = device_path(client, "Jira Cloud") + "/jobs"
    for bad in (
        "<filter><limit>5</limit></filter>",
        jobs_filter(from_time="x"),
        jobs_filter(from_time="2025-03-01T00:00:00Z", limit="0"),
        jobs_filter(from_time="2025-03-01T00:00:00Z", active_only="maybe"),
        "<filter><from-time>",
        "<range/>",
    ):
        assert (await status_and_text(client, "PUT", path, bad))[0] == 400


async def test_get_jobs_with_header(client: Client) -> None:
    path = device_path(client, "Jira Cloud") + "/jobs"
    active = (await xml(client, "GET", path, headers={"active-jobs-only": "true"}))["jobs"]["job"]
    recent = (await xml(client, "GET", path, headers={"active-jobs-only": "false"}))["jobs"]["job"]
    assert active
    assert all("succeeded" not in j for j in active)
    assert len(recent) > len(active)


async def test_history_range(client: Client) -> None:
    path = device_path(client, "Microsoft 365 Backup") + "/history"
    month = "<range><start>2025-02-10T17:00:00Z</start><span>P1M</span><count>99</count></range>"
    page = (await xml(client, "PUT", path + "/range", month))["history"]["backup"]
    assert len(page) == 99
    async with client.put(path + "/range", data=month, headers=AUTH) as response:
        raw = await response.text()
    # The vendor's stray trailing spaces.
    assert raw.count(f"<account>{dataset(client).account} </account>") == 99
    assert "Z </tstamp>" in raw

    week = "<start>2025-03-03T17:00:00Z</start><span>PT604800S</span>"
    count = (await xml(client, "PUT", path + "/count", f"<range>{week}</range>"))["history"]["count"]
    assert int(count) > 99
    complete = await xml(client, "PUT", path + "/range", f"<range>{week}<count>50</count><type>c</type></range>")
    assert {b["type"] for b in complete["history"]["backup"]} == {"c"}
    newest = await xml(client, "PUT", path + "/range", f"<range>{week}<count>1</count><reverse/></range>")
    assert newest["history"]["backup"][0]["tstamp"].strip() <= "2025-03-10T17:00:00Z"
    daily = f"<range>{week}<count>99</count><resolution>P1D</resolution></range>"
    thinned = await xml(client, "PUT", path + "/range", daily)
    assert len(thinned["history"]["backup"]) <= 8

    for bad in (
        f"<range>{week}<count>100</count></range>",
        f"<range>{week}</range>",
        f"<range>{week}<count>5</count><reverse>true</reverse><resolution>PT1H</resolution></range>",
        f"<range>{week}<count>5</count><type>x</type></range>",
        "<range><start>2025-03-03T17:00:00Z</start><span>soon</span><count>5</count></range>",
    ):
        assert (await status_and_text(client, "PUT", path + "/range", bad))[0] == 400


async def test_clock_reveals_new_runs_with_stable_ids(client: Client) -> None:
    path = device_path(client, "Jira Cloud") + "/jobs"
    body = jobs_filter(from_time="2025-03-09T00:00:00Z", to_time="2025-03-20T00:00:00Z")
    before = {j["guid"]: j for j in (await xml(client, "PUT", path, body))["jobs"]["job"]}
    async with client.post("/_sim/clock", json={"advance": 86400}) as response:
        assert (await response.json())["now"] == (T + timedelta(days=1)).isoformat()
    after = {j["guid"]: j for j in (await xml(client, "PUT", path, body))["jobs"]["job"]}

    assert set(before) < set(after)
    assert all(before[g]["start"] == after[g]["start"] for g in before)
    assert any("succeeded" not in before[g] and "succeeded" in after[g] for g in before)

    async with client.post("/_sim/clock", json={"now": "2025-03-10T17:00:00Z"}) as response:
        assert (await response.json())["now"] == T.isoformat()
    async with client.post("/_sim/clock", json={"later": 1}) as response:
        assert response.status == 400


async def test_fault_control(client: Client) -> None:
    async with client.post("/_sim/fault", json={"mode": "503", "retry_after": 7, "count": 2}) as response:
        assert (await response.json())["count"] == 2
    for _ in range(2):
        async with client.get("/users/", headers=AUTH) as response:
            assert (response.status, response.headers["Retry-After"]) == (503, "7")
    async with client.get("/users/", headers=AUTH) as response:
        assert response.status == 200
    async with client.get("/_sim/fault") as response:
        assert (await response.json())["mode"] == "none"
    async with client.get("/_sim/requests") as response:
        assert await response.json() == {"GET /users/": 3}
    async with client.delete("/_sim/requests") as response:
        assert response.status == 200
    for bad in ({"mode": "explode"}, {"mode": "500", "count": 0}, {"mode": "slow", "delay": -1}, {"what": 1}):
        async with client.post("/_sim/fault", json=bad) as response:
            assert response.status == 400

    async with client.post("/_sim/fault", json={"mode": "wrong_content_type"}) as response:
        assert response.status == 200
    async with client.get("/users/", headers=AUTH) as response:
        assert response.content_type == "text/html"
        assert "<user>" in await response.text()


async def test_same_seed_same_data_and_other_seed_other_data() -> None:
    one, again, other = KeepitDataset(1, T), KeepitDataset(1, T), KeepitDataset(2, T)
    device = one.devices[0]
    assert one.jobs(device, T) == again.jobs(again.devices[0], T)
    assert one.account != other.account
    assert one.jobs(device, T) != other.jobs(other.devices[0], T)


async def test_registry_and_start_simulator() -> None:
    spec = SIMULATORS["keepit"]
    runner, url = await start_simulator(spec.create_app(seed=3))
    try:
        target = spec.demo_target(url)
        assert target == {
            "name": "keepit-demo",
            "vendor": "keepit",
            "url": url,
            "username": DEMO_USERNAME,
            "password": DEMO_PASSWORD,
            "labels": {},
        }
        async with aiohttp.ClientSession() as session, session.get(url + "/users/", headers=AUTH) as response:
            assert response.status == 200
            # Without a fixed now, the clock follows wall time.
        async with aiohttp.ClientSession() as session, session.get(url + "/_sim/clock") as response:
            now = datetime.fromisoformat((await response.json())["now"])
            assert abs(now - datetime.now(UTC)) < timedelta(minutes=1)
    finally:
        await runner.cleanup()
