"""The exporter as a real process against the Keepit simulator over loopback.

Covers the foundation's promises: metrics served and promtool-clean, each run
counted once across polls and restarts, last good values kept while the vendor
fails, recovery, reload, and secrets kept out of logs, metrics and pages.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import xmltodict
import yaml
from aiohttp.test_utils import TestServer

from exporter.simulators import keepit as keepit_sim
from tests.harness import ExporterProcess, parse_exposition, promtool_check, select

pytestmark = pytest.mark.e2e

TARGET = "keepit-e2e"
# Longer than the simulator's history (30 days), so the first collection asks
# for all of it and the tests can count every run the simulator holds.
LOOKBACK = "45d"


@pytest.fixture
async def simulator(aiohttp_server: Any) -> TestServer:
    # The simulator's clock stands still unless a test moves it, so no run
    # starts or ends by itself while a test compares counts.
    server: TestServer = await aiohttp_server(keepit_sim.create_app(now=datetime.now(UTC)))
    return server


def sim_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def sim_post(server: TestServer, path: str, payload: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{sim_url(server)}{path}", json=payload) as resp:
        assert resp.status == 200, await resp.text()


def write_config(tmp_path: Path, server: TestServer, *, labels: dict[str, str] | None = None) -> Path:
    demo = keepit_sim.demo_target(sim_url(server))
    secret_file = tmp_path / "keepit-password"
    secret_file.write_text(demo["password"] + "\n")
    secret_file.chmod(0o600)
    target = {
        "name": TARGET,
        "vendor": "keepit",
        "url": demo["url"],
        "username": demo["username"],
        "password_file": str(secret_file),
        "labels": labels or {"tenant": "acme"},
    }
    config = {"global": {"interval": "3s", "timeout": "3s", "lookback": LOOKBACK}, "targets": [target]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture
async def exporter(tmp_path: Path, simulator: TestServer) -> AsyncIterator[ExporterProcess]:
    process = ExporterProcess(write_config(tmp_path, simulator), tmp_path / "data")
    await process.start()
    await process.wait_for(lambda status: status == 200, what="ready")
    yield process
    await process.stop()


def job_values(samples: list[tuple[str, dict[str, str], float]]) -> dict[tuple[str, ...], float]:
    """Every backup_job_* sample that describes the past, keyed by name and labels."""
    past = (
        "backup_job_last_status",
        "backup_job_last_success_timestamp_seconds",
        "backup_job_last_run_end_timestamp_seconds",
        "backup_job_runs_total",
        "backup_job_last_failure_info",
    )
    return {(n, *(f"{k}={x}" for k, x in sorted(lab.items()))): v for n, lab, v in samples if n.startswith(past)}


async def finished_run_ids(server: TestServer) -> set[str]:
    """Guids of the finished jobs the simulator holds now, read straight from
    its XML, independently of our parser. The simulator keeps a sliding 30-day
    window, so tests that move its clock take the union over time."""
    demo = keepit_sim.demo_target(sim_url(server))
    token = base64.b64encode(f"{demo['username']}:{demo['password']}".encode()).decode()
    body = (
        "<filter><from-time>2000-01-01T00:00:00Z</from-time>"
        "<active-only>false</active-only><limit>100000</limit></filter>"
    )
    guids: set[str] = set()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:
        async with session.get(f"{sim_url(server)}/users/") as resp:
            account = xmltodict.parse(await resp.text())["user"]["id"].strip()
        async with session.get(f"{sim_url(server)}/users/{account}/devices") as resp:
            clouds = xmltodict.parse(await resp.text(), force_list=("cloud",))["devices"]["cloud"]
        for cloud in clouds:
            if str(cloud.get("accessible", "true")).strip() == "false" or cloud.get("deletion-deadline"):
                continue
            url = f"{sim_url(server)}/users/{account}/devices/{cloud['guid'].strip()}/jobs"
            async with session.put(url, data=body, headers={"Content-Type": "application/xml"}) as resp:
                jobs = (xmltodict.parse(await resp.text(), force_list=("job",))["jobs"] or {}).get("job", [])
            guids |= {job["guid"].strip() for job in jobs}
    return guids


def runs_total(samples: list[tuple[str, dict[str, str], float]]) -> float:
    return sum(v for _, v in select(samples, "backup_job_runs_total", target=TARGET))


async def test_serves_keepit_metrics_that_promtool_accepts(exporter: ExporterProcess) -> None:
    status, body, headers = await exporter.get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    result = promtool_check(body)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()

    samples = parse_exposition(body.decode())
    assert select(samples, "backup_target_up", target=TARGET, vendor="keepit", tenant="acme")[0][1] == 1
    statuses = {lab["status"] for lab, v in select(samples, "backup_job_last_status", target=TARGET) if v == 1}
    assert {"success", "failed"} <= statuses
    runs = {lab["status"]: v for lab, v in select(samples, "backup_job_runs_total") if v}
    assert set(runs) >= {"success", "failed", "cancelled"}, runs
    assert select(samples, "backup_job_running", target=TARGET)
    assert select(samples, "backup_snapshot_last_size_bytes", target=TARGET)
    assert select(samples, "backup_snapshot_size_change_ratio", target=TARGET)
    assert all(lab.get("job") is None and lab.get("instance") is None for _, lab, _ in samples)
    # Every series carries the identity labels and the target's static labels.
    for name, lab, _ in samples:
        if name.startswith("backup_job_"):
            assert {"target", "vendor", "job_name", "job_type", "tenant"} <= set(lab), (name, lab)


async def test_metrics_are_gzipped_when_asked(exporter: ExporterProcess) -> None:
    status, body, headers = await exporter.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert status == 200
    assert headers.get("Content-Encoding") == "gzip"
    assert b"backup_target_up" in gzip.decompress(body)


async def test_each_run_counted_once_across_polls(exporter: ExporterProcess, simulator: TestServer) -> None:
    first = runs_total(await exporter.metrics())
    # Let several overlapping polls (interval 2s, overlap 1h) go by.
    await asyncio.sleep(5)
    samples = await exporter.metrics()
    assert sum(v for _, v in select(samples, "backup_target_api_requests_total", target=TARGET)) > 0
    assert runs_total(samples) == first == len(await finished_run_ids(simulator))


async def test_new_runs_are_counted_when_the_clock_advances(exporter: ExporterProcess, simulator: TestServer) -> None:
    seen = await finished_run_ids(simulator)
    before = runs_total(await exporter.metrics())
    await sim_post(simulator, "/_sim/clock", {"advance": 24 * 3600})
    seen |= await finished_run_ids(simulator)
    assert len(seen) > before
    await exporter.wait_for(metric=lambda s: runs_total(s) > before, what="counting new runs")
    await asyncio.sleep(4)  # more overlapping polls
    assert runs_total(await exporter.metrics()) == len(seen)


@pytest.mark.parametrize(("mode", "reason"), [("500", "http"), ("garbage", "parse"), ("401", "auth")])
async def test_vendor_failure_keeps_last_values_and_recovers(
    exporter: ExporterProcess, simulator: TestServer, mode: str, reason: str
) -> None:
    good = await exporter.metrics()
    await sim_post(simulator, "/_sim/fault", {"mode": mode})
    await exporter.wait_for(
        metric=lambda s: select(s, "backup_target_up", target=TARGET)[0][1] == 0, what=f"down on {mode}"
    )
    down = await exporter.metrics()
    assert job_values(down) == job_values(good)
    errors = select(down, "backup_target_collection_errors_total", target=TARGET, reason=reason)
    assert errors[0][1] >= 1
    assert select(down, "backup_target_last_success_timestamp_seconds", target=TARGET)
    status, page, _ = await exporter.get("/")
    assert status == 200
    assert b"DOWN" in page

    await sim_post(simulator, "/_sim/fault", {"mode": "none"})
    await exporter.wait_for(metric=lambda s: select(s, "backup_target_up", target=TARGET)[0][1] == 1, what="recovered")
    assert job_values(await exporter.metrics()) == job_values(good)
    assert "target recovered" in exporter.logs()


async def test_restart_continues_counters_and_last_success(tmp_path: Path, simulator: TestServer) -> None:
    config = write_config(tmp_path, simulator)
    first = ExporterProcess(config, tmp_path / "data")
    await first.start()
    await first.wait_for(lambda status: status == 200)
    before = job_values(await first.metrics())
    seen = await finished_run_ids(simulator)
    assert await first.stop() == 0

    # The simulator moves on while the exporter is down: a day of new runs.
    await sim_post(simulator, "/_sim/clock", {"advance": 24 * 3600})
    seen |= await finished_run_ids(simulator)
    # Hold the restarted exporter's first collection back, to see what it
    # serves from the state database alone.
    await sim_post(simulator, "/_sim/fault", {"mode": "slow", "delay": 5})
    second = ExporterProcess(config, tmp_path / "data")
    await second.start()
    restored = job_values(await second.metrics())
    assert restored == before
    await sim_post(simulator, "/_sim/fault", {"mode": "none"})
    await second.wait_for(
        metric=lambda s: (
            runs_total(s) > 0
            and bool(select(s, "backup_target_up", target=TARGET))
            and select(s, "backup_target_up", target=TARGET)[0][1] == 1
        ),
        what="collected",
        within=30,
    )
    after = await second.metrics()
    await second.stop()
    # The first run counted everything up to its stop, the second what came
    # after: together every finished run exactly once.
    assert runs_total(after) == len(seen)
    for key, value in before.items():
        if key[0] == "backup_job_last_success_timestamp_seconds":
            assert job_values(after)[key] >= value


async def test_sighup_reload_applies_new_labels(
    exporter: ExporterProcess, simulator: TestServer, tmp_path: Path
) -> None:
    write_config(tmp_path, simulator, labels={"tenant": "globex"})
    await exporter.send_signal(signal.SIGHUP)
    await exporter.wait_for(metric=lambda s: bool(select(s, "backup_target_up", tenant="globex")), what="reloaded")
    samples = await exporter.metrics()
    assert not select(samples, "backup_target_up", tenant="acme")
    # Counters survive the reload.
    assert sum(v for _, v in select(samples, "backup_job_runs_total")) > 0


async def test_bad_reload_keeps_the_old_config(exporter: ExporterProcess, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("targets: [{name: x}]\n")
    status, text = await exporter.post("/-/reload")
    assert status == 500
    assert "vendor" in text
    # /metrics serves the newest complete body; the one with the failed reload
    # follows within a background rebuild.
    await exporter.wait_for(
        metric=lambda s: select(s, "backup_exporter_config_last_reload_successful")[0][1] == 0, what="reload failure"
    )
    samples = await exporter.metrics()
    assert select(samples, "backup_target_up", target=TARGET)[0][1] == 1


async def test_secrets_never_leak(exporter: ExporterProcess, simulator: TestServer) -> None:
    password = keepit_sim.demo_target(sim_url(simulator))["password"]
    await sim_post(simulator, "/_sim/fault", {"mode": "401"})
    await exporter.wait_for(metric=lambda s: select(s, "backup_target_up", target=TARGET)[0][1] == 0, what="down")
    await sim_post(simulator, "/_sim/fault", {"mode": "none"})
    for path in ("/metrics", "/", f"/probe?target={TARGET}"):
        _, body, _ = await exporter.get(path)
        assert password.encode() not in body, path
    assert password not in exporter.logs()
