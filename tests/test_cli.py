"""The command line, as an operator uses it: `python -m exporter ...` as a
subprocess, against a Keepit simulator served in-test on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from exporter import __version__
from exporter.simulators import keepit as keepit_sim
from tests.harness import (
    ExporterProcess,
    parse_exposition,
    promtool_check,
    run_cli,
    select,
    server_url,
    sim_post,
    write_config,
)

pytestmark = pytest.mark.e2e

TARGET = "keepit-cli"
INLINE_PASSWORD = "inline-Pa55-wörd-7f3a"  # test values that must never be printed
FILE_PASSWORD = "file-Pa55-wörd-91c2"
LOGFMT_LINE = re.compile(r'^ts=\S+Z level=(debug|info|warn|error) logger=\S+ msg=("|\w)')


@pytest.fixture
async def simulator(aiohttp_server: Any) -> TestServer:
    # A fixed simulated clock: nothing changes while a test looks.
    server: TestServer = await aiohttp_server(keepit_sim.create_app(now=datetime.now(UTC)))
    return server


def keepit_target(url: str, name: str = TARGET, **overrides: object) -> dict[str, object]:
    demo = keepit_sim.demo_target(url)
    return {**demo, "name": name, "labels": {"tenant": "acme"}, **overrides}


def sim_config(tmp_path: Path, server: TestServer, **global_: object) -> Path:
    settings: dict[str, object] = {"interval": "30s", "timeout": "10s", **global_}
    return write_config(tmp_path / "config.yaml", [keepit_target(server_url(server))], global_=settings)


# --- no collection needed -----------------------------------------------------------


async def test_version(tmp_path: Path) -> None:
    result = await run_cli("--version", cwd=tmp_path)
    assert result.code == 0, result
    assert result.stdout.strip() == f"backup-exporter {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", __version__)


@pytest.mark.parametrize("flag", [None, "missing.yaml"])
async def test_missing_config_file(tmp_path: Path, flag: str | None) -> None:
    args = [] if flag is None else [f"--config.file={tmp_path / flag}"]
    result = await run_cli(*args, cwd=tmp_path)
    assert result.code == 1, result
    named = "config.yaml" if flag is None else str(tmp_path / flag)
    assert f"config file {named} not found" in result.stderr, result
    assert "config.yaml.example" in result.stderr
    assert "--demo" in result.stderr
    assert "--check-config" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    # Nothing was started: no state directory appears.
    assert not (tmp_path / "data").exists()


async def test_invalid_config_names_file_key_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    target = {
        "name": TARGET,
        "vendor": "keepit",
        "url": "dk-co.keepit.com",
        "username": "api-token",
        "password": INLINE_PASSWORD,
        "colour": "blue",
    }
    write_config(path, [target], global_={"interval": "5 minutes"})
    result = await run_cli(f"--config.file={path}", cwd=tmp_path)
    assert result.code == 1, result
    lines = result.stderr.splitlines()
    # Every problem at once, each as `file: key.path: message`.
    assert f"{path}: targets[0].url: not a URL (expected http:// or https://)" in lines, result
    assert f"{path}: targets[0].colour: unknown key" in lines, result
    assert any(line.startswith(f"{path}: global.interval: not a duration") for line in lines), result
    assert "Traceback" not in result.stderr
    assert INLINE_PASSWORD not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists()


async def test_check_config_prints_targets_without_secrets(tmp_path: Path) -> None:
    secret_file = tmp_path / "keepit-password"
    secret_file.write_text(FILE_PASSWORD + "\n")
    secret_file.chmod(0o600)
    targets: list[dict[str, object]] = [
        {
            "name": "keepit-dk",
            "vendor": "keepit",
            "url": "https://dk-co.keepit.com",
            "username": "api-token-dk",
            "password": INLINE_PASSWORD,
        },
        {
            "name": "keepit-uk",
            "vendor": "keepit",
            "url": "https://uk-co.keepit.com/",
            "username": "api-token-uk",
            "password_file": str(secret_file),
            "labels": {"tenant": "globex"},
        },
    ]
    path = write_config(tmp_path / "config.yaml", targets)
    result = await run_cli(f"--config.file={path}", "--check-config", cwd=tmp_path)
    assert result.code == 0, result
    blocks = {block.split(":", 1)[0]: block for block in result.stdout.split("\n\n")}
    dk, uk = blocks["keepit-dk"], blocks["keepit-uk"]
    assert "vendor=keepit" in dk
    assert "url=https://dk-co.keepit.com" in dk
    assert "vendor=keepit" in uk
    assert "url=https://uk-co.keepit.com" in uk
    assert 'tenant="globex"' in uk
    assert "globex" not in dk
    for secret in (INLINE_PASSWORD, FILE_PASSWORD):
        assert secret not in result.stdout
        assert secret not in result.stderr
    # Nothing was collected or stored.
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("address", ["nope", "127.0.0.1", ":99999", "localhost:http"])
async def test_garbage_listen_address(tmp_path: Path, address: str) -> None:
    path = write_config(tmp_path / "config.yaml", [keepit_target("https://dk-co.keepit.com")])
    result = await run_cli(f"--config.file={path}", f"--web.listen-address={address}", cwd=tmp_path)
    assert result.code == 1, result
    assert "--web.listen-address" in result.stderr
    assert "host:port" in result.stderr
    assert repr(address) in result.stderr
    assert "Traceback" not in result.stderr


async def test_listen_address_in_use(tmp_path: Path) -> None:
    # A closed local port as the vendor: the poll that starts before the bind fails fails fast.
    path = write_config(tmp_path / "config.yaml", [keepit_target("http://127.0.0.1:9")])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        result = await run_cli(f"--config.file={path}", f"--web.listen-address={address}", cwd=tmp_path)
    assert result.code == 1, result
    [line] = [line for line in result.stderr.splitlines() if "cannot listen" in line]
    assert "level=error" in line
    assert address in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("secret", "mode", "warned"),
    [
        ("inline", 0o644, True),
        ("inline", 0o600, False),
        ("inline", 0o640, False),
        ("file", 0o644, False),
    ],
    ids=["inline-0644-warns", "inline-0600", "inline-0640", "password_file-0644"],
)
async def test_world_readable_config_with_inline_secret_warns(
    tmp_path: Path, secret: str, mode: int, warned: bool
) -> None:
    target: dict[str, object] = {
        "name": TARGET,
        "vendor": "keepit",
        "url": "https://dk-co.keepit.com",
        "username": "api-token",
    }
    if secret == "inline":
        target["password"] = INLINE_PASSWORD
    else:
        secret_file = tmp_path / "pw"
        secret_file.write_text(FILE_PASSWORD)
        secret_file.chmod(0o600)
        target["password_file"] = str(secret_file)
    path = write_config(tmp_path / "config.yaml", [target], mode=mode)
    result = await run_cli(f"--config.file={path}", "--check-config", cwd=tmp_path)
    assert result.code == 0, result
    warnings = [line for line in result.stderr.splitlines() if "level=warn" in line and "readable" in line]
    if warned:
        assert len(warnings) == 1, result
        assert str(path) in warnings[0]
        assert "targets[0].password" in warnings[0]
        assert "0644" in warnings[0]
    else:
        assert not warnings, result
    assert INLINE_PASSWORD not in result.stderr + result.stdout
    assert FILE_PASSWORD not in result.stderr + result.stdout


# --- --once against the simulator ------------------------------------------------------


async def test_once_prints_a_valid_exposition_and_keeps_no_state(tmp_path: Path, simulator: TestServer) -> None:
    config = sim_config(tmp_path, simulator)
    storage = tmp_path / "state-given"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = await run_cli(f"--config.file={config}", f"--storage.path={storage}", "--once", cwd=workdir)
    assert result.code == 0, result

    check = promtool_check(result.raw_stdout)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    samples = parse_exposition(result.stdout)
    assert select(samples, "backup_target_up", target=TARGET, vendor="keepit", tenant="acme")[0][1] == 1
    jobs = {lab["job_name"] for lab, _ in select(samples, "backup_job_runs_total", target=TARGET)}
    assert {"Microsoft 365 Backup", "Salesforce Production", "Jira Cloud"} <= jobs
    assert sum(v for _, v in select(samples, "backup_job_runs_total", target=TARGET)) > 0
    assert select(samples, "backup_exporter_build_info", version=__version__)[0][1] == 1
    # Throw-away state: neither the given directory nor the default one is created.
    assert not storage.exists()
    assert not (workdir / "data").exists()
    assert list(workdir.iterdir()) == []


async def test_once_fails_when_the_vendor_fails(tmp_path: Path, simulator: TestServer) -> None:
    await sim_post(simulator, "/_sim/fault", {"mode": "500"})
    config = sim_config(tmp_path, simulator)
    storage = tmp_path / "state-given"
    result = await run_cli(f"--config.file={config}", f"--storage.path={storage}", "--once", cwd=tmp_path)
    assert result.code != 0, result
    assert TARGET in result.stderr
    assert "collection failed" in result.stderr
    samples = parse_exposition(result.stdout)
    assert select(samples, "backup_target_up", target=TARGET)[0][1] == 0
    assert select(samples, "backup_target_collection_errors_total", target=TARGET, reason="http")[0][1] == 1
    assert not select(samples, "backup_job_runs_total")
    assert not storage.exists()


async def test_once_json_logs(tmp_path: Path, simulator: TestServer) -> None:
    config = sim_config(tmp_path, simulator)
    result = await run_cli(f"--config.file={config}", "--once", "--log.format=json", "--log.level=debug", cwd=tmp_path)
    assert result.code == 0, result
    lines = result.stderr.splitlines()
    assert lines, result
    records = [json.loads(line) for line in lines]
    for record in records:
        assert isinstance(record, dict)
        assert {"ts", "level", "msg"} <= set(record), record
        assert record["level"] in {"debug", "info", "warn", "error"}
    first = next(r for r in records if r["msg"] == "first collection")
    assert first["target"] == TARGET
    assert first["vendor"] == "keepit"


async def test_once_logfmt_logs(tmp_path: Path, simulator: TestServer) -> None:
    config = sim_config(tmp_path, simulator)
    result = await run_cli(f"--config.file={config}", "--once", "--log.level=debug", cwd=tmp_path)
    assert result.code == 0, result
    lines = result.stderr.splitlines()
    assert lines, result
    for line in lines:
        assert LOGFMT_LINE.match(line), line
    assert any(f'msg="first collection" target={TARGET} vendor=keepit' in line for line in lines), result


# --- serving ---------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_the_server_cleanly(tmp_path: Path, simulator: TestServer, sig: signal.Signals) -> None:
    config = sim_config(tmp_path, simulator, interval="3s", timeout="3s")
    exporter = ExporterProcess(config, tmp_path / "data")
    await exporter.start()
    await exporter.wait_for(lambda status: status == 200, what="ready")
    loop = asyncio.get_running_loop()
    started = loop.time()
    code = await exporter.stop(sig)
    elapsed = loop.time() - started
    assert code == 0, exporter.logs()[-3000:]
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"
    assert 'msg="shutting down"' in exporter.logs()
    assert "Traceback" not in exporter.logs()
    # The state database was written and closed.
    assert (tmp_path / "data" / "state.db").exists()
