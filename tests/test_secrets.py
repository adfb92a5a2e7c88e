"""Secrets never leave the exporter process: the real exporter, at debug log
level, against all four vendor simulators over loopback.

Every vendor's secret (password, or AvePoint's client secret) is given once
through `${VAR}` and once through `<key>_file`, and a wrong one a third time.
Neither appears, in clear nor in any form the wire or a page gives it (base64,
HTTP Basic's user:secret, URL encoding, HTML and JSON escaping), in the log,
`/metrics`, `/probe`, the status page `/` - also while each vendor answers 401,
500 or garbage - nor in `--check-config` output of a good or a bad config.
"""

from __future__ import annotations

import base64
import html
import json
import signal
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.config import load_config
from exporter.redact import Redactor
from exporter.simulators import SIMULATORS, avepoint, commvault, keepit, veeam
from exporter.vendors import VENDORS
from tests.harness import ExporterProcess, run_cli, select, server_url, sim_post, write_config

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC)
VENDOR_NAMES = sorted(SIMULATORS)
PROJECT = Path(__file__).resolve().parents[1]
# What the product reads where: ${VAR} for the -env targets, <key>_file for the -file ones.
SECRET_KEYS = {"keepit": "password", "veeam": "password", "commvault": "password", "avepoint": "client_secret"}
# Faults every simulator can play, and the error reason each must be counted as.
FAULTS = (("401", "auth"), ("500", "http"), ("garbage", "parse"))

Samples = list[tuple[str, dict[str, str], float]]


def good_secret(vendor: str) -> str:
    # Characters that every encoding changes: space, /, +, &, =, %, ?, :, non-ASCII.
    return f"{vendor}-Sëcret pw/+&=%?:1"


def wrong_secret(vendor: str) -> str:
    return f"{vendor}-Wröng pw/+&=%?:2"


def env_name(vendor: str, kind: str) -> str:
    return f"TEST_{kind}_{vendor.upper()}_SECRET"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def leak_forms(secret: str, user: str | None) -> set[str]:
    """The secret as it may show up: raw, as the wire carries it, as pages and logs escape it."""
    forms = {
        secret,
        b64(secret),
        quote(secret, safe=""),
        quote_plus(secret),
        html.escape(secret),
        json.dumps(secret)[1:-1],
    }
    if user is not None:
        forms.add(b64(f"{user}:{secret}"))
    return forms


def all_leak_forms(vendors: Iterable[str]) -> dict[str, str]:
    """form -> what it is, for every good and wrong secret of `vendors`."""
    found: dict[str, str] = {}
    for vendor in vendors:
        user = SIMULATORS[vendor].demo_target("http://x").get("username")
        for kind, secret in (("good", good_secret(vendor)), ("wrong", wrong_secret(vendor))):
            for form in leak_forms(secret, user):
                found[form] = f"{kind} {vendor} secret ({form!r})"
    return found


def assert_no_leak(where: str, text: str, forms: dict[str, str]) -> None:
    leaked = [what for form, what in forms.items() if form in text]
    assert not leaked, f"{where} shows {leaked}"


def simulator_app(vendor: str) -> web.Application:
    """The vendor's simulator, accepting only the vendor's good secret."""
    secret = good_secret(vendor)
    if vendor == "keepit":
        return keepit.create_app(now=NOW, password=secret)
    if vendor == "veeam":
        return veeam.create_app(now=NOW, password=secret)
    if vendor == "commvault":
        return commvault.create_app(now=NOW, password=secret)
    return avepoint.create_app(now=NOW, client_secret=secret)


def base_target(vendor: str, url: str) -> dict[str, Any]:
    target = SIMULATORS[vendor].demo_target(url)
    del target[SECRET_KEYS[vendor]]
    if vendor == "avepoint":
        # One query per poll: this module is about what is shown, not what is collected.
        target.update(services=target["services"][:1], job_types=["backup"])
    return target


def vendor_targets(vendor: str, url: str, secrets_dir: Path) -> list[dict[str, Any]]:
    """<vendor>-env (secret from ${VAR}), <vendor>-file (<key>_file) and <vendor>-wrong."""
    key = SECRET_KEYS[vendor]
    secret_file = secrets_dir / vendor
    secret_file.write_text(good_secret(vendor) + "\n")
    secret_file.chmod(0o600)
    base = base_target(vendor, url)
    return [
        {**base, "name": f"{vendor}-env", key: f"${{{env_name(vendor, 'GOOD')}}}"},
        {**base, "name": f"{vendor}-file", f"{key}_file": str(secret_file)},
        {**base, "name": f"{vendor}-wrong", key: f"${{{env_name(vendor, 'WRONG')}}}"},
    ]


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ${VAR}s of vendor_targets, inherited by the exporter processes."""
    for vendor in VENDOR_NAMES:
        monkeypatch.setenv(env_name(vendor, "GOOD"), good_secret(vendor))
        monkeypatch.setenv(env_name(vendor, "WRONG"), wrong_secret(vendor))


@pytest.fixture
async def simulators(aiohttp_server: Any) -> dict[str, TestServer]:
    return {vendor: await aiohttp_server(simulator_app(vendor)) for vendor in VENDOR_NAMES}


def value(samples: Samples, name: str, **labels: str) -> float:
    found = select(samples, name, **labels)
    return found[0][1] if found else 0.0


def good_targets() -> list[str]:
    return [f"{vendor}-{kind}" for vendor in VENDOR_NAMES for kind in ("env", "file")]


def all_targets() -> list[str]:
    return [f"{vendor}-{kind}" for vendor in VENDOR_NAMES for kind in ("env", "file", "wrong")]


async def shown(exporter: ExporterProcess) -> dict[str, str]:
    """Every page the exporter serves, by path."""
    pages = {}
    for path in ("/metrics", "/", *(f"/probe?target={name}" for name in all_targets())):
        status, body, _ = await exporter.get(path)
        assert status == 200, path
        pages[path] = body.decode()
    return pages


async def test_secrets_never_shown_while_collecting_or_failing(
    tmp_path: Path, simulators: dict[str, TestServer], secret_env: None
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    targets = [t for v in VENDOR_NAMES for t in vendor_targets(v, server_url(simulators[v]), secrets_dir)]
    config = write_config(tmp_path / "config.yml", targets, global_={"interval": "2s", "timeout": "2s"})
    forms = all_leak_forms(VENDOR_NAMES)
    exporter = ExporterProcess(config, tmp_path / "data")
    await exporter.start()
    try:
        await exporter.wait_for(metric=collected_as_configured, what="the good targets up, the wrong ones refused")
        # The forced failures put each vendor's error messages on every page.
        for mode, reason in FAULTS:
            before = await exporter.metrics()
            for server in simulators.values():
                await sim_post(server, "/_sim/fault", {"mode": mode})
            await exporter.wait_for(metric=failed_again(before, reason), what=f"{mode} counted as {reason}")
            pages = await shown(exporter)
            assert "DOWN" in pages["/"]
            for path, body in pages.items():
                assert_no_leak(f"{path} while vendors answer {mode}", body, forms)
        for server in simulators.values():
            await sim_post(server, "/_sim/fault", {"mode": "none"})
        await exporter.wait_for(metric=collected_as_configured, what="recovered")
        for path, body in (await shown(exporter)).items():
            assert_no_leak(path, body, forms)
        # Veeam forgets a session once logged out, at the exporter's stop.
        tokens = issued_tokens(simulators)
    finally:
        await exporter.stop()
    logs = exporter.logs()
    assert "level=debug" in logs
    assert 'msg="collection failed"' in logs
    assert_no_leak("the log", logs, forms)
    # Nor the sessions the vendors handed out: a token is a credential too.
    tokens |= issued_tokens(simulators)
    assert {what.split()[0] for what in tokens.values()} == {"commvault", "avepoint", "veeam"}
    assert_no_leak("the log", logs, tokens)


def collected_as_configured(samples: Samples) -> bool:
    """Good targets up; wrong ones down, refused as auth."""
    good = all(value(samples, "backup_target_up", target=name) == 1 for name in good_targets())
    wrong = all(
        value(samples, "backup_target_collection_errors_total", target=f"{vendor}-wrong", reason="auth") >= 1
        and select(samples, "backup_target_up", target=f"{vendor}-wrong")[0][1] == 0
        for vendor in VENDOR_NAMES
    )
    return good and wrong


def failed_again(before: Samples, reason: str) -> Callable[[Samples], bool]:
    """Whether every good target failed with `reason` since `before`."""
    name = "backup_target_collection_errors_total"

    def check(samples: Samples) -> bool:
        return all(
            value(samples, name, target=target, reason=reason) > value(before, name, target=target, reason=reason)
            for target in good_targets()
        )

    return check


def issued_tokens(simulators: dict[str, TestServer]) -> dict[str, str]:
    """token -> whose, for the sessions the simulators issued and still know."""
    found = {token: "commvault session token" for token in simulators["commvault"].app[commvault.SESSIONS].tokens}
    found |= {token: "avepoint access token" for token in simulators["avepoint"].app[avepoint.TOKENS].tokens}
    for session in simulators["veeam"].app[veeam.STATE].sessions.values():
        found[session.token] = "veeam session token"
        # The token is base64 of the SessionId: knowing one is knowing the other.
        found[session.session_id] = "veeam session id"
    return found


def test_redaction_covers_every_wire_form(tmp_path: Path, secret_env: None) -> None:
    """The net under the tests above: should a secret reach a message in any
    form the wire uses, the redactor that logs, errors and pages pass through
    removes it."""
    config = load_config(write_config(tmp_path / "config.yml", deployed_targets(tmp_path)), vendors=VENDORS)
    redact = Redactor(config.secrets())
    for vendor in VENDOR_NAMES:
        user = SIMULATORS[vendor].demo_target("http://x").get("username")
        for secret in (good_secret(vendor), wrong_secret(vendor)):
            wire = {secret, b64(secret), quote(secret, safe=""), quote_plus(secret)}
            if user is not None:
                wire.add(b64(f"{user}:{secret}"))
            for form in wire:
                assert redact(f"POST /login: refused {form}!") == "POST /login: refused <redacted>!", (vendor, form)


# --- --check-config ---------------------------------------------------------------------


def deployed_targets(tmp_path: Path) -> list[dict[str, Any]]:
    """Every vendor's three targets, at URLs --check-config never calls."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    return [t for v in VENDOR_NAMES for t in vendor_targets(v, f"https://{v}.example.com", secrets_dir)]


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
async def test_check_config_never_shows_secrets(tmp_path: Path, secret_env: None, log_format: str) -> None:
    path = write_config(tmp_path / "config.yml", deployed_targets(tmp_path))
    result = await run_cli(
        f"--config.file={path}", "--check-config", "--log.level=debug", f"--log.format={log_format}", cwd=tmp_path
    )
    assert result.code == 0, result.output
    for name in all_targets():
        assert f"{name}: vendor=" in result.output
    assert "<secret>" in result.output
    assert_no_leak("--check-config", result.output, all_leak_forms(VENDOR_NAMES))


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
async def test_check_config_of_a_bad_config_never_shows_secrets(
    tmp_path: Path, secret_env: None, log_format: str
) -> None:
    targets = deployed_targets(tmp_path)
    for i, target in enumerate(targets):
        # A mistake beside every secret; every third target has its secret inline.
        target.update(url=f"{target['name']}.example.com", colour="blue")
        if i % 3 == 2:
            target[SECRET_KEYS[target["vendor"]]] = wrong_secret(target["vendor"])
    path = write_config(tmp_path / "config.yml", targets, mode=0o644)
    result = await run_cli(
        f"--config.file={path}", "--check-config", "--log.level=debug", f"--log.format={log_format}", cwd=tmp_path
    )
    assert result.code == 1, result.output
    assert f"{path}: targets[0].url: not a URL (expected http:// or https://)" in result.output
    assert f"{path}: targets[11].colour: unknown key" in result.output
    # Inline secrets in a file others can read: warned about, by key path only.
    assert "is readable by other users (mode 0644)" in result.output
    avepoint_index = 3 * VENDOR_NAMES.index("avepoint") + 2
    assert f"targets[{avepoint_index}].client_secret" in result.output
    assert_no_leak("--check-config", result.output, all_leak_forms(VENDOR_NAMES))


# --- the world-readable warning -------------------------------------------------------


async def test_world_readable_config_is_warned_about_on_reload_too(tmp_path: Path) -> None:
    secret = wrong_secret("keepit")
    # A closed port: this test needs no vendor, only a config holding a secret inline.
    target = {**base_target("keepit", "http://127.0.0.1:9"), "name": "keepit-inline", "password": secret}
    config = write_config(tmp_path / "config.yml", [target], global_={"interval": "1m"}, mode=0o600)
    exporter = ExporterProcess(config, tmp_path / "data")
    await exporter.start()
    try:
        assert "readable by other users" not in exporter.logs()
        config.chmod(0o644)
        await exporter.send_signal(signal.SIGHUP)
        await exporter.wait_for(
            lambda _: 'msg="configuration reloaded"' in exporter.logs(), path="/-/healthy", what="reloaded"
        )
    finally:
        await exporter.stop()
    warnings = [line for line in exporter.logs().splitlines() if "readable by other users" in line]
    assert len(warnings) == 1, exporter.logs()
    assert "level=warn" in warnings[0]
    assert "targets[0].password" in warnings[0]
    assert_no_leak("the log", exporter.logs(), {form: "the inline secret" for form in leak_forms(secret, None)})
