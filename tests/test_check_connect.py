"""`--check-config` and `--check-config --connect`, as an operator runs them:
the real CLI as a subprocess, against the four vendor simulators on loopback.

Every simulator is started with a recognisable secret of its own, so a test
can assert that no form of it (raw, base64, HTTP Basic, URL encoded) is ever
printed, also when the vendor refuses it.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.simulators import SIMULATORS
from exporter.simulators import avepoint as avepoint_sim
from exporter.simulators import commvault as commvault_sim
from exporter.simulators import keepit as keepit_sim
from exporter.simulators import veeam as veeam_sim
from tests.harness import CliResult, free_port, run_cli, server_url, write_config

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC)
VENDOR_NAMES = sorted(SIMULATORS)
assert set(VENDOR_NAMES) == {"keepit", "veeam", "commvault", "avepoint"}, "simulator_app needs the new vendor"
SECRET_KEYS = {"keepit": "password", "veeam": "password", "commvault": "password", "avepoint": "client_secret"}


def secret(vendor: str) -> str:
    # Characters every wire encoding changes, so each encoded form differs from the raw one.
    return f"Recognisable-{vendor}-S3cret/+&=% 4711"


def wrong(vendor: str) -> str:
    return f"Wrong-{vendor}-Pa55/+&=% 0815"


def leak_forms(value: str) -> list[str]:
    return [value, base64.b64encode(value.encode()).decode(), quote_plus(value), quote(value, safe="")]


def assert_no_secret(result: CliResult, *values: str) -> None:
    for value in values:
        for form in leak_forms(value):
            assert form not in result.output, f"secret form {form!r} printed:\n{result}"


def target(vendor: str, url: str, *, name: str | None = None, password: str | None = None) -> dict[str, Any]:
    """The simulator's demo target, with this test's secret (or `password`) and name."""
    base = SIMULATORS[vendor].demo_target(url)
    return {**base, "name": name or f"{vendor}-t", SECRET_KEYS[vendor]: password or secret(vendor)}


def simulator_app(vendor: str) -> web.Application:
    """The vendor's simulator, accepting only this test's secret."""
    if vendor == "keepit":
        return keepit_sim.create_app(now=NOW, password=secret(vendor))
    if vendor == "veeam":
        return veeam_sim.create_app(now=NOW, password=secret(vendor))
    if vendor == "commvault":
        return commvault_sim.create_app(now=NOW, password=secret(vendor))
    return avepoint_sim.create_app(now=NOW, client_secret=secret(vendor))


@pytest.fixture
async def simulators(aiohttp_server: Any) -> dict[str, TestServer]:
    return {vendor: await aiohttp_server(simulator_app(vendor)) for vendor in VENDOR_NAMES}


def blocks(stdout: str) -> dict[str, str]:
    """--check-config's block per target, by target name."""
    found = {}
    for block in stdout.split("\n\n"):
        name = block.split(":", 1)[0]
        if not name.startswith("connect "):
            found[name] = block
    return found


def connect_lines(stdout: str) -> dict[str, str]:
    """The --connect result per target (a failure's hint line joined to it)."""
    found: dict[str, str] = {}
    last = None
    for line in stdout.splitlines():
        match = re.match(r"connect (\S+): ", line)
        if match:
            last = match.group(1)
            found[last] = line
        elif line.startswith("  hint: ") and last is not None:
            found[last] += "\n" + line
    return found


# --- --check-config without connecting -----------------------------------------------------


async def test_check_config_describes_each_vendor(tmp_path: Path) -> None:
    # Nothing listens at these URLs: --check-config alone never connects.
    targets = [
        {
            **target("keepit", "https://dk-co.keepit.com", name="keepit-dk"),
            "connectors": ["Microsoft 365", "Jira Cloud"],
            "labels": {"tenant": "acme"},
            "lookback": "3d",
        },
        {**target("veeam", "https://em.example.com:9398", name="veeam-em"), "format": "json"},
        {
            **target("commvault", "https://cs.example.com/commandcenter/api", name="commvault-cs"),
            "job_types": ["Backup", "Aux Copy"],
            "format": "xml",
            "tls": {"insecure_skip_verify": True},
        },
        {
            **target("avepoint", "https://graph.avepointonlineservices.com", name="avepoint-m365"),
            "services": ["Exchange Online", "OneDrive"],
            "job_types": ["backup", "restore", "export"],
            "token_url": "https://identity.avepointonlineservices.com/connect/token",
        },
    ]
    path = write_config(tmp_path / "config.yaml", targets, global_={"interval": "10m", "timeout": "1m", "rpo": "30h"})
    result = await run_cli(f"--config.file={path}", "--check-config", cwd=tmp_path)
    assert result.code == 0, result
    found = blocks(result.stdout)
    assert set(found) == {"keepit-dk", "veeam-em", "commvault-cs", "avepoint-m365"}, result

    keepit = found["keepit-dk"]
    assert keepit.startswith("keepit-dk: vendor=keepit url=https://dk-co.keepit.com\n")
    assert 'connectors ["Microsoft 365", "Jira Cloud"] only' in keepit
    assert "interval=10m timeout=1m lookback=3d rpo=1d6h" in keepit
    assert 'labels:      tenant="acme"' in keepit
    assert "certificate verified against the system's CAs" in keepit
    assert "password=<secret>" in keepit

    veeam = found["veeam-em"]
    assert "vendor=veeam url=https://em.example.com:9398" in veeam
    assert "format=json" in veeam
    for endpoint in ("BackupJobSession", "Job", "Repository"):
        assert endpoint in veeam

    commvault = found["commvault-cs"]
    assert "job types Backup, Aux Copy, format=xml" in commvault
    assert "insecure_skip_verify=true: the certificate is NOT verified" in commvault
    assert "WARNING:" in commvault
    assert "verification is OFF" in commvault

    avepoint = found["avepoint-m365"]
    assert "services Exchange Online, OneDrive x job types backup, restore, export = 6 requests per poll" in avepoint
    assert "client_secret=<secret>" in avepoint
    assert "WARNING:" not in avepoint

    assert_no_secret(result, *(secret(v) for v in VENDOR_NAMES))


async def test_check_config_target_selects_one_block(tmp_path: Path) -> None:
    targets = [target(v, f"https://{v}.example.com", name=f"{v}-t") for v in VENDOR_NAMES]
    path = write_config(tmp_path / "config.yaml", targets)
    result = await run_cli(f"--config.file={path}", "--check-config", "--target=veeam-t", cwd=tmp_path)
    assert result.code == 0, result
    assert list(blocks(result.stdout)) == ["veeam-t"], result

    missing = await run_cli(f"--config.file={path}", "--check-config", "--target=nope", cwd=tmp_path)
    assert missing.code == 1, missing
    assert "--target nope: no such target" in missing.stderr
    assert "veeam-t" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(
    "args",
    [["--connect"], ["--once", "--connect"], ["--target=x"]],
    ids=["connect-alone", "connect-with-once", "target-alone"],
)
async def test_usage_errors(tmp_path: Path, args: list[str]) -> None:
    path = write_config(tmp_path / "config.yaml", [target("keepit", "https://dk-co.keepit.com")])
    result = await run_cli(f"--config.file={path}", *args, cwd=tmp_path)
    assert result.code == 2, result
    assert "needs --" in result.stderr
    assert result.stdout == ""


# --- --connect -------------------------------------------------------------------------------


async def test_connect_ok_against_every_simulator(tmp_path: Path, simulators: dict[str, TestServer]) -> None:
    targets = [target(v, server_url(simulators[v])) for v in VENDOR_NAMES]
    path = write_config(tmp_path / "config.yaml", targets)
    result = await run_cli(f"--config.file={path}", "--check-config", "--connect", "--log.level=debug", cwd=tmp_path)
    assert result.code == 0, result
    lines = connect_lines(result.stdout)
    assert set(lines) == {f"{v}-t" for v in VENDOR_NAMES}, result
    assert re.fullmatch(
        r"connect keepit-t: ok: login ok, [1-9]\d* connectors visible, [1-9]\d* to collect", lines["keepit-t"]
    )
    assert re.fullmatch(r"connect veeam-t: ok: login ok, [1-9]\d* jobs visible.*", lines["veeam-t"])
    assert re.fullmatch(
        r"connect commvault-t: ok: login ok, [1-9]\d* jobs visible within the lookback", lines["commvault-t"]
    )
    assert re.fullmatch(
        r"connect avepoint-t: ok: token ok, \d+ \S.* jobs visible \(\d+ queries per poll\)", lines["avepoint-t"]
    )
    assert_no_secret(result, *(secret(v) for v in VENDOR_NAMES))
    # Nothing was collected into a state database.
    assert not (tmp_path / "data").exists()


async def test_connect_with_wrong_secrets_fails_as_auth(tmp_path: Path, simulators: dict[str, TestServer]) -> None:
    targets = [target(v, server_url(simulators[v]), name=f"{v}-bad", password=wrong(v)) for v in VENDOR_NAMES]
    # A good target beside the bad ones: each target is judged alone.
    targets.append(target("keepit", server_url(simulators["keepit"]), name="keepit-good"))
    path = write_config(tmp_path / "config.yaml", targets)
    result = await run_cli(f"--config.file={path}", "--check-config", "--connect", "--log.level=debug", cwd=tmp_path)
    assert result.code == 1, result
    lines = connect_lines(result.stdout)
    assert lines["keepit-good"].startswith("connect keepit-good: ok: "), result
    hints = {
        "keepit": "API (secondary) token",
        "veeam": "Portal Administrator, Portal User or Restore Operator",
        "commvault": "View on the clients",
        "avepoint": "microsoft365backup.jobInfo.read.all",
    }
    for vendor in VENDOR_NAMES:
        line = lines[f"{vendor}-bad"]
        assert line.startswith(f"connect {vendor}-bad: FAILED reason=auth: "), result
        assert "\n  hint: check " in line, line
        assert hints[vendor] in line, line
    assert_no_secret(result, *(secret(v) for v in VENDOR_NAMES), *(wrong(v) for v in VENDOR_NAMES))


async def test_connect_to_a_closed_port_fails_as_connection(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens
    path = write_config(tmp_path / "config.yaml", [target("veeam", url)], global_={"timeout": "20s"})
    result = await run_cli(f"--config.file={path}", "--check-config", "--connect", cwd=tmp_path)
    assert result.code == 1, result
    line = connect_lines(result.stdout)["veeam-t"]
    assert line.startswith("connect veeam-t: FAILED reason=connection: "), result
    assert "hint: nothing answered at the URL" in line
    assert "Traceback" not in result.output
    assert_no_secret(result, secret("veeam"))


async def test_connect_to_plain_http_as_https_fails_as_tls(tmp_path: Path, simulators: dict[str, TestServer]) -> None:
    url = server_url(simulators["keepit"]).replace("http://", "https://")
    path = write_config(tmp_path / "config.yaml", [target("keepit", url)])
    result = await run_cli(f"--config.file={path}", "--check-config", "--connect", cwd=tmp_path)
    assert result.code == 1, result
    line = connect_lines(result.stdout)["keepit-t"]
    assert line.startswith("connect keepit-t: FAILED reason=tls: "), result
    assert "tls.ca_file" in line


async def test_demo_check_config_connect(tmp_path: Path) -> None:
    result = await run_cli("--demo", "--check-config", "--connect", cwd=tmp_path)
    assert result.code == 0, result
    lines = connect_lines(result.stdout)
    assert set(lines) == {f"{v}-demo" for v in VENDOR_NAMES}, result
    assert all(": ok: " in line for line in lines.values()), result
    assert set(blocks(result.stdout)) == set(lines)
