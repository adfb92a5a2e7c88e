"""Alert rules, Prometheus and Alertmanager configuration under deploy/.

The real tools judge them: `promtool check rules`, `promtool test rules`
(deploy/prometheus/alerts.test.yml holds the scenarios), `promtool check
config`, `amtool check-config` and `amtool config routes test`, and a real
Alertmanager for the inhibition rules. The structural tests read the YAML and
check what the tools cannot: that every alert can be routed and read by a
person, that every alert is tested both ways, and that the files agree on
names.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import free_port

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts.test.yml"
PROMETHEUS_CONFIGS = [PROMETHEUS_DIR / "prometheus.yml", PROMETHEUS_DIR / "prometheus-probe.yml"]
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

REQUIRED_ALERTS = {
    "BackupJobFailed",
    "BackupJobWarnings",
    "BackupJobRPOBreached",
    "BackupJobNeverSucceeded",
    "BackupJobRunningTooLong",
    "BackupTargetDown",
    "BackupTargetStale",
    "BackupSnapshotSizeDrop",
    "BackupRepositoryAlmostFull",
    "BackupExporterDown",
}
RECEIVERS = {"critical": "backup-pager", "warning": "backup-tickets"}
# The identity of a job alert; a rule that keeps the scrape's labels would split it.
JOB_LABELS = ("target", "vendor", "job_name", "job_type")


def tool(*names: str) -> str:
    """The path of the first of `names` on PATH; fails (never skips) when none is installed."""
    for name in names:
        if path := shutil.which(name):
            return path
    pytest.fail(
        f"{' / '.join(names)} not found: `make test` installs Debian's prometheus and prometheus-alertmanager packages"
    )


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


def alert_tests() -> list[dict[str, Any]]:
    return [case for test in load(ALERTS_TEST)["tests"] for case in test.get("alert_rule_test", [])]


# --- the tools ---------------------------------------------------------------


def test_promtool_check_rules() -> None:
    result = run(tool("promtool"), "check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = run(tool("promtool"), "test", "rules", ALERTS_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("config", PROMETHEUS_CONFIGS, ids=lambda p: p.name)
def test_promtool_check_config(config: Path) -> None:
    # Also checks the rule files the config names, resolved relative to it.
    result = run(tool("promtool"), "check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_amtool_check_config() -> None:
    result = run(tool("amtool"), "check-config", ALERTMANAGER)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"severity": "critical", "alertname": "BackupJobFailed", "target": "keepit-dk"}, "backup-pager"),
        ({"severity": "warning", "alertname": "BackupTargetDown", "target": "keepit-dk"}, "backup-tickets"),
        ({"alertname": "SomethingElse"}, "backup-tickets"),
    ],
)
def test_alertmanager_routes_on_severity(labels: dict[str, str], receiver: str) -> None:
    result = run(
        tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={receiver}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_every_alert_routes_to_its_severitys_receiver() -> None:
    for rule in alert_rules():
        severity = rule["labels"]["severity"]
        result = run(
            tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"alertname={rule['alert']}",
            f"severity={severity}",
        )
        assert result.stdout.split() == [RECEIVERS[severity]], (rule["alert"], result.stdout, result.stderr)


# --- inhibition, by a real Alertmanager --------------------------------------


class Alertmanager:
    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, *alerts: dict[str, str]) -> None:
        body = json.dumps([{"labels": labels} for labels in alerts]).encode()
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def states(self) -> dict[tuple[tuple[str, str], ...], bool]:
        """Every alert (as its sorted labels) -> whether it is inhibited."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as response:
            alerts = json.load(response)
        return {tuple(sorted(a["labels"].items())): bool(a["status"]["inhibitedBy"]) for a in alerts}

    def wait_for(self, expected: dict[tuple[tuple[str, str], ...], bool], within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while True:
            states = self.states()
            if all(states.get(key) == muted for key, muted in expected.items()):
                return
            if time.monotonic() > deadline:
                wrong = [(dict(k), states.get(k)) for k, m in expected.items() if states.get(k) != m]
                pytest.fail(f"inhibition differs from expected ((labels, inhibited)): {wrong}")
            time.sleep(0.1)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    binary = tool("prometheus-alertmanager", "alertmanager")  # Debian's name, upstream's name
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={ALERTMANAGER}",
            f"--storage.path={tmp_path}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "alertmanager not ready within 15 s"
            time.sleep(0.05)
        yield Alertmanager(url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_inhibition_rules(alertmanager: Alertmanager) -> None:
    job_a = {"target": "keepit-dk", "vendor": "keepit", "job_name": "Acme M365", "job_type": "backup"}
    job_b = {"target": "veeam-em", "vendor": "veeam", "job_name": "SQL Backup", "job_type": "backup"}
    avepoint = {"target": "avepoint-us", "vendor": "avepoint"}
    commvault = {"target": "commvault-prod", "vendor": "commvault"}
    repo = {"alertname": "BackupRepositoryAlmostFull", "target": "veeam-em", "vendor": "veeam"}
    alerts = {
        # Exporter "a" is down: its alerts are muted, exporter "b"'s are not.
        "exporter_down": {"alertname": "BackupExporterDown", "severity": "critical", "exporter": "a", "job": "x"},
        "failed_a": {"alertname": "BackupJobFailed", "severity": "critical", "exporter": "a", **job_a},
        "failed_b": {"alertname": "BackupJobFailed", "severity": "critical", "exporter": "b", **job_a},
        # A down target mutes its own staleness alert, not another target's,
        # and not its jobs' alerts (they go on firing on the last values).
        "target_down": {"alertname": "BackupTargetDown", "severity": "warning", **avepoint},
        "stale_same": {"alertname": "BackupTargetStale", "severity": "warning", **avepoint},
        "stale_other": {"alertname": "BackupTargetStale", "severity": "warning", **commvault},
        "rpo_down_target": {
            "alertname": "BackupJobRPOBreached",
            "severity": "critical",
            "job_name": "Teams",
            "job_type": "backup",
            **avepoint,
        },
        # An RPO breach mutes the same job's running-too-long, not another job's.
        "rpo_a": {"alertname": "BackupJobRPOBreached", "severity": "critical", **job_a},
        "running_a": {"alertname": "BackupJobRunningTooLong", "severity": "warning", **job_a},
        "running_b": {"alertname": "BackupJobRunningTooLong", "severity": "warning", **job_b},
        # Critical repository alert mutes its warning twin, not another repository's warning.
        "repo_critical": {"severity": "critical", "repository": "r1", **repo},
        "repo_warning": {"severity": "warning", "repository": "r1", **repo},
        "repo_other": {"severity": "warning", "repository": "r2", **repo},
    }
    muted = {"failed_a", "stale_same", "running_a", "repo_warning"}
    alertmanager.post(*alerts.values())
    alertmanager.wait_for({key(**labels): name in muted for name, labels in alerts.items()})

    # With no `exporter` label (one exporter, the shipped prometheus.yml), a
    # down exporter mutes every other backup alert without the label.
    unlabelled_down = {"alertname": "BackupExporterDown", "severity": "critical", "job": "backup-exporter"}
    unlabelled_failed = {"alertname": "BackupJobFailed", "severity": "critical", **job_b}
    alertmanager.post(unlabelled_down, unlabelled_failed)
    alertmanager.wait_for(
        {
            key(**unlabelled_down): False,
            key(**unlabelled_failed): True,
            key(**alerts["stale_other"]): True,
            key(**alerts["failed_b"]): False,
        }
    )


# --- structure ---------------------------------------------------------------


def test_required_alerts_present() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= REQUIRED_ALERTS, f"missing: {sorted(REQUIRED_ALERTS - names)}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_has_severity_summary_description(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in RECEIVERS
    for annotation in ("summary", "description"):
        text = rule["annotations"][annotation].strip()
        assert text, f"{rule['alert']}: empty {annotation}"
    assert "for" in rule, f"{rule['alert']}: no `for:`"
    # Every alert but the exporter's own names the target and vendor; job
    # alerts also the job.
    summary = rule["annotations"]["summary"]
    if rule["alert"] != "BackupExporterDown":
        assert "$labels.target" in summary, rule["alert"]
        assert "$labels.vendor" in summary, rule["alert"]
    if rule["alert"].startswith("BackupJob"):
        assert "$labels.job_name" in summary, rule["alert"]
        assert "$labels.job_type" in summary, rule["alert"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_never_keeps_scrape_labels(rule: dict[str, Any]) -> None:
    """Alerts on exporter series aggregate away job and instance (one alert per job, however scraped)."""
    if rule["alert"] == "BackupExporterDown":
        return
    expr = " ".join(rule["expr"].split())
    assert "max without (job, instance, pod" in expr, rule["alert"]
    # Other exporter series are only joined in with `on (...)`, which ignores the scrape labels.
    assert " by (" not in expr, rule["alert"]


def test_every_alert_tested_firing_and_not_firing() -> None:
    cases = alert_tests()
    assert load(ALERTS_TEST)["rule_files"] == ["alerts.yml"]
    for rule in alert_rules():
        name, severity = rule["alert"], rule["labels"]["severity"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(not case.get("exp_alerts") for case in mine), f"{name}: no case where it must not fire"
        firing = [alert for case in mine for alert in case.get("exp_alerts") or []]
        assert any(alert["exp_labels"].get("severity") == severity for alert in firing), (
            f"{name} ({severity}): no case where it fires"
        )
        for alert in firing:
            assert set(alert["exp_annotations"]) == {"summary", "description"}, name
    tested = {case["alertname"] for case in cases}
    assert tested <= {rule["alert"] for rule in alert_rules()}, "tests name alerts that do not exist"


def test_job_alerts_are_identified_by_the_job() -> None:
    """The firing cases' labels: the job's identity (plus static labels), never a run's or a reason's."""
    for case in alert_tests():
        for alert in case.get("exp_alerts") or []:
            labels = alert["exp_labels"]
            assert not {"reason", "status"} & set(labels), case["alertname"]
            if case["alertname"].startswith("BackupJob"):
                assert all(labels.get(name) for name in JOB_LABELS), case["alertname"]
                assert not {"job", "instance"} & set(labels), case["alertname"]


@pytest.mark.parametrize("config", PROMETHEUS_CONFIGS, ids=lambda p: p.name)
def test_prometheus_config_matches_the_rules(config: Path) -> None:
    document = load(config)
    assert document["rule_files"] == ["alerts.yml"], "relative, so it resolves next to the config file"
    targets = [t for am in document["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]
    # BackupExporterDown must see every scrape job of the exporter.
    (exporter_down,) = [r for r in alert_rules() if r["alert"] == "BackupExporterDown"]
    job_regex = re.search(r'up\{job=~"([^"]+)"\}', exporter_down["expr"])
    assert job_regex
    for job in document["scrape_configs"]:
        assert re.fullmatch(job_regex.group(1), job["job_name"]), job["job_name"]
        assert job["metrics_path"] in ("/metrics", "/probe")


def test_probe_config_relabels_blackbox_style() -> None:
    (probe,) = [j for j in load(PROMETHEUS_CONFIGS[1])["scrape_configs"] if j["metrics_path"] == "/probe"]
    assert probe["static_configs"][0]["targets"] == ["keepit-demo", "veeam-demo", "commvault-demo", "avepoint-demo"]
    relabel = probe["relabel_configs"]
    assert {"source_labels": ["__address__"], "target_label": "__param_target"} in relabel
    assert {"source_labels": ["__param_target"], "target_label": "instance"} in relabel
    assert {"target_label": "__address__", "replacement": "exporter:9977"} in relabel


def test_alertmanager_names_existing_alerts() -> None:
    """A renamed alert must not silently drop out of an inhibition rule."""
    names = {rule["alert"] for rule in alert_rules()}
    document = load(ALERTMANAGER)
    for rule in document["inhibit_rules"]:
        for matcher in rule.get("source_matchers", []) + rule.get("target_matchers", []):
            match = re.fullmatch(r'alertname(=~|=|!=)"([^"]+)"', matcher)
            if match is None:
                continue
            pattern = match.group(2) if match.group(1) == "=~" else re.escape(match.group(2))
            assert any(re.fullmatch(pattern, name) for name in names), matcher
    assert document["route"]["group_by"] == ["target", "vendor", "job_name"]
