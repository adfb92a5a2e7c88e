"""Veeam EM payload parsing: the documented examples (golden files), both JSON
casings, every status mapping, and malformed input that must become ParseError."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.model import JobKey, Repository, Run, Status
from exporter.simulators.veeam import camel_case
from exporter.vendors.base import ParseError
from exporter.vendors.veeam import (
    NAMESPACE,
    JobEntity,
    Paging,
    RepositoryEntity,
    Session,
    SessionPage,
    attribute_sessions,
    job_type_of,
    map_status,
    parse_jobs,
    parse_logon_session,
    parse_repositories,
    parse_sessions,
    repositories_of,
)
from tests.conftest import run_dict


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def page_dict(page: SessionPage) -> dict[str, Any]:
    return {
        "sessions": [
            {**run_dict(s.run), "backup_server": s.backup_server, "job_uid": s.job_uid} for s in page.sessions
        ],
        "paging": {
            "page_num": page.paging.page_num,
            "page_size": page.paging.page_size,
            "pages_count": page.paging.pages_count,
        },
    }


def _notes(vendor_api_dir: Path) -> str:
    return (vendor_api_dir / "veeam-commvault-notes.md").read_text(encoding="utf-8")


def _notes_xml_example(vendor_api_dir: Path) -> str:
    match = re.search(
        r'<QueryResult xmlns="http://www.veeam.com/ent/v1.0"><Entities><BackupJobSessions>.*?</QueryResult>',
        _notes(vendor_api_dir),
        re.S,
    )
    assert match is not None
    return match.group(0)


def _notes_json_v12_example(vendor_api_dir: Path) -> str:
    """The notes' JSON v12 capture. It elides repeated items with `…` between
    JSON values (`null,…,"BackupJobSessions"`, `{...},…]`); those elisions are
    taken out, the `…` inside strings stay."""
    match = re.search(r'\{"Refs":null.*?"PagesCount":1\}\}', _notes(vendor_api_dir), re.S)
    assert match is not None
    repaired = match.group(0).replace(",…]", "]").replace("…,", "")
    json.loads(repaired)
    return repaired


def _to_v13(document: Any) -> Any:
    if isinstance(document, dict):
        return {camel_case(key): _to_v13(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_to_v13(item) for item in document]
    return document


def _doc_example(vendor_api_dir: Path) -> str:
    text = (vendor_api_dir / "veeam-em-backupjobsession.txt").read_text(encoding="utf-8")
    match = re.search(r"<QueryResult.*?</QueryResult>", text, re.S)
    assert match is not None
    return match.group(0)


# --- the documented examples ---------------------------------------------------------


def test_notes_xml_session_example(vendor_api_dir: Path, golden: Any) -> None:
    page = parse_sessions(_notes_xml_example(vendor_api_dir))
    golden.check_json("veeam_sessions_xml_example.json", page_dict(page))

    (session,) = page.sessions
    run = session.run
    assert run.run_id == "urn:veeam:BackupJobSession:1f03…"
    assert run.job == JobKey("Backup Job 2", "backup")
    assert run.status is Status.SUCCESS
    assert run.start == _utc(2025, 8, 15, 20, 0, 24, 3406)
    assert run.end == _utc(2025, 8, 15, 20, 4, 13, 487602)
    assert run.duration == pytest.approx(229.484196)
    assert run.progress == 1.0
    assert run.reason is None
    assert run.query_time is None  # the filter is on CreationTime, which is `start`
    assert session.backup_server == "vbr01.tech.local"
    assert session.job_uid == "urn:veeam:Job:0a62…"
    assert page.paging == Paging(page_num=1, page_size=100, pages_count=1)


def test_notes_json_v12_example(vendor_api_dir: Path, golden: Any) -> None:
    page = parse_sessions(_notes_json_v12_example(vendor_api_dir))
    golden.check_json("veeam_sessions_json_v12_example.json", page_dict(page))

    (session,) = page.sessions
    run = session.run
    assert run.run_id == "urn:veeam:BackupJobSession:45f1…"
    assert run.job == JobKey("COPY_…", "immediate_backup_copy")
    assert run.status is Status.SUCCESS
    assert run.start == _utc(2026, 6, 14, 23, 9, 26, 173000)
    assert run.end == _utc(2026, 6, 15, 2, 4, 52, 37000)
    assert run.progress == 0.0
    assert run.reason is None
    assert session.backup_server == "vbr.dom"
    assert session.job_uid == "urn:veeam:Job:4088…"
    assert page.paging == Paging(page_num=1, page_size=100, pages_count=1)


def test_json_v13_camel_case_reads_like_v12(vendor_api_dir: Path) -> None:
    v12 = json.loads(_notes_json_v12_example(vendor_api_dir))
    v13 = _to_v13(v12)
    # The shape the notes give for v13.
    session = v13["entities"]["backupJobSessions"]["backupJobSessions"][0]
    assert {"creationTimeUTC", "failureMessage", "uid", "links"} <= set(session)
    assert "rel" in session["links"][0]
    assert v13["pagingInfo"]["pageNum"] == 1

    assert parse_sessions(json.dumps(v13)) == parse_sessions(json.dumps(v12))


def test_doc_example_as_printed_is_not_well_formed(vendor_api_dir: Path) -> None:
    # Its paging links hold raw `"` and `&` inside attribute values.
    with pytest.raises(ParseError, match="malformed XML"):
        parse_sessions(_doc_example(vendor_api_dir))


def test_doc_example_is_a_backup_server_answer(vendor_api_dir: Path) -> None:
    """The reference page's example body lists backup servers, not sessions:
    read as a session answer it must fail, not yield nothing."""

    def escape_attribute(match: re.Match[str]) -> str:
        value = match.group(1).replace("&", "&amp;").replace('"', "&quot;")
        return f'Href="{value}" />'

    escaped = re.sub(r'Href="(.*?)" />', escape_attribute, _doc_example(vendor_api_dir))
    with pytest.raises(ParseError, match="expected BackupJobSessions, got backupservers"):
        parse_sessions(escaped)


def test_notes_logon_session_example(vendor_api_dir: Path) -> None:
    match = re.search(r"<LogonSession .*?</LogonSession>", _notes(vendor_api_dir), re.S)
    assert match is not None
    assert parse_logon_session(match.group(0)) == "15a3fc97-0325-4119-b789-5c0367c6c565"
    v12 = {
        "UserName": "SRV12\\Administrator",
        "SessionId": "15a3fc97-0325-4119-b789-5c0367c6c565",
        "Links": [{"Rel": "Up", "Href": "https://em:9398/api/", "Name": None, "Type": "EnterpriseManager"}],
        "Href": "https://em:9398/api/logonSessions/15a3fc97-0325-4119-b789-5c0367c6c565",
        "Type": "LogonSession",
    }
    assert parse_logon_session(json.dumps(v12)) == "15a3fc97-0325-4119-b789-5c0367c6c565"
    assert parse_logon_session(json.dumps(_to_v13(v12))) == "15a3fc97-0325-4119-b789-5c0367c6c565"


def _notes_repository_xml(vendor_api_dir: Path) -> str:
    """The notes' Repository entity (its attributes elided as `… Name UID`),
    with a name and UID filled in, in a QueryResult."""
    match = re.search(r"<Repository … Name UID>(.*?)</Repository>", _notes(vendor_api_dir))
    assert match is not None
    return (
        f'<QueryResult xmlns="{NAMESPACE}"><Entities><Repositories>'
        '<Repository Type="Repository" Name="Backup Repository 1" UID="urn:veeam:Repository:0001">'
        '<Links><Link Rel="Up" Type="BackupServerReference" Name="vbr01.tech.local" Href="x" /></Links>'
        f"{match.group(1)}</Repository>"
        '<Repository Type="Repository" Name="S3" UID="urn:veeam:Repository:0002">'
        "<Capacity>-1</Capacity><FreeSpace>-1</FreeSpace><Kind>AmazonS3</Kind></Repository>"
        "</Repositories></Entities>"
        '<PagingInfo PageNum="1" PageSize="100" PagesCount="1" /></QueryResult>'
    )


def test_notes_repository_example(vendor_api_dir: Path, golden: Any) -> None:
    page = parse_repositories(_notes_repository_xml(vendor_api_dir))
    golden.check_json(
        "veeam_repositories_example.json",
        [
            {
                "uid": r.uid,
                "name": r.name,
                "backup_server": r.backup_server,
                "capacity_bytes": r.capacity_bytes,
                "free_bytes": r.free_bytes,
            }
            for r in page.repositories
        ],
    )
    assert page.repositories == (
        RepositoryEntity(
            "urn:veeam:Repository:0001", "Backup Repository 1", "vbr01.tech.local", 1079639011328, 881812750336
        ),
        # -1 is "unknown" (S3, snapshot repositories).
        RepositoryEntity("urn:veeam:Repository:0002", "S3", None, None, None),
    )
    assert page.paging == Paging(1, 100, 1)


def test_repositories_json_both_casings() -> None:
    v12 = {
        "Refs": None,
        "Entities": {
            "BackupJobSessions": None,
            "Repositories": {
                "Repositories": [
                    {
                        "Capacity": 1079639011328,
                        "FreeSpace": 881812750336,
                        "Kind": "WindowsLocal",
                        "Name": "Default Backup Repository",
                        "UID": "urn:veeam:Repository:1",
                        "Links": [{"Rel": "Up", "Href": "x", "Name": "vbr01", "Type": "BackupServerReference"}],
                    },
                    {"Capacity": -1, "FreeSpace": -1, "Name": "Cloud", "UID": "urn:veeam:Repository:2", "Links": []},
                ]
            },
        },
        "PagingInfo": {"PageNum": 1, "PageSize": 100, "PagesCount": 1, "Links": []},
    }
    expected = (
        RepositoryEntity("urn:veeam:Repository:1", "Default Backup Repository", "vbr01", 1079639011328, 881812750336),
        RepositoryEntity("urn:veeam:Repository:2", "Cloud", None, None, None),
    )
    assert parse_repositories(json.dumps(v12)).repositories == expected
    assert parse_repositories(json.dumps(_to_v13(v12))).repositories == expected


def test_repository_names_are_made_unique() -> None:
    rows = [
        RepositoryEntity("u3", "Default Backup Repository", "vbr02", 3, 1),
        RepositoryEntity("u1", "Default Backup Repository", "vbr01", 1, None),
        RepositoryEntity("u2", "Hardened", "vbr01", 2, 2),
        RepositoryEntity("u5", "Twin", "vbr01", 5, 5),
        RepositoryEntity("u4", "Twin", "vbr01", 4, 4),
        RepositoryEntity("u6", "Twin", None, 6, 6),
    ]
    assert repositories_of(rows) == [
        Repository("Default Backup Repository (vbr01)", 1, None),
        Repository("Default Backup Repository (vbr02)", 3, 1),
        Repository("Hardened", 2, 2),
        # One server holding two of a name, or no server link: the UID tells them apart.
        Repository("Twin (u6)", 6, 6),
        Repository("Twin (u4)", 4, 4),
        Repository("Twin (u5)", 5, 5),
    ]


# --- status and job type ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "result", "status"),
    [
        ("Stopped", "Success", Status.SUCCESS),
        ("Stopped", "Warning", Status.WARNING),
        ("Stopped", "Failed", Status.FAILED),
        ("Stopped", "None", Status.CANCELLED),
        ("Stopped", None, Status.CANCELLED),
        ("stopped", "success", Status.SUCCESS),
        (" STOPPED ", " WARNING ", Status.WARNING),
        ("Stopped", "none", Status.CANCELLED),
        # An unknown outcome of a finished session: counted as a failure.
        ("Stopped", "Canceled", Status.FAILED),
        ("Starting", "None", Status.RUNNING),
        ("Stopping", "None", Status.RUNNING),
        ("Working", "None", Status.RUNNING),
        ("Pausing", "None", Status.RUNNING),
        ("Resuming", "None", Status.RUNNING),
        ("Working", None, Status.RUNNING),
        # Any other State is running (SPEC section 5), whatever the Result says.
        ("WaitingTape", "Success", Status.RUNNING),
        ("Postprocessing", "Failed", Status.RUNNING),
    ],
)
def test_map_status(state: str, result: str | None, status: Status) -> None:
    assert map_status(state, result) is status


@pytest.mark.parametrize(
    ("job_type", "snake"),
    [
        ("Backup", "backup"),
        ("BackupCopy", "backup_copy"),
        ("ImmediateBackupCopy", "immediate_backup_copy"),
        ("ImmediateBackupCopyWorker", "immediate_backup_copy_worker"),
        ("AgentBackup", "agent_backup"),
        ("AgentManagement", "agent_management"),
        ("NasBackup", "nas_backup"),
        ("NASBackup", "nas_backup"),
        ("backup", "backup"),
        (" Backup Copy ", "backup_copy"),
        ("SureBackup", "sure_backup"),
        ("Replica", "replica"),
    ],
)
def test_job_type_of(job_type: str, snake: str) -> None:
    assert job_type_of(job_type) == snake


def _xml_session(fields: str, attributes: str = 'UID="urn:veeam:BackupJobSession:s1"') -> str:
    return (
        f'<QueryResult xmlns="{NAMESPACE}"><Entities><BackupJobSessions>'
        f"<BackupJobSession {attributes}>{fields}</BackupJobSession>"
        "</BackupJobSessions></Entities></QueryResult>"
    )


BASE = "<JobName>Job</JobName><JobType>Backup</JobType><CreationTimeUTC>2025-08-15T20:00:24Z</CreationTimeUTC>"
START = _utc(2025, 8, 15, 20, 0, 24)


def _one(body: str | bytes) -> Run:
    (session,) = parse_sessions(body).sessions
    return session.run


@pytest.mark.parametrize(
    ("fields", "status", "end", "reason"),
    [
        (
            "<EndTimeUTC>2025-08-15T20:10:00Z</EndTimeUTC><State>Stopped</State><Result>Success</Result>",
            Status.SUCCESS,
            _utc(2025, 8, 15, 20, 10, 0),
            None,
        ),
        (
            "<EndTimeUTC>2025-08-15T20:10:00.5Z</EndTimeUTC><State>Stopped</State><Result>Warning</Result>"
            "<FailureMessage> Warning: CBT is disabled </FailureMessage>",
            Status.WARNING,
            _utc(2025, 8, 15, 20, 10, 0, 500000),
            "Warning: CBT is disabled",
        ),
        (
            "<EndTimeUTC>2025-08-15T20:10:00Z</EndTimeUTC><State>Stopped</State><Result>Failed</Result>"
            "<FailureMessage>Error: disk full</FailureMessage>",
            Status.FAILED,
            _utc(2025, 8, 15, 20, 10, 0),
            "Error: disk full",
        ),
        (
            "<EndTimeUTC>2025-08-15T20:10:00Z</EndTimeUTC><State>Stopped</State><Result>None</Result>",
            Status.CANCELLED,
            _utc(2025, 8, 15, 20, 10, 0),
            None,
        ),
        (
            "<EndTimeUTC>2025-08-15T20:10:00Z</EndTimeUTC><State>Stopped</State><Result>Aborted</Result>",
            Status.FAILED,
            _utc(2025, 8, 15, 20, 10, 0),
            "unrecognised session result 'Aborted'",
        ),
        # Running: no EndTimeUTC, Result None.
        ("<State>Working</State><Result>None</Result><Progress>42</Progress>", Status.RUNNING, None, None),
        # An end time on a session in progress is not its end.
        ("<EndTimeUTC>2025-08-15T20:10:00Z</EndTimeUTC><State>Pausing</State>", Status.RUNNING, None, None),
        # A placeholder end before the start is no end.
        (
            "<EndTimeUTC>1900-01-01T00:00:00Z</EndTimeUTC><State>Stopped</State><Result>Success</Result>",
            Status.SUCCESS,
            None,
            None,
        ),
        ("<EndTimeUTC /><State>Stopped</State><Result>Failed</Result>", Status.FAILED, None, None),
    ],
)
def test_session_fields(fields: str, status: Status, end: datetime | None, reason: str | None) -> None:
    run = _one(_xml_session(BASE + fields))
    assert run.status is status
    assert run.start == START
    assert run.end == end
    assert run.reason == reason


def test_progress_is_a_ratio() -> None:
    assert _one(_xml_session(BASE + "<State>Working</State><Progress>42</Progress>")).progress == 0.42
    assert _one(_xml_session(BASE + "<State>Working</State><Progress>250</Progress>")).progress == 1.0
    assert _one(_xml_session(BASE + "<State>Working</State>")).progress is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-08-15T20:00:24Z", _utc(2025, 8, 15, 20, 0, 24)),
        ("2025-08-15T20:00:24.173Z", _utc(2025, 8, 15, 20, 0, 24, 173000)),
        ("2025-08-15T20:00:24.659559Z", _utc(2025, 8, 15, 20, 0, 24, 659559)),
        ("2025-08-15T20:00:24.6595597Z", _utc(2025, 8, 15, 20, 0, 24, 659559)),
        (" 2025-08-15T20:00:24.1Z ", _utc(2025, 8, 15, 20, 0, 24, 100000)),
        ("2025-08-15T20:00:24", _utc(2025, 8, 15, 20, 0, 24)),
    ],
)
def test_fractional_seconds_of_any_precision(text: str, expected: datetime) -> None:
    fields = f"<JobName>J</JobName><JobType>Backup</JobType><CreationTimeUTC>{text}</CreationTimeUTC>"
    assert _one(_xml_session(fields + "<State>Working</State>")).start == expected


def _json_session(**fields: Any) -> str:
    session = {
        "UID": "urn:veeam:BackupJobSession:s1",
        "JobName": "Job ",
        "JobType": "BackupCopy",
        "CreationTimeUTC": "2025-08-15T20:00:24Z",
        "EndTimeUTC": None,
        "State": "Working",
        "Result": "None",
        "Progress": 7,
        "FailureMessage": None,
        "Links": [{"Rel": "Up", "Href": "x", "Name": "vbr02 ", "Type": "BackupServerReference"}],
        **fields,
    }
    return json.dumps({"Entities": {"Jobs": None, "BackupJobSessions": {"BackupJobSessions": [session]}}})


def test_json_running_session_and_trailing_spaces() -> None:
    (session,) = parse_sessions(_json_session()).sessions
    assert session.run.job == JobKey("Job", "backup_copy")
    assert session.run.status is Status.RUNNING
    assert session.run.end is None
    assert session.run.progress == 0.07
    assert session.backup_server == "vbr02"
    # No PagingInfo: one page.
    assert parse_sessions(_json_session()).paging == Paging()


def test_bom_and_leading_whitespace() -> None:
    xml = _xml_session(BASE + "<State>Working</State>")
    body = _json_session()
    for variant in (
        b"\xef\xbb\xbf" + xml.encode(),
        "\ufeff" + xml,
        "\n  " + xml,
        b"\xef\xbb\xbf" + body.encode(),
        "\ufeff" + body,
        b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?>\n' + xml.encode(),
    ):
        assert _one(variant).run_id == "urn:veeam:BackupJobSession:s1"


def test_namespaces() -> None:
    prefixed = (
        f'<v:QueryResult xmlns:v="{NAMESPACE}"><v:Entities><v:BackupJobSessions>'
        '<v:BackupJobSession UID="u1">'
        + BASE.replace("<", "<v:").replace("<v:/", "</v:")
        + "<v:State>Working</v:State>"
        "</v:BackupJobSession></v:BackupJobSessions></v:Entities></v:QueryResult>"
    )
    assert _one(prefixed).run_id == "u1"
    # No namespace at all is read too; another namespace is not.
    assert _one(_xml_session(BASE + "<State>Working</State>").replace(f' xmlns="{NAMESPACE}"', "")).run_id
    with pytest.raises(ParseError, match="expected <QueryResult>"):
        parse_sessions(_xml_session(BASE).replace(NAMESPACE, "urn:other"))


def test_empty_results() -> None:
    for body in (
        f'<QueryResult xmlns="{NAMESPACE}"><Entities><BackupJobSessions /></Entities>'
        '<PagingInfo PageNum="1" PageSize="100" PagesCount="0" /></QueryResult>',
        f'<QueryResult xmlns="{NAMESPACE}"><Entities /></QueryResult>',
        '{"Entities":{"Jobs":null,"BackupJobSessions":{"BackupJobSessions":[]}}}',
        '{"Entities":{"Jobs":null,"BackupJobSessions":null}}',
        '{"entities":{"backupJobSessions":{"backupJobSessions":[]}},"pagingInfo":{"pageNum":1,"pagesCount":0}}',
    ):
        assert parse_sessions(body).sessions == ()


def test_several_sessions_keep_their_order() -> None:
    items = "".join(
        f'<BackupJobSession UID="u{i}">{BASE}<State>Stopped</State><Result>Success</Result></BackupJobSession>'
        for i in range(3)
    )
    body = f'<QueryResult xmlns="{NAMESPACE}"><Entities><BackupJobSessions>{items}</BackupJobSessions></Entities>'
    body += '<PagingInfo PageNum="2" PageSize="3" PagesCount="7"><Links><Link Rel="Next" Href="a?b&amp;page=3" />'
    body += "</Links></PagingInfo></QueryResult>"
    page = parse_sessions(body)
    assert [s.run.run_id for s in page.sessions] == ["u0", "u1", "u2"]
    assert page.paging == Paging(page_num=2, page_size=3, pages_count=7)


def test_server_errors_in_the_body() -> None:
    xml_error = f'<Error xmlns="{NAMESPACE}" Message="Query type is not supported" StatusCode="400" Status="Bad" />'
    with pytest.raises(ParseError, match="answered with an error: Query type is not supported"):
        parse_sessions(xml_error)
    json_error = '{"FirstChanceExceptionMessage":null,"StackTrace":null,"Message":"Expired","StatusCode":401}'
    with pytest.raises(ParseError, match="answered with an error: Expired"):
        parse_sessions(json_error)
    with pytest.raises(ParseError, match="answered with an error"):
        parse_logon_session(json.dumps(_to_v13(json.loads(json_error))))


# --- malformed input: ParseError, never anything else --------------------------------

BOMB = (
    '<?xml version="1.0"?><!DOCTYPE QueryResult [<!ENTITY a "aaaaaaaaaa">'
    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    f'<QueryResult xmlns="{NAMESPACE}"><Entities><BackupJobSessions><BackupJobSession UID="&c;">'
    "</BackupJobSession></BackupJobSessions></Entities></QueryResult>"
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE QueryResult [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    f'<QueryResult xmlns="{NAMESPACE}"><Entities><BackupJobSessions><BackupJobSession UID="&x;">'
    "</BackupJobSession></BackupJobSessions></Entities></QueryResult>"
)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "   ",
        "not xml",
        "<<garbage>>{[ not valid \x00",
        b"\xff\xfe<\x00Q\x00",
        BOMB,
        XXE,
        "<QueryResult><Entities>",
        '{"Entities": {',
        "[1, 2]",
        '"text"',
        "[" * 100_000 + "]" * 100_000,
        "<Other/>",
        f'<QueryResult xmlns="{NAMESPACE}"/>',
        # A format=Refs answer has no entities.
        f'<QueryResult xmlns="{NAMESPACE}"><Refs><Ref UID="u" /></Refs></QueryResult>',
        '{"Refs":{"Refs":[]},"Entities":null}',
        '{"Entities":{"Jobs":{"Jobs":[{"Name":"j"}]}}}',
        '{"Entities":{"BackupJobSessions":{"BackupJobSessions":[1]}}}',
        '{"Entities":{"BackupJobSessions":{"BackupJobSessions":[{"UID":"u","uid":"v"}]}}}',
        _xml_session(BASE + "<State>Working</State>", attributes=""),
        _xml_session(
            "<JobType>Backup</JobType><CreationTimeUTC>2025-08-15T20:00:24Z</CreationTimeUTC><State>x</State>"
        ),
        _xml_session("<JobName>J</JobName><CreationTimeUTC>2025-08-15T20:00:24Z</CreationTimeUTC><State>x</State>"),
        _xml_session("<JobName>J</JobName><JobType>Backup</JobType><State>Working</State>"),
        _xml_session(BASE),
        _xml_session(BASE.replace("2025-08-15T20:00:24Z", "yesterday") + "<State>Working</State>"),
        _xml_session(BASE + "<State>Stopped</State><EndTimeUTC>soon</EndTimeUTC>"),
        _xml_session(BASE + "<State>Working</State><Progress>half</Progress>"),
        _xml_session(BASE + "<State>Working</State><Progress>nan</Progress>"),
        _xml_session(BASE + "<State>Working</State><State>Stopped</State>"),
        _xml_session(BASE + "<State><x>Working</x></State>"),
        _xml_session(BASE + "<State>Working</State>", attributes='UID="u" Name="n"><Name>m</Name'),
        _json_session(State=True),
        _json_session(State=["Working"]),
        _json_session(Progress="lots"),
        _json_session(Links="x", State={"a": 1}),
        _xml_session(BASE + "<State>Working</State>") + "<QueryResult/>",
        f'<QueryResult xmlns="{NAMESPACE}"><Entities /><PagingInfo PageNum="one" /></QueryResult>',
        f'<QueryResult xmlns="{NAMESPACE}"><Entities /><PagingInfo PagesCount="-1" /></QueryResult>',
        f'<QueryResult xmlns="{NAMESPACE}"><Entities /><PagingInfo>text</PagingInfo></QueryResult>',
        f'<QueryResult xmlns="{NAMESPACE}"><Entities>text</Entities></QueryResult>',
        '{"Entities":{"BackupJobSessions":{"BackupJobSessions":[]}},"PagingInfo":{"PageNum":1.5}}',
        '{"Entities":{"BackupJobSessions":{"BackupJobSessions":[]}},"PagingInfo":{"PageNum":' + "9" * 5000 + "}}",
    ],
)
def test_parse_sessions_rejects(body: str | bytes) -> None:
    with pytest.raises(ParseError):
        parse_sessions(body)


@pytest.mark.parametrize(
    "body",
    [
        f'<QueryResult xmlns="{NAMESPACE}"><Entities><Repositories><Repository Name="r" /></Repositories>'
        "</Entities></QueryResult>",
        f'<QueryResult xmlns="{NAMESPACE}"><Entities><Repositories><Repository UID="u" /></Repositories>'
        "</Entities></QueryResult>",
        f'<QueryResult xmlns="{NAMESPACE}"><Entities><Repositories><Repository UID="u" Name="r">'
        "<Capacity>big</Capacity></Repository></Repositories></Entities></QueryResult>",
        '{"Entities":{"Repositories":{"Repositories":[{"UID":"u","Name":"r","FreeSpace":1.5}]}}}',
        '{"Entities":{"Repositories":{"Repositories":[{"UID":"u","Name":"r","FreeSpace":false}]}}}',
        BOMB.replace("BackupJobSession", "Repository"),
        '{"Entities":{"BackupJobSessions":{"BackupJobSessions":[]}}}' + "x",
    ],
)
def test_parse_repositories_rejects(body: str) -> None:
    with pytest.raises(ParseError):
        parse_repositories(body)


@pytest.mark.parametrize(
    "body",
    [
        "",
        f'<LogonSession xmlns="{NAMESPACE}" />',
        f'<LogonSession xmlns="{NAMESPACE}"><SessionId>../../x</SessionId></LogonSession>',
        f'<QueryResult xmlns="{NAMESPACE}"><SessionId>abc</SessionId></QueryResult>',
        '{"SessionId": null}',
        '{"SessionId": "a b"}',
        BOMB.replace("QueryResult", "LogonSession"),
    ],
)
def test_parse_logon_session_rejects(body: str) -> None:
    with pytest.raises(ParseError):
        parse_logon_session(body)


# --- the job inventory -------------------------------------------------------------------

# A Job entity with the fields of VD `get_jobs_id.md` and the notes (1.3):
# JobType, Platform, Description, ScheduleConfigured, ScheduleEnabled,
# NextRun, the nested JobScheduleOptions and JobInfo, and the links.
JOB_XML = (
    f'<QueryResult xmlns="{NAMESPACE}"><Entities><Jobs>'
    '<Job Href="https://em:9398/api/jobs/0a62?format=Entity" Type="Job" Name="Backup Job 2 " '
    'UID="urn:veeam:Job:0A62">'
    '<Links><Link Href="https://em:9398/api/backupServers/a0c8" Name="vbr01.tech.local" '
    'Type="BackupServerReference" Rel="Up"/>'
    '<Link Href="https://em:9398/api/jobs/0a62" Name="Backup Job 2" Type="JobReference" Rel="Alternate"/>'
    '<Link Href="https://em:9398/api/jobs/0a62?action=start" Rel="Start"/></Links>'
    "<JobType>Backup</JobType><Platform>VMware</Platform><Description>Created by TECH\\admin.</Description>"
    "<ScheduleConfigured>true</ScheduleConfigured><ScheduleEnabled>True</ScheduleEnabled>"
    "<NextRun>2020-02-01T17:00:00Z</NextRun>"
    "<JobScheduleOptions><RetryOptions><RetryTimes>3</RetryTimes></RetryOptions>"
    '<OptionsDaily Enabled="true"><Kind>Everyday</Kind><Days>Monday</Days><Days>Tuesday</Days></OptionsDaily>'
    "</JobScheduleOptions>"
    "<JobInfo><BackupJobInfo><Includes><ObjectInJob><Name>vm01</Name></ObjectInJob></Includes></BackupJobInfo>"
    "</JobInfo></Job>"
    '<Job Type="Job" Name="Lab" UID="urn:veeam:Job:11"><Links /><JobType>BackupCopy</JobType>'
    "<ScheduleConfigured>true</ScheduleConfigured><ScheduleEnabled>false</ScheduleEnabled></Job>"
    "</Jobs></Entities>"
    '<PagingInfo PageNum="1" PageSize="100" PagesCount="1" /></QueryResult>'
)
JOBS_EXPECTED = (
    JobEntity("urn:veeam:Job:0A62", "Backup Job 2", "backup", "vbr01.tech.local", True),
    JobEntity("urn:veeam:Job:11", "Lab", "backup_copy", None, False),
)


def _jobs_v12() -> dict[str, Any]:
    return {
        "Refs": None,
        "Entities": {
            "BackupJobSessions": None,
            "Jobs": {
                "Jobs": [
                    {
                        "JobType": "Backup",
                        "Platform": "VMware",
                        "Description": "Created by TECH\\admin.",
                        "ScheduleConfigured": True,
                        "ScheduleEnabled": True,
                        "NextRun": "2020-02-01T17:00:00Z",
                        "JobScheduleOptions": {"RetryOptions": {"RetryTimes": 3}, "OptionsDaily": None},
                        "JobInfo": None,
                        "Name": "Backup Job 2 ",
                        "UID": "urn:veeam:Job:0A62",
                        "Links": [
                            {"Rel": "Up", "Href": "x", "Name": "vbr01.tech.local", "Type": "BackupServerReference"},
                            {"Rel": "Alternate", "Href": "y", "Name": "Backup Job 2", "Type": "JobReference"},
                        ],
                        "Href": "https://em:9398/api/jobs/0a62?format=Entity",
                        "Type": "Job",
                    },
                    {
                        "JobType": "BackupCopy",
                        "ScheduleConfigured": True,
                        "ScheduleEnabled": False,
                        "NextRun": None,
                        "Name": "Lab",
                        "UID": "urn:veeam:Job:11",
                        "Links": [],
                    },
                ]
            },
        },
        "PagingInfo": {"PageNum": 1, "PageSize": 100, "PagesCount": 1, "Links": []},
    }


def test_jobs_in_xml_and_both_json_casings() -> None:
    xml_page = parse_jobs(JOB_XML)
    assert xml_page.jobs == JOBS_EXPECTED
    assert xml_page.paging == Paging(1, 100, 1)
    assert parse_jobs(json.dumps(_jobs_v12())).jobs == JOBS_EXPECTED
    assert parse_jobs(json.dumps(_to_v13(_jobs_v12()))).jobs == JOBS_EXPECTED
    # A JSON array under Jobs, no ScheduleEnabled at all, a BOM.
    bare = {"Entities": {"Jobs": [{"Name": "J", "UID": "u", "JobType": "NasBackup"}]}}
    assert parse_jobs(b"\xef\xbb\xbf" + json.dumps(bare).encode()).jobs == (JobEntity("u", "J", "nas_backup", None),)


@pytest.mark.parametrize(
    "body",
    [
        JOB_XML.replace(' UID="urn:veeam:Job:11"', ""),
        JOB_XML.replace(' Name="Lab"', ""),
        JOB_XML.replace("<JobType>BackupCopy</JobType>", ""),
        JOB_XML.replace("<ScheduleEnabled>false</ScheduleEnabled>", "<ScheduleEnabled>no</ScheduleEnabled>"),
        JOB_XML.replace("<ScheduleEnabled>false</ScheduleEnabled>", "<ScheduleEnabled><x>1</x></ScheduleEnabled>"),
        JOB_XML.replace("Jobs>", "BackupJobSessions>")
        .replace("<Job ", "<BackupJobSession ")
        .replace("</Job>", "</BackupJobSession>"),
        '{"Entities":{"Jobs":{"Jobs":[{"Name":"J","UID":"u","JobType":"Backup","ScheduleEnabled":1}]}}}',
        '{"Entities":{"Jobs":{"Jobs":[{"Name":"J","UID":"u","JobType":"Backup","ScheduleEnabled":"yes"}]}}}',
        '{"Entities":{"Jobs":{"Jobs":[{"Name":"J","UID":"u","JobType":["Backup"]}]}}}',
        '{"Refs":{"Refs":[]},"Entities":null}',
        BOMB.replace("BackupJobSession", "Job"),
    ],
)
def test_parse_jobs_rejects(body: str) -> None:
    with pytest.raises(ParseError):
        parse_jobs(body)


# --- job names: the rule of the module docstring ----------------------------------------


def _job(uid: str, name: str, server: str | None, job_type: str = "backup", enabled: bool | None = True) -> JobEntity:
    return JobEntity(f"urn:veeam:Job:{uid}", name, job_type, server, enabled)


def _session(uid: str, name: str, server: str | None, job: str | None, job_type: str = "backup") -> Session:
    run = Run(run_id=uid, job=JobKey(name, job_type), status=Status.SUCCESS, start=START, end=START)
    return Session(run=run, backup_server=server, job_uid=None if job is None else f"urn:veeam:Job:{job}")


def _names(sessions: list[Session], jobs: list[JobEntity]) -> dict[str, str]:
    return {run.run_id: run.job.job_name for run in attribute_sessions(jobs, sessions).runs}


def test_a_name_on_two_backup_servers_is_qualified_on_both() -> None:
    jobs = [
        _job("a", "Backup Job 1", "vbr01"),
        _job("b", "Backup Job 1", "vbr02", enabled=False),
        _job("c", "SQL", "vbr01"),
        _job("d", "Idle", "vbr02"),
    ]
    sessions = [_session("s1", "Backup Job 1", "vbr01", "a"), _session("s2", "SQL", "vbr01", "c")]
    result = attribute_sessions(jobs, sessions)
    assert {r.run_id: r.job for r in result.runs} == {
        "s1": JobKey("Backup Job 1 (vbr01)", "backup"),
        "s2": JobKey("SQL", "backup"),
    }
    # Every job of the inventory, with or without runs.
    assert result.jobs == (
        JobKey("Backup Job 1 (vbr01)", "backup"),
        JobKey("Backup Job 1 (vbr02)", "backup"),
        JobKey("Idle", "backup"),
        JobKey("SQL", "backup"),
    )
    assert result.job_info == {
        JobKey("Backup Job 1 (vbr01)", "backup"): {"backup_server": "vbr01", "schedule_enabled": "true"},
        JobKey("Backup Job 1 (vbr02)", "backup"): {"backup_server": "vbr02", "schedule_enabled": "false"},
        JobKey("Idle", "backup"): {"backup_server": "vbr02", "schedule_enabled": "true"},
        JobKey("SQL", "backup"): {"backup_server": "vbr01", "schedule_enabled": "true"},
    }
    assert result.colliding == {"Backup Job 1": frozenset({"vbr01", "vbr02"})}
    assert result.listed_jobs == 4
    assert result.unlisted_runs == 0
    # The names come from the inventory, whatever sessions a poll sees.
    assert attribute_sessions(jobs, []).jobs == result.jobs
    assert attribute_sessions(list(reversed(jobs)), sessions) == result


def test_sessions_follow_their_job_by_uid() -> None:
    jobs = [_job("A", "Nightly", "vbr01"), _job("b", "Nightly", "vbr02"), _job("c", "Renamed", "vbr01")]
    sessions = [
        # The JobUid in another case; the session's own link says nothing.
        _session("s1", "Nightly", None, "a"),
        # The job was renamed since: its sessions take the new name.
        _session("s2", "Old name", "vbr01", "c"),
        # A child session keeps its own job type, under its job's name.
        _session("s3", "Nightly", "vbr02", "b", job_type="immediate_backup_copy_worker"),
    ]
    result = attribute_sessions(jobs, sessions)
    assert {r.run_id: r.job for r in result.runs} == {
        "s1": JobKey("Nightly (vbr01)", "backup"),
        "s2": JobKey("Renamed", "backup"),
        "s3": JobKey("Nightly (vbr02)", "immediate_backup_copy_worker"),
    }
    assert result.job_info[JobKey("Nightly (vbr01)", "backup")] == {
        "backup_server": "vbr01",
        "schedule_enabled": "true",
    }
    assert result.job_info[JobKey("Nightly (vbr02)", "immediate_backup_copy_worker")]["backup_server"] == "vbr02"


def test_sessions_of_jobs_missing_from_the_inventory() -> None:
    jobs = [_job("a", "SQL", "vbr01"), _job("b", "Twin", "vbr01"), _job("c", "Twin", "vbr02")]
    sessions = [
        # A deleted job of a name now used on another server only.
        _session("s1", "SQL", "vbr02", "gone"),
        # A name found twice already.
        _session("s3", "Twin", "vbr01", "gone3"),
        # Two deleted jobs of one name on two servers, no JobUid on one.
        _session("s4", "Old", "vbr01", "gone4"),
        _session("s5", "Old", "vbr02", None),
        # Alone, a deleted job keeps its name.
        _session("s6", "Lonely", "vbr02", "gone6"),
    ]
    result = attribute_sessions(jobs, sessions)
    assert _names(sessions, jobs) == {
        "s1": "SQL (vbr02)",
        "s3": "Twin (vbr01)",
        "s4": "Old (vbr01)",
        "s5": "Old (vbr02)",
        "s6": "Lonely",
    }
    assert result.unlisted_runs == 5
    # The live jobs keep the names the inventory gives them.
    assert {JobKey("SQL", "backup"), JobKey("Twin (vbr01)", "backup"), JobKey("Twin (vbr02)", "backup")} <= set(
        result.jobs
    )
    assert result.colliding == {"Twin": frozenset({"vbr01", "vbr02"})}
    # Not in the inventory: no schedule_enabled.
    assert result.job_info[JobKey("SQL (vbr02)", "backup")] == {"backup_server": "vbr02"}
    assert result.job_info[JobKey("SQL", "backup")] == {"backup_server": "vbr01", "schedule_enabled": "true"}
    # A deleted job of a name its server still uses is the same job to the
    # operator; beside another server's deleted job of that name, not.
    recreated = _session("s2", "SQL", "vbr01", "gone2")
    assert _names([recreated], jobs) == {"s2": "SQL"}
    assert _names([recreated, sessions[0]], jobs) == {"s2": "SQL (vbr01)", "s1": "SQL (vbr02)"}


def test_unnamed_servers_and_odd_inventories() -> None:
    jobs = [
        _job("a", "Nightly", "vbr01"),
        # No BackupServerReference link: told apart by its UID.
        _job("b", "Nightly", None),
        # Replication: its runs are not BackupJobSessions, so it is no job here.
        _job("c", "Weekly", "vbr02", job_type="replica"),
        _job("d", "Weekly", "vbr01", enabled=None),
    ]
    sessions = [_session("s1", "Nightly", None, "b"), _session("s2", "Weekly", "vbr01", "d")]
    result = attribute_sessions(jobs, sessions)
    assert _names(sessions, jobs) == {"s1": "Nightly (urn:veeam:Job:b)", "s2": "Weekly"}
    assert result.jobs == (
        JobKey("Nightly (urn:veeam:Job:b)", "backup"),
        JobKey("Nightly (vbr01)", "backup"),
        JobKey("Weekly", "backup"),
    )
    assert result.job_info[JobKey("Nightly (urn:veeam:Job:b)", "backup")] == {"schedule_enabled": "true"}
    assert result.job_info[JobKey("Weekly", "backup")] == {"backup_server": "vbr01"}
    # One server with two jobs of one name and type (which Veeam forbids):
    # one series, enabled if either is.
    twins = [_job("e", "Dup", "vbr01", enabled=False), _job("f", "Dup", "vbr01", enabled=True)]
    assert attribute_sessions(twins, []).job_info == {
        JobKey("Dup", "backup"): {"backup_server": "vbr01", "schedule_enabled": "true"}
    }


# Fragments of a session payload, shuffled into near-miss documents.
_TAGS = (
    "QueryResult",
    "Entities",
    "BackupJobSessions",
    "BackupJobSession",
    "Links",
    "Link",
    "JobName",
    "JobType",
    "State",
    "Result",
    "CreationTimeUTC",
    "EndTimeUTC",
    "Progress",
    "PagingInfo",
    "Repositories",
    "Repository",
    "Capacity",
    "Jobs",
    "Job",
    "ScheduleEnabled",
)
_VALUES = ("Stopped", "Working", "None", "Backup", "2025-08-15T20:00:24Z", "-1", "42", "&amp;", " ", 'UID="u"', "true")
_XML_TOKENS = [*(f"<{tag}>" for tag in _TAGS), *(f"</{tag}>" for tag in _TAGS), *_VALUES]
_XMLISH = st.lists(st.sampled_from(_XML_TOKENS), max_size=40).map("".join)
_KEYS = st.sampled_from([*_TAGS, "UID", "uid", "PageNum", "PagesCount", "entities", "Name"])
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(_VALUES),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=20,
).map(json.dumps)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), _XMLISH, _JSONISH))
def test_parse_sessions_raises_only_parse_error(body: str | bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_sessions(body)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), _XMLISH, _JSONISH))
def test_parse_repositories_raises_only_parse_error(body: str) -> None:
    with contextlib.suppress(ParseError):
        parse_repositories(body)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), _XMLISH, _JSONISH))
def test_parse_jobs_raises_only_parse_error(body: str) -> None:
    with contextlib.suppress(ParseError):
        parse_jobs(body)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.text(max_size=200), _XMLISH.map(lambda s: s.replace("QueryResult", "LogonSession")), _JSONISH))
def test_parse_logon_session_raises_only_parse_error(body: str) -> None:
    with contextlib.suppress(ParseError):
        parse_logon_session(body)
