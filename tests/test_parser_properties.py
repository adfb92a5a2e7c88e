"""Property-based tests of every public parser, of every status mapping and
of the timestamp formats, with regressions for the parser bugs they found.

Payloads are built from Hypothesis strategies in each vendor's documented
shape (the XML and JSON of ../shared/vendor-api), with names in any script
and with XML's special characters and quotes, rendered by this module's own
renderers (not the simulators'), parsed, and compared field by field with
what was generated. The status tables are written from the vendor
documentation and SPEC section 5, not copied from the code's mapping dicts.

Public parse functions covered, one section each:
  exporter.timeutil: parse_timestamp, format_timestamp, parse_duration,
    to_epoch, from_epoch
  exporter.vendors.payload: load_json, load_xml, decode
  keepit: parse_account_id, parse_devices, parse_jobs, parse_history,
    decode_execsummary
  veeam: parse_sessions, parse_jobs, parse_repositories,
    parse_logon_session, map_status, job_type_of (and the pure
    attribute_sessions and repositories_of, for order independence)
  commvault: parse_job_list, parse_job, parse_token, map_status, job_type_of
  avepoint: parse_jobs_page, parse_job, parse_token, parse_token_error,
    map_state, summarise_errors, service_name

Hypothesis runs derandomized without a database: CI sees the same examples
on every run.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exporter.model import JobKey, Run, Snapshot, Status
from exporter.timeutil import format_timestamp, from_epoch, parse_duration, parse_timestamp, to_epoch
from exporter.vendors import avepoint, commvault, keepit, veeam
from exporter.vendors.base import ParseError
from exporter.vendors.payload import decode, load_json, load_xml, short
from tests.test_commvault_parse import EXPECTED as COMMVAULT_STATUSES

PROPS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
INT64 = 2**63

# --- shared strategies ---------------------------------------------------------------

# Any character XML 1.0 can carry as a character (no C0 controls but tab and
# newline, no surrogates, no U+FFFE/U+FFFF), plus the ones that need escaping.
_XML_CHARS = st.characters(exclude_categories=("Cs", "Cc", "Cn")) | st.sampled_from(list("<>&\"' \t\n]]>"))
xml_text = st.text(_XML_CHARS, max_size=30)
# A name with something left after the parsers strip surrounding whitespace.
name_text = xml_text.filter(lambda text: text.strip() != "")
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda minutes: timezone(timedelta(minutes=minutes)))
# Vendors' clocks: from 1971 (AvePoint reads earlier years as .NET's unset
# DateTime) to 9998, in UTC, to the second.
vendor_times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31)).map(
    lambda value: value.replace(microsecond=0, tzinfo=UTC)
)
sizes = st.integers(0, INT64 - 1)


def _guid(groups: int) -> st.SearchStrategy[str]:
    return st.from_regex("-".join(["[0-9a-z]{6}"] * groups), fullmatch=True)


uuids = st.uuids().map(str)


def seconds_text(value: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS` of `value` in UTC (strftime's %Y does not pad year 999)."""
    value = value.astimezone(UTC)
    return f"{value.year:04d}-{value:%m-%dT%H:%M:%S}"


def zulu(value: datetime) -> str:
    return seconds_text(value) + "Z"


def with_fraction(value: datetime, digits: int, seventh: int = 0) -> tuple[str, datetime]:
    """`value` in UTC with `digits` fractional digits (.NET writes up to 7),
    and the instant a reader keeping microseconds gets back."""
    value = value.astimezone(UTC)
    base = seconds_text(value)
    if digits == 0:
        return base + "Z", value.replace(microsecond=0)
    fraction = f"{value.microsecond:06d}{seventh}"[:digits]
    kept = int((fraction + "000000")[:6])
    return f"{base}.{fraction}Z", value.replace(microsecond=kept)


def collapse(text: str) -> str:
    return " ".join(text.split())


# --- timeutil -------------------------------------------------------------------------

any_aware = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets)


@PROPS
@given(any_aware)
def test_iso_with_any_offset_parses_to_the_same_instant(value: datetime) -> None:
    parsed = parse_timestamp(value.isoformat())
    assert parsed == value
    assert parsed.utcoffset() == timedelta(0)


@PROPS
@given(any_aware)
def test_format_timestamp_round_trips_to_the_second(value: datetime) -> None:
    text = format_timestamp(value)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text)
    assert parse_timestamp(text) == value.replace(microsecond=0)


@PROPS
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_naive_timestamps_are_utc(value: datetime) -> None:
    assert parse_timestamp(value.isoformat()) == value.replace(tzinfo=UTC)


@PROPS
@given(st.text(max_size=40))
def test_parse_timestamp_raises_only_value_error(text: str) -> None:
    try:
        parsed = parse_timestamp(text)
    except ValueError:
        return
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-00:31"],
)
def test_offsets_that_leave_the_calendar_are_value_errors(text: str) -> None:
    # Regression: astimezone() raised OverflowError, which every vendor's
    # _timestamp let through (only ValueError became ParseError).
    with pytest.raises(ValueError):
        parse_timestamp(text)


@PROPS
@given(st.integers(0, 10**6), st.sampled_from(["s", "m", "h", "d", "w"]))
def test_prometheus_durations(amount: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[unit]
    assert parse_duration(f"{amount}{unit}") == timedelta(seconds=amount * seconds)
    assert parse_duration(f" {amount}{unit} ") == timedelta(seconds=amount * seconds)


@PROPS
@given(st.integers(0, 999), st.integers(0, 23), st.integers(0, 59))
def test_iso_durations_without_months(days: int, hours: int, minutes: int) -> None:
    assert parse_duration(f"P{days}DT{hours}H{minutes}M") == timedelta(days=days, hours=hours, minutes=minutes)


@PROPS
@given(st.text(max_size=20))
def test_parse_duration_raises_only_value_error(text: str) -> None:
    try:
        parse_duration(text, anchor=datetime(2025, 1, 1, tzinfo=UTC))
    except ValueError:
        return


@PROPS
@given(any_aware)
def test_epoch_round_trip(value: datetime) -> None:
    epoch = to_epoch(value)
    assert epoch is not None
    back = from_epoch(epoch)
    assert back is not None
    # A float epoch holds 52 bits: whole microseconds until 2106, then fewer.
    assert abs(back - value) <= timedelta(microseconds=1, seconds=abs(epoch) * 2**-51)
    assert to_epoch(None) is None
    assert from_epoch(None) is None


# --- payload --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@PROPS
@given(json_values, st.booleans(), st.booleans())
def test_load_json_round_trips(value: Any, bom: bool, as_bytes: bool) -> None:
    text = ("\ufeff" if bom else "") + json.dumps(value, ensure_ascii=False)
    assert load_json(text.encode() if as_bytes else text, "t") == value


@PROPS
@given(st.lists(xml_text, min_size=1, max_size=5))
def test_load_xml_keeps_text_exactly_and_forces_lists(values: list[str]) -> None:
    body = "<r>" + "".join(f"<v>{escape(value)}</v>" for value in values) + "</r>"
    doc = load_xml(body.encode(), "t", force_list=("v",))
    # Empty elements read as None; xmltodict strips surrounding whitespace.
    assert doc == {"r": {"v": [value.strip() or None for value in values]}}


@PROPS
@given(st.text())
def test_decode_drops_one_bom(text: str) -> None:
    assert decode(("\ufeff" + text).encode()) == text
    assert decode("\ufeff" + text) == text


# --- Keepit ---------------------------------------------------------------------------

CONNECTOR = "Microsoft 365 Backup"
# keepit-avepoint-notes.md, "Jobs": the job types.
KEEPIT_JOB_TYPES = ("backup", "restore", "srestore", "pstrestore", "zipdownload")
# "Connector type values", and `system`, which is skipped.
KEEPIT_CONNECTOR_TYPES = (
    "o365-admin",
    "dynamics365",
    "sforce",
    "gsuite",
    "powerbi",
    "zendesk",
    "azure-do",
    "azure-ad",
    "dsl",
)
# SPEC section 5 and the notes: the outcome is whichever of succeeded /
# failed / cancelled holds a timestamp; else active=true is running and
# anything else pending (queued).
KEEPIT_OUTCOMES: Mapping[str, Status] = {
    "succeeded": Status.SUCCESS,
    "failed": Status.FAILED,
    "cancelled": Status.CANCELLED,
    "active": Status.RUNNING,
    "pending": Status.QUEUED,
}


@dataclass(frozen=True)
class KeepitJob:
    guid: str
    type: str
    start: datetime
    started: datetime | None
    outcome: str
    end: datetime
    active_form: str
    progress: float | None
    fail_reason: str | None
    summary: str | None
    trailing_space: bool

    def xml(self) -> str:
        def stamp(value: datetime) -> str:
            return zulu(value) + (" " if self.trailing_space else "")

        parts = [f"<guid>{self.guid}</guid>", "<description>[backup][bl][auto]{x &amp; y}</description>"]
        parts.append(f"<type>{self.type}</type><priority>0</priority>")
        if self.outcome == "active":
            parts.append(self.active_form)
        elif self.active_form != "<active/>":
            # Not active: <active>false</active> for two thirds, no <active> for the rest.
            parts.append("<active>false</active>")
        parts.append(f"<start>{stamp(self.start)}</start><scheduled>{stamp(self.start)}</scheduled>")
        if self.started is not None:
            parts.append(f"<started>{stamp(self.started)}</started>")
        if self.outcome in ("succeeded", "failed", "cancelled"):
            parts.append(f"<{self.outcome}>{stamp(self.end)}</{self.outcome}>")
        if self.progress is not None:
            parts.append(f"<progress>{self.progress!r}</progress>")
        if self.summary is not None:
            inner = (
                '<?xml version="1.0" encoding="utf-8"?><execsummary><summary>'
                f"{escape(self.summary)}</summary><exitreason>done</exitreason></execsummary>"
            )
            parts.append(f"<execsummary>{escape(inner)}</execsummary>")
        if self.fail_reason is not None:
            parts.append(
                f"<stats><stat><name>fail_reason</name><value>{escape(self.fail_reason)}</value></stat></stats>"
            )
        return "<job>" + "".join(parts) + "</job>"


@st.composite
def keepit_jobs(draw: st.DrawFn) -> KeepitJob:
    start = draw(vendor_times.filter(lambda t: t.year < 9990))
    started = draw(st.none() | st.integers(0, 3600).map(lambda s: start + timedelta(seconds=s)))
    return KeepitJob(
        guid=draw(_guid(4)),
        type=draw(st.sampled_from(KEEPIT_JOB_TYPES)),
        start=start,
        started=started,
        outcome=draw(st.sampled_from(sorted(KEEPIT_OUTCOMES))),
        end=(started or start) + timedelta(seconds=draw(st.integers(0, 10**6))),
        # The notes: true as text or as an empty element (the MCP's builder).
        active_form=draw(st.sampled_from(["<active>true</active>", "<active/>", "<active>TRUE</active>"])),
        progress=draw(st.none() | st.floats(0, 1)),
        fail_reason=draw(st.none() | xml_text),
        summary=draw(st.none() | xml_text),
        trailing_space=draw(st.booleans()),
    )


def _expected_keepit_run(job: KeepitJob, connector: str) -> Run:
    status = KEEPIT_OUTCOMES[job.outcome]
    parts = [(job.fail_reason or "").strip(), (job.summary or "").strip()]
    return Run(
        run_id=job.guid,
        job=JobKey(connector, job.type),
        status=status,
        start=job.started or job.start,
        end=job.end if status.finished else None,
        progress=job.progress,
        reason=": ".join(part for part in parts if part) or None,
        query_time=job.start,
    )


@PROPS
@given(st.lists(keepit_jobs(), max_size=6, unique_by=lambda job: job.guid), name_text)
def test_keepit_jobs_round_trip(jobs: list[KeepitJob], connector: str) -> None:
    body = "<jobs>" + "".join(job.xml() for job in jobs) + "</jobs>"
    runs = keepit.parse_jobs(body.encode(), connector)
    assert runs == [_expected_keepit_run(job, connector) for job in jobs]
    # Order in, order out; any order of the jobs gives the same runs.
    reversed_body = "<jobs>" + "".join(job.xml() for job in reversed(jobs)) + "</jobs>"
    assert keepit.parse_jobs(reversed_body, connector) == runs[::-1]


@PROPS
@given(st.sampled_from(sorted(KEEPIT_OUTCOMES)), st.sampled_from(["", "<active>false</active>", "<active>no</active>"]))
def test_keepit_status_table(outcome: str, inactive: str) -> None:
    stamp = "<{0}>2024-10-15T16:46:12Z</{0}>".format
    fields = {
        "succeeded": stamp("succeeded") + inactive,
        "failed": stamp("failed") + inactive,
        "cancelled": stamp("cancelled") + inactive,
        "active": "<active>true</active>",
        "pending": inactive,
    }[outcome]
    body = f"<jobs><job><guid>a-b-c-d</guid><type>backup</type>{fields}</job></jobs>"
    (run,) = keepit.parse_jobs(body, CONNECTOR)
    assert run.status is KEEPIT_OUTCOMES[outcome]


@PROPS
@given(
    st.lists(st.sampled_from(["succeeded", "failed", "cancelled"]), unique=True),
    st.sampled_from([None, "true", "false", "1", "0", "yes", "no", "", "True", " FALSE "]),
)
def test_keepit_status_is_total_and_deterministic(stamps: list[str], active: str | None) -> None:
    """Every combination of outcome timestamps and documented active values
    maps to one status: the first of succeeded, failed, cancelled present."""
    fields = "".join(f"<{key}>2024-10-15T16:46:12Z</{key}>" for key in stamps)
    if active is not None:
        fields += f"<active>{active}</active>"
    body = f"<jobs><job><guid>a-b-c-d</guid><type>backup</type>{fields}</job></jobs>"
    first = keepit.parse_jobs(body, CONNECTOR)
    assert first == keepit.parse_jobs(body, CONNECTOR)
    (run,) = first
    order = [key for key in ("succeeded", "failed", "cancelled") if key in stamps]
    if order:
        assert run.status is KEEPIT_OUTCOMES[order[0]]
    else:
        running = active is not None and active.strip().lower() in ("", "true", "1", "yes")
        assert run.status is (Status.RUNNING if running else Status.QUEUED)


@dataclass(frozen=True)
class KeepitCloud:
    guid: str
    name: str | None
    type: str
    agent_type: str | None
    accessible: str | None
    deleted: bool
    child: str | None

    def xml(self) -> str:
        parts = [f"<guid>{self.guid}</guid>"]
        if self.name is not None:
            parts.append(f"<name>{escape(self.name)}</name>")
        parts.append(f"<type>{self.type}</type>")
        if self.agent_type is not None:
            parts.append(f"<agent-type>{self.agent_type}</agent-type>")
        if self.accessible is not None:
            parts.append(f"<accessible>{self.accessible}</accessible>")
        if self.deleted:
            parts.append("<deletion-deadline>2025-01-01T00:00:00Z</deletion-deadline>")
        if self.child is not None:
            # Nested connectors' names must not leak into their parent's.
            parts.append(f"<cloud><guid>zzzzzz-zzzzzz-zzzzzz</guid><name>{escape(self.child)}</name></cloud>")
        return "<cloud>" + "".join(parts) + "</cloud>"

    @property
    def collected(self) -> bool:
        return self.type != "system" and self.accessible != "false" and not self.deleted


@st.composite
def keepit_clouds(draw: st.DrawFn) -> KeepitCloud:
    kind = draw(st.sampled_from((*KEEPIT_CONNECTOR_TYPES, "system")))
    return KeepitCloud(
        guid=draw(_guid(3)),
        name=draw(st.none() | xml_text),
        type=kind,
        agent_type=draw(st.sampled_from(["jira", "github", "okta"])) if kind == "dsl" else None,
        accessible=draw(st.sampled_from([None, "true", "false"])),
        deleted=draw(st.booleans()),
        child=draw(st.none() | name_text),
    )


@PROPS
@given(st.lists(keepit_clouds(), max_size=6, unique_by=lambda cloud: cloud.guid))
def test_keepit_devices_round_trip(clouds: list[KeepitCloud]) -> None:
    body = "<devices>" + "".join(cloud.xml() for cloud in clouds) + "</devices>"
    expected = [
        keepit.Connector(
            guid=cloud.guid, name=(cloud.name or "").strip() or cloud.guid, type=cloud.type, agent_type=cloud.agent_type
        )
        for cloud in clouds
        if cloud.collected
    ]
    assert keepit.parse_devices(body) == expected


@PROPS
@given(_guid(3), st.sampled_from(["", " ", "\n  "]))
def test_keepit_account_round_trip(guid: str, pad: str) -> None:
    assert keepit.parse_account_id(f"<user>{pad}<id>{pad}{guid}{pad}</id></user>") == guid


@PROPS
@given(
    st.text(min_size=1, max_size=20).filter(
        lambda text: not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}", text.strip())
    )
)
def test_keepit_account_refuses_what_cannot_go_into_a_path(value: str) -> None:
    with pytest.raises(ParseError):
        keepit.parse_account_id(f"<user><id>{escape(value)}</id></user>")


@dataclass(frozen=True)
class KeepitBackup:
    tstamp: datetime
    type: str
    size: int | None

    def xml(self) -> str:
        size = "" if self.size is None else f"<size>{self.size}</size>"
        return (
            f"<backup><tstamp>{zulu(self.tstamp)}</tstamp><root>{'ab' * 32}</root><type>{self.type}</type>"
            f"{size}<account>5t1sbe-s6zsgx-rtutxq </account></backup>"
        )


keepit_backups = st.builds(KeepitBackup, vendor_times, st.sampled_from(["c", "p"]), st.none() | sizes)


@PROPS
@given(st.lists(keepit_backups, max_size=8), name_text)
def test_keepit_history_round_trip(backups: list[KeepitBackup], connector: str) -> None:
    body = "<history>" + "".join(backup.xml() for backup in backups) + "</history>"
    expected = [
        Snapshot(job=JobKey(connector, "backup"), timestamp=b.tstamp, size_bytes=b.size, complete=b.type == "c")
        for b in backups
    ]
    assert keepit.parse_history(body, connector) == expected


@pytest.mark.parametrize("size", ["-5", "1_000", "\u0661\u0662", "+5", str(INT64), "1" * 30])
def test_keepit_history_refuses_what_is_not_a_size(size: str) -> None:
    # Regression: int() took "-5" (a negative snapshot size), "1_000" and
    # Arabic-Indic digits, and any magnitude.
    with pytest.raises(ParseError):
        keepit.parse_history(
            f"<history><backup><tstamp>2024-12-22T09:29:38Z</tstamp><size>{size}</size></backup></history>", "c"
        )


def test_keepit_history_largest_size() -> None:
    body = f"<history><backup><tstamp>2024-12-22T09:29:38Z</tstamp><size>{INT64 - 1}</size></backup></history>"
    (snapshot,) = keepit.parse_history(body, "c")
    assert snapshot.size_bytes == INT64 - 1


@PROPS
@given(xml_text, st.booleans())
def test_keepit_execsummary_round_trip(summary: str, declaration: bool) -> None:
    head = '<?xml version="1.0" encoding="utf-8"?>' if declaration else ""
    text = f"{head}<execsummary><summary>{escape(summary)}</summary></execsummary><!-- End of Document -->"
    assert keepit.decode_execsummary(text) == (summary.strip() or None)


@PROPS
@given(xml_text.filter(lambda text: not text.strip().startswith("<")))
def test_keepit_plain_text_execsummary_is_the_summary(text: str) -> None:
    assert keepit.decode_execsummary(text) == (text.strip() or None)


@PROPS
@given(any_aware, st.sampled_from([" ", ""]), st.sampled_from(["", ".245", ".1234567"]))
def test_keepit_timestamps_parse_to_the_same_instant(value: datetime, pad: str, fraction: str) -> None:
    value = value.replace(microsecond=0)
    assume(datetime(1, 1, 2, tzinfo=UTC) < value < datetime(9999, 12, 30, tzinfo=UTC))
    text = seconds_text(value) + fraction + "Z" + pad
    expected = value + timedelta(microseconds=int((fraction[1:] + "000000")[:6] or 0))
    body = f"<jobs><job><guid>a-b-c-d</guid><type>backup</type><start>{text}</start></job></jobs>"
    (run,) = keepit.parse_jobs(body, CONNECTOR)
    assert run.start == expected
    assert run.query_time == expected


def test_keepit_timestamp_past_year_9999_is_a_parse_error() -> None:
    # Regression: OverflowError escaped from parse_jobs.
    body = "<jobs><job><guid>a-b-c-d</guid><type>backup</type><start>9999-12-31T23:59:59-01:00</start></job></jobs>"
    with pytest.raises(ParseError):
        keepit.parse_jobs(body, CONNECTOR)


# --- Veeam ----------------------------------------------------------------------------

# veeam-commvault-notes.md 1.2, "Enumerations".
VEEAM_JOB_TYPES: Mapping[str, str] = {
    "Backup": "backup",
    "BackupCopy": "backup_copy",
    "ImmediateBackupCopy": "immediate_backup_copy",
    "ImmediateBackupCopyWorker": "immediate_backup_copy_worker",
    "AgentBackup": "agent_backup",
    "AgentManagement": "agent_management",
    "NasBackup": "nas_backup",
}
VEEAM_STATES = ("Starting", "Stopping", "Working", "Pausing", "Resuming", "Stopped")
# SPEC section 5: Stopped + Success/Warning/Failed, Stopped + None (or no
# Result) is cancelled; any other State is running.
VEEAM_RESULTS: Mapping[str | None, Status] = {
    "Success": Status.SUCCESS,
    "Warning": Status.WARNING,
    "Failed": Status.FAILED,
    "None": Status.CANCELLED,
    None: Status.CANCELLED,
}
VEEAM_NS = "http://www.veeam.com/ent/v1.0"


def v13(key: str) -> str:
    """The v13 JSON key of a v12 one (.NET camelCase: UID -> uid)."""
    return "uid" if key == "UID" else key[0].lower() + key[1:]


def _veeam_json(document: Any, style: str) -> Any:
    if style == "v12":
        return document
    if isinstance(document, dict):
        return {v13(key): _veeam_json(value, style) for key, value in document.items()}
    if isinstance(document, list):
        return [_veeam_json(item, style) for item in document]
    return document


@dataclass(frozen=True)
class VeeamSession:
    uid: str
    job_uid: str
    job_name: str
    job_type: str
    state: str
    result: str | None
    created: str
    created_at: datetime
    ended: str | None
    ended_at: datetime | None
    progress: int
    server: str | None
    failure: str | None

    def links(self) -> list[dict[str, str]]:
        links = [
            {
                "Rel": "Up",
                "Href": f"https://em:9398/api/jobs/{self.job_uid}",
                "Name": self.job_name,
                "Type": "JobReference",
            }
        ]
        if self.server is not None:
            links.insert(
                0,
                {
                    "Rel": "Up",
                    "Href": "https://em:9398/api/backupServers/1",
                    "Name": self.server,
                    "Type": "BackupServerReference",
                },
            )
        return links

    def xml(self) -> str:
        links = "".join(
            f"<Link Href={quoteattr(link['Href'])} Name={quoteattr(link['Name'])} "
            f'Type={quoteattr(link["Type"])} Rel="Up"/>'
            for link in self.links()
        )
        elements = [
            f"<JobUid>urn:veeam:Job:{self.job_uid}</JobUid>",
            f"<JobName>{escape(self.job_name)}</JobName>",
            f"<JobType>{self.job_type}</JobType>",
            f"<CreationTimeUTC>{self.created}</CreationTimeUTC>",
        ]
        if self.ended is not None:
            elements.append(f"<EndTimeUTC>{self.ended}</EndTimeUTC>")
        elements.append(f"<State>{self.state}</State>")
        if self.result is not None:
            elements.append(f"<Result>{self.result}</Result>")
        elements.append(f"<Progress>{self.progress}</Progress><IsRetry>false</IsRetry>")
        if self.failure is not None:
            elements.append(f"<FailureMessage>{escape(self.failure)}</FailureMessage>")
        name = quoteattr(f"{self.job_name}@2025-08-15 20:00:24")
        return (
            f'<BackupJobSession Href="https://em:9398/api/backupSessions/{self.uid}?format=Entity" '
            f'Type="BackupJobSession" Name={name} UID="urn:veeam:BackupJobSession:{self.uid}">'
            f"<Links>{links}</Links>{''.join(elements)}</BackupJobSession>"
        )

    def json(self) -> dict[str, Any]:
        return {
            "IsRetry": False,
            "JobUid": f"urn:veeam:Job:{self.job_uid}",
            "JobName": self.job_name,
            "JobType": self.job_type,
            "CreationTimeUTC": self.created,
            "EndTimeUTC": self.ended,
            "State": self.state,
            "Result": self.result,
            "Progress": self.progress,
            "FailureMessage": self.failure,
            "Name": f"{self.job_name}@2025-08-15 20:00:24",
            "UID": f"urn:veeam:BackupJobSession:{self.uid}",
            "Links": self.links(),
            "Href": f"https://em:9398/api/backupSessions/{self.uid}?format=Entity",
            "Type": "BackupJobSession",
        }

    def expected(self) -> veeam.Session:
        status = VEEAM_RESULTS[self.result] if self.state == "Stopped" else Status.RUNNING
        run = Run(
            run_id=f"urn:veeam:BackupJobSession:{self.uid}",
            job=JobKey(self.job_name.strip(), VEEAM_JOB_TYPES[self.job_type]),
            status=status,
            start=self.created_at,
            end=self.ended_at if status.finished else None,
            progress=self.progress / 100,
            reason=(self.failure or "").strip() or None,
        )
        return veeam.Session(
            run=run, backup_server=(self.server or "").strip() or None, job_uid=f"urn:veeam:Job:{self.job_uid}"
        )


@st.composite
def veeam_sessions(draw: st.DrawFn) -> VeeamSession:
    created, created_at = with_fraction(
        draw(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9990, 1, 1), timezones=st.just(UTC))),
        draw(st.sampled_from([0, 3, 6, 7])),
        draw(st.integers(0, 9)),
    )
    state = draw(st.sampled_from(VEEAM_STATES))
    ended = ended_at = None
    if state == "Stopped" or draw(st.booleans()):
        end = created_at + draw(st.timedeltas(timedelta(0), timedelta(days=3)))
        ended, ended_at = with_fraction(end, draw(st.sampled_from([0, 3, 6])))
    return VeeamSession(
        uid=draw(uuids),
        job_uid=draw(uuids),
        job_name=draw(name_text),
        job_type=draw(st.sampled_from(sorted(VEEAM_JOB_TYPES))),
        state=state,
        result=draw(st.sampled_from([None, "Success", "Warning", "Failed", "None"])),
        created=created,
        created_at=created_at,
        ended=ended,
        ended_at=ended_at,
        progress=draw(st.integers(0, 100)),
        server=draw(st.none() | name_text),
        failure=draw(st.none() | xml_text),
    )


paging = st.tuples(st.integers(1, 10**6), st.integers(1, 10**4), st.integers(0, 10**6))


VEEAM_PLURALS = {"BackupJobSession": "BackupJobSessions", "Job": "Jobs", "Repository": "Repositories"}


def _veeam_query(kind: str, items_xml: str, items_json: list[Any], page: tuple[int, int, int], fmt: str) -> str:
    """A `query?type=<kind>&format=Entities` answer: XML, or JSON v12 / v13."""
    num, size, count = page
    plural = VEEAM_PLURALS[kind]
    if fmt == "xml":
        return (
            f'<QueryResult xmlns="{VEEAM_NS}"><Entities><{plural}>{items_xml}</{plural}></Entities>'
            f'<PagingInfo PageNum="{num}" PageSize="{size}" PagesCount="{count}"><Links/></PagingInfo></QueryResult>'
        )
    # JSON lists every kind of entity, the others as null.
    others = {name: None for name in (*VEEAM_PLURALS.values(), "Backups") if name != plural}
    document = {
        "Refs": None,
        "Entities": {**others, plural: {plural: items_json}},
        "PagingInfo": {"Links": [], "PageNum": num, "PageSize": size, "PagesCount": count},
    }
    return json.dumps(_veeam_json(document, fmt), ensure_ascii=False)


@PROPS
@given(
    st.lists(veeam_sessions(), max_size=5, unique_by=lambda s: s.uid),
    paging,
    st.sampled_from(["xml", "v12", "v13"]),
)
def test_veeam_sessions_round_trip(sessions: list[VeeamSession], page: tuple[int, int, int], fmt: str) -> None:
    body = _veeam_query("BackupJobSession", "".join(s.xml() for s in sessions), [s.json() for s in sessions], page, fmt)
    parsed = veeam.parse_sessions(body.encode())
    assert list(parsed.sessions) == [s.expected() for s in sessions]
    assert parsed.paging == veeam.Paging(*page)


@dataclass(frozen=True)
class VeeamJob:
    uid: str
    name: str
    job_type: str
    server: str | None
    schedule_enabled: bool | None

    def xml(self) -> str:
        server = (
            f'<Links><Link Href="x" Name={quoteattr(self.server)} Type="BackupServerReference" Rel="Up"/></Links>'
            if self.server is not None
            else "<Links/>"
        )
        enabled = (
            ""
            if self.schedule_enabled is None
            else f"<ScheduleEnabled>{str(self.schedule_enabled).lower()}</ScheduleEnabled>"
        )
        return (
            f'<Job Href="x" Type="Job" Name={quoteattr(self.name)} UID="urn:veeam:Job:{self.uid}">{server}'
            f"<JobType>{self.job_type}</JobType><Platform>VMware</Platform>{enabled}</Job>"
        )

    def json(self) -> dict[str, Any]:
        links = (
            []
            if self.server is None
            else [{"Rel": "Up", "Href": "x", "Name": self.server, "Type": "BackupServerReference"}]
        )
        return {
            "JobType": self.job_type,
            "Platform": "VMware",
            "ScheduleEnabled": self.schedule_enabled,
            "Name": self.name,
            "UID": f"urn:veeam:Job:{self.uid}",
            "Links": links,
        }


veeam_jobs = st.builds(
    VeeamJob,
    uuids,
    name_text,
    st.sampled_from([*VEEAM_JOB_TYPES, "Replica"]),
    st.none() | name_text,
    st.none() | st.booleans(),
)


@PROPS
@given(st.lists(veeam_jobs, max_size=5), paging, st.sampled_from(["xml", "v12", "v13"]))
def test_veeam_jobs_round_trip(jobs: list[VeeamJob], page: tuple[int, int, int], fmt: str) -> None:
    body = _veeam_query("Job", "".join(j.xml() for j in jobs), [j.json() for j in jobs], page, fmt)
    parsed = veeam.parse_jobs(body)
    assert list(parsed.jobs) == [
        veeam.JobEntity(
            uid=f"urn:veeam:Job:{job.uid}",
            name=job.name.strip(),
            job_type=VEEAM_JOB_TYPES.get(job.job_type, "replica"),
            backup_server=(job.server or "").strip() or None,
            schedule_enabled=job.schedule_enabled,
        )
        for job in jobs
    ]
    assert parsed.paging == veeam.Paging(*page)


veeam_capacity = st.just(-1) | sizes


@dataclass(frozen=True)
class VeeamRepository:
    uid: str
    name: str
    capacity: int
    free: int

    def xml(self) -> str:
        return (
            f'<Repository Href="x" Type="Repository" Name={quoteattr(self.name)} UID="urn:veeam:Repository:{self.uid}">'
            f"<Links/><Capacity>{self.capacity}</Capacity><FreeSpace>{self.free}</FreeSpace><Kind>WindowsLocal</Kind>"
            "</Repository>"
        )

    def json(self) -> dict[str, Any]:
        return {
            "Capacity": self.capacity,
            "FreeSpace": self.free,
            "Kind": "WindowsLocal",
            "Name": self.name,
            "UID": f"urn:veeam:Repository:{self.uid}",
            "Links": [],
        }


veeam_repositories = st.builds(VeeamRepository, uuids, name_text, veeam_capacity, veeam_capacity)


@PROPS
@given(st.lists(veeam_repositories, max_size=5), paging, st.sampled_from(["xml", "v12", "v13"]))
def test_veeam_repositories_round_trip(
    repositories: list[VeeamRepository], page: tuple[int, int, int], fmt: str
) -> None:
    body = _veeam_query(
        "Repository", "".join(r.xml() for r in repositories), [r.json() for r in repositories], page, fmt
    )
    parsed = veeam.parse_repositories(body)
    # -1 means unknown (S3, snapshot repositories): no figure, not a negative one.
    assert [(r.uid, r.name, r.capacity_bytes, r.free_bytes) for r in parsed.repositories] == [
        (
            f"urn:veeam:Repository:{r.uid}",
            r.name.strip(),
            None if r.capacity < 0 else r.capacity,
            None if r.free < 0 else r.free,
        )
        for r in repositories
    ]


@pytest.mark.parametrize("value", [str(INT64), str(-INT64 - 1), "1" + "0" * 400, "1_000", "\u0661\u0662"])
@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_veeam_integers_outside_int64_are_parse_errors(value: str, fmt: str) -> None:
    # Regression: a Capacity of 10**400 was accepted, and float() of it (the
    # exposition's sample value) raised OverflowError; "1_000" passed int().
    repository = VeeamRepository("u", "r", 0, 0)
    if fmt == "xml":
        body = _veeam_query(
            "Repository", repository.xml().replace("<Capacity>0<", f"<Capacity>{value}<"), [], (1, 1, 1), "xml"
        )
    else:
        number = json.loads(value) if value.lstrip("-").isdigit() and value.isascii() else value
        body = _veeam_query("Repository", "", [{**repository.json(), "Capacity": number}], (1, 1, 1), "v12")
    with pytest.raises(ParseError):
        veeam.parse_repositories(body)


@PROPS
@given(uuids, name_text, st.sampled_from(["xml", "v12", "v13"]))
def test_veeam_logon_session_round_trip(session_id: str, user: str, fmt: str) -> None:
    if fmt == "xml":
        body = (
            f'<LogonSession xmlns="{VEEAM_NS}" Type="LogonSession" Href="https://em:9398/api/logonSessions/{session_id}">'
            f"<Links/><UserName>{escape(user)}</UserName><SessionId>{session_id}</SessionId></LogonSession>"
        )
    else:
        document = {"UserName": user, "SessionId": session_id, "Links": [], "Href": "x", "Type": "LogonSession"}
        body = json.dumps(_veeam_json(document, fmt))
    assert veeam.parse_logon_session(body) == session_id


@pytest.mark.parametrize("state", VEEAM_STATES)
@pytest.mark.parametrize("result", sorted(VEEAM_RESULTS, key=str))
def test_veeam_status_table(state: str, result: str | None) -> None:
    expected = VEEAM_RESULTS[result] if state == "Stopped" else Status.RUNNING
    assert veeam.map_status(state, result) is expected
    # Case-insensitive, surrounding whitespace ignored (the module docstring).
    assert veeam.map_status(f" {state.upper()} ", None if result is None else f"\t{result.lower()} ") is expected


@PROPS
@given(
    st.text(max_size=20) | st.sampled_from(VEEAM_STATES),
    st.none() | st.text(max_size=20) | st.sampled_from(["Success", "warning", " FAILED "]),
)
def test_veeam_status_is_total(state: str, result: str | None) -> None:
    """Any State but Stopped is running; a Stopped session with a Result
    nobody documented is failed (an alert beats a hole in the history)."""
    status = veeam.map_status(state, result)
    assert status is veeam.map_status(state, result)
    documented = {str(key).lower(): value for key, value in VEEAM_RESULTS.items() if key is not None}
    outcome = (result or "").strip().lower()
    if state.strip().lower() != "stopped":
        assert status is Status.RUNNING
    elif outcome == "":
        assert status is Status.CANCELLED
    else:
        assert status is documented.get(outcome, Status.FAILED)


def test_veeam_unknown_result_is_a_failure_with_a_reason() -> None:
    session = VeeamSession(
        "u",
        "j",
        "Job",
        "Backup",
        "Stopped",
        "Exploded",
        "2025-01-01T00:00:00Z",
        datetime(2025, 1, 1, tzinfo=UTC),
        None,
        None,
        100,
        None,
        None,
    )
    (parsed,) = veeam.parse_sessions(_veeam_query("BackupJobSession", session.xml(), [], (1, 1, 1), "xml")).sessions
    assert parsed.run.status is Status.FAILED
    assert parsed.run.reason is not None
    assert "Exploded" in parsed.run.reason


@pytest.mark.parametrize(("documented", "expected"), sorted(VEEAM_JOB_TYPES.items()))
def test_veeam_job_types_table(documented: str, expected: str) -> None:
    assert veeam.job_type_of(documented) == expected


@PROPS
@given(st.text(max_size=30))
def test_veeam_job_type_of_is_idempotent(text: str) -> None:
    once = veeam.job_type_of(text)
    assert veeam.job_type_of(once) == once
    assert not any(char.isspace() for char in once)


@PROPS
@given(
    st.lists(veeam_sessions(), max_size=6, unique_by=lambda s: s.uid),
    st.lists(veeam_jobs, max_size=4, unique_by=lambda job: job.uid),
    st.randoms(),
)
def test_veeam_attribution_does_not_depend_on_order(
    sessions: list[VeeamSession], jobs: list[VeeamJob], random: Any
) -> None:
    entities = veeam.parse_jobs(_veeam_query("Job", "".join(j.xml() for j in jobs), [], (1, 1, 1), "xml")).jobs
    parsed = [s.expected() for s in sessions]
    first = veeam.attribute_sessions(entities, parsed)
    shuffled_sessions, shuffled_jobs = list(parsed), list(entities)
    random.shuffle(shuffled_sessions)
    random.shuffle(shuffled_jobs)
    second = veeam.attribute_sessions(shuffled_jobs, shuffled_sessions)
    assert sorted(first.runs, key=lambda r: r.run_id) == sorted(second.runs, key=lambda r: r.run_id)
    assert first.jobs == second.jobs
    assert first.job_info == second.job_info
    assert len(first.runs) == len(sessions)


@PROPS
@given(st.lists(veeam_repositories, max_size=6, unique_by=lambda r: r.uid), st.randoms())
def test_veeam_repository_names_do_not_depend_on_order(repositories: list[VeeamRepository], random: Any) -> None:
    entities = list(
        veeam.parse_repositories(
            _veeam_query("Repository", "".join(r.xml() for r in repositories), [], (1, 1, 1), "xml")
        ).repositories
    )
    first = veeam.repositories_of(entities)
    random.shuffle(entities)
    assert veeam.repositories_of(entities) == first
    assert len(first) == len(repositories)


@PROPS
@given(vendor_times.filter(lambda t: t.year < 9990), st.sampled_from([0, 1, 3, 6, 7]), st.integers(0, 9))
def test_veeam_timestamps_parse_to_the_same_instant(value: datetime, digits: int, seventh: int) -> None:
    value = value.replace(microsecond=123456)
    text, expected = with_fraction(value, digits, seventh)
    session = VeeamSession("u", "j", "Job", "Backup", "Working", None, text, expected, None, None, 5, None, None)
    (parsed,) = veeam.parse_sessions(_veeam_query("BackupJobSession", session.xml(), [], (1, 1, 1), "xml")).sessions
    assert parsed.run.start == expected


# --- Commvault ------------------------------------------------------------------------------

COMMVAULT_JOB_TYPES: Mapping[str, str] = {
    "Backup": "backup",
    "Restore": "restore",
    "Aux Copy": "aux_copy",
    "Data Verification": "data_verification",
    "Synthetic Full": "synthetic_full",
}
commvault_name = xml_text.filter(lambda text: collapse(text) != "")
epochs = st.integers(
    int(datetime(1971, 1, 1, tzinfo=UTC).timestamp()), int(datetime(9990, 1, 1, tzinfo=UTC).timestamp())
)


@dataclass(frozen=True)
class CommvaultJob:
    job_id: int
    status: str
    job_type: str
    start: int
    end: int
    with_end: bool
    elapsed: int
    last_update: int
    percent: float
    application: int
    media: int
    files: int
    failed_files: int
    client: str
    backupset: str
    subclient: str
    reason: str | None
    visible: bool

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "jobId": self.job_id,
            "status": self.status,
            "localizedStatus": self.status,
            "jobType": self.job_type,
            "backupLevel": 2,
            "appTypeName": "File System",
            "jobStartTime": self.start,
            "jobEndTime": self.end,
            "lastUpdateTime": self.last_update,
            "jobElapsedTime": self.elapsed,
            "percentComplete": self.percent,
            "sizeOfApplication": self.application,
            "sizeOfMediaOnDisk": self.media,
            "totalNumOfFiles": self.files,
            "totalFailedFiles": self.failed_files,
            "isVisible": self.visible,
            "pendingReason": self.reason or "",
            "subclient": {
                "clientName": self.client,
                "backupsetName": self.backupset,
                "subclientName": self.subclient,
                "appName": "File System",
                "subclientId": 2,
                "instanceName": "DefaultInstanceName",
            },
        }
        if not self.with_end:
            # The documented XML example has no jobEndTime at all.
            del summary["jobEndTime"]
        return summary

    def xml(self) -> str:
        summary = self.summary()
        sub = summary.pop("subclient")

        def attrs(values: Mapping[str, Any]) -> str:
            rendered = (
                f"{value:.6f}"
                if isinstance(value, float)
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
                for value in values.values()
            )
            return "".join(f" {key}={quoteattr(text)}" for key, text in zip(values, rendered, strict=True))

        return f"<jobs><jobSummary{attrs(summary)}><subclient{attrs(sub)}/></jobSummary></jobs>"

    def expected(self) -> Run:
        status = COMMVAULT_STATUSES[self.status]
        start = datetime.fromtimestamp(self.start, UTC)
        if not status.finished:
            end = None
        elif self.with_end and self.end:
            end = datetime.fromtimestamp(self.end, UTC)
        elif self.elapsed:
            end = start + timedelta(seconds=self.elapsed)
        else:
            end = datetime.fromtimestamp(self.last_update, UTC)
        return Run(
            run_id=str(self.job_id),
            job=JobKey(
                f"{collapse(self.client)}/{collapse(self.backupset)}/{collapse(self.subclient)}",
                COMMVAULT_JOB_TYPES[self.job_type],
            ),
            status=status,
            start=start,
            end=end,
            processed_bytes=self.application,
            stored_bytes=self.media,
            items={"total": self.files, "failed": self.failed_files},
            progress=round(self.percent, 6) / 100,
            reason=collapse(self.reason or "") or None,
            duration_seconds=float(self.elapsed) if status.finished and self.elapsed else None,
            query_time=end if status.finished else datetime.fromtimestamp(self.last_update, UTC),
        )


@st.composite
def commvault_jobs(draw: st.DrawFn) -> CommvaultJob:
    status = draw(st.sampled_from(sorted(COMMVAULT_STATUSES)))
    start = draw(epochs)
    elapsed = draw(st.integers(0, 10**6))
    finished = COMMVAULT_STATUSES[status].finished
    return CommvaultJob(
        job_id=draw(st.integers(1, INT64 - 1)),
        status=status,
        job_type=draw(st.sampled_from(sorted(COMMVAULT_JOB_TYPES))),
        start=start,
        end=start + elapsed + draw(st.integers(0, 60)) if finished else 0,
        with_end=draw(st.booleans()),
        elapsed=elapsed,
        last_update=start + elapsed + draw(st.integers(1, 60)),
        percent=draw(st.floats(0, 100).map(lambda p: round(p, 6))),
        application=draw(sizes),
        media=draw(sizes),
        files=draw(sizes),
        failed_files=draw(sizes),
        client=draw(commvault_name),
        backupset=draw(commvault_name),
        subclient=draw(commvault_name),
        reason=draw(st.none() | xml_text),
        visible=draw(st.booleans()),
    )


def _commvault_body(jobs: list[CommvaultJob], total: int, shape: str) -> tuple[str, commvault.Format]:
    if shape == "xml":
        inner = "".join(job.xml() for job in jobs)
        return (
            f'<JobManager_JobListResponse totalRecordsWithoutPaging="{total}">{inner}</JobManager_JobListResponse>',
            "xml",
        )
    if shape == "wrapped":
        # The xmltodict-style JSON some servers send: attributes as "@name" strings.
        def attributes(values: Mapping[str, Any]) -> dict[str, Any]:
            return {
                "@" + key: (f"{v:.6f}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v))
                for key, v in values.items()
            }

        summaries = []
        for job in jobs:
            summary = job.summary()
            sub = summary.pop("subclient")
            summaries.append({"jobSummary": {**attributes(summary), "subclient": attributes(sub)}})
        document: dict[str, Any] = {
            "JobManager_JobListResponse": {"@totalRecordsWithoutPaging": str(total), "jobs": summaries}
        }
        return json.dumps(document, ensure_ascii=False), "json"
    document = {"totalRecordsWithoutPaging": total, "jobs": [{"jobSummary": job.summary()} for job in jobs]}
    return json.dumps(document, ensure_ascii=False), "json"


@PROPS
@given(
    st.lists(commvault_jobs(), max_size=5, unique_by=lambda job: job.job_id),
    st.integers(0, INT64 - 1),
    st.sampled_from(["json", "xml", "wrapped"]),
)
def test_commvault_job_list_round_trip(jobs: list[CommvaultJob], total: int, shape: str) -> None:
    body, fmt = _commvault_body(jobs, total, shape)
    page = commvault.parse_job_list(body.encode(), fmt)
    assert page.error is None
    assert page.total == total
    assert [row.run for row in page.rows] == [job.expected() for job in jobs]
    assert [row.visible for row in page.rows] == [job.visible for job in jobs]
    assert [row.raw_status for row in page.rows] == [job.status for job in jobs]
    assert all(row.known_status for row in page.rows)
    for row, job in zip(page.rows, jobs, strict=True):
        assert row.info["client_name"] == collapse(job.client)
        assert row.info["subclient_name"] == collapse(job.subclient)


@PROPS
@given(commvault_jobs())
def test_commvault_parse_job_of_a_summary(job: CommvaultJob) -> None:
    assert commvault.parse_job(job.summary()).run == job.expected()


@PROPS
@given(
    st.text(max_size=30)
    | st.sampled_from(["Failed (VSS)", "Killed by user", "Completing", "running late", "Suspending"]),
    st.booleans(),
)
def test_commvault_status_is_total(text: str, has_end: bool) -> None:
    # The fallback's rule is pinned by examples in test_commvault_parse.py;
    # here: every string maps, and only the documented ones and SPEC 5's
    # Suspend*/ *Pending patterns count as known.
    status, known = commvault.map_status(text, has_end=has_end)
    assert isinstance(status, Status)
    key = collapse(text).lower()
    documented = {name.lower(): value for name, value in COMMVAULT_STATUSES.items()}.get(key)
    if documented is not None:
        assert (status, known) == (documented, True)
    else:
        assert known is (key.startswith("suspend") or key.endswith("pending"))
    if text.isascii():
        assert commvault.map_status(f"  {text.upper()}\t", has_end=has_end) == (status, known)


@pytest.mark.parametrize(("documented", "expected"), sorted(COMMVAULT_JOB_TYPES.items()))
def test_commvault_job_types_table(documented: str, expected: str) -> None:
    assert commvault.job_type_of(documented) == expected


@PROPS
@given(st.text(max_size=30))
def test_commvault_job_type_of_is_idempotent(text: str) -> None:
    once = commvault.job_type_of(text)
    assert commvault.job_type_of(once) == once
    assert not any(char.isspace() for char in once)


@PROPS
@given(epochs, st.sampled_from(["json", "xml", "wrapped"]))
def test_commvault_epochs_parse_to_the_same_instant(seconds: int, shape: str) -> None:
    job = CommvaultJob(7, "Running", "Backup", seconds, 0, True, 0, seconds, 0.0, 0, 0, 0, 0, "c", "b", "s", None, True)
    body, fmt = _commvault_body([job], 1, shape)
    (row,) = commvault.parse_job_list(body, fmt).rows
    assert row.run.start == datetime.fromtimestamp(seconds, UTC)
    assert row.run.start is not None
    assert row.run.start.timestamp() == seconds


@PROPS
@given(st.from_regex(r"[0-9A-F]{8,64}", fullmatch=True), st.booleans(), st.sampled_from(["json", "xml"]))
def test_commvault_token_round_trip(hex_token: str, prefixed: bool, fmt: commvault.Format) -> None:
    token = ("QSDK " if prefixed else "") + hex_token
    if fmt == "json":
        body = json.dumps({"aliasName": "1", "userName": "admin", "token": token, "errList": []})
    else:
        body = f'<DM2ContentIndexing_CheckCredentialResp aliasName="1" userName="admin" token="{token}"/>'
    assert commvault.parse_token(body, fmt) == commvault.TokenResult(token="QSDK " + hex_token)


@PROPS
@given(name_text, st.sampled_from(["json", "xml"]))
def test_commvault_refused_login_carries_its_message(message: str, fmt: commvault.Format) -> None:
    if fmt == "json":
        body = json.dumps({"loginAttempts": 1, "errList": [{"errLogMessage": message}]})
    else:
        body = (
            '<DM2ContentIndexing_CheckCredentialResp loginAttempts="1">'
            f"<errList errLogMessage={quoteattr(message)}/></DM2ContentIndexing_CheckCredentialResp>"
        )
    result = commvault.parse_token(body, fmt)
    assert result.token is None
    assert result.error is not None
    assert result.error.message == collapse(message)


@pytest.mark.parametrize(
    "summary",
    [
        # Regression: float(jobElapsedTime) raised OverflowError for a 400-digit
        # figure, and start + elapsed past year 9999 raised it as well.
        {"jobElapsedTime": "1" + "0" * 400, "jobEndTime": 2},
        {"jobElapsedTime": 10**400, "jobEndTime": 2},
        {"jobStartTime": 253402300790, "jobElapsedTime": 100},
        {"jobStartTime": 1, "jobElapsedTime": INT64 - 1},
        {"sizeOfApplication": INT64, "jobEndTime": 2},
        {"totalNumOfFiles": str(INT64), "jobEndTime": 2},
    ],
)
def test_commvault_figures_out_of_range_are_parse_errors(summary: dict[str, Any]) -> None:
    with pytest.raises(ParseError):
        commvault.parse_job({"jobId": 1, "status": "Completed", "jobType": "Backup", "jobStartTime": 1, **summary})


def test_commvault_deeply_nested_error_is_no_recursion_error() -> None:
    # Regression: _api_error followed `error` objects recursively, and XML
    # (unlike JSON, which the reader bounds) nests as deep as it likes.
    depth = 5000
    body = (
        "<JobManager_JobListResponse>" + "<error>" * depth + "x" + "</error>" * depth + "</JobManager_JobListResponse>"
    )
    try:
        page = commvault.parse_job_list(body, "xml")
    except ParseError:
        return
    assert page.rows == ()


def test_commvault_error_one_level_down_is_still_read() -> None:
    page = commvault.parse_job_list(
        json.dumps({"error": {"errList": [{"errorCode": 5, "errLogMessage": "Access denied"}]}})
    )
    assert page.error == commvault.ApiError(5, "Access denied")


# --- AvePoint -------------------------------------------------------------------------------

AVEPOINT_JOB = JobKey("Exchange Online", "backup")
# keepit-avepoint-notes.md: jobState 1 In Progress, 2 Finished, 3 Failed,
# 4 Finished with Exception, 5 Partially Finished; SPEC section 5 maps them.
AVEPOINT_STATES: Mapping[str, tuple[int, Status]] = {
    "In Progress": (1, Status.RUNNING),
    "Finished": (2, Status.SUCCESS),
    "Failed": (3, Status.FAILED),
    "Finished with Exception": (4, Status.WARNING),
    "Partially Finished": (5, Status.WARNING),
}


@dataclass(frozen=True)
class AvePointError:
    value: str
    number: int


@dataclass(frozen=True)
class AvePointJob:
    id: str
    state: str | int
    status: Status
    start: datetime
    finish: datetime
    unset_finish: Any
    hours: str
    counts: dict[str, int]
    suffix: str
    errors: tuple[AvePointError, ...]

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "startTime": zulu(self.start),
            "finishTime": zulu(self.finish) if self.status.finished else self.unset_finish,
            "duration": self.hours,
            "backupDetails": {f"{state}{self.suffix}": count for state, count in self.counts.items()},
            "jobErrors": [
                {"isErrorCode": True, "value": e.value, "url": "https://x", "number": e.number} for e in self.errors
            ],
        }

    def expected_reason(self) -> str | None:
        texts = [e for e in self.errors if e.value.strip()]
        if texts:
            return short(max(texts, key=lambda e: e.number).value, 120)
        if self.errors:
            return "job errors"
        return None


@st.composite
def avepoint_jobs(draw: st.DrawFn) -> AvePointJob:
    name = draw(st.sampled_from(sorted(AVEPOINT_STATES)))
    number, status = AVEPOINT_STATES[name]
    start = draw(vendor_times.filter(lambda t: t.year < 9990))
    variants: list[str | int] = [name, name.upper(), name.replace(" ", ""), name.replace(" ", "_"), number]
    state = draw(st.sampled_from(variants))
    return AvePointJob(
        id=draw(st.from_regex(r"(FB|EFB|IB)20[0-9]{20}", fullmatch=True)),
        state=state,
        status=status,
        start=start,
        finish=start + timedelta(seconds=draw(st.integers(0, 10**6))),
        unset_finish=draw(st.sampled_from([None, "", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00"])),
        hours=f"{draw(st.floats(0, 10**6)):.3f}",
        counts=draw(
            st.fixed_dictionaries({}, optional={k: sizes for k in ("total", "successful", "failed", "skipped")})
        ),
        suffix=draw(st.sampled_from(["Count", "Number"])),
        errors=tuple(
            draw(
                st.lists(
                    st.builds(AvePointError, xml_text, st.integers(1, 10**6)), max_size=3, unique_by=lambda e: e.number
                )
            )
        ),
    )


def _avepoint_body(jobs: list[AvePointJob], total: int, link: str, shape: str, pascal: bool) -> str:
    items = [job.json() for job in jobs]
    if shape == "current":
        document: dict[str, Any] = {
            "statusCode": 200,
            "message": "",
            "data": items,
            "requestId": "0HNEVHLNSPSEJ:00000002",
            "metadata": {"totalCount": total, "nextLink": link},
        }
    else:
        document = {"totalCount": total, "jobs": items, "nextLink": link}
    if pascal:
        # ASP.NET may be configured for PascalCase; keys are folded.
        document = {key[0].upper() + key[1:]: value for key, value in document.items()}
    return json.dumps(document, ensure_ascii=False)


@PROPS
@given(
    st.lists(avepoint_jobs(), max_size=5),
    st.integers(0, INT64 - 1),
    st.sampled_from(
        ["", "https://graph-us.avepointonlineservices.com/backup/m365/cloudbackupjobs?pageIndex=2", "/x?y=1"]
    ),
    st.sampled_from(["current", "older"]),
    st.booleans(),
)
def test_avepoint_jobs_page_round_trip(
    jobs: list[AvePointJob], total: int, link: str, shape: str, pascal: bool
) -> None:
    page = avepoint.parse_jobs_page(_avepoint_body(jobs, total, link, shape, pascal).encode(), AVEPOINT_JOB)
    assert page.error is None
    assert page.total == total
    assert page.next_link == (link or None)
    assert page.unknown_states == frozenset()
    assert len(page.runs) == len(jobs)
    for run, job in zip(page.runs, jobs, strict=True):
        assert run.run_id == job.id
        assert run.job == AVEPOINT_JOB
        assert run.status is job.status
        assert run.start == job.start
        assert run.end == (job.finish if job.status.finished else None)
        assert dict(run.items) == job.counts
        assert run.duration_seconds == (round(float(job.hours) * 3600, 3) if job.status.finished else None)
        if job.errors:
            assert run.reason == job.expected_reason()
        elif job.status in (Status.WARNING, Status.FAILED):
            assert run.reason, "a run that did not succeed needs a reason"
        else:
            assert run.reason is None


@PROPS
@given(avepoint_jobs())
def test_avepoint_parse_job_of_an_item(job: AvePointJob) -> None:
    run, unknown = avepoint.parse_job(job.json(), AVEPOINT_JOB)
    assert unknown is None
    assert (run.run_id, run.status, run.start) == (job.id, job.status, job.start)


@pytest.mark.parametrize(("state", "expected"), [(k, v[1]) for k, v in sorted(AVEPOINT_STATES.items())])
def test_avepoint_status_table(state: str, expected: Status) -> None:
    number = AVEPOINT_STATES[state][0]
    for variant in (state, state.lower(), state.upper(), state.replace(" ", ""), state.replace(" ", "_"), number):
        for finished in (True, False):
            assert avepoint.map_state(variant, finished=finished) == (expected, True)


@PROPS
@given(st.text(max_size=30) | st.integers(), st.booleans())
def test_avepoint_status_is_total(state: str | int, finished: bool) -> None:
    """An undocumented state is a warning when the run has a finishTime, and
    running while it has none; it never raises."""
    status, known = avepoint.map_state(state, finished=finished)
    assert (status, known) == avepoint.map_state(state, finished=finished)
    key = re.sub(r"[\s_-]+", "", str(state)).lower()
    documented = {re.sub(r"\s+", "", name).lower(): value for name, (_, value) in AVEPOINT_STATES.items()}
    numbers = {number: value for number, value in AVEPOINT_STATES.values()}
    if isinstance(state, int) and state in numbers:
        assert (status, known) == (numbers[state], True)
    elif isinstance(state, str) and key in documented:
        assert (status, known) == (documented[key], True)
    else:
        assert (status, known) == (Status.WARNING if finished else Status.RUNNING, False)


def test_avepoint_unknown_state_is_reported() -> None:
    item = {"id": "FB1", "state": "Exploded", "startTime": "2025-01-01T00:00:00Z", "finishTime": "2025-01-01T01:00:00Z"}
    page = avepoint.parse_jobs_page(
        json.dumps({"statusCode": 200, "data": [item], "metadata": {"totalCount": 1}}), AVEPOINT_JOB
    )
    (run,) = page.runs
    assert run.status is Status.WARNING
    assert run.reason is not None
    assert "Exploded" in run.reason
    assert page.unknown_states == frozenset({"Exploded"})


@PROPS
@given(
    st.lists(
        st.fixed_dictionaries({"value": st.none() | xml_text, "number": st.none() | st.integers(-5, 10**20)}),
        max_size=5,
    )
)
def test_avepoint_summarise_errors_is_one_bounded_line(errors: list[dict[str, Any]]) -> None:
    summary = avepoint.summarise_errors(errors)
    assert summary == avepoint.summarise_errors(errors)
    if not errors:
        assert summary is None
        return
    assert summary is not None
    assert len(summary) <= 120
    assert "\n" not in summary


@PROPS
@given(vendor_times.filter(lambda t: t.year < 9990), offsets, st.sampled_from(["zulu", "offset", "date"]))
def test_avepoint_timestamps_parse_to_the_same_instant(value: datetime, offset: timezone, form: str) -> None:
    if form == "zulu":
        text, expected = zulu(value), value
    elif form == "offset":
        text, expected = value.astimezone(offset).isoformat(), value
    else:
        # The notes: times may be a date.
        text, expected = value.date().isoformat(), datetime.combine(value.date(), datetime.min.time(), UTC)
    run, _ = avepoint.parse_job({"id": "FB1", "state": "In Progress", "startTime": text}, AVEPOINT_JOB)
    assert run.start == expected


@pytest.mark.parametrize(
    "item",
    [
        # Regression: 1e308 hours passed the isfinite check, and its seconds were inf.
        {"duration": "1e308"},
        {"duration": 1e308},
        # Regression: a JSON integer count had no upper bound.
        {"backupDetails": {"totalCount": 10**400}},
        {"backupDetails": {"totalCount": INT64}},
    ],
)
def test_avepoint_figures_out_of_range_are_parse_errors(item: dict[str, Any]) -> None:
    node = {"id": "FB1", "state": "Finished", "finishTime": "2025-01-01T00:00:00Z", **item}
    with pytest.raises(ParseError):
        avepoint.parse_job(node, AVEPOINT_JOB)


@PROPS
@given(
    st.text(string.ascii_letters + string.digits + "-._~+/=", min_size=1, max_size=60),
    st.none() | st.integers(1, 10**12) | st.integers(1, 10**6).map(str),
    st.sampled_from(["Bearer", "bearer", None]),
)
def test_avepoint_token_round_trip(token: str, expires_in: int | str | None, token_type: str | None) -> None:
    document: dict[str, Any] = {"access_token": token, "ext_expires_in": 3600, "scope": avepoint.DEFAULT_SCOPE}
    if expires_in is not None:
        document["expires_in"] = expires_in
    if token_type is not None:
        document["token_type"] = token_type
    assert avepoint.parse_token(json.dumps(document)) == avepoint.Token(
        access_token=token, expires_in=None if expires_in is None else float(expires_in)
    )


@PROPS
@given(
    st.sampled_from(["invalid_client", "invalid_scope", "invalid_request", "unsupported_grant_type"])
    | st.text(max_size=50)
)
def test_avepoint_token_error_shows_only_oauth_codes(code: str) -> None:
    oauth_code = re.fullmatch(r"[a-z_]{1,40}", code) is not None
    shown = avepoint.parse_token_error(json.dumps({"error": code, "error_description": "secret " + code}))
    assert shown == (code if oauth_code else None)
    # Any body at all: never raises, and shows nothing but such a code.
    raw = avepoint.parse_token_error(code)
    assert raw is None or re.fullmatch(r"[a-z_]{1,40}", raw)


@pytest.mark.parametrize("name", sorted(avepoint.SERVICES))
def test_avepoint_service_names_any_case(name: str) -> None:
    for variant in (name, name.upper(), f"  {name.lower().replace(' ', '  ')} "):
        assert avepoint.service_name(variant) == name


@PROPS
@given(st.text(max_size=30))
def test_avepoint_service_name_is_canonical_or_none(entry: str) -> None:
    found = avepoint.service_name(entry)
    assert found is None or found in avepoint.SERVICES


# --- every parser: one representative of each vendor's parse functions -------------------------

PARSERS: Mapping[str, Callable[[bytes], Any]] = {
    "keepit.parse_account_id": keepit.parse_account_id,
    "keepit.parse_devices": keepit.parse_devices,
    "keepit.parse_jobs": lambda body: keepit.parse_jobs(body, "c"),
    "keepit.parse_history": lambda body: keepit.parse_history(body, "c"),
    # The only parser that takes text: it reads a field of a parsed payload.
    "keepit.decode_execsummary": lambda body: keepit.decode_execsummary(body.decode()),
    "veeam.parse_sessions": veeam.parse_sessions,
    "veeam.parse_jobs": veeam.parse_jobs,
    "veeam.parse_repositories": veeam.parse_repositories,
    "veeam.parse_logon_session": veeam.parse_logon_session,
    "commvault.parse_job_list(json)": lambda body: commvault.parse_job_list(body, "json"),
    "commvault.parse_job_list(xml)": lambda body: commvault.parse_job_list(body, "xml"),
    "commvault.parse_token(json)": lambda body: commvault.parse_token(body, "json"),
    "commvault.parse_token(xml)": lambda body: commvault.parse_token(body, "xml"),
    "avepoint.parse_jobs_page": lambda body: avepoint.parse_jobs_page(body, AVEPOINT_JOB),
    "avepoint.parse_token": avepoint.parse_token,
}


@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize(
    "body",
    [
        # Regression: load_xml let LookupError out for an encoding Python does
        # not know, or one that is no text encoding.
        b'<?xml version="1.0" encoding="x-bogus"?><a/>',
        b'<?xml version="1.0" encoding="rot13"?><a/>',
        b'<?xml version="1.0" encoding="UTF--1"?><jobs/>',
    ],
)
def test_unknown_xml_encodings_are_parse_errors(parser: str, body: bytes) -> None:
    try:
        PARSERS[parser](body)
    except ParseError:
        return
