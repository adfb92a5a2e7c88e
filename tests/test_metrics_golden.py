"""The exposition of the vendor's own documented Keepit examples, compared with a
reviewed golden file (tests/golden/*.prom, rewritten only by --update-golden),
and checked independently of it: promtool, and values derived by hand from the
documentation.

The pipeline is the exporter's own, minus HTTP: parse_jobs / parse_history ->
state.apply_collection -> metrics.render_target -> exposition.Exposition.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config, TargetConfig
from exporter.exposition import Exposition
from exporter.metrics import FAMILIES, render_target
from exporter.model import Collection, JobKey, Run, Status
from exporter.state import TargetHealth, TargetState, apply_collection
from exporter.vendors import VENDORS
from exporter.vendors.keepit import SNAPSHOT_JOB_TYPE, Connector, connector_info, parse_history, parse_jobs
from tests.harness import parse_exposition, promtool_check, select, unescape_label_value

CONNECTOR = "Microsoft 365 Backup"
# The connector of the examples: its GUID from the documented URL
# (.../devices/11ptlk-st7sly-ggba4c/jobs), its type from the job description "[o365-admin]".
CONNECTOR_GUID = "11ptlk-st7sly-ggba4c"
# A fixed "now" after every event in the examples (the history's newest is 2024-12-22T09:29:38Z).
NOW = datetime(2024, 12, 23, 12, 0, tzinfo=UTC)
TARGET = TargetConfig(
    name="keepit-dk",
    vendor="keepit",
    url="https://dk-co.keepit.com",
    labels={"tenant": "acme"},
    rpo=timedelta(hours=26),
)

Samples = list[tuple[str, dict[str, str], float]]


def _doc(vendor_api_dir: Path, name: str) -> str:
    return (vendor_api_dir / name).read_text(encoding="utf-8")


def jobs_example2(vendor_api_dir: Path) -> str:
    """Example 2's response of keepit-jobs-filter.txt: the failed selective restore."""
    examples: list[str] = re.findall(r"<jobs>.*?</jobs>", _doc(vendor_api_dir, "keepit-jobs-filter.txt"), re.S)
    assert len(examples) == 2, "the vendor document changed: expected two <jobs> examples"
    assert "failed_to_restore_some_items" in examples[1]
    return examples[1]


def history_example(vendor_api_dir: Path) -> str:
    """The history/range response; the document omits its opening <history> (the API sends it)."""
    match = re.search(r"<backup>.*?</history>", _doc(vendor_api_dir, "keepit-history-range.txt"), re.S)
    assert match is not None, "the vendor document changed: no <backup>...</history> example"
    return "<history>\n" + match.group(0)


def render(state: TargetState, target: TargetConfig = TARGET) -> bytes:
    config = Config(targets=(target,))
    health = TargetHealth(up=True, last_duration=1.5)
    spec = VENDORS[target.vendor]

    def rpo_for(key: JobKey) -> timedelta | None:
        # As TargetCollector.rpo_for: no RPO for jobs that create no recovery point.
        return config.rpo_for(target, key) if spec.protects(key.job_type) else None

    fragments = render_target(target, state, health, rpo_for, NOW.timestamp())
    exposition = Exposition(FAMILIES)
    exposition.set_target(target.name, fragments)
    return exposition.render()


def collect(
    runs: list[Run],
    snapshots: Any = (),
    jobs: tuple[JobKey, ...] = (),
    job_info: dict[JobKey, dict[str, str]] | None = None,
) -> TargetState:
    state = TargetState(name=TARGET.name)
    apply_collection(
        state,
        Collection(runs=tuple(runs), jobs=jobs, snapshots=tuple(snapshots), job_info=job_info or {}),
        NOW,
        job_retention=timedelta(days=30),
    )
    # The poller stamps a successful collection when it ends.
    state.last_success = NOW.timestamp()
    return state


@pytest.fixture
def doc_exposition(vendor_api_dir: Path) -> bytes:
    runs = parse_jobs(jobs_example2(vendor_api_dir), CONNECTOR)
    snapshots = parse_history(history_example(vendor_api_dir), CONNECTOR)
    # As KeepitClient.collect does: every collected connector is a known backup
    # job, and every job of a connector carries the connector's attributes.
    backup = JobKey(CONNECTOR, SNAPSHOT_JOB_TYPE)
    info = connector_info(Connector(guid=CONNECTOR_GUID, name=CONNECTOR, type="o365-admin"))
    state = collect(runs, snapshots, jobs=(backup,), job_info={key: info for key in {backup, *(r.job for r in runs)}})
    return render(state)


def test_doc_examples_match_the_golden_file(doc_exposition: bytes, golden: Any) -> None:
    golden.check_text("keepit_doc_examples.prom", doc_exposition.decode())


def test_doc_examples_pass_promtool(doc_exposition: bytes) -> None:
    result = promtool_check(doc_exposition)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_doc_examples_values(doc_exposition: bytes) -> None:
    """Values worked out from the vendor document by hand, not from the golden file."""
    samples = parse_exposition(doc_exposition.decode())
    restore = {"target": "keepit-dk", "vendor": "keepit", "job_name": CONNECTOR, "job_type": "srestore"}
    backup = {**restore, "job_type": "backup"}

    # Every series carries the identity labels and the static label; none carries job/instance.
    for name, labels, _ in samples:
        assert (labels["target"], labels["vendor"], labels["tenant"]) == ("keepit-dk", "keepit", "acme"), name
        assert not {"job", "instance"} & set(labels), name

    # <failed>2024-10-15T16:46:12Z</failed>: the last run failed.
    status = {lab["status"]: v for lab, v in select(samples, "backup_job_last_status", **restore)}
    assert status == {"success": 0, "warning": 0, "failed": 1, "cancelled": 0}
    [(info, value)] = select(samples, "backup_job_last_failure_info", **restore)
    assert value == 1
    assert "failed_to_restore_some_items" in info["reason"]
    assert "Failed to process one or more items" in info["reason"]  # from the escaped execsummary
    assert len(info["reason"]) <= 120

    runs = {lab["status"]: v for lab, v in select(samples, "backup_job_runs_total", **restore)}
    assert runs == {"success": 0, "warning": 0, "failed": 1, "cancelled": 0}

    # <started>16:45:40</started> .. <failed>16:46:12</failed>: 32 s.
    started = datetime(2024, 10, 15, 16, 45, 40, tzinfo=UTC).timestamp()
    ended = datetime(2024, 10, 15, 16, 46, 12, tzinfo=UTC).timestamp()
    assert select(samples, "backup_job_last_run_start_timestamp_seconds", **restore)[0][1] == started
    assert select(samples, "backup_job_last_run_end_timestamp_seconds", **restore)[0][1] == ended
    assert select(samples, "backup_job_last_duration_seconds", **restore)[0][1] == 32
    buckets = {lab["le"]: v for lab, v in select(samples, "backup_job_run_duration_seconds_bucket", **restore)}
    assert buckets["60.0"] == 1
    assert all(v == 1 for v in buckets.values())  # cumulative: every bucket from 60 s up holds the run
    assert set(buckets) == {
        "60.0", "300.0", "900.0", "1800.0", "3600.0", "7200.0", "14400.0", "28800.0", "43200.0", "86400.0", "+Inf"
    }  # fmt: skip
    assert select(samples, "backup_job_run_duration_seconds_sum", **restore)[0][1] == 32
    assert select(samples, "backup_job_run_duration_seconds_count", **restore)[0][1] == 1
    # A failed run is no success.
    assert not select(samples, "backup_job_last_success_timestamp_seconds", **restore)
    assert select(samples, "backup_job_running", **restore)[0][1] == 0
    assert select(samples, "backup_job_running_seconds", **restore)[0][1] == 0

    # 26 h RPO for every job.
    assert {v for _, v in select(samples, "backup_job_rpo_seconds")} == {26 * 3600}
    # The connector's backup job only: a selective restore creates no recovery point.
    assert [lab["job_type"] for lab, _ in select(samples, "backup_job_rpo_seconds")] == ["backup"]

    # The history: two complete snapshots, 2023899411 then 2025304567 bytes.
    newest = datetime(2024, 12, 22, 9, 29, 38, tzinfo=UTC).timestamp()
    assert select(samples, "backup_snapshot_last_size_bytes", **backup)[0][1] == 2025304567
    assert select(samples, "backup_snapshot_size_change_ratio", **backup)[0][1] == pytest.approx(
        2025304567 / 2023899411, rel=1e-15
    )
    stamps = {lab["snapshot_type"]: v for lab, v in select(samples, "backup_snapshot_last_timestamp_seconds", **backup)}
    assert stamps == {"complete": newest}
    # The connector's backup job has no run in the examples: counters at 0, no last status.
    assert {v for _, v in select(samples, "backup_job_runs_total", **backup)} == {0}
    assert not select(samples, "backup_job_last_status", **backup)

    # The connector's attributes, once per job, on the info metric only.
    infos = select(samples, "backup_job_info")
    assert sorted(lab["job_type"] for lab, _ in infos) == ["backup", "srestore"]
    for lab, value in infos:
        assert value == 1
        assert lab["connector_type"] == "o365-admin"
        assert lab["connector_guid"] == CONNECTOR_GUID
    assert not [n for n, lab, _ in samples if "connector_guid" in lab and n != "backup_job_info"]

    # Target health as given.
    assert select(samples, "backup_target_up")[0][1] == 1
    assert select(samples, "backup_target_collection_duration_seconds")[0][1] == 1.5
    assert select(samples, "backup_target_last_success_timestamp_seconds")[0][1] == NOW.timestamp()
    errors = {lab["reason"]: v for lab, v in select(samples, "backup_target_collection_errors_total")}
    assert errors == {"timeout": 0, "auth": 0, "http": 0, "parse": 0, "connection": 0, "config": 0}


def test_doc_examples_parse_with_prometheus_client(doc_exposition: bytes) -> None:
    """A second, independent parser agrees on the families and their types."""
    families = {f.name: f.type for f in text_string_to_metric_families(doc_exposition.decode())}
    # The parser names a counter's family without its _total suffix.
    assert families["backup_job_runs"] == "counter"
    assert families["backup_target_collection_errors"] == "counter"
    assert families["backup_job_run_duration_seconds"] == "histogram"
    assert families["backup_job_last_status"] == "gauge"


NASTY = 'Acme "prod" \\\\fs01\\share\nsecond line'


def test_label_values_are_escaped(golden: Any) -> None:
    run = Run(
        run_id="r1",
        job=JobKey(NASTY, 'back"up\\'),
        status=Status.WARNING,
        start=NOW - timedelta(hours=2),
        end=NOW - timedelta(hours=1),
        reason='quota "exceeded"\\ on C:\\\nretry later',
    )
    target = TargetConfig(
        name="keepit-dk", vendor="keepit", url="https://dk-co.keepit.com", labels={"site": 'a"b\\c\nd'}
    )
    body = render(collect([run]), target)

    result = promtool_check(body)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    text = body.decode()
    # The newline is escaped: no sample line is broken in two.
    assert all(line.startswith(("# HELP backup_", "# TYPE backup_", "backup_")) for line in text.splitlines()), text

    samples = parse_exposition(text)
    [(labels, value)] = [
        (lab, v)
        for lab, v in select(samples, "backup_job_last_status")
        if unescape_label_value(lab["status"]) == "warning"
    ]
    assert value == 1
    assert unescape_label_value(labels["job_name"]) == NASTY
    assert unescape_label_value(labels["job_type"]) == 'back"up\\'
    assert unescape_label_value(labels["site"]) == 'a"b\\c\nd'
    [(info, _)] = select(samples, "backup_job_last_failure_info")
    # The reason is whitespace-normalised (one line) before it becomes a label.
    assert unescape_label_value(info["reason"]) == 'quota "exceeded"\\ on C:\\ retry later'

    # prometheus_client's parser unescapes by itself and must agree.
    parsed = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == "backup_job_last_status"]
    assert {s.labels["job_name"] for s in parsed} == {NASTY}
    assert {s.labels["site"] for s in parsed} == {'a"b\\c\nd'}
