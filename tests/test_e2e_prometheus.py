"""The shipped dashboards and alert rules against a real Prometheus scraping the demo.

One Prometheus (Debian's package) scrapes three exporters running --demo: one
serving everything (scraped at /metrics and, per target, at /probe) and two
shards of a --shard.count=2 pair. Then:

- every query of every dashboard panel and variable parses and returns data;
- every alert expression parses, and every metric it reads has data (an
  alert for a healthy state, such as the exporter being down, cannot return
  series while everything is up: its expression is checked, and its firing
  is covered by promtool's rule tests);
- the demo data makes BackupJobFailed, BackupJobRPOBreached and
  BackupSnapshotSizeDrop fire in Prometheus (from a copy of the rules whose
  `for:` is 0, as the test cannot wait minutes; expressions are unchanged);
- /probe and the shards partition the targets: every target's series come
  from exactly one probe and exactly one shard.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from exporter.simulators import SIMULATORS
from tests.harness import ExporterProcess
from tests.prometheus import PrometheusError, PrometheusProcess

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
DEMO_TARGETS = sorted(f"{vendor}-demo" for vendor in SIMULATORS)
MUST_FIRE = ("BackupJobFailed", "BackupJobRPOBreached", "BackupSnapshotSizeDrop")

# Grafana's built-in variables, as a dashboard showing the last hour would set them.
BUILTINS = {"__range": "1h", "__range_s": "3600", "__interval": "1m", "__rate_interval": "1m", "__interval_ms": "60000"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")
# Metric names in an expression: not functions, not label names in matchers.
_METRIC = re.compile(r"\b(backup_\w+|process_\w+)\b(?!\s*(?:\(|=|!=|=~|!~))")


def _exporter_job() -> str:
    """The scrape job name the shipped rules and config agree on."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"] if job.get("metrics_path", "/metrics") == "/metrics"]
    exporter_jobs = [job for job in jobs if "backup" in job]
    assert exporter_jobs, f"no backup-exporter scrape job in {PROMETHEUS_CONFIG}"
    return str(exporter_jobs[0])


@dataclass
class Stack:
    prometheus: PrometheusProcess
    full: ExporterProcess
    shards: list[ExporterProcess]
    job: str


def _rules_without_for(workdir: Path) -> Path:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "2s"
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    path = workdir / "alerts.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def _hostport(process: ExporterProcess) -> str:
    return process.url.removeprefix("http://")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e-prometheus")
    full = ExporterProcess(tmp / "absent.yaml", tmp / "full", extra_args=["--demo"])
    shards = [
        ExporterProcess(
            tmp / "absent.yaml", tmp / f"shard{i}", extra_args=["--demo", f"--shard.index={i}", "--shard.count=2"]
        )
        for i in range(2)
    ]
    exporters = [full, *shards]
    for exporter in exporters:
        await exporter.start()
    job = _exporter_job()
    config = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s", "scrape_timeout": "2s"},
        "rule_files": [str(_rules_without_for(tmp))],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [_hostport(full)]}]},
            {
                "job_name": "probe",
                "metrics_path": "/probe",
                "static_configs": [{"targets": DEMO_TARGETS}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": _hostport(full)},
                ],
            },
            {"job_name": "shards", "static_configs": [{"targets": [_hostport(s) for s in shards]}]},
        ],
    }
    prometheus = PrometheusProcess(tmp, config)
    await prometheus.start()
    try:
        for exporter in exporters:
            await exporter.wait_for(lambda status: status == 200, what="ready", within=60)
        # Three scrapes of everything, so rates and increases have data.
        for scrape_job in (job, "probe", "shards"):
            expr = f'count_over_time(backup_target_up{{job="{scrape_job}"}}[1m]) >= 3'
            await prometheus.wait_for(expr, at_least=len(DEMO_TARGETS))
        yield Stack(prometheus, full, shards, job)
    finally:
        await prometheus.stop()
        for exporter in exporters:
            await exporter.stop()


# --- dashboards ------------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows nest their panels


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str


def _dashboard_queries() -> list[PanelQuery]:
    queries: list[PanelQuery] = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr") and not target.get("hide"):
                    queries.append(PanelQuery(path.stem, panel.get("title", "?"), target["expr"]))
        for variable in dashboard.get("templating", {}).get("list", []):
            query = variable.get("query")
            if variable.get("type") == "query":
                text = query.get("query", "") if isinstance(query, dict) else str(query or "")
                queries.append(PanelQuery(path.stem, f"variable {variable['name']}", text))
    return queries


def _substitute(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        assert name in values, f"unknown variable ${name} in {expr!r}"
        return values[name]

    return _VARIABLE.sub(replace, expr)


def _as_promql(expr: str) -> str:
    """Grafana's variable functions as the PromQL they stand for."""
    expr = expr.strip()
    if match := re.fullmatch(r"label_values\((.+),\s*(\w+)\)", expr, re.DOTALL):
        return match.group(1)
    if match := re.fullmatch(r"label_values\((\w+)\)", expr):
        return f'{{{match.group(1)}!=""}}'
    if match := re.fullmatch(r"query_result\((.+)\)", expr, re.DOTALL):
        return match.group(1)
    return expr


async def _variable_values(prometheus: PrometheusProcess, job: str) -> list[dict[str, str]]:
    """Variable values as a person would pick them: for each vendor, a job
    whose last run failed and a job running now (a panel of file counts has
    data for Commvault jobs only, a progress panel for running jobs only);
    multi-value variables as Grafana's "All" regex."""
    picks = (
        f'topk by (vendor) (1, backup_job_last_status{{job="{job}",status="failed"}})',
        f'topk by (vendor) (1, backup_job_running{{job="{job}"}} > 0)',
    )
    choices = []
    for pick in picks:
        for series in await prometheus.query(pick):
            label = series["metric"]
            choices.append(
                {
                    "datasource": "prometheus",
                    "vendor": label["vendor"],
                    "target": label["target"],
                    "job": label["job_name"],
                    "job_name": label["job_name"],
                    "job_type": label["job_type"],
                    "instance": ".*",
                    "repository": ".*",
                    "connector": ".*",
                }
            )
    assert {c["vendor"] for c in choices} == set(SIMULATORS), choices
    return choices


async def test_dashboards_exist() -> None:
    assert len(DASHBOARDS) >= 4, DASHBOARDS
    assert _dashboard_queries()


async def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    choices = await _variable_values(stack.prometheus, stack.job)
    empty: list[str] = []
    for query in _dashboard_queries():
        for values in choices:
            promql = _as_promql(_substitute(query.expr, values))
            try:
                result = await stack.prometheus.query(promql)
            except PrometheusError as exc:
                pytest.fail(f"{query.dashboard} / {query.panel}: {exc}")
            if result:
                break
        else:
            empty.append(f"{query.dashboard} / {query.panel}: {query.expr}")
    assert not empty, "queries without data on the demo:\n" + "\n".join(empty)


# --- alert rules ------------------------------------------------------------------


def _alerts() -> list[dict[str, Any]]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


async def test_every_alert_expression_parses_and_reads_existing_metrics(stack: Stack) -> None:
    missing: list[str] = []
    for rule in _alerts():
        try:
            await stack.prometheus.query(rule["expr"])
        except PrometheusError as exc:
            pytest.fail(f"{rule['alert']}: {exc}")
        for metric in sorted(set(_METRIC.findall(rule["expr"]))):
            if not await stack.prometheus.query(metric):
                missing.append(f"{rule['alert']}: {metric}")
    assert not missing, "alert rules reading metrics the demo does not have:\n" + "\n".join(missing)


async def test_demo_makes_the_key_alerts_fire(stack: Stack) -> None:
    wanted = set(MUST_FIRE)
    firing: set[str] = set()
    for _ in range(60):
        alerts = (await stack.prometheus.api("alerts"))["alerts"]
        firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
        if wanted <= firing:
            break
        await asyncio.sleep(0.5)
    assert wanted <= firing, f"firing: {sorted(firing)}"
    alerts = (await stack.prometheus.api("alerts"))["alerts"]
    failed_vendors = {a["labels"].get("vendor") for a in alerts if a["labels"]["alertname"] == "BackupJobFailed"}
    assert failed_vendors >= set(SIMULATORS), failed_vendors
    for alert in alerts:
        assert alert["labels"].get("severity"), alert
        assert alert["annotations"].get("summary"), alert
        assert alert["annotations"].get("description"), alert


# --- /probe and shards ---------------------------------------------------------------


async def test_probe_partitions_the_targets(stack: Stack) -> None:
    per_target = await stack.prometheus.query(
        'count by (target) (count by (target, instance) (backup_job_rpo_seconds{job="probe"}))'
    )
    assert {s["metric"]["target"]: s["value"][1] for s in per_target} == dict.fromkeys(DEMO_TARGETS, "1")
    # Each probe (instance = the probed target) serves its own target's series only.
    for series in await stack.prometheus.query('{job="probe", target!=""}'):
        assert series["metric"]["target"] == series["metric"]["instance"], series["metric"]
    # And together the probes serve what /metrics serves.
    full = await stack.prometheus.query(f'count(backup_job_runs_total{{job="{stack.job}"}})')
    probes = await stack.prometheus.query('count(backup_job_runs_total{job="probe"})')
    assert full[0]["value"][1] == probes[0]["value"][1]


async def test_shards_partition_the_targets(stack: Stack) -> None:
    per_target = await stack.prometheus.query('count by (target) (backup_target_up{job="shards"})')
    assert {s["metric"]["target"]: s["value"][1] for s in per_target} == dict.fromkeys(DEMO_TARGETS, "1")
    per_shard = await stack.prometheus.query('count by (instance) (backup_target_up{job="shards"})')
    assert len(per_shard) == 2
    full = await stack.prometheus.query(f'count(backup_job_runs_total{{job="{stack.job}"}})')
    sharded = await stack.prometheus.query('count(backup_job_runs_total{job="shards"})')
    assert full[0]["value"][1] == sharded[0]["value"][1]
