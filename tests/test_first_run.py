"""What an operator sees on a first run: the message without a config, a
storage path that cannot be used, `--once` (with `--target`) for debugging one
target, and the log of a running exporter: one line per target when its first
collection found something, then only changes of state, never a line per poll.

The real exporter as a subprocess against vendor simulators on loopback.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from exporter.simulators import SIMULATORS
from tests.harness import (
    ExporterProcess,
    free_port,
    parse_exposition,
    promtool_check,
    run_cli,
    select,
    server_url,
    sim_post,
    write_config,
)

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC)
PROJECT = Path(__file__).resolve().parents[1]
Samples = list[tuple[str, dict[str, str], float]]


def target(vendor: str, url: str, name: str) -> dict[str, Any]:
    return {**SIMULATORS[vendor].demo_target(url), "name": name}


@pytest.fixture
async def keepit(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(SIMULATORS["keepit"].create_app(now=NOW))
    return server


@pytest.fixture
async def veeam(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(SIMULATORS["veeam"].create_app(now=NOW))
    return server


# --- before anything runs -------------------------------------------------------------------


async def test_no_config_file_points_to_the_example_demo_and_check_config(tmp_path: Path) -> None:
    result = await run_cli(cwd=tmp_path)
    assert result.code == 1, result
    assert result.stdout == ""
    assert "config file config.yaml not found" in result.stderr
    # Where the example is, so it can be copied as the message says.
    assert str(PROJECT / "config.yaml.example") in result.stderr
    assert "--demo" in result.stderr
    assert "--check-config" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("mode", [[], ["--once"]], ids=["serve", "once-ignores-storage"])
async def test_unusable_storage_path_is_one_line_error(tmp_path: Path, mode: list[str]) -> None:
    # A file where the storage directory's parent should be: no user, root
    # included, can create the directory.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    storage = blocker / "state"
    config = write_config(tmp_path / "config.yaml", [target("keepit", f"http://127.0.0.1:{free_port()}", "k")])
    args = [f"--config.file={config}", f"--storage.path={storage}", f"--web.listen-address=127.0.0.1:{free_port()}"]
    result = await run_cli(*args, *mode, cwd=tmp_path)
    if mode:
        # --once keeps its state in a throw-away directory: the given path is
        # not touched, and only the (closed) vendor port fails it.
        assert result.code == 1, result
        assert "state database" not in result.stderr, result
        assert "target k: collection failed (reason=connection)" in result.stderr, result
        assert blocker.read_text() == "x"
        return
    assert result.code == 1, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result
    assert lines[0].startswith("backup-exporter: cannot open the state database"), result
    assert str(storage) in lines[0]
    assert "--storage.path" in lines[0]
    assert "Traceback" not in result.stderr


# --- --once ------------------------------------------------------------------------------------


async def test_once_target_collects_only_that_target(tmp_path: Path, keepit: TestServer, veeam: TestServer) -> None:
    targets = [target("keepit", server_url(keepit), "keepit-a"), target("veeam", server_url(veeam), "veeam-b")]
    config = write_config(tmp_path / "config.yaml", targets)
    result = await run_cli(f"--config.file={config}", "--once", "--target=veeam-b", cwd=tmp_path)
    assert result.code == 0, result
    check = promtool_check(result.raw_stdout)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    samples = parse_exposition(result.stdout)
    assert select(samples, "backup_target_up", target="veeam-b", vendor="veeam")[0][1] == 1
    assert {lab["target"] for lab, _ in select(samples, "backup_target_up")} == {"veeam-b"}
    assert select(samples, "backup_job_runs_total", target="veeam-b")
    # The keepit simulator was never asked.
    assert not any(lab.get("target") == "keepit-a" for _, lab, _ in samples)


async def test_once_failure_says_which_target_and_why(tmp_path: Path, keepit: TestServer) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    targets = [target("keepit", server_url(keepit), "keepit-a"), target("veeam", closed, "veeam-down")]
    config = write_config(tmp_path / "config.yaml", targets, global_={"timeout": "20s"})
    result = await run_cli(f"--config.file={config}", "--once", cwd=tmp_path)
    assert result.code == 1, result
    [failure] = [line for line in result.stderr.splitlines() if line.startswith("backup-exporter: target ")]
    assert failure.startswith("backup-exporter: target veeam-down: collection failed (reason=connection): "), result
    assert "keepit-a" not in failure
    # The exposition still shows both, the failed one as down.
    check = promtool_check(result.raw_stdout)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    samples = parse_exposition(result.stdout)
    assert select(samples, "backup_target_up", target="keepit-a")[0][1] == 1
    assert select(samples, "backup_target_up", target="veeam-down")[0][1] == 0


# --- the log of a running exporter ------------------------------------------------------------


def state_lines(logs: str, name: str) -> list[str]:
    """The target's log lines at info level and above."""
    return [
        line
        for line in logs.splitlines()
        if re.search(rf"(^| )target={re.escape(name)}( |$)", line) and "level=debug" not in line
    ]


def value(samples: Samples, metric: str, **labels: str) -> float | None:
    found = select(samples, metric, **labels)
    return found[0][1] if found else None


async def wait_for_success_after(exporter: ExporterProcess, name: str, after: float) -> float:
    """The target's last-success time once it is later than `after`."""
    seen: list[float] = []

    def check(samples: Samples) -> bool:
        when = value(samples, "backup_target_last_success_timestamp_seconds", target=name)
        up = value(samples, "backup_target_up", target=name)
        if when is not None and when > after and up == 1:
            seen.append(when)
            return True
        return False

    await exporter.wait_for(metric=check, within=60, what=f"{name} collected after {after}")
    return seen[-1]


def errors_at_least(name: str, reason: str, count: int) -> Callable[[Samples], bool]:
    def check(samples: Samples) -> bool:
        errors = value(samples, "backup_target_collection_errors_total", target=name, reason=reason)
        return errors is not None and errors >= count

    return check


async def test_log_says_what_each_target_found_then_only_changes(
    tmp_path: Path, keepit: TestServer, veeam: TestServer
) -> None:
    targets = [target("keepit", server_url(keepit), "keepit-a"), target("veeam", server_url(veeam), "veeam-b")]
    config = write_config(tmp_path / "config.yaml", targets, global_={"interval": "2s", "timeout": "2s"})
    exporter = ExporterProcess(config, tmp_path / "data")
    await exporter.start()
    try:
        # Two successful polls of each target.
        first_k = await wait_for_success_after(exporter, "keepit-a", 0)
        first_v = await wait_for_success_after(exporter, "veeam-b", 0)
        await wait_for_success_after(exporter, "keepit-a", first_k)
        await wait_for_success_after(exporter, "veeam-b", first_v)
        logs = exporter.logs()
        [found_k] = state_lines(logs, "keepit-a")
        [found_v] = state_lines(logs, "veeam-b")
        assert 'level=info logger=exporter.poller msg="first collection" target=keepit-a vendor=keepit' in found_k
        assert re.search(r" connectors=[1-9]\d* ", found_k), found_k
        assert re.search(r" jobs=[1-9]\d* ", found_k), found_k
        assert 'msg="first collection" target=veeam-b vendor=veeam' in found_v
        assert re.search(r" listed_jobs=[1-9]\d* ", found_v), found_v
        assert re.search(r" backup_servers=[1-9]\d* ", found_v), found_v

        # Down: one line with the reason, however many polls fail.
        await sim_post(keepit, "/_sim/fault", {"mode": "403"})
        await exporter.wait_for(metric=errors_at_least("keepit-a", "auth", 2), within=60, what="keepit-a failing")
        failed = [line for line in state_lines(exporter.logs(), "keepit-a") if "collection failed" in line]
        assert len(failed) == 1, exporter.logs()[-4000:]
        assert "level=warn" in failed[0]
        assert "reason=auth" in failed[0]

        # Up again: one line, then silence.
        await sim_post(keepit, "/_sim/fault", {"mode": "none"})
        recovered_at = await wait_for_success_after(exporter, "keepit-a", first_k)
        await wait_for_success_after(exporter, "keepit-a", recovered_at)
        lines = state_lines(exporter.logs(), "keepit-a")
        assert len(lines) == 3, "\n".join(lines)
        assert 'msg="target recovered" target=keepit-a' in lines[2]
        assert re.search(r" failed_polls=([2-9]|\d\d+) ", lines[2]), lines[2]
        # The other target said nothing more all along.
        assert state_lines(exporter.logs(), "veeam-b") == [found_v]
    finally:
        await exporter.stop()
    assert "Traceback" not in exporter.logs()
