"""AvePoint payload parsing: the vendor's own documented examples (golden
files), both response shapes and backupDetails spellings, every status
mapping, and malformed input that must become ParseError."""

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

from exporter.model import JobKey, Run, Status
from exporter.vendors.avepoint import (
    ApiStatus,
    map_state,
    parse_jobs_page,
    parse_token,
    parse_token_error,
    service_name,
    summarise_errors,
)
from exporter.vendors.base import ParseError
from tests.conftest import run_dict

JOB = JobKey("Exchange Online", "backup")


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def _doc(vendor_api_dir: Path, name: str) -> str:
    return (vendor_api_dir / name).read_text(encoding="utf-8")


def _jobs_sample_as_printed(vendor_api_dir: Path) -> str:
    """The response sample of avepoint-m365-jobs.txt (the /backup/m365/jobs shape)."""
    match = re.search(r"\n\{\n.*\n\}", _doc(vendor_api_dir, "avepoint-m365-jobs.txt"), re.S)
    assert match is not None
    return match.group(0)


def _as_json(sample: str) -> str:
    """The doc sample as the API sends it: without the // comments, with its
    bare id and state values quoted, without trailing commas."""
    text = re.sub(r"[ \t]*//[^\n]*", "", sample)
    text = re.sub(r'("(?:id|state)":\s*)([A-Za-z][A-Za-z0-9 ]*?)(\s*,)', r'\1"\2"\3', text)
    return re.sub(r",(\s*[}\]])", r"\1", text)


def _envelope_sample(vendor_api_dir: Path) -> str:
    """The cloudbackupjobs sample of keepit-avepoint-notes.md (the current envelope)."""
    notes = _doc(vendor_api_dir, "keepit-avepoint-notes.md")
    match = re.search(r"```json\n(\{\"statusCode\".*?)\n```", notes, re.S)
    assert match is not None
    return match.group(1)


def _page(*jobs: dict[str, Any], **envelope: Any) -> str:
    return json.dumps({"statusCode": 200, "data": list(jobs), "metadata": {"totalCount": len(jobs)}, **envelope})


def _job(**fields: Any) -> dict[str, Any]:
    return {"id": "IB20250310120000123456", "state": "Finished", **fields}


def _one(**fields: Any) -> Run:
    (run,) = parse_jobs_page(_page(_job(**fields)), JOB).runs
    return run


# --- the vendor's documented examples --------------------------------------------


def test_jobs_doc_example_older_shape(vendor_api_dir: Path, golden: Any) -> None:
    page = parse_jobs_page(_as_json(_jobs_sample_as_printed(vendor_api_dir)), JOB)
    golden.check_json("avepoint_jobs_doc_example.json", [run_dict(r) for r in page.runs])

    assert page.total == 2
    assert page.next_link is None  # "" means no more pages
    first, second = page.runs
    assert first.run_id == "FB20241015105312327583"
    assert first.job == JOB
    assert first.status is Status.SUCCESS
    assert first.start == _utc(2024, 12, 2, 7, 52, 25)
    assert first.end == _utc(2024, 12, 2, 7, 53, 4)
    assert first.duration == 39.6  # "0.011" hours, not end - start (39 s)
    assert first.items == {"total": 16, "failed": 0, "successful": 14, "skipped": 2}
    assert first.reason is None
    assert second.run_id == "EFB20241015105312828443"
    assert second.start == _utc(2024, 12, 2, 1, 33, 22)
    assert second.end == _utc(2024, 12, 2, 1, 34, 10)
    assert second.duration == 50.4
    assert second.items == {"total": 438, "failed": 0, "successful": 438, "skipped": 0}


def test_jobs_doc_example_as_printed_is_a_parse_error(vendor_api_dir: Path) -> None:
    # Comments, bare words and trailing commas: not JSON, as printed.
    with pytest.raises(ParseError, match="malformed JSON"):
        parse_jobs_page(_jobs_sample_as_printed(vendor_api_dir), JOB)


def test_cloudbackupjobs_notes_example_envelope(vendor_api_dir: Path, golden: Any) -> None:
    page = parse_jobs_page(_envelope_sample(vendor_api_dir), JOB)
    golden.check_json("avepoint_cloudbackupjobs_notes_example.json", [run_dict(r) for r in page.runs])

    assert page.total == 2  # metadata.totalCount, though the sample lists one job
    assert page.next_link is None
    assert page.error is None
    (run,) = page.runs
    assert run.run_id == "FB20241015105312327583"
    assert run.status is Status.SUCCESS
    assert (run.start, run.end) == (_utc(2024, 12, 2, 7, 52, 25), _utc(2024, 12, 2, 7, 53, 4))
    assert run.duration == 39.6
    assert run.items == {"total": 16, "failed": 0, "successful": 14, "skipped": 2}
    # jobErrors [{"value": "…", "number": 3}]: the text, without its count.
    assert run.reason == "…"


def test_token_notes_example() -> None:
    # The response sample of the notes, verbatim.
    body = '{"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":"…","scope":"…"}'
    token = parse_token(body)
    assert token.access_token == "…"
    assert token.expires_in == 3600.0


# --- shapes and spellings ----------------------------------------------------------


def test_older_shape_paging_fields() -> None:
    body = json.dumps({"totalCount": 31, "jobs": [_job()], "nextLink": "/backup/m365/jobs?pageIndex=1"})
    page = parse_jobs_page(body, JOB)
    assert page.total == 31
    assert page.next_link == "/backup/m365/jobs?pageIndex=1"
    assert [r.run_id for r in page.runs] == ["IB20250310120000123456"]


def test_envelope_paging_fields() -> None:
    link = "https://graph-us.avepointonlineservices.com/backup/m365/cloudbackupjobs?pageIndex=1&pageSize=2"
    page = parse_jobs_page(_page(_job(), metadata={"totalCount": 3, "nextLink": f" {link} "}), JOB)
    assert (page.total, page.next_link) == (3, link)
    # The reference table calls the total totalNumber.
    assert parse_jobs_page(json.dumps({"jobs": [], "totalNumber": 7}), JOB).total == 7
    assert parse_jobs_page(json.dumps({"statusCode": 200, "data": None, "metadata": None}), JOB).total is None
    assert parse_jobs_page(json.dumps({"jobs": []}), JOB) == parse_jobs_page('{"data": []}', JOB)


def test_pascal_case_keys_and_bom() -> None:
    body = {
        "StatusCode": 200,
        "Data": [{"Id": "X1", "State": "Failed", "FinishTime": "2025-03-10T12:00:00Z", "JobErrors": []}],
        "Metadata": {"TotalCount": 1, "NextLink": ""},
    }
    page = parse_jobs_page(b"\xef\xbb\xbf" + json.dumps(body).encode(), JOB)
    assert page.total == 1
    (run,) = page.runs
    assert (run.run_id, run.status, run.end) == ("X1", Status.FAILED, _utc(2025, 3, 10, 12, 0, 0))


@pytest.mark.parametrize(
    ("details", "items"),
    [
        (
            {"totalCount": 16, "failedCount": 1, "successfulCount": 13, "skippedCount": 2},
            {"total": 16, "failed": 1, "successful": 13, "skipped": 2},
        ),
        (
            {"totalNumber": 16, "failedNumber": 1, "successfulNumber": 13, "skippedNumber": 2},
            {"total": 16, "failed": 1, "successful": 13, "skipped": 2},
        ),
        ({"TotalNumber": "438", "failedCount": 0}, {"total": 438, "failed": 0}),
        ({"totalCount": None, "totalNumber": 5}, {"total": 5}),
        ({}, {}),
        (None, {}),
    ],
)
def test_backup_details_both_spellings(details: Any, items: dict[str, int]) -> None:
    assert _one(backupDetails=details).items == items


# --- status mapping ------------------------------------------------------------------

FINISH = "2025-03-10T12:30:00Z"


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("Finished", Status.SUCCESS),
        ("Finished with Exception", Status.WARNING),
        ("Partially Finished", Status.WARNING),
        ("Failed", Status.FAILED),
        ("In Progress", Status.RUNNING),
        # Case, stray spaces and .NET's enum names.
        ("FINISHED ", Status.SUCCESS),
        (" finished  with\texception", Status.WARNING),
        ("FinishedWithException", Status.WARNING),
        ("PartiallyFinished", Status.WARNING),
        ("InProgress", Status.RUNNING),
        ("in_progress", Status.RUNNING),
        # The jobState enum of the query parameter.
        (1, Status.RUNNING),
        (2, Status.SUCCESS),
        (3, Status.FAILED),
        (4, Status.WARNING),
        (5, Status.WARNING),
    ],
)
def test_status_mapping(state: str | int, status: Status) -> None:
    finish = None if status is Status.RUNNING else FINISH
    page = parse_jobs_page(_page(_job(state=state, finishTime=finish)), JOB)
    assert page.runs[0].status is status
    assert page.unknown_states == frozenset()
    assert map_state(state, finished=finish is not None) == (status, True)


def test_unknown_states_are_a_documented_choice() -> None:
    page = parse_jobs_page(
        _page(
            _job(id="a", state="Canceled", finishTime=FINISH),
            _job(id="b", state="Waiting", finishTime=None),
            _job(id="c", state=9, finishTime=FINISH, jobErrors=[{"value": "Stopped by user"}]),
        ),
        JOB,
    )
    canceled, waiting, numeric = page.runs
    assert (canceled.status, canceled.end, canceled.reason) == (
        Status.WARNING,
        _utc(2025, 3, 10, 12, 30, 0),
        "unrecognised state 'Canceled'",
    )
    assert (waiting.status, waiting.end) == (Status.RUNNING, None)
    assert numeric.status is Status.WARNING
    assert numeric.reason == "unrecognised state '9': Stopped by user"
    assert page.unknown_states == {"Canceled", "Waiting", "9"}


def test_finish_time_of_a_run_in_progress_is_ignored() -> None:
    run = _one(state="In Progress", finishTime=FINISH, duration="0.5")
    assert (run.status, run.end, run.duration_seconds) == (Status.RUNNING, None, None)


# --- fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-12-02T07:52:25Z", _utc(2024, 12, 2, 7, 52, 25)),
        ("2024-12-02T07:52:25.1234567Z", _utc(2024, 12, 2, 7, 52, 25, 123456)),
        ("2024-12-02T07:52:25.5", _utc(2024, 12, 2, 7, 52, 25, 500000)),  # naive means UTC
        ("2024-12-02T08:52:25+01:00 ", _utc(2024, 12, 2, 7, 52, 25)),
        ("0001-01-01T00:00:00", None),  # .NET's unset DateTime
        ("", None),
        (None, None),
    ],
)
def test_timestamps(value: str | None, expected: datetime | None) -> None:
    run = _one(startTime=value, finishTime=value)
    assert run.start == expected
    assert run.end == expected


def test_missing_end_and_times() -> None:
    run = _one(state="Failed")
    assert (run.start, run.end, run.duration) == (None, None, None)


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [("0.011", 39.6), (" 1.5 ", 5400.0), (2, 7200.0), (0.25, 900.0), ("0", 0.0), ("", None), (None, None)],
)
def test_duration_hours_to_seconds(duration: Any, seconds: float | None) -> None:
    assert _one(duration=duration).duration_seconds == seconds


def test_duration_falls_back_to_start_and_end() -> None:
    run = _one(startTime="2024-12-02T07:52:25Z", finishTime="2024-12-02T07:53:04Z", duration="")
    assert run.duration == 39.0


def test_numeric_ids_and_whitespace() -> None:
    assert _one(id=12345).run_id == "12345"
    assert _one(id=" FB1 ").run_id == "FB1"


@pytest.mark.parametrize(
    ("errors", "reason"),
    [
        ([], "Failed"),  # no jobErrors: the state stands in
        ([{"isErrorCode": False, "value": " Mailbox not found ", "url": "", "number": 1}], "Mailbox not found"),
        ([{"value": "Mailbox not found", "number": 0}], "Mailbox not found"),
        ([{"value": "Mailbox not found"}], "Mailbox not found"),
        (
            [{"value": "Throttled", "number": 2}, {"value": "Checked out", "number": 5}, {"value": "Gone"}],
            "Checked out",
        ),
        ([{"value": "A", "number": 2}, {"value": "B", "number": 2}], "A"),
        ([{"value": "Only one kind", "number": 1}, {"value": "", "number": 1}], "Only one kind"),
        ([{"url": "https://x/CB1", "number": 4}], "job errors"),
        ([{"value": None}], "job errors"),
    ],
)
def test_job_errors_summary(errors: list[dict[str, Any]], reason: str) -> None:
    assert _one(state="Failed", jobErrors=errors).reason == reason


def test_job_errors_summary_is_bounded() -> None:
    errors = [{"value": "x" * 5000 + f" {i}", "number": 10**12} for i in range(1000)]
    reason = summarise_errors([{k.lower(): v for k, v in e.items()} for e in errors])
    assert reason is not None
    assert len(reason) <= 120
    assert reason.startswith("x" * 40)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"state": "Failed"}, "Failed"),
        (
            {"state": "Partially Finished", "backupDetails": {"totalCount": 438, "failedCount": 3}},
            "Partially Finished: 3 of 438 objects failed",
        ),
        (
            {"state": "Finished with Exception", "backupDetails": {"failedNumber": 2}},
            "Finished with Exception: 2 objects failed",
        ),
        ({"state": "Finished", "backupDetails": {"totalCount": 438, "failedCount": 3}}, None),
    ],
)
def test_reason_without_job_errors(fields: dict[str, Any], reason: str | None) -> None:
    assert _one(finishTime=FINISH, **fields).reason == reason


def test_envelope_error_status() -> None:
    page = parse_jobs_page(json.dumps({"statusCode": 500, "message": " Internal\nerror ", "data": None}), JOB)
    assert page.error == ApiStatus(500, "Internal error")
    assert page.runs == ()
    long_message = parse_jobs_page(json.dumps({"statusCode": 429, "message": "y" * 500}), JOB)
    assert long_message.error is not None
    assert len(long_message.error.message) <= 80


def test_service_names() -> None:
    assert service_name(" exchange   online") == "Exchange Online"
    assert service_name("OneDrive for Business") == "OneDrive"
    assert service_name("Yammer") == "Viva Engage"
    assert service_name("Teams") == "Teams"
    assert service_name("Dropbox") is None


# --- tokens ----------------------------------------------------------------------------


def test_parse_token_variants() -> None:
    assert parse_token('{"access_token": "abc", "expires_in": "120"}').expires_in == 120.0
    assert parse_token('{"access_token": "abc", "token_type": "bearer"}').expires_in is None
    assert parse_token(b'\xef\xbb\xbf{"access_token": "abc", "expires_in": 59.5}').expires_in == 59.5


@pytest.mark.parametrize(
    "body",
    [
        "",
        "[]",
        "{}",
        '{"access_token": ""}',
        '{"access_token": "a b"}',
        '{"access_token": 5}',
        '{"access_token": "abc", "token_type": "MAC"}',
        '{"access_token": "abc", "expires_in": -1}',
        '{"access_token": "abc", "expires_in": 0}',
        '{"access_token": "abc", "expires_in": "soon"}',
        '{"access_token": "abc", "expires_in": true}',
        '{"access_token": "abc", "expires_in": NaN}',
        '{"access_token": "abc", "expires_in": 1e400}',
        '{"access_token": "abc", "expires_in": "\u00b2"}',
        '{"access_token": "abc", "expires_in": ' + "9" * 400 + "}",
    ],
)
def test_parse_token_rejects(body: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_token(body)
    assert "abc" not in str(caught.value)


def test_parse_token_error() -> None:
    assert parse_token_error('{"error": "invalid_client"}') == "invalid_client"
    assert parse_token_error('{"error": "invalid_scope", "error_description": "x"}') == "invalid_scope"
    # Only OAuth2's vocabulary, never free text, goes into a message.
    assert parse_token_error('{"error": "Bad <b>thing</b>"}') is None
    assert parse_token_error("<html>") is None
    assert parse_token_error("[]") is None


# --- malformed input: ParseError, never anything else ------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        b"\xff\xfe{\x00",
        "[]",
        "null",
        '{"foo": 1}',
        '{"data": {}}',
        '{"data": "x"}',
        '{"jobs": 5}',
        '{"data": [], "metadata": "x"}',
        '{"data": [], "metadata": {"totalCount": "many"}}',
        '{"data": [], "metadata": {"totalCount": -1}}',
        '{"data": [], "metadata": {"totalCount": 1.5}}',
        '{"data": [], "metadata": {"nextLink": 5}}',
        '{"data": [], "metadata": {"totalCount": NaN}}',
        '{"data": [1]}',
        '{"data": [[]]}',
        '{"jobs": [{"state": "Finished"}]}',
        '{"jobs": [{"id": "", "state": "Finished"}]}',
        '{"jobs": [{"id": true, "state": "Finished"}]}',
        '{"jobs": [{"id": "a"}]}',
        '{"jobs": [{"id": "a", "state": ""}]}',
        '{"jobs": [{"id": "a", "state": true}]}',
        '{"jobs": [{"id": "a", "state": ["Finished"]}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "startTime": "yesterday"}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "finishTime": 5}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "finishTime": "9999-99-99T00:00:00Z"}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "duration": "soon"}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "duration": "-1"}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "duration": "Infinity"}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "duration": [1]}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "backupDetails": "x"}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "backupDetails": {"totalCount": -1}}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "backupDetails": {"failedNumber": true}}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "backupDetails": {"skippedCount": "x"}}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "jobErrors": {}}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "jobErrors": [1]}]}',
        # Unicode digits that int() refuses, numbers that float() cannot hold.
        '{"jobs": [{"id": "a", "state": "Finished", "backupDetails": {"totalCount": "\u00b2"}}]}',
        '{"jobs": [{"id": "a", "state": "Finished", "duration": ' + "9" * 400 + "}]}",
        '{"jobs": [{"id": "a", "state": "Finished", "finishTime": "0001-01-01T00:00:00+01:00"}]}',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_parse_jobs_page_rejects(body: str | bytes) -> None:
    with pytest.raises(ParseError):
        parse_jobs_page(body, JOB)


_KEYS = (
    "statusCode",
    "message",
    "data",
    "jobs",
    "metadata",
    "totalCount",
    "totalNumber",
    "nextLink",
    "id",
    "state",
    "startTime",
    "finishTime",
    "duration",
    "backupDetails",
    "failedCount",
    "skippedNumber",
    "jobErrors",
    "value",
    "number",
)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-3, 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["Finished", "In Progress", "2024-12-02T07:52:25Z", "0.011", "", "0001-01-01T00:00:00"])
)
_JSONISH = st.recursive(
    _LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(_KEYS), children, max_size=6),
    max_leaves=30,
)
_PAGES = st.fixed_dictionaries(
    {"data": st.lists(st.dictionaries(st.sampled_from(_KEYS), _JSONISH, max_size=8), max_size=3)},
    optional={"metadata": _JSONISH, "statusCode": _LEAVES},
)


@settings(max_examples=250, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), _JSONISH.map(json.dumps), _PAGES.map(json.dumps)))
def test_parse_jobs_page_raises_only_parse_error(body: str | bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_jobs_page(body, JOB)


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.text(max_size=100),
        st.dictionaries(st.sampled_from((*_KEYS, "access_token", "expires_in", "token_type")), _JSONISH).map(
            json.dumps
        ),
    )
)
def test_parse_token_raises_only_parse_error(body: str) -> None:
    with contextlib.suppress(ParseError):
        parse_token(body)
    assert parse_token_error(body) is None or isinstance(parse_token_error(body), str)
