"""Commvault payload parsing: the vendor's own documented examples (golden
files), every status mapping, both formats and envelopes, error bodies, and
malformed input that must become ParseError."""

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

from exporter.config import ConfigError, Secret, TargetConfig, parse_config
from exporter.model import JobKey, Status
from exporter.vendors.base import ParseError
from exporter.vendors.commvault import (
    SPEC,
    STATUS_STRINGS,
    ApiError,
    JobPage,
    JobRow,
    check_target,
    job_type_of,
    map_status,
    parse_job,
    parse_job_list,
    parse_token,
)
from tests.conftest import run_dict

WINTER = JobKey("WINTER/defaultBackupSet/default", "backup")
WINTER_INFO = {
    "client_name": "WINTER",
    "instance_name": "DefaultInstanceName",
    "backupset_name": "defaultBackupSet",
    "subclient_name": "default",
    "app_type": "File System",
    "subclient_id": "2",
}
# 1423087483 = 16470 days (2015-02-04) + 79483 s (22:04:43) after the epoch.
START = datetime(2015, 2, 4, 22, 4, 43, tzinfo=UTC)
END = datetime(2015, 2, 4, 22, 4, 55, tzinfo=UTC)  # + jobElapsedTime 12 = jobEndTime 1423087495


def row_dict(row: JobRow) -> dict[str, Any]:
    """The run's fields plus what the Commvault row adds around it."""
    return {
        **run_dict(row.run),
        "raw_status": row.raw_status,
        "known_status": row.known_status,
        "visible": row.visible,
        "info": dict(row.info),
    }


def page_dict(page: JobPage) -> dict[str, Any]:
    return {"total": page.total, "jobs": [row_dict(row) for row in page.rows]}


def _notes_section(vendor_api_dir: Path) -> str:
    text = (vendor_api_dir / "veeam-commvault-notes.md").read_text(encoding="utf-8")
    return text[text.index("## 3. Commvault") :]


def doc_xml_example(vendor_api_dir: Path) -> str:
    """The sample response of commvault-job-details.txt, declaration and all."""
    text = (vendor_api_dir / "commvault-job-details.txt").read_text(encoding="utf-8")
    match = re.search(r"<\?xml[^>]*\?>\s*<JobManager_JobListResponse.*?</JobManager_JobListResponse>", text, re.S)
    assert match is not None
    return match.group(0)


def notes_json_example(vendor_api_dir: Path) -> str:
    match = re.search(r"```json\n(\{\"totalRecordsWithoutPaging\".*?)```", _notes_section(vendor_api_dir), re.S)
    assert match is not None
    return match.group(1)


def notes_xml_example(vendor_api_dir: Path) -> str:
    match = re.search(
        r"<JobManager_JobListResponse.*?</JobManager_JobListResponse>", _notes_section(vendor_api_dir), re.S
    )
    assert match is not None
    return match.group(0)


# --- the vendor's documented examples ----------------------------------------------


def test_doc_xml_example(vendor_api_dir: Path, golden: Any) -> None:
    page = parse_job_list(doc_xml_example(vendor_api_dir).encode(), "xml")
    golden.check_json("commvault_job_list_doc_xml.json", page_dict(page))

    assert page.total == 1
    assert page.error is None
    (row,) = page.rows
    run = row.run
    assert run.run_id == "4"
    assert run.job == WINTER
    assert run.status is Status.SUCCESS
    assert row.raw_status == "Completed"
    assert row.visible is True
    assert run.start == START
    # No jobEndTime in the XML example: start + jobElapsedTime.
    assert run.end == END
    assert run.duration == 12.0
    assert run.query_time == END
    assert run.processed_bytes == 0
    assert run.stored_bytes == 0
    assert run.items == {"total": 0, "failed": 0}
    assert run.progress == 1.0  # percentComplete="100.000000"
    assert run.reason is None
    assert row.info == WINTER_INFO


def test_notes_json_example(vendor_api_dir: Path, golden: Any) -> None:
    page = parse_job_list(notes_json_example(vendor_api_dir))
    golden.check_json("commvault_job_list_notes_json.json", page_dict(page))

    assert page.total == 250
    (row,) = page.rows
    run = row.run
    assert (run.run_id, run.job, run.status) == ("4", WINTER, Status.SUCCESS)
    assert run.start == START
    assert run.end == END  # jobEndTime 1423087495
    assert run.duration == 12.0
    assert run.processed_bytes == 0
    assert run.stored_bytes == 0
    assert run.items == {"total": 0, "failed": 0}
    assert run.reason is None  # pendingReason ""
    assert row.info == WINTER_INFO


def test_notes_xml_example_reads_like_the_doc_one(vendor_api_dir: Path) -> None:
    notes = parse_job_list(notes_xml_example(vendor_api_dir), "xml")
    doc = parse_job_list(doc_xml_example(vendor_api_dir), "xml")
    assert notes == doc
    # And like the JSON form of the same job, but for the total.
    json_page = parse_job_list(notes_json_example(vendor_api_dir))
    assert [r.run for r in notes.rows] == [r.run for r in json_page.rows]


def test_advanced_details_example_is_not_a_job_list(vendor_api_dir: Path) -> None:
    text = (vendor_api_dir / "commvault-job-details.txt").read_text(encoding="utf-8")
    match = re.search(r"<JobManager_AdvanceJobDetailsResp>.*?</JobManager_AdvanceJobDetailsResp>", text, re.S)
    assert match is not None
    with pytest.raises(ParseError, match="JobManager_JobListResponse"):
        parse_job_list(match.group(0), "xml")


TOKEN = "QSDK 3218" + "0123456789abcdef" * 4


def test_notes_login_example(vendor_api_dir: Path) -> None:
    match = re.search(r"\{\"aliasName\":\"4\".*?\}\}\n", _notes_section(vendor_api_dir), re.S)
    assert match is not None
    # The notes elide parts with "…"; filled in, the example is real JSON.
    body = match.group(0).replace("{…}", "{}").replace("[…]", "[]").replace("QSDK 3218…", TOKEN)
    assert parse_token(body) == parse_token(body.encode()) == parse_token(json.dumps(json.loads(body)))
    assert parse_token(body).token == TOKEN
    assert parse_token(body).error is None


def test_notes_login_xml_example(vendor_api_dir: Path) -> None:
    match = re.search(r"<DM2ContentIndexing_CheckCredentialResp aliasName.*?/>…", _notes_section(vendor_api_dir), re.S)
    assert match is not None
    body = match.group(0).replace("QSDK 3218…", TOKEN).replace("…", "</DM2ContentIndexing_CheckCredentialResp>")
    assert parse_token(body, "xml").token == TOKEN


@pytest.mark.parametrize(
    ("body", "fmt", "code", "message", "auth"),
    [
        # 401 body of Login and of an expired token (SP36).
        ('{"errorMessage":"Access denied","errorCode":5}', "json", 5, "Access denied", True),
        # A 200 without a token: the reason in errList (cvpysdk's failure case).
        ('{"errList":[{"errLogMessage":"Invalid Username or Password"}]}', "json", None, None, True),
        # RenewLoginToken's refusal.
        ('{"error":{"errLogMessage":"Failed to renew the login token.","errorCode":1}}', "json", 1, None, False),
        ('<DM2ContentIndexing_CheckCredentialResp><errList errLogMessage="Login failed" errorCode="27"/>'
         "</DM2ContentIndexing_CheckCredentialResp>", "xml", 27, "Login failed", False),
        ("{}", "json", None, "no token in the response", False),
    ],
)  # fmt: skip
def test_login_refusals(body: str, fmt: Any, code: int | None, message: str | None, auth: bool) -> None:
    result = parse_token(body, fmt)
    assert result.token is None
    assert result.error is not None
    assert result.error.code == code
    if message is not None:
        assert result.error.message == message
    assert result.error.is_auth is auth


def test_locked_account_and_token_forms() -> None:
    locked = parse_token('{"isAccountLocked":true,"remainingLockTime":300,"errList":[{"errLogMessage":"locked"}]}')
    assert locked.error is not None
    assert locked.error.message == "account locked (300 s left): locked"
    # A token without its QSDK prefix gets it, as cvpysdk does.
    assert parse_token('{"token":"abc123"}').token == "QSDK abc123"
    assert parse_token('{"token":" QSDK abc123 "}').token == "QSDK abc123"
    with pytest.raises(ParseError, match="SaaS"):
        parse_token('{"data":{"authToken":"eyJ..."}}')
    with pytest.raises(ParseError):
        parse_token('{"token":"QSDK a\\r\\nX-Injected: 1"}')


# --- status mapping --------------------------------------------------------------

EXPECTED = {
    "Completed": Status.SUCCESS,
    "Completed w/ one or more errors": Status.WARNING,
    "Completed w/ one or more warnings": Status.WARNING,
    "Committed": Status.WARNING,
    "Failed": Status.FAILED,
    "Failed to Start": Status.FAILED,
    "Abnormal Terminated Cleanup": Status.FAILED,
    "Killed": Status.CANCELLED,
    "Running": Status.RUNNING,
    "Running (cannot be verified)": Status.RUNNING,
    "Waiting": Status.QUEUED,
    "Pending": Status.QUEUED,
    "Queued": Status.QUEUED,
    "Suspend": Status.QUEUED,
    "Suspended": Status.QUEUED,
    "Suspend Pending": Status.QUEUED,
    "Kill Pending": Status.QUEUED,
    "Interrupt Pending": Status.QUEUED,
    "Interrupted": Status.QUEUED,
}


def test_every_documented_status_is_mapped() -> None:
    assert set(STATUS_STRINGS) == set(EXPECTED)


@pytest.mark.parametrize(("text", "status"), sorted(EXPECTED.items()))
def test_status_mapping(text: str, status: Status) -> None:
    for variant in (text, text.upper(), text.lower(), f"  {text} ", f"\t{text.replace(' ', '   ')}\t"):
        assert map_status(variant) == (status, True)
        # A documented status is itself, whether or not the job has an end time.
        assert map_status(variant, has_end=True) == (status, True)


@pytest.mark.parametrize(
    ("text", "has_end", "status", "known"),
    [
        # SPEC section 5's patterns.
        ("Suspend by Policy", False, Status.QUEUED, True),
        ("Resume Pending", False, Status.QUEUED, True),
        # Undocumented strings: keywords, then whether the job has ended.
        ("Failed with Errors", True, Status.FAILED, False),
        ("Killed by Policy", True, Status.CANCELLED, False),
        ("Completed with warnings", True, Status.WARNING, False),
        ("Partially Committed", True, Status.WARNING, False),
        ("Running - Throttled", False, Status.RUNNING, False),
        ("Frobnicated", True, Status.WARNING, False),
        ("Frobnicated", False, Status.QUEUED, False),
    ],
)
def test_undocumented_status(text: str, has_end: bool, status: Status, known: bool) -> None:
    assert map_status(text, has_end=has_end) == (status, known)


def test_job_type() -> None:
    assert job_type_of("Backup") == "backup"
    assert job_type_of(" Snap  Backup ") == "snap_backup"
    assert job_type_of("Auxiliary Copy") == "auxiliary_copy"


# --- fields ------------------------------------------------------------------------


def summary(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"jobId": 77, "status": "Completed", "jobType": "Backup", "jobStartTime": 1700000000}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def one(**fields: Any) -> JobRow:
    return parse_job(summary(**fields))


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_end_time_sources() -> None:
    # jobEndTime wins; jobElapsedTime (which may exclude suspended time) is the duration.
    row = one(jobEndTime=1700000600, jobElapsedTime=500, lastUpdateTime=1700000602)
    assert (row.run.end, row.run.duration, row.run.query_time) == (at(1700000600), 500.0, at(1700000600))
    # Without jobEndTime (the XML example): start + elapsed.
    assert one(jobElapsedTime=500, lastUpdateTime=1700000602).run.end == at(1700000500)
    # 0 means unset; then lastUpdateTime.
    row = one(jobEndTime=0, jobElapsedTime=0, lastUpdateTime=1700000602)
    assert (row.run.end, row.run.duration) == (at(1700000602), 602.0)
    assert one(jobStartTime=0).run.start is None
    assert one(jobStartTime=0).run.end is None


def test_running_job() -> None:
    row = one(
        status="Running",
        jobEndTime=0,
        jobElapsedTime=300,
        lastUpdateTime=1700000240,
        percentComplete=42.5,
        pendingReason="",
    )
    run = row.run
    assert run.status is Status.RUNNING
    assert run.end is None
    assert run.duration_seconds is None
    assert run.progress == 0.425
    assert run.reason is None
    # A job in progress is always listed; it will complete after its last update.
    assert run.query_time == at(1700000240)
    assert one(status="Waiting").run.query_time == at(1700000000)


def test_numbers_as_strings_and_trailing_spaces() -> None:
    row = one(
        jobId="77",
        jobStartTime="1700000000",
        jobEndTime=" 1700000600 ",
        sizeOfApplication="1073741824",
        sizeOfMediaOnDisk="268435456.0",
        totalNumOfFiles="1200",
        totalFailedFiles="3",
        percentComplete="100.000000",
        isVisible="false",
        pendingReason="  Failed to back up 3 files.\n ",
        status="Completed w/ one or more errors ",
        subclient={"clientName": "NASFILER01 ", "backupsetName": " defaultBackupSet", "subclientName": "home "},
    )
    run = row.run
    assert run.run_id == "77"
    assert run.job == JobKey("NASFILER01/defaultBackupSet/home", "backup")
    assert run.status is Status.WARNING
    assert (run.start, run.end) == (at(1700000000), at(1700000600))
    assert (run.processed_bytes, run.stored_bytes) == (1073741824, 268435456)
    assert run.items == {"total": 1200, "failed": 3}
    assert run.reason == "Failed to back up 3 files."
    assert row.visible is False


def test_names_fall_back_to_the_flat_fields() -> None:
    row = one(destClientName="WINTER", backupSetName="defaultBackupSet", subclientName="default", appTypeName="NAS")
    assert row.run.job == WINTER
    assert row.info == {
        "client_name": "WINTER",
        "backupset_name": "defaultBackupSet",
        "subclient_name": "default",
        "app_type": "NAS",
    }
    # An admin job without any of them still has a (stable) job_name.
    assert one(jobType="Data Aging").run.job == JobKey("//", "data_aging")


def test_json_envelopes() -> None:
    bare = '{"totalRecordsWithoutPaging":1,"jobs":[{"jobSummary":{"jobId":4,"status":"Completed","jobType":"Backup"}}]}'
    # The xmltodict-like JSON some servers send: wrapped, attributes as "@name".
    wrapped = (
        '{"JobManager_JobListResponse":{"@totalRecordsWithoutPaging":"1",'
        '"jobs":[{"jobSummary":{"@jobId":"4","@status":"Completed","@jobType":"Backup"}}]}}'
    )
    # ... or as an "@attr" object.
    attr = (
        '{"JobManager_JobListResponse":{"@attr":{"totalRecordsWithoutPaging":1},'
        '"jobs":{"jobSummary":{"@attr":{"jobId":4,"status":"Completed","jobType":"Backup"}}}}}'
    )
    with_bom = "\ufeff" + bare.replace("{", '{"processinginstructioninfo":{"attributes":[]},', 1)
    pages = [parse_job_list(body) for body in (bare, wrapped, attr, with_bom, with_bom.encode())]
    assert all(page == pages[0] for page in pages)
    assert pages[0].total == 1
    assert [row.run.run_id for row in pages[0].rows] == ["4"]


@pytest.mark.parametrize(
    ("body", "fmt"),
    [
        ('{"totalRecordsWithoutPaging":0}', "json"),
        ('{"totalRecordsWithoutPaging":0,"jobs":[]}', "json"),
        ("{}", "json"),
        ('{"processinginstructioninfo":{}}', "json"),
        ('<JobManager_JobListResponse totalRecordsWithoutPaging="0"/>', "xml"),
        ("\ufeff<JobManager_JobListResponse></JobManager_JobListResponse>", "xml"),
    ],
)
def test_empty_lists(body: str, fmt: Any) -> None:
    page = parse_job_list(body, fmt)
    assert page.rows == ()
    assert page.error is None


def test_xml_with_several_jobs_and_element_values() -> None:
    body = (
        '<JobManager_JobListResponse totalRecordsWithoutPaging="3">'
        '<jobs><jobSummary jobId="3" status="Killed" jobType="Backup"/></jobs>'
        '<jobs><jobSummary jobId="2" status="Failed" jobType="Backup"><pendingReason>Disk full</pendingReason>'
        "</jobSummary></jobs>"
        '<jobs><jobSummary jobId="1" status="Queued" jobType="Restore"><subclient clientName="A" backupsetName="b" '
        'subclientName="c"/></jobSummary></jobs>'
        "</JobManager_JobListResponse>"
    )
    page = parse_job_list(body, "xml")
    assert page.total == 3
    assert [(r.run.run_id, r.run.status) for r in page.rows] == [
        ("3", Status.CANCELLED),
        ("2", Status.FAILED),
        ("1", Status.QUEUED),
    ]
    assert page.rows[1].run.reason == "Disk full"
    assert page.rows[2].run.job == JobKey("A/b/c", "restore")


# --- errors reported in bodies -----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fmt", "code", "message"),
    [
        ('{"errorCode":2,"errorMessage":"Invalid input"}', "json", 2, "Invalid input"),
        ('{"errList":[{"errorCode":7,"errLogMessage":"Database busy"}]}', "json", 7, "Database busy"),
        ('{"error":{"errList":[{"errorCode":7,"errLogMessage":"Database busy"}]}}', "json", 7, "Database busy"),
        ('{"error":{"errLogMessage":"Something broke"}}', "json", None, "Something broke"),
        ('{"errorCode":"3"}', "json", 3, "3"),
        ('<CVGui_GenericResp errorCode="2" errorMessage="Invalid input"/>', "xml", 2, "Invalid input"),
        ('<JobManager_JobListResponse><errList errorCode="7" errLogMessage="Database busy"/>'
         "</JobManager_JobListResponse>", "xml", 7, "Database busy"),
        ('<JobManager_JobListResponse><error errorCode="7" errLogMessage="Database busy"/>'
         "</JobManager_JobListResponse>", "xml", 7, "Database busy"),
    ],
)  # fmt: skip
def test_error_bodies(body: str, fmt: Any, code: int | None, message: str) -> None:
    page = parse_job_list(body, fmt)
    assert page.error == ApiError(code, message)
    assert page.rows == ()
    assert page.error.is_auth is False


def test_no_error_when_codes_are_zero() -> None:
    body = '{"errorCode":0,"errorMessage":"","errList":[],"error":{"errorCode":0},"totalRecordsWithoutPaging":0}'
    assert parse_job_list(body).error is None


@pytest.mark.parametrize(
    "error",
    [
        ApiError(5, "anything"),
        ApiError(None, "Access denied"),
        ApiError(1, "Invalid authorization token provided."),
        ApiError(99, "Session expired, log in again"),
    ],
)
def test_auth_errors(error: ApiError) -> None:
    assert error.is_auth


def test_error_description_is_short() -> None:
    assert ApiError(2, "x" * 500).describe() == "Commvault error 2: " + "x" * 77 + "..."
    assert ApiError(None, "").describe() == "Commvault error: no message"


# --- malformed input: ParseError, never anything else ------------------------------

BOMB = (
    '<?xml version="1.0"?><!DOCTYPE JobManager_JobListResponse [<!ENTITY a "aaaaaaaaaa">'
    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    '<JobManager_JobListResponse totalRecordsWithoutPaging="1"><jobs><jobSummary jobId="1" status="&c;" '
    'jobType="Backup"/></jobs></JobManager_JobListResponse>'
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<JobManager_JobListResponse><jobs><jobSummary jobId="1" status="&x;"/></jobs></JobManager_JobListResponse>'
)


def jobs_json(**fields: Any) -> str:
    return json.dumps({"totalRecordsWithoutPaging": 1, "jobs": [{"jobSummary": summary(**fields)}]})


@pytest.mark.parametrize(
    ("body", "fmt"),
    [
        ("", "json"),
        ("", "xml"),
        ("not json", "json"),
        ("[]", "json"),
        ('"text"', "json"),
        ('{"totalRecordsWithoutPaging":1,"jobs":[{"jobSummary":', "json"),
        ('{"somethingElse":1}', "json"),
        ('{"totalRecordsWithoutPaging":1,"jobs":[1]}', "json"),
        ('{"totalRecordsWithoutPaging":1,"jobs":[{}]}', "json"),
        ('{"totalRecordsWithoutPaging":1,"jobs":[{"jobSummary":"x"}]}', "json"),
        ('{"totalRecordsWithoutPaging":"many","jobs":[]}', "json"),
        ('{"totalRecordsWithoutPaging":-1,"jobs":[]}', "json"),
        ('{"errList":["x"]}', "json"),
        (jobs_json(jobId=None), "json"),
        (jobs_json(jobId=0), "json"),
        (jobs_json(jobId=True), "json"),
        (jobs_json(jobId=1.5), "json"),
        (jobs_json(status=None), "json"),
        (jobs_json(status={"a": 1}), "json"),
        (jobs_json(status=["Completed", "Failed"]), "json"),
        (jobs_json(jobType=None), "json"),
        (jobs_json(jobStartTime="yesterday"), "json"),
        (jobs_json(jobStartTime=-5), "json"),
        (jobs_json(jobEndTime=10**20), "json"),
        (jobs_json(sizeOfApplication="big"), "json"),
        (jobs_json(percentComplete="half"), "json"),
        (jobs_json(percentComplete=True), "json"),
        (jobs_json(isVisible="maybe"), "json"),
        ('{"totalRecordsWithoutPaging":1,"jobs":[{"jobSummary":{"jobId":1,"percentComplete":NaN,'
         '"status":"Running","jobType":"Backup"}}]}', "json"),
        ("[" * 100000, "json"),
        ("<JobManager_JobListResponse><jobs>", "xml"),
        ("<Other/>", "xml"),
        ("<JobManager_JobListResponse>text</JobManager_JobListResponse>", "xml"),
        ('<JobManager_JobListResponse totalRecordsWithoutPaging="1"><jobs/></JobManager_JobListResponse>', "xml"),
        ('<JobManager_JobListResponse><jobs><jobSummary jobId="x" status="Completed"/></jobs>'
         "</JobManager_JobListResponse>", "xml"),
        ('<JobManager_JobListResponse><jobs><jobSummary jobId="1" status="Completed" jobType="Backup">'
         "<status>Failed</status></jobSummary></jobs></JobManager_JobListResponse>", "xml"),
        (BOMB, "xml"),
        (XXE, "xml"),
        (b"\xff\xfe{\x00", "json"),
        (b"\xff\xfe<\x00J\x00", "xml"),
    ],
)  # fmt: skip
def test_parse_job_list_rejects(body: str | bytes, fmt: Any) -> None:
    with pytest.raises(ParseError):
        parse_job_list(body, fmt)


@pytest.mark.parametrize(
    ("body", "fmt"),
    [("", "json"), ("nope", "json"), ("[1]", "json"), ("<a><b>", "xml"), ('{"token":1.5e400}', "json")],
)
def test_parse_token_rejects(body: str, fmt: Any) -> None:
    with pytest.raises(ParseError):
        parse_token(body, fmt)


# Fragments of job list payloads, shuffled into near-miss documents.
_KEYS = (
    "totalRecordsWithoutPaging",
    "jobs",
    "jobSummary",
    "jobId",
    "status",
    "jobType",
    "jobStartTime",
    "jobEndTime",
    "jobElapsedTime",
    "lastUpdateTime",
    "percentComplete",
    "sizeOfApplication",
    "totalNumOfFiles",
    "isVisible",
    "subclient",
    "clientName",
    "errorCode",
    "errList",
    "error",
    "errLogMessage",
    "@attr",
    "@jobId",
    "JobManager_JobListResponse",
    "token",
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["Completed", "Running", "Backup", "0", "1700000000", "true", " ", "1e999", "-1", "QSDK x"]),
    st.text(max_size=8),
)
_JSONISH = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.sampled_from(_KEYS), children, max_size=5)
    ),
    max_leaves=15,
)
_XML_TOKENS = [
    "<JobManager_JobListResponse>",
    "</JobManager_JobListResponse>",
    '<JobManager_JobListResponse totalRecordsWithoutPaging="2">',
    "<jobs>",
    "</jobs>",
    "<jobSummary ",
    'jobId="1" ',
    'status="Completed" ',
    'jobType="Backup" ',
    'jobStartTime="x" ',
    'percentComplete="nan" ',
    "/>",
    ">",
    "</jobSummary>",
    '<errList errorCode="5"/>',
    "<subclient/>",
    "&amp;",
    "&lt;",
    " ",
]
_XMLISH = st.lists(st.sampled_from(_XML_TOKENS), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_JSONISH.map(lambda v: json.dumps(v)), st.text(max_size=200), st.binary(max_size=200)))
def test_parse_job_list_json_raises_only_parse_error(body: str | bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_job_list(body, "json")
    with contextlib.suppress(ParseError):
        parse_token(body, "json")


@settings(max_examples=300, deadline=None)
@given(st.one_of(_XMLISH, st.text(max_size=200), st.binary(max_size=200)))
def test_parse_job_list_xml_raises_only_parse_error(body: str | bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_job_list(body, "xml")
    with contextlib.suppress(ParseError):
        parse_token(body, "xml")


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _JSONISH, max_size=8))
def test_parse_job_raises_only_parse_error(fields: dict[str, Any]) -> None:
    with contextlib.suppress(ParseError):
        parse_job(fields)


# --- configuration ---------------------------------------------------------------------


def target(url: str = "https://cv.example.com/commandcenter/api", **options: Any) -> TargetConfig:
    return TargetConfig(
        name="cv", vendor="commvault", url=url, username="admin", password=Secret("pw"), options=options
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://cv.example.com/commandcenter/api",
        "https://cv.example.com/commandcenter/api/",
        "https://cv.example.com/webconsole/api",
        "https://proxy.example.com/cv/CommandCenter/API",
    ],
)
def test_check_target_accepts(url: str) -> None:
    assert check_target(target(url)) == []
    assert check_target(target(url, format="XML", job_types=["Backup", "Restore"])) == []
    assert check_target(target(url, job_types=[])) == []


def test_check_target_problems() -> None:
    assert [key for key, _ in check_target(target("https://cv.example.com/"))] == ["url"]
    assert [key for key, _ in check_target(target("https://cv.example.com/SearchSvc/CVWebService.svc"))] == ["url"]
    assert [key for key, _ in check_target(target(format="yaml"))] == ["format"]
    assert [key for key, _ in check_target(target(job_types=["Backup,Restore"]))] == ["job_types"]
    assert [key for key, _ in check_target(target(job_types="Backup"))] == ["job_types"]
    bare = TargetConfig(name="cv", vendor="commvault", url="https://cv/commandcenter/api")
    assert [key for key, _ in check_target(bare)] == ["username", "password"]


CONFIG = """\
targets:
  - name: cv
    vendor: commvault
    url: https://cv.example.com/commandcenter/api
    username: admin
    password: s3cret
{extra}
"""


def test_config_keys() -> None:
    config = parse_config(CONFIG.format(extra=""), "test.yml", environ={}, vendors={"commvault": SPEC})
    (loaded,) = config.targets
    assert loaded.options == {"format": "json", "job_types": ["Backup"]}
    assert check_target(loaded) == []
    extra = "    format: xml\n    job_types: [Backup, Restore]"
    (loaded,) = parse_config(CONFIG.format(extra=extra), "t.yml", environ={}, vendors={"commvault": SPEC}).targets
    assert loaded.options == {"format": "xml", "job_types": ["Backup", "Restore"]}


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("    format: 1", "targets[0].format"),
        ("    job_types: [1]", "targets[0].job_types[0]"),
        ("    page_size: 5", "targets[0].page_size"),
        ("    labels: {client_name: x}", "targets[0].labels.client_name"),
    ],
)
def test_config_errors(extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.format(extra=extra), "test.yml", environ={}, vendors={"commvault": SPEC})
    assert problem in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_config_requires_credentials() -> None:
    text = CONFIG.format(extra="").replace("    password: s3cret\n", "")
    with pytest.raises(ConfigError, match="missing required key 'password'"):
        parse_config(text, "test.yml", environ={}, vendors={"commvault": SPEC})
