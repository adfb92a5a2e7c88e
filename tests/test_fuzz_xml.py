"""Mutation fuzz of every vendor parser on real payloads.

The corpus is what the vendor simulators answer over loopback HTTP (XML and
JSON, every shape they serve) plus the vendors' own documented samples in
../shared/vendor-api. Each example takes one payload, damages it at the byte
level (bit flips, truncation, invalid UTF-8, deleted or repeated ranges) or
at the structure level (duplicated, removed or renamed elements, swapped
attribute values, entities and DOCTYPEs, huge, negative, NaN or out-of-range
numbers and dates, changed JSON types), and hands it to its parser. The only
exception allowed out is ParseError, and whatever the parser returns must
satisfy the model's invariants (`check_result`): a bad payload may be
refused, never turned into a run the state, the store or the exposition
would choke on.

Hypothesis runs derandomized without a database, so CI sees the same few
thousand mutations every time.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from exporter.model import ITEM_STATES, JobKey, Repository, Run, Snapshot, Status
from exporter.simulators import avepoint as sim_avepoint
from exporter.simulators import commvault as sim_commvault
from exporter.simulators import keepit as sim_keepit
from exporter.simulators import veeam as sim_veeam
from exporter.simulators.base import start_simulator
from exporter.vendors import avepoint, commvault, keepit, veeam
from exporter.vendors.base import ParseError
from tests.conftest import VENDOR_API_DIR

NOW = datetime(2025, 3, 10, 14, 30, tzinfo=UTC)
# Sizes and counts are Int64 at every vendor; past that they cannot be stored
# or rendered as a sample value.
INT64 = 2**63
AVEPOINT_JOB = JobKey("Exchange Online", "backup")

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the model's invariants ----------------------------------------------------------


def _check_time(value: datetime | None, what: str) -> None:
    if value is None:
        return
    assert isinstance(value, datetime), what
    assert value.utcoffset() == timedelta(0), f"{what} is not UTC: {value!r}"
    assert math.isfinite(value.timestamp()), what


def _check_size(value: int | None, what: str) -> None:
    if value is None:
        return
    assert isinstance(value, int), what
    assert not isinstance(value, bool), what
    assert 0 <= value < INT64, f"{what} out of range: {value}"


def _check_seconds(value: float | None, what: str) -> None:
    if value is None:
        return
    assert math.isfinite(value), f"{what} is {value}"
    assert value >= 0, f"{what} is negative: {value}"


def check_run(run: Run) -> None:
    """What every Run a parser returns must satisfy, whatever the payload."""
    assert isinstance(run.run_id, str)
    assert run.run_id, "empty run id"
    assert run.run_id == run.run_id.strip(), f"run id with surrounding whitespace: {run.run_id!r}"
    assert isinstance(run.job, JobKey)
    assert isinstance(run.job.job_name, str)
    assert run.job.job_name, "empty job name"
    assert isinstance(run.job.job_type, str)
    assert run.job.job_type, "empty job type"
    assert isinstance(run.status, Status)
    for name in ("start", "end", "query_time"):
        _check_time(getattr(run, name), f"run.{name}")
    if not run.status.finished:
        assert run.end is None, "a run in progress has an end"
    _check_size(run.processed_bytes, "processed_bytes")
    _check_size(run.stored_bytes, "stored_bytes")
    for state, count in run.items.items():
        assert state in ITEM_STATES, state
        _check_size(count, f"items[{state}]")
    if run.progress is not None:
        assert 0.0 <= run.progress <= 1.0, run.progress
    _check_seconds(run.duration_seconds, "duration_seconds")
    _check_seconds(run.duration, "duration")
    assert run.reason is None or isinstance(run.reason, str)
    # The state keeps run facts as epoch seconds and the store as JSON.
    for value in (run.start, run.end, run.query_time):
        if value is not None:
            json.dumps(value.timestamp())


def check_snapshot(snapshot: Snapshot) -> None:
    assert snapshot.job.job_name
    _check_time(snapshot.timestamp, "snapshot.timestamp")
    assert snapshot.timestamp is not None
    _check_size(snapshot.size_bytes, "snapshot.size_bytes")
    assert isinstance(snapshot.complete, bool)


def check_result(result: Any) -> None:
    """Walks whatever a parser returned and checks every model object in it."""
    if result is None:
        return
    if isinstance(result, Run):
        check_run(result)
    elif isinstance(result, Snapshot):
        check_snapshot(result)
    elif isinstance(result, Repository | veeam.RepositoryEntity):
        assert result.name
        _check_size(result.capacity_bytes, "capacity_bytes")
        _check_size(result.free_bytes, "free_bytes")
    elif isinstance(result, veeam.Paging):
        for value in (result.page_num, result.page_size, result.pages_count):
            _check_size(value, "paging")
    elif isinstance(result, str):
        assert result, "an empty identifier"
        assert result == result.strip()
    elif isinstance(result, list | tuple | frozenset):
        for item in result:
            check_result(item)
    elif isinstance(result, veeam.SessionPage):
        check_result(result.sessions)
        check_result(result.paging)
    elif isinstance(result, veeam.Session):
        check_run(result.run)
    elif isinstance(result, veeam.JobPage):
        check_result(result.paging)
        for job in result.jobs:
            assert job.uid
            assert job.name
            assert job.job_type
    elif isinstance(result, veeam.RepositoryPage):
        check_result(result.repositories)
        check_result(result.paging)
    elif isinstance(result, keepit.Connector):
        assert result.guid
        assert result.name
    elif isinstance(result, commvault.JobPage):
        _check_size(result.total, "total")
        for row in result.rows:
            check_run(row.run)
            assert row.run.run_id == str(row.job_id)
    elif isinstance(result, commvault.TokenResult):
        assert (result.token is None) != (result.error is None)
        if result.token is not None:
            assert result.token.startswith(commvault.TOKEN_PREFIX)
    elif isinstance(result, avepoint.JobsPage):
        _check_size(result.total, "total")
        check_result(result.runs)
    elif isinstance(result, avepoint.Token):
        assert result.access_token
        _check_seconds(result.expires_in, "expires_in")
    else:
        raise AssertionError(f"no invariant for {type(result).__name__}")


# --- the corpus ---------------------------------------------------------------------------


Parser = Callable[[bytes], Any]


@dataclass(frozen=True)
class Sample:
    name: str
    body: bytes
    parse: Parser
    kind: str  # "xml" or "json"

    def __repr__(self) -> str:
        return f"<{self.name}>"


class Corpus(list[Sample]):
    """The payloads; shown by count, not content, in Hypothesis' reports."""

    def __repr__(self) -> str:
        return f"<corpus of {len(self)} payloads>"


def _commvault(fmt: commvault.Format, parse: Callable[[bytes, commvault.Format], Any]) -> Parser:
    return lambda body: parse(body, fmt)


KEEPIT_PARSERS: dict[str, Parser] = {
    "account": keepit.parse_account_id,
    "devices": keepit.parse_devices,
    "jobs": lambda body: keepit.parse_jobs(body, "Microsoft 365 Backup"),
    "history": lambda body: keepit.parse_history(body, "Microsoft 365 Backup"),
}
VEEAM_PARSERS: dict[str, Parser] = {
    "BackupJobSession": veeam.parse_sessions,
    "Job": veeam.parse_jobs,
    "Repository": veeam.parse_repositories,
    "logon": veeam.parse_logon_session,
}


async def _read(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[bytes, Any]:
    async with session.request(method, url, **kwargs) as response:
        body = await response.read()
        assert response.status < 300, f"{method} {url}: {response.status} {body[:200]!r}"
        return body, response.headers


async def _keepit_samples(session: aiohttp.ClientSession) -> list[Sample]:
    runner, base = await start_simulator(sim_keepit.create_app(seed=1, now=NOW))
    auth = {"Authorization": aiohttp.encode_basic_auth(sim_keepit.DEMO_USERNAME, sim_keepit.DEMO_PASSWORD)}
    xml = {**auth, "Accept": keepit.ACCEPT, "Content-Type": "application/xml"}
    samples: list[Sample] = []
    try:
        body, _ = await _read(session, "GET", base + "/users/", headers=xml)
        samples.append(Sample("keepit account", body, KEEPIT_PARSERS["account"], "xml"))
        account = keepit.parse_account_id(body)
        body, _ = await _read(session, "GET", f"{base}/users/{account}/devices?all=1", headers=xml)
        samples.append(Sample("keepit devices", body, KEEPIT_PARSERS["devices"], "xml"))
        device = f"{base}/users/{account}/devices/{keepit.parse_devices(body)[0].guid}"
        for active in ("true", "false"):
            query = (
                f"<filter><from-time>2025-03-01T00:00:00Z</from-time><active-only>{active}</active-only>"
                "<limit>6</limit><stats><name>fail_reason</name></stats></filter>"
            )
            body, _ = await _read(session, "PUT", device + "/jobs", headers=xml, data=query)
            samples.append(Sample(f"keepit jobs active-only={active}", body, KEEPIT_PARSERS["jobs"], "xml"))
        failed = "<filter><from-time>2025-02-01T00:00:00Z</from-time><failed-only/><limit>4</limit></filter>"
        body, _ = await _read(session, "PUT", device + "/jobs", headers=xml, data=failed)
        samples.append(Sample("keepit failed jobs", body, KEEPIT_PARSERS["jobs"], "xml"))
        history = "<range><start>2025-03-05T00:00:00Z</start><span>P5D</span><count>6</count></range>"
        body, _ = await _read(session, "PUT", device + "/history/range", headers=xml, data=history)
        samples.append(Sample("keepit history", body, KEEPIT_PARSERS["history"], "xml"))
    finally:
        await runner.cleanup()
    return samples


async def _veeam_samples(session: aiohttp.ClientSession, json_style: str) -> list[Sample]:
    runner, base = await start_simulator(sim_veeam.create_app(seed=1, now=NOW, json_style=json_style))
    basic = {"Authorization": aiohttp.encode_basic_auth(sim_veeam.DEMO_USERNAME, sim_veeam.DEMO_PASSWORD)}
    samples: list[Sample] = []
    try:
        for kind, accept in (("xml", "application/xml"), ("json", "application/json")):
            if json_style == "v13" and kind == "xml":
                continue
            body, headers = await _read(
                session, "POST", base + "/api/sessionMngr/?v=latest", headers={**basic, "Accept": accept}
            )
            samples.append(Sample(f"veeam {kind} {json_style} logon", body, VEEAM_PARSERS["logon"], kind))
            token = {veeam.SESSION_HEADER: headers[veeam.SESSION_HEADER], "Accept": accept}
            # The filters bring sessions in progress and failed ones, not
            # only the successes that dominate the history.
            for query, filter_ in (
                ("BackupJobSession", ""),
                ("BackupJobSession", "&filter=State%21%3DStopped"),
                ("BackupJobSession", "&filter=Result%3D%3DFailed%2CResult%3D%3DWarning"),
                ("Job", ""),
                ("Repository", ""),
            ):
                url = f"{base}/api/query?type={query}&format=Entities&sortAsc=Name&pageSize=4&page=1{filter_}"
                body, _ = await _read(session, "GET", url, headers=token)
                name = f"veeam {kind} {json_style} {query}{filter_}"
                samples.append(Sample(name, body, VEEAM_PARSERS[query], kind))
    finally:
        await runner.cleanup()
    return samples


async def _commvault_samples(session: aiohttp.ClientSession, wrapped: bool) -> list[Sample]:
    runner, base = await start_simulator(sim_commvault.create_app(seed=1, now=NOW, wrapped_json=wrapped))
    api = base + "/commandcenter/api"
    password = base64.b64encode(sim_commvault.DEMO_PASSWORD.encode()).decode()
    samples: list[Sample] = []
    try:
        for fmt in commvault.FORMATS:
            if wrapped and fmt == "xml":
                continue
            accept = commvault.ACCEPT[fmt]
            for given in () if wrapped else (password, "d3Jvbmc="):
                if fmt == "json":
                    login: dict[str, Any] = {
                        "json": {"username": sim_commvault.DEMO_USERNAME, "password": given, "deviceId": "fuzz"}
                    }
                else:
                    request = (
                        f'<DM2ContentIndexing_CheckCredentialReq username="{sim_commvault.DEMO_USERNAME}" '
                        f'password="{given}" deviceId="fuzz"/>'
                    )
                    login = {"data": request, "headers": {"Content-Type": "application/xml"}}
                login.setdefault("headers", {})["Accept"] = accept
                body, _ = await _read(session, "POST", api + "/Login", **login)
                outcome = "refused" if given != password else "ok"
                name = f"commvault {fmt} login {outcome}"
                samples.append(Sample(name, body, _commvault(fmt, commvault.parse_token), fmt))
            token = await _commvault_token(session, api)
            for category, offset in (("All", "0"), ("All", "1"), ("Active", "0"), ("Finished", "7")):
                body, _ = await _read(
                    session,
                    "GET",
                    api + f"/Job?completedJobLookupTime=864000&jobCategory={category}&jobFilter=Backup,Restore",
                    headers={"Authtoken": token, "Accept": accept, "limit": "5", "offset": offset},
                )
                name = f"commvault {fmt}{' wrapped' if wrapped else ''} jobs {category} offset {offset}"
                samples.append(Sample(name, body, _commvault(fmt, commvault.parse_job_list), fmt))
    finally:
        await runner.cleanup()
    return samples


async def _commvault_token(session: aiohttp.ClientSession, api: str) -> str:
    password = base64.b64encode(sim_commvault.DEMO_PASSWORD.encode()).decode()
    login = {"username": sim_commvault.DEMO_USERNAME, "password": password, "deviceId": "fuzz"}
    body, _ = await _read(session, "POST", api + "/Login", json=login, headers={"Accept": "application/json"})
    token = commvault.parse_token(body, "json").token
    assert token is not None
    return token


async def _avepoint_samples(session: aiohttp.ClientSession, detail_keys: str) -> list[Sample]:
    runner, base = await start_simulator(sim_avepoint.create_app(seed=1, now=NOW, detail_keys=detail_keys))
    samples: list[Sample] = []
    try:
        form = {
            "grant_type": "client_credentials",
            "client_id": sim_avepoint.DEMO_CLIENT_ID,
            "client_secret": sim_avepoint.DEMO_CLIENT_SECRET,
            "scope": avepoint.DEFAULT_SCOPE,
        }
        body, _ = await _read(session, "POST", base + sim_avepoint.TOKEN_PATH, data=form)
        samples.append(Sample("avepoint token", body, avepoint.parse_token, "json"))
        bearer = {"Authorization": "Bearer " + avepoint.parse_token(body).access_token}
        for path in (sim_avepoint.CURRENT_PATH, sim_avepoint.OLDER_PATH):
            # jobState 0 all, 1 in progress, 3 failed, 4 finished with exception.
            for object_type, state in ((1, 0), (7, 0), (1, 1), (2, 3), (3, 4)):
                url = (
                    f"{base}{path}?objectType={object_type}&jobType=1&jobState={state}"
                    "&startTime=2025-02-01T00:00:00Z&pageSize=5"
                )
                body, _ = await _read(session, "GET", url, headers=bearer)
                name = f"avepoint {path} objectType={object_type} jobState={state} {detail_keys}"
                samples.append(Sample(name, body, _avepoint_page, "json"))
    finally:
        await runner.cleanup()
    return samples


def _avepoint_page(body: bytes) -> Any:
    return avepoint.parse_jobs_page(body, AVEPOINT_JOB)


async def _simulator_samples() -> list[Sample]:
    # No cookies: Veeam's simulator prefers a cookie to the header, as EM does.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        groups = [
            await _keepit_samples(session),
            await _veeam_samples(session, "v12"),
            await _veeam_samples(session, "v13"),
            await _commvault_samples(session, wrapped=False),
            await _commvault_samples(session, wrapped=True),
            await _avepoint_samples(session, "count"),
            await _avepoint_samples(session, "number"),
        ]
    return [sample for group in groups for sample in group]


def _doc(name: str) -> str:
    return (VENDOR_API_DIR / name).read_text(encoding="utf-8")


def _found(pattern: str, text: str, group: int = 0) -> str:
    match = re.search(pattern, text, re.S)
    assert match is not None, pattern
    return match.group(group)


def _documented_samples() -> list[Sample]:
    """The vendors' own samples, repaired as the vendor tests repair them."""
    keepit_jobs = re.findall(r"<jobs>.*?</jobs>", _doc("keepit-jobs-filter.txt"), re.S)
    history = "<history>\n" + _found(r"<backup>.*?</history>", _doc("keepit-history-range.txt"))
    notes = _doc("veeam-commvault-notes.md")
    veeam_xml = _found(
        r'<QueryResult xmlns="http://www.veeam.com/ent/v1.0"><Entities><BackupJobSessions>.*?</QueryResult>', notes
    )
    veeam_json = _found(r'\{"Refs":null.*?"PagesCount":1\}\}', notes).replace(",…]", "]").replace("…,", "")
    logon = _found(r"<LogonSession .*?</LogonSession>", notes).replace("…", "")
    commvault_notes = notes[notes.index("## 3. Commvault") :]
    commvault_json = _found(r"```json\n(\{\"totalRecordsWithoutPaging\".*?)```", commvault_notes, 1)
    commvault_xml = _found(r"<JobManager_JobListResponse.*?</JobManager_JobListResponse>", commvault_notes)
    commvault_doc = _found(
        r"<\?xml[^>]*\?>\s*<JobManager_JobListResponse.*?</JobManager_JobListResponse>",
        _doc("commvault-job-details.txt"),
    )
    envelope = _found(r"```json\n(\{\"statusCode\".*?)\n```", _doc("keepit-avepoint-notes.md"), 1)
    xml_parse = _commvault("xml", commvault.parse_job_list)
    return [
        *(
            Sample(f"keepit doc jobs {i}", text.encode(), KEEPIT_PARSERS["jobs"], "xml")
            for i, text in enumerate(keepit_jobs)
        ),
        Sample("keepit doc history", history.encode(), KEEPIT_PARSERS["history"], "xml"),
        Sample("veeam notes sessions xml", veeam_xml.encode(), veeam.parse_sessions, "xml"),
        Sample("veeam notes sessions json", veeam_json.encode(), veeam.parse_sessions, "json"),
        Sample("veeam notes logon", logon.encode(), veeam.parse_logon_session, "xml"),
        Sample("commvault notes json", commvault_json.encode(), _commvault("json", commvault.parse_job_list), "json"),
        Sample("commvault notes xml", commvault_xml.encode(), xml_parse, "xml"),
        Sample("commvault doc xml", commvault_doc.encode(), xml_parse, "xml"),
        Sample("avepoint notes envelope", envelope.encode(), _avepoint_page, "json"),
    ]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    samples = Corpus([*asyncio.run(_simulator_samples()), *_documented_samples()])
    # The corpus is only worth fuzzing if every payload parses as it is.
    for sample in samples:
        check_result(sample.parse(sample.body))
    return samples


def test_corpus_covers_every_parser_and_shape(corpus: Corpus) -> None:
    names = " ".join(sample.name for sample in corpus)
    for needle in ("keepit account", "keepit devices", "keepit jobs", "keepit history"):
        assert needle in names
    for shape in ("xml v12", "json v12", "json v13"):
        for query in ("logon", "BackupJobSession", "Job", "Repository"):
            assert f"veeam {shape} {query}" in names
    for needle in ("commvault json login", "commvault xml login", "commvault json wrapped jobs", "commvault xml jobs"):
        assert needle in names
    assert "avepoint token" in names
    assert "/backup/m365/jobs" in names
    assert "/backup/m365/cloudbackupjobs" in names
    assert sum(len(sample.body) for sample in corpus) > 20_000


# --- mutations ------------------------------------------------------------------------------

NASTY_NUMBERS: tuple[str, ...] = (
    "",
    " ",
    "-1",
    "-0",
    "0",
    "1.5",
    "-1.5",
    str(INT64 - 1),
    str(INT64),
    str(-INT64 - 1),
    "9" * 30,
    "1" + "0" * 400,
    "1" * 5000,
    "1e308",
    "1e309",
    "-1e309",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "0x1F",
    "1_000",
    "+5",
    "\u0661\u0662\u0663",
    "\u00b2",
    # Epoch seconds: year 9999, just past it, 1e18, before 1 AD.
    "253402300799",
    "253402300800",
    "1000000000000000000",
    "-62135596801",
)
NASTY_DATES: tuple[str, ...] = (
    "",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00.0000000",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.9999999Z",
    "9999-12-31T23:59:59-01:00",
    "10000-01-01T00:00:00Z",
    "1e18",
    "1000000000000000000",
    "2024-02-30T00:00:00Z",
    "2024-01-01T25:00:00Z",
    "2024-01-01T00:00:00.1234567891234Z",
    "2024-01-01T00:00:00+24:00",
    "2024-01-01T00:00:00+23:59",
    "1969-12-31T23:59:59Z",
    "1900-01-01T00:00:00",
    "2024-01-01",
    "2024-W01-1",
    "\u0662\u0660\u0662\u0664-01-01T00:00:00Z",
    "NaN",
)
NASTY_WORDS: tuple[str, ...] = (
    "",
    " ",
    "true",
    "false",
    "yes",
    "None",
    "null",
    "Stopped",
    "Working",
    "Completed",
    "Killed",
    "In Progress",
    "Finished with Exception",
    "\U0001f4a5 Sauvegarde \u00e9chou\u00e9e \u202e",
    "x" * 5000,
    "a\tb\nc",
)
NASTY_TEXT: tuple[str, ...] = (*NASTY_NUMBERS, *NASTY_DATES, *NASTY_WORDS)
NASTY_JSON: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    -INT64 - 1,
    INT64,
    10**30,
    10**400,
    1e308,
    -1e308,
    1.5,
    -0.0,
    253402300800,
    -62135596801,
    [],
    {},
    [None],
    {"#text": "1"},
    *NASTY_TEXT,
)
NASTY_JSON_NUMBERS: tuple[Any, ...] = tuple(v for v in NASTY_JSON if isinstance(v, int | float)) + NASTY_NUMBERS
_DATE_LIKE = re.compile(r"\s*\d{4}-\d\d-\d\d")
_NUMBER_LIKE = re.compile(r"\s*-?\d+(?:\.\d+)?\s*")


def nasty_text(original: str, data: st.DataObject) -> str:
    """A hostile replacement for `original`, mostly of its own kind: a date
    for a date, a number for a number, so that it gets past the type checks
    that would refuse anything else and reaches the range checks."""
    if data.draw(st.integers(0, 4), label="any kind") == 0:
        pool = NASTY_TEXT
    elif _DATE_LIKE.match(original):
        pool = NASTY_DATES
    elif _NUMBER_LIKE.fullmatch(original):
        pool = NASTY_NUMBERS
    else:
        pool = NASTY_TEXT
    return data.draw(st.sampled_from(pool), label="value")


def nasty_json(original: Any, data: st.DataObject) -> Any:
    if data.draw(st.integers(0, 4), label="any kind") == 0:
        return data.draw(st.sampled_from(NASTY_JSON), label="value")
    if isinstance(original, str) and _DATE_LIKE.match(original):
        return data.draw(st.sampled_from(NASTY_DATES), label="value")
    if isinstance(original, int | float) or (isinstance(original, str) and _NUMBER_LIKE.fullmatch(original)):
        return data.draw(st.sampled_from(NASTY_JSON_NUMBERS), label="value")
    return data.draw(st.sampled_from(NASTY_JSON), label="value")


# Raw text no serializer writes but a server might.
NASTY_JSON_TOKENS: tuple[str, ...] = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000, "1.0e-400")
NASTY_BYTES: tuple[bytes, ...] = (
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\x00",
    b"\x1b",
    b"\xef\xbb\xbf",
    b"<",
    b">",
    b"&",
    b"&amp;",
    b"]]>",
    b"<!--",
    b'"',
    b"'",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"NaN",
    b"-",
    b"\r\n",
)
DOCTYPES: tuple[str, ...] = (
    '<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>',
    '<!DOCTYPE r SYSTEM "file:///etc/passwd">',
    '<!DOCTYPE r PUBLIC "-//x//y" "http://127.0.0.1:9/x.dtd">',
    "<!DOCTYPE r>",
    "<!DOCTYPE r [<!ELEMENT r ANY><!ATTLIST r a CDATA 'default'>]>",
)
ENTITY_REFS: tuple[str, ...] = (
    "&a;",
    "&b;",
    "&x;",
    "&lt;",
    "&#0;",
    "&#xD800;",
    "&#1114112;",
    "&#x10FFFF;",
    "&undefined;",
)
XML_INSERTS: tuple[str, ...] = (
    "<!-- c -->",
    "<?pi data?>",
    "<![CDATA[<x>&]]>",
    "<extra>1</extra>",
    "<extra/>",
    '<foo:bar xmlns:foo="urn:x">1</foo:bar>',
    "<undeclared:bar>1</undeclared:bar>",
    "</",
)

LEAF = re.compile(r"<([A-Za-z_][\w.:-]*)((?:\s[^<>]*?)?)>([^<]*)</\1\s*>")
ATTRIBUTE = re.compile(r'([A-Za-z_][\w.:-]*)="([^"<]*)"')
TAG = re.compile(r"<[^<>]*>")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


def _pick(data: st.DataObject, items: list[re.Match[str]], label: str) -> re.Match[str] | None:
    if not items:
        return None
    return items[data.draw(st.integers(0, len(items) - 1), label=label)]


def _splice(text: str, match: re.Match[str], group: int, value: str) -> str:
    return text[: match.start(group)] + value + text[match.end(group) :]


def mutate_bytes(body: bytes, data: st.DataObject) -> bytes:
    size = len(body)
    position = data.draw(st.integers(0, size), label="position")
    kind = data.draw(
        st.sampled_from(["flip", "truncate", "insert", "delete", "repeat", "digits", "digits", "dates"]), label="kind"
    )
    if kind == "flip" and size:
        index = min(position, size - 1)
        bit = data.draw(st.integers(0, 7), label="bit")
        return body[:index] + bytes([body[index] ^ (1 << bit)]) + body[index + 1 :]
    if kind == "truncate":
        return body[:position]
    if kind == "insert":
        return body[:position] + data.draw(st.sampled_from(NASTY_BYTES), label="bytes") + body[position:]
    length = data.draw(st.integers(1, 64), label="length")
    if kind == "delete":
        return body[:position] + body[position + length :]
    if kind == "repeat":
        return body[: position + length] + body[position : position + length] + body[position + length :]
    pattern = rb"\d+" if kind == "digits" else rb"\d{4}-\d\d-\d\d[T ][\d:.]*(?:Z|[+-]\d\d:\d\d)?"
    runs = list(re.finditer(pattern, body))
    if not runs:
        return body
    run = runs[data.draw(st.integers(0, len(runs) - 1), label="run")]
    value = nasty_text(run.group(0).decode(), data).encode()
    return body[: run.start()] + value + body[run.end() :]


def mutate_xml(text: str, data: st.DataObject) -> str:
    leaves = list(LEAF.finditer(text))
    attributes = list(ATTRIBUTE.finditer(text))
    # Value changes are weighted up: they reach the parsers' range checks,
    # where most structural damage stops at the XML reader.
    kinds = ["leaf"] * 6 + ["attribute"] * 4 + ["raw_leaf", "duplicate", "remove", "rename", "swap_leaves", "nest"]
    kinds += ["attribute_on_leaf", "swap_attributes", "doctype", "insert", "drop_tag", "deep", "cdata"]
    kind = data.draw(st.sampled_from(kinds), label="kind")
    leaf = _pick(data, leaves, "leaf")
    if kind in ("attribute", "swap_attributes"):
        attribute = _pick(data, attributes, "attribute")
        if attribute is None:
            return text
        if kind == "attribute":
            return _splice(text, attribute, 2, _escape(nasty_text(attribute.group(2), data)))
        other = _pick(data, attributes, "other")
        assert other is not None
        first, second = sorted((attribute, other), key=lambda m: m.start())
        if first.start() == second.start():
            return text
        return (
            text[: first.start(2)]
            + second.group(2)
            + text[first.end(2) : second.start(2)]
            + first.group(2)
            + text[second.end(2) :]
        )
    if kind == "doctype":
        doctype = data.draw(st.sampled_from(DOCTYPES), label="doctype")
        declaration = re.match(r"\s*<\?xml[^>]*\?>", text)
        at = declaration.end() if declaration else 0
        text = text[:at] + doctype + text[at:]
        leaves = list(LEAF.finditer(text))
        leaf = _pick(data, leaves, "leaf")
        if leaf is None:
            return text
        return _splice(text, leaf, 3, leaf.group(3) + data.draw(st.sampled_from(ENTITY_REFS), label="ref"))
    if kind == "insert":
        tags = list(TAG.finditer(text))
        tag = _pick(data, tags, "tag")
        at = tag.end() if tag else 0
        return text[:at] + data.draw(st.sampled_from(XML_INSERTS), label="insert") + text[at:]
    if kind == "drop_tag":
        tag = _pick(data, list(TAG.finditer(text)), "tag")
        return text if tag is None else text[: tag.start()] + text[tag.end() :]
    if kind == "deep":
        depth = data.draw(st.integers(1, 3000), label="depth")
        root = re.search(r"<([A-Za-z_][\w.:-]*)[^>]*>", text)
        if root is None:
            return text
        return text[: root.end()] + "<d>" * depth + "</d>" * depth + text[root.end() :]
    if leaf is None:
        return text
    name = leaf.group(1)
    if kind == "leaf":
        return _splice(text, leaf, 3, _escape(nasty_text(leaf.group(3), data)))
    if kind == "raw_leaf":
        return _splice(text, leaf, 3, data.draw(st.sampled_from(ENTITY_REFS + XML_INSERTS), label="raw"))
    if kind == "duplicate":
        return text[: leaf.end()] + leaf.group(0) + text[leaf.end() :]
    if kind == "remove":
        return text[: leaf.start()] + text[leaf.end() :]
    if kind == "rename":
        new = data.draw(st.sampled_from([name.upper(), name + "x", "x", name.lower()]), label="name")
        return text[: leaf.start()] + f"<{new}{leaf.group(2)}>{leaf.group(3)}</{new}>" + text[leaf.end() :]
    if kind == "swap_leaves":
        other = _pick(data, leaves, "other")
        assert other is not None
        first, second = sorted((leaf, other), key=lambda m: m.start())
        if first.start() == second.start():
            return text
        return (
            text[: first.start(3)]
            + second.group(3)
            + text[first.end(3) : second.start(3)]
            + first.group(3)
            + text[second.end(3) :]
        )
    if kind == "nest":
        return _splice(text, leaf, 3, f"<{name}>{leaf.group(3)}</{name}><inner/>")
    if kind == "attribute_on_leaf":
        value = _escape(data.draw(st.sampled_from(NASTY_TEXT), label="value"))
        return text[: leaf.end(1)] + f' unit="{value}"' + text[leaf.end(1) :]
    return _splice(text, leaf, 3, f"<![CDATA[{leaf.group(3)}]]>")


Path_ = tuple[str | int, ...]


def _paths(value: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _get(document: Any, path: Path_) -> Any:
    for step in path:
        document = document[step]
    return document


def _set(document: Any, path: Path_, value: Any) -> Any:
    if not path:
        return value
    _get(document, path[:-1])[path[-1]] = value
    return document


def mutate_json(text: str, data: st.DataObject) -> str:
    document = json.loads(text.removeprefix("\ufeff"))
    paths = list(_paths(document))
    path = paths[data.draw(st.integers(0, len(paths) - 1), label="path")]
    kind = data.draw(
        st.sampled_from(["replace"] * 6 + ["delete", "duplicate", "wrap", "swap", "rename", "token", "duplicate_key"]),
        label="kind",
    )
    if kind == "token":
        numbers = list(re.finditer(r"(?<=[:\[,])\s*-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", text))
        number = _pick(data, numbers, "number")
        if number is None:
            return text
        return (
            text[: number.start()] + data.draw(st.sampled_from(NASTY_JSON_TOKENS), label="token") + text[number.end() :]
        )
    if kind == "duplicate_key":
        objects = list(re.finditer(r'\{\s*"([^"]+)"\s*:', text))
        found = _pick(data, objects, "object")
        if found is None:
            return text
        value = json.dumps(data.draw(st.sampled_from(NASTY_JSON), label="value"))
        return text[: found.start() + 1] + f'"{found.group(1)}": {value}, ' + text[found.start() + 1 :]
    if kind == "replace":
        document = _set(document, path, nasty_json(_get(document, path), data))
    elif kind == "wrap":
        value = _get(document, path)
        document = _set(document, path, data.draw(st.sampled_from([[value], {"value": value}, [value, value]])))
    elif kind == "swap":
        other = paths[data.draw(st.integers(0, len(paths) - 1), label="other")]
        if path and other and path[: len(other)] != other and other[: len(path)] != path:
            first, second = _get(document, path), _get(document, other)
            _set(document, path, second)
            _set(document, other, first)
    elif path:
        parent = _get(document, path[:-1])
        if kind == "delete":
            del parent[path[-1]]
        elif kind == "duplicate" and isinstance(parent, list):
            index = int(path[-1])
            parent.insert(index, json.loads(json.dumps(parent[index])))
        elif kind == "rename" and isinstance(parent, dict):
            key = str(path[-1])
            new = data.draw(st.sampled_from([key.upper(), key.lower(), "@" + key, key + "x", key.swapcase()]))
            parent[new] = parent.pop(key)
    return json.dumps(document, ensure_ascii=data.draw(st.booleans(), label="ascii"))


def parse_checked(sample: Sample, body: bytes | str) -> None:
    """The fuzz oracle: ParseError, or a result within the invariants."""
    if currently_in_test_context():
        note(f"{sample.name}: {body[:2000]!r}")
    try:
        result = sample.parse(body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass"))
    except ParseError:
        return
    check_result(result)


def _draw_sample(data: st.DataObject, corpus: Corpus, kind: str | None = None) -> Sample:
    samples = [sample for sample in corpus if kind is None or sample.kind == kind]
    return samples[data.draw(st.integers(0, len(samples) - 1), label="sample")]


# --- the fuzz runs --------------------------------------------------------------------------------


@settings(FUZZ, max_examples=1500)
@given(data=st.data())
def test_byte_mutations(corpus: Corpus, data: st.DataObject) -> None:
    sample = _draw_sample(data, corpus)
    body = sample.body
    for _ in range(data.draw(st.integers(1, 3), label="rounds")):
        body = mutate_bytes(body, data)
    parse_checked(sample, body)


@settings(FUZZ, max_examples=1500)
@given(data=st.data())
def test_xml_structure_mutations(corpus: Corpus, data: st.DataObject) -> None:
    sample = _draw_sample(data, corpus, "xml")
    text = sample.body.decode("utf-8")
    for _ in range(data.draw(st.integers(1, 3), label="rounds")):
        text = mutate_xml(text, data)
    parse_checked(sample, text)


@settings(FUZZ, max_examples=1200)
@given(data=st.data())
def test_json_structure_mutations(corpus: Corpus, data: st.DataObject) -> None:
    sample = _draw_sample(data, corpus, "json")
    text = sample.body.decode("utf-8-sig")
    for _ in range(data.draw(st.integers(1, 3), label="rounds")):
        try:
            text = mutate_json(text, data)
        except ValueError:
            # An earlier round made it invalid JSON: mutate no further.
            break
    parse_checked(sample, text)


# Characters at which a cut leaves a different kind of incomplete document.
CUT_CLASSES = re.compile(rb'[<>/="&;{}\[\]:,\s]|\d|[A-Za-z]')


def test_truncation_at_every_position_class(corpus: Corpus) -> None:
    """Cut every payload before and after the first few characters of every
    class (markup, quotes, digits, letters, separators): each cut is a
    ParseError or a result within the invariants."""
    cuts = 0
    for sample in corpus:
        seen: dict[bytes, int] = {}
        for match in CUT_CLASSES.finditer(sample.body):
            char = match.group(0)
            key = b"0" if char.isdigit() else b"a" if char.isalpha() else b" " if char.isspace() else char
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 3:
                continue
            for position in (match.start(), match.end()):
                parse_checked(sample, sample.body[:position])
                cuts += 1
        parse_checked(sample, sample.body[: len(sample.body) // 2])
    assert cuts > 1000


# --- hostile XML: entity expansion and external entities -----------------------------------------

MARKER = "FUZZ-SECRET-7f3a"


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        body = f'<!ENTITY leak "{MARKER}">{MARKER}'.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def fetch_recorder() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request: an external DTD or
    entity that a parser fetched shows up here."""
    handler: type[_Recorder] = type("Recorder", (_Recorder,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()


# Each XML parser with the name of its root element and a minimal valid body
# in which `{ref}` is where an entity reference goes.
XML_PARSERS: dict[str, tuple[Parser, str]] = {
    "keepit account": (keepit.parse_account_id, "<user><id>abc123-def456-ghi789{ref}</id></user>"),
    "keepit devices": (
        keepit.parse_devices,
        "<devices><cloud><guid>abc123-def456-ghi789</guid><name>n{ref}</name></cloud></devices>",
    ),
    "keepit jobs": (KEEPIT_PARSERS["jobs"], "<jobs><job><guid>a-b-c-d</guid><type>backup{ref}</type></job></jobs>"),
    "keepit history": (
        KEEPIT_PARSERS["history"],
        "<history><backup><tstamp>2025-01-01T00:00:00Z</tstamp><root>{ref}</root></backup></history>",
    ),
    "keepit execsummary": (
        lambda body: keepit.decode_execsummary(body.decode()),
        "<execsummary><summary>s{ref}</summary></execsummary>",
    ),
    "veeam sessions": (
        veeam.parse_sessions,
        '<QueryResult><Entities><BackupJobSessions><BackupJobSession UID="u"><JobName>j{ref}</JobName>'
        "<JobType>Backup</JobType><State>Stopped</State><Result>Success</Result>"
        "<CreationTimeUTC>2025-01-01T00:00:00Z</CreationTimeUTC></BackupJobSession></BackupJobSessions></Entities></QueryResult>",
    ),
    "veeam jobs": (
        veeam.parse_jobs,
        '<QueryResult><Entities><Jobs><Job UID="u" Name="n"><JobType>Backup{ref}</JobType></Job></Jobs>'
        "</Entities></QueryResult>",
    ),
    "veeam repositories": (
        veeam.parse_repositories,
        '<QueryResult><Entities><Repositories><Repository UID="u" Name="n"><Kind>{ref}</Kind></Repository>'
        "</Repositories></Entities></QueryResult>",
    ),
    "veeam logon": (
        veeam.parse_logon_session,
        "<LogonSession><UserName>{ref}</UserName><SessionId>abc-1</SessionId></LogonSession>",
    ),
    "commvault jobs": (
        _commvault("xml", commvault.parse_job_list),
        '<JobManager_JobListResponse totalRecordsWithoutPaging="1"><jobs><jobSummary jobId="4" status="Completed" '
        'jobType="Backup" jobStartTime="1423087483"><pendingReason>{ref}</pendingReason></jobSummary></jobs>'
        "</JobManager_JobListResponse>",
    ),
    "commvault login": (
        _commvault("xml", commvault.parse_token),
        '<DM2ContentIndexing_CheckCredentialResp token="QSDK 1a2b"><userName>{ref}</userName>'
        "</DM2ContentIndexing_CheckCredentialResp>",
    ),
}


def _hostile_documents(root: str, body: str, url: str, passwd_uri: str, marker_uri: str) -> dict[str, str]:
    a, b, c = "a" * 10, "&a;" * 10, "&b;" * 10
    laughs = f'<!DOCTYPE {root} [<!ENTITY a "{a}"><!ENTITY b "{b}"><!ENTITY c "{c}"><!ENTITY d "{"&c;" * 10}">]>'
    return {
        "billion laughs": laughs + body.format(ref="&d;"),
        "quadratic blowup": f'<!DOCTYPE {root} [<!ENTITY big "{"x" * 50000}">]>' + body.format(ref="&big;" * 200),
        "external file entity": f'<!DOCTYPE {root} [<!ENTITY x SYSTEM "{passwd_uri}">]>' + body.format(ref="&x;"),
        "external marker entity": f'<!DOCTYPE {root} [<!ENTITY x SYSTEM "{marker_uri}">]>' + body.format(ref="&x;"),
        "external http entity": f'<!DOCTYPE {root} [<!ENTITY x SYSTEM "{url}/entity">]>' + body.format(ref="&x;"),
        "parameter entity": f'<!DOCTYPE {root} [<!ENTITY % p SYSTEM "{url}/param"> %p;]>' + body.format(ref="&leak;"),
        "external http dtd": f'<!DOCTYPE {root} SYSTEM "{url}/dtd">' + body.format(ref="&leak;"),
        "external public dtd": f'<!DOCTYPE {root} PUBLIC "-//x//y" "{url}/public">' + body.format(ref="&leak;"),
        "external file dtd": f'<!DOCTYPE {root} SYSTEM "{marker_uri}">' + body.format(ref="&leak;"),
    }


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a parser's result (dataclasses, mappings, lists)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple | frozenset | set):
        for item in value:
            yield from _strings(item)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from _strings(getattr(value, name))


@pytest.mark.parametrize("parser", sorted(XML_PARSERS))
def test_entities_are_never_expanded_nor_fetched(
    parser: str, fetch_recorder: tuple[str, list[str]], tmp_path: Path
) -> None:
    parse, body = XML_PARSERS[parser]
    url, fetched = fetch_recorder
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(MARKER, encoding="utf-8")
    root = body[1:].split(">", 1)[0].split()[0]
    # The body is valid without a reference: the refusal is the entity's doing.
    check_result(parse(body.format(ref="").encode()))
    before = len(fetched)
    for name, document in _hostile_documents(root, body, url, "file:///etc/passwd", secret_file.as_uri()).items():
        try:
            result = parse(document.encode())
        except ParseError as exc:
            message = str(exc)
        else:
            message = ""
            # Tolerated only with the entity left out: nothing expanded, nothing read.
            text = "".join(_strings(result))
            assert MARKER not in text, f"{parser}: {name} was expanded"
            assert "root:" not in text, f"{parser}: {name} read /etc/passwd"
            assert "aaaaaaaaaa" not in text, f"{parser}: {name} was expanded"
            assert "x" * 1000 not in text, f"{parser}: {name} was expanded"
        assert MARKER not in message, name
        assert "root:" not in message, name
    assert fetched[before:] == [], f"{parser} fetched {fetched[before:]}"
