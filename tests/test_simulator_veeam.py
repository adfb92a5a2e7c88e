"""The Veeam EM simulator answers like the documented API, and its control routes work."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import xmltodict
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.simulators.veeam import (
    DATASET,
    DEMO_PASSWORD,
    DEMO_USERNAME,
    HISTORY,
    NAMESPACE,
    RESULTS,
    SESSION_HEADER,
    SIMULATOR,
    STATES,
    VeeamDataset,
    camel_case,
    create_app,
)

T = datetime(2025, 3, 10, 14, 30, tzinfo=UTC)
BASIC = {"Authorization": aiohttp.encode_basic_auth(DEMO_USERNAME, DEMO_PASSWORD)}
JSON = {"Accept": "application/json"}
SESSIONS = "/api/query?type=BackupJobSession&format=Entities"

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client(aiohttp_client: ClientFactory) -> Callable[..., Awaitable[Client]]:
    async def make(**kwargs: Any) -> Client:
        return await aiohttp_client(create_app(seed=1, now=T, **kwargs))

    return make


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[Client]]) -> Client:
    return await make_client()


def dataset(client: Client) -> VeeamDataset:
    return client.app[DATASET] if client.app is not None else pytest.fail("no app")


async def logon(client: Client, accept: dict[str, str] | None = None) -> str:
    async with client.post("/api/sessionMngr/?v=latest", headers={**BASIC, **(accept or {})}) as response:
        assert response.status == 201, await response.text()
        token: str = response.headers[SESSION_HEADER]
    # The test client keeps cookies, and the server prefers the cookie to the
    # header: these tests send the header only, unless they set a cookie.
    client.session.cookie_jar.clear()
    return token


async def get(client: Client, path: str, token: str, accept: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    async with client.get(path, headers={SESSION_HEADER: token, **(accept or {})}) as response:
        return response.status, await response.read(), response.content_type


def xml(body: bytes) -> Any:
    return xmltodict.parse(body, force_list=("BackupJobSession", "Job", "Link", "Repository"))


async def test_root_needs_no_logon(client: Client) -> None:
    async with client.get("/api/") as response:
        assert response.status == 200
        doc = xml(await response.read())["EnterpriseManager"]
    assert doc["@xmlns"] == NAMESPACE
    names = [v["@Name"] for v in doc["SupportedVersions"]["SupportedVersion"]]
    assert names == ["v1_5", "v1_6", "v1_7"]
    async with client.get("/api", headers=JSON) as response:
        assert "SupportedVersions" in await response.json()


async def test_logon(client: Client) -> None:
    async with client.post("/api/sessionMngr/?v=latest", headers=BASIC) as response:
        assert response.status == 201
        token = response.headers[SESSION_HEADER]
        cookie = response.cookies[SESSION_HEADER]
        body = xml(await response.read())["LogonSession"]
    session_id = body["SessionId"]
    assert re.fullmatch(r"[0-9a-f-]{36}", session_id)
    # The token is base64 of the SessionId, not the SessionId itself.
    assert token == base64.b64encode(session_id.encode()).decode()
    assert cookie.value == token
    assert cookie["path"] == "/api"
    assert body["UserName"] == DEMO_USERNAME
    delete = [link for link in body["Links"]["Link"] if link["@Rel"] == "Delete"]
    assert delete[0]["@Href"].endswith(f"/api/logonSessions/{session_id}")

    async with client.post("/api/sessionMngr/?v=v1_6", headers={**BASIC, **JSON}) as response:
        assert response.status == 201
        assert set(await response.json()) >= {"UserName", "SessionId", "Links", "Href", "Type"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": aiohttp.encode_basic_auth(DEMO_USERNAME, "wrong")},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer x"},
    ],
)
async def test_bad_logon(client: Client, headers: dict[str, str]) -> None:
    async with client.post("/api/sessionMngr/?v=latest", headers=headers) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Basic Realm=RestSvc"
        error = xml(await response.read())["Error"]
    assert error["@StatusCode"] == "401"


async def test_unknown_api_version(client: Client) -> None:
    async with client.post("/api/sessionMngr/?v=v9_9", headers=BASIC) as response:
        assert response.status == 400


async def test_queries_need_a_live_session(client: Client) -> None:
    status, body, _ = await get(client, SESSIONS, "")
    assert status == 401
    assert "Authentication required" in xml(body)["Error"]["@Message"]
    status, _, _ = await get(client, SESSIONS, "bm9wZQ==")
    assert status == 401
    token = await logon(client)
    status, _, _ = await get(client, SESSIONS, token)
    assert status == 200


async def test_the_cookie_wins_over_the_header(client: Client) -> None:
    token = await logon(client)
    async with client.get(SESSIONS, headers={SESSION_HEADER: token, "Cookie": f"{SESSION_HEADER}=stale"}) as response:
        assert response.status == 401
    async with client.get(
        SESSIONS, headers={SESSION_HEADER: "stale", "Cookie": f"{SESSION_HEADER}={token}"}
    ) as response:
        assert response.status == 200


async def test_idle_sessions_expire(client: Client) -> None:
    token = await logon(client)
    async with client.post("/_sim/clock", json={"advance": 14 * 60}) as response:
        assert response.status == 200
    assert (await get(client, SESSIONS, token))[0] == 200
    async with client.post("/_sim/clock", json={"advance": 15 * 60 + 1}) as response:
        assert response.status == 200
    assert (await get(client, SESSIONS, token))[0] == 401


async def test_expire_switch(client: Client) -> None:
    old = await logon(client)
    async with client.post("/_sim/veeam/expire", json={"after": 2}) as response:
        assert await response.json() == {"after": 2}
    new = await logon(client)
    for token in (old, new):
        assert (await get(client, SESSIONS + "&pageSize=1", token))[0] == 200
        assert (await get(client, SESSIONS + "&pageSize=1", token))[0] == 200
        assert (await get(client, SESSIONS + "&pageSize=1", token))[0] == 401
    async with client.get("/_sim/veeam/sessions") as response:
        assert await response.json() == {"live": 0, "logons": 2, "logouts": 0, "expired": 2}
    async with client.post("/_sim/veeam/expire", json={"after": None}) as response:
        assert response.status == 200
    async with client.get("/_sim/veeam/expire") as response:
        assert await response.json() == {"after": None}
    for bad in ({"after": 0}, {"after": True}, {"after": "1"}, {}, {"after": 1, "x": 1}):
        async with client.post("/_sim/veeam/expire", json=bad) as response:
            assert response.status == 400


async def test_logout(client: Client) -> None:
    token = await logon(client)
    session_id = base64.b64decode(token).decode()
    async with client.delete("/api/logonSessions/nope", headers={SESSION_HEADER: token}) as response:
        assert response.status == 404
    async with client.delete(f"/api/logonSessions/{session_id}", headers={SESSION_HEADER: token}) as response:
        assert response.status == 204
    assert (await get(client, SESSIONS, token))[0] == 401
    async with client.get("/_sim/veeam/sessions") as response:
        assert (await response.json())["logouts"] == 1


async def test_entities_in_xml(client: Client) -> None:
    token = await logon(client)
    status, body, content_type = await get(client, SESSIONS, token)
    assert (status, content_type) == (200, "application/xml")
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    doc = xml(body)["QueryResult"]
    assert doc["@xmlns"] == NAMESPACE
    sessions = doc["Entities"]["BackupJobSessions"]["BackupJobSession"]
    # Not asked for a page size: pages of 100 all the same.
    assert len(sessions) == 100
    paging = doc["PagingInfo"]
    total = len(dataset(client).sessions(T))
    assert (paging["@PageNum"], paging["@PageSize"], paging["@PagesCount"]) == ("1", "100", str(-(-total // 100)))
    assert [link["@Rel"] for link in paging["Links"]["Link"]] == ["First", "Next", "Last"]
    # Links escape `&` in XML.
    assert b"&amp;pageSize=100&amp;page=2" in body

    first = sessions[0]
    assert list(first)[:4] == ["@Href", "@Type", "@Name", "@UID"]
    assert first["@Type"] == "BackupJobSession"
    assert first["@UID"].startswith("urn:veeam:BackupJobSession:")
    assert re.fullmatch(r".+@\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", first["@Name"])
    assert [k for k in first if not k.startswith("@")][:9] == [
        "Links",
        "JobUid",
        "JobName",
        "JobType",
        "CreationTimeUTC",
        "EndTimeUTC",
        "State",
        "Result",
        "Progress",
    ]
    server_links = [link for link in first["Links"]["Link"] if link["@Type"] == "BackupServerReference"]
    assert server_links[0]["@Name"] in ("vbr01.lab.local", "vbr02.lab.local")


async def _running(client: Client, accept: dict[str, str] | None) -> tuple[Any, bytes]:
    token = await logon(client)
    status, body, _ = await get(client, SESSIONS + "&filter=State!=Stopped", token, accept)
    assert status == 200
    return token, body


async def test_running_sessions_in_each_shape(make_client: Callable[..., Awaitable[Client]]) -> None:
    v12 = await make_client(json_style="v12")
    _, body = await _running(v12, JSON)
    doc = json.loads(body)
    assert doc["Refs"] is None
    assert doc["Entities"]["Jobs"] is None
    items = doc["Entities"]["BackupJobSessions"]["BackupJobSessions"]
    assert len(items) == 4
    assert all(item["EndTimeUTC"] is None and item["Result"] == "None" for item in items)
    assert all(item["FailureMessage"] is None for item in items)
    assert {"IsRetry", "JobUid", "CreationTimeUTC", "UID", "Links", "Href", "Type"} <= set(items[0])
    assert set(items[0]["Links"][0]) == {"Rel", "Href", "Name", "Type"}
    assert set(doc["PagingInfo"]) == {"Links", "PageNum", "PageSize", "PagesCount"}

    v13 = await make_client(json_style="v13")
    _, body = await _running(v13, JSON)
    doc = json.loads(body)
    items = doc["entities"]["backupJobSessions"]["backupJobSessions"]
    assert len(items) == 4
    # camelCase; null fields left out.
    assert {"isRetry", "jobUid", "creationTimeUTC", "uid", "links", "href", "type"} <= set(items[0])
    assert "endTimeUTC" not in items[0]
    assert set(items[0]["links"][0]) == {"rel", "href", "name", "type"}
    assert doc["pagingInfo"]["pageNum"] == 1

    _, body = await _running(v13, None)
    sessions = xml(body)["QueryResult"]["Entities"]["BackupJobSessions"]["BackupJobSession"]
    assert all("EndTimeUTC" not in s and s["Result"] == "None" for s in sessions)
    assert {s["State"] for s in sessions} <= set(STATES) - {"Stopped"}


async def test_bom(make_client: Callable[..., Awaitable[Client]]) -> None:
    client = await make_client(bom=True)
    _, body = await _running(client, JSON)
    assert body.startswith(b"\xef\xbb\xbf{")
    _, body = await _running(client, None)
    assert body.startswith(b'\xef\xbb\xbf<?xml version="1.0"')


async def test_filters(client: Client) -> None:
    token = await logon(client)
    data = dataset(client)
    everything = data.sessions(T)

    async def uids(expression: str) -> list[str]:
        path = f"{SESSIONS}&pageSize=1000&sortAsc=CreationTime&filter={expression}"
        status, body, _ = await get(client, path, token)
        assert status == 200, body
        found = xml(body)["QueryResult"]["Entities"]["BackupJobSessions"]
        return [s["@UID"] for s in (found or {}).get("BackupJobSession", [])]

    since = T - timedelta(days=2)
    by_time = await uids(f'CreationTime>="{since:%Y-%m-%dT%H:%M:%SZ}"')
    assert by_time == [s.uid for s in everything if s.created.value >= since]
    failed_sql = await uids('Result==Failed;JobName=="SQL Backup"')
    assert failed_sql == [s.uid for s in everything if s.plan.name == "SQL Backup" and s.result(T) == "Failed"]
    assert failed_sql
    # Enumerations compare by ordinal: Success < Warning < Failed.
    at_least_warning = await uids("Result>=Warning")
    assert at_least_warning == [s.uid for s in everything if s.result(T) in ("Warning", "Failed")]
    either = await uids('(JobName=="DR Copy",JobName=="Laptops");State==Stopped')
    assert either == [s.uid for s in everything if s.plan.name in ("DR Copy", "Laptops") and s.finished(T)]
    assert await uids("State!=Stopped") == [s.uid for s in everything if not s.finished(T)]
    assert await uids('jobname=="sql backup";IsRetry==true') == [
        s.uid for s in everything if s.plan.name == "SQL Backup" and s.retry
    ]
    assert await uids(f"EndTime<{T - timedelta(days=29):%Y-%m-%dT%H:%M:%SZ}")
    twin = next(job.uid for job in data.jobs(T) if job.plan.key == "b1b")
    by_job = await uids(f'JobUid=="{twin}"')
    assert by_job == [s.uid for s in everything if s.job_uid == twin]
    assert len(by_job) == 30
    for bad in ("Nope==1", "CreationTime>=yesterday", "Result==Great", "(State==Stopped", "State==Stopped)", "=="):
        status, body, _ = await get(client, f"{SESSIONS}&filter={bad}", token)
        assert status == 400, bad
        assert "Error" in xml(body)


async def test_sorting_and_paging(client: Client) -> None:
    token = await logon(client)
    everything = dataset(client).sessions(T)
    seen: list[str] = []
    for page in (1, 2, 3, 99):
        status, body, _ = await get(client, f"{SESSIONS}&sortDesc=CreationTime&pageSize=300&page={page}", token)
        assert status == 200
        doc = xml(body)["QueryResult"]
        found = doc["Entities"]["BackupJobSessions"]
        seen += [s["@UID"] for s in (found or {}).get("BackupJobSession", [])]
        assert doc["PagingInfo"]["@PageNum"] == str(page)
    assert seen == [s.uid for s in sorted(everything, key=lambda s: s.created.value, reverse=True)]
    for bad in (
        "type=BackupJobSession&format=Entities&pageSize=0",
        "type=BackupJobSession&format=Entities&page=x",
        "type=BackupJobSession&format=Entities&sortAsc=Nope",
        "type=Job&format=Entities&filter=JobUid==x",
        "type=ReplicaJobSession&format=Entities",
        "type=BackupJobSession&format=Entity",
    ):
        assert (await get(client, f"/api/query?{bad}", token))[0] == 400, bad

    async with client.post("/_sim/veeam/paging", json={"ignore_page": True}) as response:
        assert response.status == 200
    status, body, _ = await get(client, f"{SESSIONS}&page=3", token)
    assert xml(body)["QueryResult"]["PagingInfo"]["@PageNum"] == "1"


async def test_refs(client: Client) -> None:
    token = await logon(client)
    status, body, _ = await get(client, "/api/query?type=BackupJobSession&pageSize=2", token)
    assert status == 200
    refs = xml(body)["QueryResult"]["Refs"]["Ref"]
    assert [ref["@Type"] for ref in refs] == ["BackupJobSessionReference"] * 2
    status, body, _ = await get(client, "/api/query?type=repository&format=refs", token, JSON)
    assert json.loads(body)["Entities"] is None


async def test_repositories(client: Client) -> None:
    token = await logon(client)
    status, body, _ = await get(client, "/api/query?type=Repository&format=Entities&sortAsc=Name", token)
    assert status == 200
    repositories = xml(body)["QueryResult"]["Entities"]["Repositories"]["Repository"]
    assert [r["@Name"] for r in repositories] == [
        "Capacity Tier S3",
        "Default Backup Repository",
        "Default Backup Repository",
        "Hardened Linux Repo",
    ]
    s3 = repositories[0]
    assert (s3["Capacity"], s3["FreeSpace"], s3["Kind"]) == ("-1", "-1", "AmazonS3")
    default = repositories[1]
    assert int(default["Capacity"]) > int(default["FreeSpace"]) > 0
    _, body, _ = await get(client, "/api/query?type=Repository&format=Entities&filter=FreeSpace<0", token, JSON)
    found = json.loads(body)["Entities"]["Repositories"]["Repositories"]
    assert [r["Name"] for r in found] == ["Capacity Tier S3"]


JOBS = "/api/query?type=Job&format=Entities"


async def test_jobs_in_xml(client: Client) -> None:
    token = await logon(client)
    status, body, content_type = await get(client, JOBS + "&sortAsc=Name", token)
    assert (status, content_type) == (200, "application/xml")
    doc = xml(body)["QueryResult"]
    jobs = doc["Entities"]["Jobs"]["Job"]
    assert len(jobs) == len(dataset(client).jobs(T)) == 12
    assert [job["@Name"] for job in jobs] == sorted((job["@Name"] for job in jobs), key=str.casefold)
    assert (doc["PagingInfo"]["@PageNum"], doc["PagingInfo"]["@PagesCount"]) == ("1", "1")

    first = jobs[0]
    assert list(first)[:4] == ["@Href", "@Type", "@Name", "@UID"]
    assert first["@Type"] == "Job"
    assert first["@UID"].startswith("urn:veeam:Job:")
    assert [k for k in first if not k.startswith("@")] == [
        "Links",
        "JobType",
        "Platform",
        "Description",
        "ScheduleConfigured",
        "ScheduleEnabled",
        "NextRun",
        "JobScheduleOptions",
    ]
    by_name: dict[str, list[Any]] = {}
    for job in jobs:
        by_name.setdefault(job["@Name"], []).append(job)
    servers = [
        next(link["@Name"] for link in job["Links"]["Link"] if link["@Type"] == "BackupServerReference")
        for job in by_name["Backup Job 1"]
    ]
    assert sorted(servers) == ["vbr01.lab.local", "vbr02.lab.local"]
    (disabled,) = by_name["Test Lab Backup"]
    assert (disabled["ScheduleEnabled"], disabled["Platform"]) == ("false", "HyperV")
    assert "NextRun" not in disabled  # scheduled jobs only
    (sql,) = by_name["SQL Backup"]  # vbr02's was deleted
    assert sql["NextRun"] == "2025-03-10T16:10:00Z"
    assert sql["JobScheduleOptions"]["OptionsPeriodically"] == {"Enabled": "true", "Kind": "Hours", "FullPeriod": "2"}
    (web_servers,) = by_name["Web Servers Backup"]
    assert web_servers["JobScheduleOptions"]["OptionsDaily"]["Time"] == "21:00:00"
    assert by_name["Exchange Replica"][0]["JobType"] == "Replica"


async def test_jobs_in_json(make_client: Callable[..., Awaitable[Client]]) -> None:
    v12 = await make_client(json_style="v12")
    token = await logon(v12)
    _, body, _ = await get(v12, JOBS + "&filter=ScheduleEnabled==false", token, JSON)
    doc = json.loads(body)
    assert doc["Entities"]["BackupJobSessions"] is None
    (job,) = doc["Entities"]["Jobs"]["Jobs"]
    assert job["Name"] == "Test Lab Backup"
    assert job["ScheduleEnabled"] is False
    assert job["ScheduleConfigured"] is True
    assert job["NextRun"] is None  # v12 writes nulls
    assert job["JobScheduleOptions"]["RetryOptions"] == {"RetrySpecified": False, "RetryTimes": 3, "RetryTimeout": 10}

    v13 = await make_client(json_style="v13")
    token = await logon(v13)
    _, body, _ = await get(v13, JOBS + '&filter=BackupServerName=="vbr02.lab.local"&pageSize=2&page=2', token, JSON)
    doc = json.loads(body)
    jobs = doc["entities"]["jobs"]["jobs"]
    assert len(jobs) == 2
    assert doc["pagingInfo"] == {**doc["pagingInfo"], "pageNum": 2, "pageSize": 2, "pagesCount": 3}
    assert {"jobType", "platform", "scheduleEnabled", "nextRun", "jobScheduleOptions", "uid", "links"} <= set(jobs[0])
    assert "retryOptions" in jobs[0]["jobScheduleOptions"]


def test_jobs_and_sessions_agree() -> None:
    data = VeeamDataset(1, T)
    jobs = {job.uid: job for job in data.jobs(T)}
    sessions = data.sessions(T)
    per_job = Counter(s.job_uid for s in sessions)
    unlisted = {s.plan.key for s in sessions if s.job_uid not in jobs}
    assert unlisted == {"sql_old"}  # deleted, its history kept
    for uid, job in jobs.items():
        assert all(s.plan is job.plan for s in sessions if s.job_uid == uid)
        assert (job.next_run is None) == (not job.plan.schedule_enabled)
        assert job.next_run is None or job.next_run > T
    by_key = {job.plan.key: job for job in jobs.values()}
    # A new job and a replication job have no BackupJobSession.
    assert per_job[by_key["web"].uid] == per_job[by_key["replica"].uid] == 0
    assert by_key["web"].next_run == datetime(2025, 3, 10, 21, tzinfo=UTC)
    # The disabled job's history ends 16 days before origin.
    lab = [s for s in sessions if s.plan.key == "lab"]
    assert lab
    assert max(s.created.value for s in lab) < T - timedelta(days=16)
    assert {s.outcome for s in lab[-2:]} == {"Success"}
    # "Backup Job 1": one name, two servers, two jobs, each with its sessions.
    twins = [job for job in jobs.values() if job.plan.name == "Backup Job 1"]
    assert {job.plan.server for job in twins} == {"vbr01", "vbr02"}
    assert all(per_job[job.uid] == 30 for job in twins)
    # Later on, the new job runs.
    later = T + timedelta(days=1)
    assert any(s.plan.key == "web" for s in data.sessions(later))
    assert not any(s.plan.key in ("lab", "sql_old", "replica") and s.created.value > T for s in data.sessions(later))


# --- the dataset ---------------------------------------------------------------------


def test_dataset_is_deterministic_and_has_every_outcome() -> None:
    a = VeeamDataset(1, T).sessions(T)
    b = VeeamDataset(1, T).sessions(T)
    assert [s.uid for s in a] == [s.uid for s in b]
    assert [s.uid for s in VeeamDataset(2, T).sessions(T)] != [s.uid for s in a]
    assert len(a) > 700
    assert len({s.uid for s in a}) == len(a)
    assert all(T - HISTORY <= s.created.value <= T for s in a)
    outcomes = Counter((s.state(T), s.result(T)) for s in a)
    assert {result for state, result in outcomes if state == "Stopped"} == {*RESULTS, "None"}
    assert {s.plan.job_type for s in a} == {"Backup", "BackupCopy", "ImmediateBackupCopy", "AgentBackup", "NasBackup"}
    assert any(s.retry for s in a)
    # Fractional seconds of every precision.
    digits = Counter(len(m.group(1)) if (m := re.search(r"\.(\d+)Z", s.created.text)) else 0 for s in a)
    assert set(digits) == {0, 3, 6, 7}


def test_every_state_shows_in_a_day() -> None:
    data = VeeamDataset(1, T)
    states: set[str] = set()
    for s in data.sessions(T + timedelta(days=1)):
        if s.created.value < T:
            continue
        moment = s.created.value
        while moment < s.ends.value + timedelta(minutes=1):
            states.add(s.state(moment))
            moment += timedelta(seconds=20)
    assert states == set(STATES)


def test_clock_reveals_new_sessions_and_keeps_ids() -> None:
    now = {s.uid: s for s in VeeamDataset(1, T).sessions(T)}
    later = T + timedelta(hours=6)
    # A fresh dataset of the same origin: ids do not depend on when they are asked for.
    after = {s.uid: s for s in VeeamDataset(1, T).sessions(later)}
    assert len(set(after) - set(now)) >= 3
    running = [s for s in now.values() if not s.finished(T)]
    assert len(running) == 4
    for s in running:
        assert after[s.uid].created == s.created
        assert after[s.uid].finished(later)
        assert after[s.uid].result(later) in (*RESULTS, "None")


def test_camel_case() -> None:
    assert [camel_case(n) for n in ("UID", "CreationTimeUTC", "PagingInfo", "IsRetry", "Href", "uid", "")] == [
        "uid",
        "creationTimeUTC",
        "pagingInfo",
        "isRetry",
        "href",
        "uid",
        "",
    ]


def test_registered_shape() -> None:
    assert SIMULATOR.name == "veeam"
    with pytest.raises(ValueError, match="json_style"):
        create_app(json_style="v14")
    target = SIMULATOR.demo_target("http://127.0.0.1:1")
    assert target["name"] == "veeam-demo"
    assert set(target) == {"name", "vendor", "url", "username", "password", "format", "labels"}
