"""Keepit payload parsing: the vendor's own documented examples (golden files),
every status mapping, and malformed input that must become ParseError."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.model import JobKey, Status
from exporter.vendors.base import ParseError
from exporter.vendors.keepit import (
    Connector,
    decode_execsummary,
    parse_account_id,
    parse_devices,
    parse_history,
    parse_jobs,
    select_connectors,
)
from tests.conftest import run_dict, snapshot_dict

CONNECTOR = "Microsoft 365 Backup"


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def _doc(vendor_api_dir: Path, name: str) -> str:
    return (vendor_api_dir / name).read_text(encoding="utf-8")


def _jobs_examples(vendor_api_dir: Path) -> list[str]:
    examples = re.findall(r"<jobs>.*?</jobs>", _doc(vendor_api_dir, "keepit-jobs-filter.txt"), re.S)
    assert len(examples) == 2
    return examples


def _history_example_as_printed(vendor_api_dir: Path) -> str:
    match = re.search(r"<backup>.*?</history>", _doc(vendor_api_dir, "keepit-history-range.txt"), re.S)
    assert match is not None
    return match.group(0)


# --- the vendor's documented examples --------------------------------------------


def test_jobs_example1_active_job(vendor_api_dir: Path, golden: Any) -> None:
    runs = parse_jobs(_jobs_examples(vendor_api_dir)[0], CONNECTOR)
    golden.check_json("keepit_jobs_example1.json", [run_dict(r) for r in runs])

    (run,) = runs
    assert run.run_id == "va14e0-sa8c7o-giq88n-hsfgdx"
    assert run.job == JobKey(CONNECTOR, "backup")
    assert run.status is Status.RUNNING
    # No <started> in the example: the start falls back to <start>.
    assert run.start == _utc(2024, 10, 15, 0, 54, 29)
    assert run.end is None
    assert run.reason is None


def test_jobs_example2_failed_restore(vendor_api_dir: Path, golden: Any) -> None:
    runs = parse_jobs(_jobs_examples(vendor_api_dir)[1], CONNECTOR)
    golden.check_json("keepit_jobs_example2.json", [run_dict(r) for r in runs])

    (run,) = runs
    assert run.run_id == "fsglzll-yvsqx2-1shdhk-fuhxgd"
    assert run.job == JobKey(CONNECTOR, "srestore")
    assert run.status is Status.FAILED
    assert run.start == _utc(2024, 10, 15, 16, 45, 40)  # <started>, not <start>
    assert run.end == _utc(2024, 10, 15, 16, 46, 12)
    assert run.duration == 32.0
    assert run.progress == 1.0
    assert run.reason == "failed_to_restore_some_items: Failed to process one or more items"


def test_history_example(vendor_api_dir: Path, golden: Any) -> None:
    # The doc example lacks its opening <history> (a typo; the API sends it).
    body = "<history>\n" + _history_example_as_printed(vendor_api_dir)
    snapshots = parse_history(body, CONNECTOR)
    golden.check_json("keepit_history_example.json", [snapshot_dict(s) for s in snapshots])

    assert [s.timestamp for s in snapshots] == [_utc(2024, 12, 21, 21, 29, 31), _utc(2024, 12, 22, 9, 29, 38)]
    assert [s.size_bytes for s in snapshots] == [2023899411, 2025304567]
    assert all(s.complete and s.snapshot_type == "complete" for s in snapshots)
    assert all(s.job == JobKey(CONNECTOR, "backup") for s in snapshots)


def test_history_example_as_printed_is_a_parse_error(vendor_api_dir: Path) -> None:
    with pytest.raises(ParseError):
        parse_history(_history_example_as_printed(vendor_api_dir), CONNECTOR)


def test_tstamp_with_trailing_space() -> None:
    body = "<history><backup><tstamp>2024-12-22T09:29:38Z </tstamp><type> p </type><size> 7 </size></backup></history>"
    (snapshot,) = parse_history(body, CONNECTOR)
    assert snapshot.timestamp == _utc(2024, 12, 22, 9, 29, 38)
    assert snapshot.size_bytes == 7
    assert snapshot.complete is False


def test_history_empty_and_missing_size() -> None:
    assert parse_history("<history/>", CONNECTOR) == []
    assert parse_history("<history>\n</history>", CONNECTOR) == []
    (snapshot,) = parse_history("<history><backup><tstamp>2024-12-22T09:29:38Z</tstamp></backup></history>", "x")
    assert snapshot.size_bytes is None


def test_execsummary_of_the_doc_example() -> None:
    text = (
        '<?xml version="1.0" encoding="utf-8"?><execsummary><summary>Failed to process one or more items'
        "</summary><exitreason>done</exitreason></execsummary><!-- End of Document 2024-10-15T16:46:12Z -->"
    )
    assert decode_execsummary(text) == "Failed to process one or more items"
    assert decode_execsummary(None) is None
    assert decode_execsummary("  ") is None
    assert decode_execsummary("<execsummary><exitreason>done</exitreason></execsummary>") is None
    assert decode_execsummary(" Backup aborted ") == "Backup aborted"
    with pytest.raises(ParseError):
        decode_execsummary("<execsummary><summary>cut")


# --- status mapping ------------------------------------------------------------------


def _job(fields: str) -> str:
    return f"<jobs><job><guid>g1-g2-g3-g4</guid><type>backup</type>{fields}</job></jobs>"


END = _utc(2024, 10, 15, 0, 56, 21)


@pytest.mark.parametrize(
    ("fields", "status", "end"),
    [
        ("<active>false</active><succeeded>2024-10-15T00:56:21Z</succeeded>", Status.SUCCESS, END),
        ("<failed>2024-10-15T00:56:21.5Z</failed>", Status.FAILED, END.replace(microsecond=500000)),
        ("<active>false</active><cancelled> 2024-10-15T00:56:21Z </cancelled>", Status.CANCELLED, END),
        ("<active>true</active>", Status.RUNNING, None),
        ("<active/>", Status.RUNNING, None),
        ("<active> TRUE </active>", Status.RUNNING, None),
        ("<active>false</active>", Status.QUEUED, None),
        ("", Status.QUEUED, None),
        # Precedence: the outcome timestamps win over <active>, succeeded first.
        ("<active>true</active><succeeded>2024-10-15T00:56:21Z</succeeded>", Status.SUCCESS, END),
        ("<succeeded>2024-10-15T00:56:21Z</succeeded><failed>2024-10-15T00:57:00Z</failed>", Status.SUCCESS, END),
        ("<succeeded></succeeded><active>false</active>", Status.QUEUED, None),
    ],
)
def test_status_mapping(fields: str, status: Status, end: datetime | None) -> None:
    (run,) = parse_jobs(_job(fields), "c")
    assert run.status is status
    assert run.end == end


def test_start_prefers_started_and_accepts_fractions() -> None:
    (run,) = parse_jobs(
        _job("<start>2024-10-14T08:27:14Z</start><started>2024-10-14T08:27:14.245Z</started><progress>0.25</progress>"),
        "c",
    )
    assert run.start == _utc(2024, 10, 14, 8, 27, 14, 245000)
    assert run.progress == 0.25
    (queued,) = parse_jobs(_job("<start>2024-10-14T08:27:14Z </start>"), "c")
    assert queued.start == _utc(2024, 10, 14, 8, 27, 14)
    (nothing,) = parse_jobs(_job(""), "c")
    assert nothing.start is None


def test_progress_is_clamped() -> None:
    (run,) = parse_jobs(_job("<progress>1.5</progress>"), "c")
    assert run.progress == 1.0


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ("<stats><stat><name>fail_reason</name><value> quota_exceeded </value></stat></stats>", "quota_exceeded"),
        ("<execsummary>Disk full</execsummary>", "Disk full"),
        (
            "<execsummary>&lt;execsummary&gt;&lt;summary&gt;Disk full&lt;/summary&gt;&lt;/execsummary&gt;</execsummary>"
            "<stats><stat><name>other</name><value>1</value></stat>"
            "<stat><name>fail_reason</name><value>quota_exceeded</value></stat></stats>",
            "quota_exceeded: Disk full",
        ),
        # An execsummary that is not well-formed is dropped, not fatal.
        ("<execsummary>&lt;execsummary&gt;&lt;summary&gt;cut</execsummary>", None),
        ("<stats/>", None),
    ],
)
def test_reason(fields: str, reason: str | None) -> None:
    (run,) = parse_jobs(_job("<failed>2024-10-15T00:56:21Z</failed>" + fields), "c")
    assert run.reason == reason


def test_empty_and_multiple_jobs() -> None:
    assert parse_jobs("<jobs/>", "c") == []
    assert parse_jobs(" <jobs>\n</jobs>", "c") == []
    body = "<jobs>" + "".join(f"<job><guid>g{i}</guid><type>backup</type></job>" for i in range(3)) + "</jobs>"
    assert [r.run_id for r in parse_jobs(body.encode(), "c")] == ["g0", "g1", "g2"]


# --- devices and account -----------------------------------------------------------

DEVICES = """\
<devices>
  <cloud>
    <guid>aaaaaa-bbbbbb-cccccc</guid>
    <name>Microsoft 365 Backup </name>
    <type>o365-admin</type>
    <accessible>true</accessible>
    <cloud>
      <guid>nested-nested-nested</guid>
      <name>Nested child</name>
      <type>o365-admin</type>
    </cloud>
  </cloud>
  <cloud>
    <guid>dddddd-eeeeee-ffffff</guid>
    <name>Jira</name>
    <type>dsl</type>
    <agent-type> jira </agent-type>
  </cloud>
  <cloud><guid>gggggg-hhhhhh-iiiiii</guid><name>No access</name><type>gsuite</type>
    <accessible>false</accessible></cloud>
  <cloud><guid>jjjjjj-kkkkkk-llllll</guid><name>Deleted</name><type>sforce</type>
    <deletion-deadline>2025-01-01T00:00:00Z</deletion-deadline></cloud>
  <cloud><guid>mmmmmm-nnnnnn-oooooo</guid><name>system</name><type>system</type></cloud>
  <cloud><guid>pppppp-qqqqqq-rrrrrr</guid><type>zendesk</type></cloud>
</devices>
"""


def test_parse_devices() -> None:
    assert parse_devices(DEVICES) == [
        Connector("aaaaaa-bbbbbb-cccccc", "Microsoft 365 Backup", "o365-admin", None),
        Connector("dddddd-eeeeee-ffffff", "Jira", "dsl", "jira"),
        # No name: the GUID stands in, so the job still has a job_name.
        Connector("pppppp-qqqqqq-rrrrrr", "pppppp-qqqqqq-rrrrrr", "zendesk", None),
    ]
    assert parse_devices("<devices/>") == []


def test_select_connectors() -> None:
    connectors = parse_devices(DEVICES)
    selected, unmatched = select_connectors(connectors, ["Jira", "aaaaaa-bbbbbb-cccccc", "No access", "nope"])
    assert [c.name for c in selected] == ["Microsoft 365 Backup", "Jira"]
    assert unmatched == ["No access", "nope"]
    assert select_connectors(connectors, None) == (connectors, [])
    assert select_connectors(connectors, []) == (connectors, [])


def test_parse_account_id() -> None:
    assert parse_account_id(b"<user><id> 5t1sbe-s6zsgx-rtutxq </id></user>") == "5t1sbe-s6zsgx-rtutxq"


# --- malformed input: ParseError, never anything else ------------------------------

BOMB = (
    '<?xml version="1.0"?><!DOCTYPE jobs [<!ENTITY a "aaaaaaaaaa">'
    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    "<jobs><job><guid>&c;</guid><type>backup</type></job></jobs>"
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE jobs [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    "<jobs><job><guid>&x;</guid></job></jobs>"
)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not xml",
        "<jobs><job>",
        "<jobs></job>",
        BOMB,
        XXE,
        "<jobs><job><guid>&undefined;</guid></job></jobs>",
        "<history><backup/></history>",
        "<jobs>text</jobs>",
        "<jobs><job/></jobs>",
        "<jobs><job>text</job></jobs>",
        "<jobs><job><type>backup</type></job></jobs>",
        "<jobs><job><guid>   </guid><type>backup</type></job></jobs>",
        "<jobs><job><guid>g</guid></job></jobs>",
        "<jobs><job><guid>g</guid><guid>h</guid><type>backup</type></job></jobs>",
        "<jobs><job><guid><x>g</x></guid><type>backup</type></job></jobs>",
        _job("<start>yesterday</start>"),
        _job("<failed>soon</failed>"),
        _job("<progress>half</progress>"),
        _job("<progress>nan</progress>"),
        _job("<active>maybe</active>"),
        "<jobs><job><guid>g</guid><type>backup</type></job></jobs><jobs/>",
        b"\xff\xfe<\x00j\x00",
    ],
)
def test_parse_jobs_rejects(body: str | bytes) -> None:
    with pytest.raises(ParseError):
        parse_jobs(body, "c")


@pytest.mark.parametrize(
    "body",
    [
        "<jobs/>",
        "<history><backup><type>c</type></backup></history>",
        "<history><backup><tstamp>2024-12-22T09:29:38Z</tstamp><size>big</size></backup></history>",
        "<history><backup><tstamp>never</tstamp></backup></history>",
        BOMB.replace("jobs", "history"),
        "<history><backup>",
    ],
)
def test_parse_history_rejects(body: str) -> None:
    with pytest.raises(ParseError):
        parse_history(body, "c")


@pytest.mark.parametrize(
    "body",
    [
        "<user/>",
        "<devices><cloud><name>x</name></cloud></devices>",
        "<devices><cloud><guid>../../etc</guid></cloud></devices>",
        "<devices><cloud/></devices>",
        BOMB.replace("jobs", "devices"),
    ],
)
def test_parse_devices_rejects(body: str) -> None:
    with pytest.raises(ParseError):
        parse_devices(body)


@pytest.mark.parametrize("body", ["<user/>", "<user><id>a/b</id></user>", "<devices/>", "", "<user><id>"])
def test_parse_account_id_rejects(body: str) -> None:
    with pytest.raises(ParseError):
        parse_account_id(body)


def test_entity_bomb_in_execsummary_is_dropped_quickly() -> None:
    escaped = BOMB.replace("jobs", "execsummary").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    (run,) = parse_jobs(_job(f"<failed>2024-10-15T00:56:21Z</failed><execsummary>{escaped}</execsummary>"), "c")
    assert run.status is Status.FAILED
    assert run.reason is None


# Fragments of a jobs payload, shuffled into near-miss documents.
_TAGS = ("jobs", "job", "guid", "type", "active", "succeeded", "progress", "stats", "stat", "name", "execsummary")
_VALUES = ("g1", "backup", "true", "2024-10-15T00:56:21Z", "0.5", "fail_reason", "&lt;", "&amp;", "<x/>", " ")
_TOKENS = [*(f"<{tag}>" for tag in _TAGS), *(f"</{tag}>" for tag in _TAGS), *_VALUES]
_XMLISH = st.lists(st.sampled_from(_TOKENS), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), _XMLISH))
def test_parse_jobs_raises_only_parse_error(body: str | bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_jobs(body, "c")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), _XMLISH.map(lambda s: s.replace("jobs", "history").replace("job", "backup"))))
def test_parse_history_raises_only_parse_error(body: str) -> None:
    with contextlib.suppress(ParseError):
        parse_history(body, "c")
