"""TLS to the vendors, over real TLS on loopback: every vendor simulator served
over HTTPS with a certificate from a test CA, collected by the exporter's own
TargetCollector (and, for the warnings, by the exporter process)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from exporter.config import Config, ConfigError, TlsConfig, load_config, parse_config, security_warnings
from exporter.exposition import Exposition
from exporter.metrics import FAMILIES
from exporter.poller import Poller, TargetCollector
from exporter.redact import Redactor
from exporter.simulators import SIMULATORS
from exporter.state import TargetHealth, TargetState
from exporter.store import Store
from exporter.vendors import VENDORS
from tests import certs
from tests.certs import KeyPair, Pki
from tests.harness import ExporterProcess, parse_exposition, run_cli, select, write_config

NOW = datetime.now(UTC)
VENDOR_NAMES = sorted(SIMULATORS)
PROJECT = Path(__file__).resolve().parents[1]
INSECURE_WARNING = "TLS certificate verification is OFF"

Serve = Callable[[str, KeyPair | None], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts a vendor simulator on loopback, over HTTPS with the given
    certificate (plain HTTP with None); returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(vendor: str, pair: KeyPair | None) -> str:
        runner = web.AppRunner(SIMULATORS[vendor].create_app(now=NOW), access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pair.server_context() if pair else None)
        await site.start()
        port = runner.addresses[0][1]
        return f"{'https' if pair else 'http'}://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def target_for(vendor: str, url: str, tls: dict[str, Any] | None = None, name: str | None = None) -> dict[str, Any]:
    target = {**SIMULATORS[vendor].demo_target(url), "name": name or f"{vendor}-tls"}
    if tls is not None:
        target["tls"] = tls
    return target


def config_of(*targets: dict[str, Any]) -> Config:
    text = yaml.safe_dump({"global": {"interval": "1m", "timeout": "30s"}, "targets": list(targets)})
    return parse_config(text, "test.yml", environ={}, vendors=VENDORS)


@dataclass
class Outcome:
    ok: bool
    health: TargetHealth
    samples: list[tuple[str, dict[str, str], float]]
    jobs: int


async def collect_once(config: Config, storage: Path) -> Outcome:
    """One collection of the config's only target by the poller's TargetCollector."""
    (target,) = config.targets
    store = Store(storage)
    await store.open()
    exposition = Exposition(FAMILIES)
    try:
        collector = TargetCollector(
            target,
            VENDORS[target.vendor],
            config,
            TargetState(name=target.name),
            store,
            exposition,
            Redactor(config.secrets()),
        )
        try:
            ok = await asyncio.wait_for(collector.collect_once(), timeout=60)  # a hang guard only
        finally:
            await collector.close()
    finally:
        await store.close()
    samples = parse_exposition(exposition.render().decode())
    return Outcome(ok, collector.health, samples, len(collector.state.jobs))


def assert_down_by_connection(outcome: Outcome, target: str) -> str:
    """The target failed with reason connection, once; its last error."""
    assert not outcome.ok
    assert outcome.health.up is False
    assert dict(outcome.health.errors_total) == {"connection": 1}
    assert select(outcome.samples, "backup_target_up", target=target)[0][1] == 0
    assert (
        select(outcome.samples, "backup_target_collection_errors_total", target=target, reason="connection")[0][1] == 1
    )
    assert outcome.health.last_error is not None
    return outcome.health.last_error


def assert_up(outcome: Outcome, target: str) -> None:
    assert outcome.ok, outcome.health.last_error
    assert outcome.health.up is True
    assert outcome.jobs > 0
    assert select(outcome.samples, "backup_target_up", target=target)[0][1] == 1


# --- collection over TLS -------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDOR_NAMES)
async def test_untrusted_certificate_fails_with_a_clear_message(
    vendor: str, serve: Serve, pki: Pki, tmp_path: Path
) -> None:
    url = await serve(vendor, pki.server)
    outcome = await collect_once(config_of(target_for(vendor, url)), tmp_path / "data")
    error = assert_down_by_connection(outcome, f"{vendor}-tls")
    assert f"TLS certificate verification failed for {url.removeprefix('https://')}" in error
    assert "unable to get local issuer certificate" in error
    assert "tls.ca_file" in error
    # Refused at the handshake, and not retried: it fails alike until someone acts.
    assert outcome.health.requests_total == {"error": 1}


@pytest.mark.parametrize("vendor", VENDOR_NAMES)
async def test_ca_file_trusts_the_vendor(vendor: str, serve: Serve, pki: Pki, tmp_path: Path) -> None:
    url = await serve(vendor, pki.server)
    config = config_of(target_for(vendor, url, {"ca_file": str(pki.ca)}))
    assert_up(await collect_once(config, tmp_path / "data"), f"{vendor}-tls")
    assert security_warnings(config) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_certificate_for_another_name_fails_with_a_clear_message(
    host: str, serve: Serve, pki: Pki, tmp_path: Path
) -> None:
    url = (await serve("keepit", pki.other_name)).replace("127.0.0.1", host)
    outcome = await collect_once(config_of(target_for("keepit", url, {"ca_file": str(pki.ca)})), tmp_path / "data")
    error = assert_down_by_connection(outcome, "keepit-tls")
    assert "TLS certificate verification failed" in error
    assert "mismatch" in error
    assert f"certificate is not valid for '{host}'" in error
    assert f"does not hold the name {host}" in error


@pytest.mark.parametrize("vendor", VENDOR_NAMES)
async def test_insecure_skip_verify_collects_and_is_warned_about(
    vendor: str, serve: Serve, pki: Pki, tmp_path: Path
) -> None:
    # Signed for another name by an untrusted CA: only no verification at all accepts it.
    url = await serve(vendor, pki.other_name)
    config = config_of(target_for(vendor, url, {"insecure_skip_verify": True}))
    assert_up(await collect_once(config, tmp_path / "data"), f"{vendor}-tls")
    [(target, warning)] = security_warnings(config)
    assert target == f"{vendor}-tls"
    assert f"target {vendor}-tls: {INSECURE_WARNING} (tls.insecure_skip_verify: true)" in warning
    assert "tls.ca_file" in warning


async def test_https_to_a_plain_http_port_says_so(serve: Serve, tmp_path: Path) -> None:
    url = (await serve("keepit", None)).replace("http://", "https://")
    outcome = await collect_once(config_of(target_for("keepit", url)), tmp_path / "data")
    error = assert_down_by_connection(outcome, "keepit-tls")
    assert f"TLS handshake with {url.removeprefix('https://')} failed" in error
    assert "does it serve https on this port?" in error


async def test_ca_file_broken_after_loading_trusts_nothing(
    serve: Serve, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = await serve("keepit", pki.server)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca.read_bytes())
    config = config_of(target_for("keepit", url, {"ca_file": str(ca)}))
    ca.write_text("replaced by something else\n")
    with caplog.at_level(logging.ERROR):
        outcome = await collect_once(config, tmp_path / "data")
    # Never less verification than configured: the system's CAs do not step in either.
    error = assert_down_by_connection(outcome, "keepit-tls")
    assert "TLS certificate verification failed" in error
    assert any(r.getMessage().startswith("cannot load tls.ca_file") for r in caplog.records)


# --- the config ------------------------------------------------------------------------


def tls_config(tmp_path: Path, tls: dict[str, Any]) -> Path:
    target = {"name": "kp", "vendor": "keepit", "url": "https://dk-co.keepit.com", "username": "u", "password": "p"}
    return write_config(tmp_path / "config.yml", [{**target, "tls": tls}])


def not_pem(path: Path) -> str:
    return (
        f"{path} holds no valid PEM certificate (expected '-----BEGIN CERTIFICATE-----' blocks; "
        "convert a DER file with: openssl x509 -inform der -in FILE -out FILE.pem)"
    )


@pytest.mark.parametrize("content", ["header-only", "empty", "text", "der", "private-key"])
def test_ca_file_that_is_no_certificate_is_a_config_error(pki: Pki, tmp_path: Path, content: str) -> None:
    ca = tmp_path / "ca.pem"
    contents = {
        "header-only": b"-----BEGIN CERTIFICATE-----\n",
        "empty": b"",
        "text": b"not a certificate\n",
        "der": ssl.PEM_cert_to_DER_cert(pki.ca.read_text()),
        "private-key": pki.ca_key.read_bytes(),
    }
    ca.write_bytes(contents[content])
    path = tls_config(tmp_path, {"ca_file": "ca.pem"})
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={}, vendors=VENDORS)
    assert caught.value.problems == [("targets[0].tls.ca_file", not_pem(ca))]
    assert str(caught.value) == f"{path}: targets[0].tls.ca_file: {not_pem(ca)}"
    # A key given by mistake is never quoted back.
    key_lines = [line for line in pki.ca_key.read_text().splitlines() if not line.startswith("-----")]
    assert not any(line in str(caught.value) for line in key_lines)


def test_ca_file_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    path = tls_config(tmp_path, {"ca_file": "certs"})
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={}, vendors=VENDORS)
    assert caught.value.problems == [("targets[0].tls.ca_file", f"cannot read {tmp_path / 'certs'}: Is a directory")]


def test_ca_file_and_insecure_skip_verify_together_are_a_config_error(pki: Pki, tmp_path: Path) -> None:
    path = tls_config(tmp_path, {"ca_file": str(pki.ca), "insecure_skip_verify": True})
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={}, vendors=VENDORS)
    assert caught.value.problems == [("targets[0].tls", "give either ca_file or insecure_skip_verify: true, not both")]


@pytest.mark.parametrize("which", ["ca", "self-signed-leaf"])
def test_ca_file_accepts_a_pem_ca_or_a_certificate_to_pin(pki: Pki, tmp_path: Path, which: str) -> None:
    ca = pki.ca if which == "ca" else pki.server.cert
    config = load_config(tls_config(tmp_path, {"ca_file": str(ca)}), environ={}, vendors=VENDORS)
    digest = hashlib.sha256(ca.read_bytes()).hexdigest()
    assert config.targets[0].tls == TlsConfig(ca_file=str(ca), insecure_skip_verify=False, ca_digest=digest)


def _renewed_pki(tmp_path: Path) -> Pki:
    directory = tmp_path / "renewed"
    directory.mkdir()
    return certs.make_pki(directory)


def test_a_ca_file_replaced_at_the_same_path_changes_the_target(pki: Pki, tmp_path: Path) -> None:
    # A renewed CA written over the old file, then a reload: the target must
    # differ, or the poller keeps its collector and the old trust.
    other = _renewed_pki(tmp_path)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca.read_bytes())
    path = tls_config(tmp_path, {"ca_file": str(ca)})
    before = load_config(path, environ={}, vendors=VENDORS).targets[0]
    assert load_config(path, environ={}, vendors=VENDORS).targets[0] == before
    ca.write_bytes(other.ca.read_bytes())
    after = load_config(path, environ={}, vendors=VENDORS).targets[0]
    assert after != before
    assert after.tls.ca_file == before.tls.ca_file


async def test_reload_after_the_ca_file_was_replaced_trusts_the_new_one(serve: Serve, pki: Pki, tmp_path: Path) -> None:
    url = await serve("keepit", pki.server)
    other = _renewed_pki(tmp_path)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(other.ca.read_bytes())  # not the CA that signed the server
    path = write_config(tmp_path / "config.yml", [target_for("keepit", url, {"ca_file": str(ca)})])
    store = Store(tmp_path / "data" / "state.db")
    await store.open()
    poller = Poller(store, Exposition(FAMILIES), VENDORS, {})
    try:
        await poller.apply(load_config(path, environ={}, vendors=VENDORS), start=False)
        assert await poller.collect_all_once() == {"keepit-tls": False}
        ca.write_bytes(pki.ca.read_bytes())  # the right CA, at the same path
        await poller.apply(load_config(path, environ={}, vendors=VENDORS), start=False)
        assert await poller.collect_all_once() == {"keepit-tls": True}
    finally:
        await poller.stop()
        await store.close()


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://backup.example.com", True),
        ("http://10.1.2.3:9398", True),
        ("https://backup.example.com", False),
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
        ("http://[::1]:8080", False),
    ],
)
def test_plain_http_off_this_machine_is_warned_about(url: str, warned: bool) -> None:
    config = config_of({"name": "kp", "vendor": "keepit", "url": url, "username": "u", "password": "p"})
    warnings = security_warnings(config)
    if not warned:
        assert warnings == []
        return
    [(target, warning)] = warnings
    assert target == "kp"
    assert warning.startswith("target kp: url is plain http:// to ")
    assert "unencrypted" in warning


# --- the exporter process --------------------------------------------------------------


def insecure_warnings(log: str, target: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if "level=warn" in line and INSECURE_WARNING in line and f"target={target}" in line
    ]


@pytest.mark.e2e
async def test_check_config_shows_the_insecure_warning(tmp_path: Path) -> None:
    target = target_for("keepit", "https://dk-co.keepit.com", {"insecure_skip_verify": True}, name="keepit-lab")
    path = write_config(tmp_path / "config.yml", [target])
    result = await run_cli(f"--config.file={path}", "--check-config", cwd=tmp_path)
    assert result.code == 0, result
    assert len(insecure_warnings(result.stderr, "keepit-lab")) == 1, result
    assert "insecure_skip_verify=true" in result.stdout


@pytest.mark.e2e
async def test_check_config_refuses_a_ca_file_that_is_no_certificate(tmp_path: Path) -> None:
    (tmp_path / "corp-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    target = target_for("veeam", "https://em.example.com:9398", {"ca_file": "corp-ca.pem"})
    path = write_config(tmp_path / "config.yml", [target])
    result = await run_cli(f"--config.file={path}", "--check-config", cwd=tmp_path)
    assert result.code == 1, result
    assert f"{path}: targets[0].tls.ca_file: {not_pem(tmp_path / 'corp-ca.pem')}" in result.stderr.splitlines()


@pytest.mark.e2e
async def test_insecure_warning_at_start_and_each_reload_never_per_poll(serve: Serve, pki: Pki, tmp_path: Path) -> None:
    name = "keepit-lab"
    url = await serve("keepit", pki.server)
    config = tmp_path / "config.yml"
    settings = {"interval": "2s", "timeout": "2s"}
    write_config(config, [target_for("keepit", url, {"insecure_skip_verify": True}, name=name)], global_=settings)
    exporter = ExporterProcess(config, tmp_path / "data")
    await exporter.start()
    try:
        await exporter.wait_for(metric=lambda s: up(s, name) == 1, what="up over TLS without verification")
        await polls(exporter, name, 2)
        assert len(insecure_warnings(exporter.logs(), name)) == 1, exporter.logs()

        # A reload that keeps the setting warns again.
        await reload(exporter, 1)
        assert len(insecure_warnings(exporter.logs(), name)) == 2, exporter.logs()

        # Verification on, with the CA: no more warnings, and still collected.
        write_config(config, [target_for("keepit", url, {"ca_file": str(pki.ca)}, name=name)], global_=settings)
        await reload(exporter, 2)
        await polls(exporter, name, 2)
        assert up(await exporter.metrics(), name) == 1
        assert len(insecure_warnings(exporter.logs(), name)) == 2, exporter.logs()
    finally:
        await exporter.stop()


def up(samples: list[tuple[str, dict[str, str], float]], target: str) -> float | None:
    found = select(samples, "backup_target_up", target=target)
    return found[0][1] if found else None


def last_success(samples: list[tuple[str, dict[str, str], float]], target: str) -> float:
    found = select(samples, "backup_target_last_success_timestamp_seconds", target=target)
    return found[0][1] if found else 0.0


async def polls(exporter: ExporterProcess, target: str, count: int) -> None:
    """Returns after `count` more successful collections of `target`."""
    for _ in range(count):
        before = last_success(await exporter.metrics(), target)

        def later(samples: list[tuple[str, dict[str, str], float]], before: float = before) -> bool:
            return last_success(samples, target) > before

        await exporter.wait_for(metric=later, what="collecting again")


async def reload(exporter: ExporterProcess, count: int) -> None:
    """SIGHUP, then wait for the `count`th successful reload."""
    await exporter.send_signal(signal.SIGHUP)

    def done(_: int) -> bool:
        return exporter.logs().count('msg="configuration reloaded"') >= count

    await exporter.wait_for(done, path="/-/healthy", what="reloaded")
