"""--web.config.file: real TLS, mTLS and bcrypt basic auth over loopback."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from aiohttp import web

from exporter.config import Config
from exporter.server import create_app
from exporter.service import ExporterService
from exporter.vendors import VENDORS
from exporter.webconfig import BasicAuthChecker, WebConfigError, load_web_config
from tests.harness import free_port

PASSWORD = "s3cret pass:word"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt", cwd=d)  # fmt: skip
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


Serve = Callable[[dict[str, Any]], Coroutine[Any, Any, str]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """Starts the exporter's HTTP app (no targets) with the given web config; returns its base URL."""
    runners: list[web.AppRunner] = []
    services: list[ExporterService] = []

    async def start(web_config: dict[str, Any]) -> str:
        path = tmp_path / f"web-{len(runners)}.yml"
        path.write_text(yaml.safe_dump(web_config))
        config = load_web_config(path)
        service = ExporterService(lambda: Config(), tmp_path / f"data-{len(runners)}", VENDORS)
        await service.start(Config())
        services.append(service)
        runner = web.AppRunner(create_app(service, "/metrics", config))
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=config.ssl_context).start()
        return f"{'https' if config.ssl_context else 'http'}://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()
    for service in services:
        await service.stop()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def status_of(url: str, *, headers: dict[str, str] | None = None, method: str = "GET", **kw: Any) -> int:
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers, **kw) as resp:
        return resp.status


async def test_basic_auth_protects_everything_but_health(serve: Serve) -> None:
    url = await serve({"basic_auth_users": {"prometheus": HASH}})
    for path in ("/metrics", "/", "/probe?target=x", "/-/ready"):
        assert await status_of(url + path) == 401, path
        assert await status_of(url + path, headers=basic("prometheus", "wrong")) == 401, path
        assert await status_of(url + path, headers=basic("nobody", PASSWORD)) == 401, path
    assert await status_of(url + "/-/reload", method="POST") == 401
    assert await status_of(url + "/-/healthy") == 200
    assert await status_of(url + "/metrics", headers=basic("prometheus", PASSWORD)) == 200
    # Cached after the first success, and still right.
    assert await status_of(url + "/metrics", headers=basic("prometheus", PASSWORD)) == 200
    assert await status_of(url + "/metrics", headers=basic("prometheus", PASSWORD + "x")) == 401
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        assert resp.headers["WWW-Authenticate"].startswith("Basic ")


async def test_malformed_authorization_headers_are_refused(serve: Serve) -> None:
    url = await serve({"basic_auth_users": {"prometheus": HASH}})
    for header in ("Basic", "Basic !!!", "Bearer abc", "Basic " + base64.b64encode(b"no-colon").decode()):
        assert await status_of(url + "/metrics", headers={"Authorization": header}) == 401, header


async def test_checker_refuses_unknown_users_and_accepts_the_right_password() -> None:
    # That an unknown user costs a bcrypt check too (no user enumeration by
    # timing) is by construction in BasicAuthChecker; no timed test proves it
    # on a shared machine.
    checker = BasicAuthChecker({"prometheus": HASH.encode()})
    assert not await checker.check(basic("nobody", PASSWORD)["Authorization"])
    assert await checker.check(basic("prometheus", PASSWORD)["Authorization"])


async def test_tls_serves_https_with_the_configured_certificate(serve: Serve, pki: Pki) -> None:
    url = await serve({"tls_server_config": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}})
    trusted = ssl.create_default_context(cafile=str(pki.ca))
    assert await status_of(url + "/metrics", ssl=trusted) == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await status_of(url + "/metrics", ssl=ssl.create_default_context())
    with pytest.raises(aiohttp.ClientError):
        await status_of(url.replace("https", "http") + "/metrics")


async def test_tls_min_version_is_enforced(serve: Serve, pki: Pki) -> None:
    url = await serve(
        {
            "tls_server_config": {
                "cert_file": str(pki.server_cert),
                "key_file": str(pki.server_key),
                "min_version": "TLS13",
            }
        }
    )
    old_client = ssl.create_default_context(cafile=str(pki.ca))
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(aiohttp.ClientError):
        await status_of(url + "/metrics", ssl=old_client)
    assert await status_of(url + "/metrics", ssl=ssl.create_default_context(cafile=str(pki.ca))) == 200


async def test_mutual_tls_requires_a_client_certificate(serve: Serve, pki: Pki) -> None:
    url = await serve(
        {
            "tls_server_config": {
                "cert_file": str(pki.server_cert),
                "key_file": str(pki.server_key),
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": str(pki.ca),
            }
        }
    )
    anonymous = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises(aiohttp.ClientError):
        await status_of(url + "/metrics", ssl=anonymous)
    with_cert = ssl.create_default_context(cafile=str(pki.ca))
    with_cert.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    assert await status_of(url + "/metrics", ssl=with_cert) == 200


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "missing.key"}}, "does not exist"),
        ({"tls_server_config": {"cipher_suites": ["x"]}}, "cipher_suites: not supported"),
        ({"basic_auth_users": {"prometheus": "plain-text-password"}}, "expected a bcrypt hash"),
        ({"basic_auth_user": {}}, "basic_auth_user: unknown key"),
        ({"tls_server_config": {"client_auth_type": "Maybe"}}, "client_auth_type"),
    ],
)
def test_invalid_web_configs_are_clear_errors(tmp_path: Path, document: dict[str, Any], message: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "plain-text-password" not in str(caught.value)
