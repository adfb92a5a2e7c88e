"""HTTP served from its own thread (exporter/httpthread.py): every route still
works in the real exporter, auth still guards all of them, bind errors and
SIGTERM behave as before, and /metrics answers while the main loop (the one
running collections) is blocked, while handlers of the service wait for it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.config import Config
from exporter.httpthread import ServerThread, thread_safe
from exporter.server import create_app
from exporter.service import ExporterService
from exporter.simulators import keepit as keepit_sim
from exporter.vendors import VENDORS
from tests.harness import ExporterProcess, free_port, parse_exposition, select, server_url, write_config

TARGET = "keepit-thread"
PASSWORD = "thread-Pa55:word"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
AUTH = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()}
HANG_GUARD = 30.0  # seconds; never a speed expectation


@pytest.fixture
async def simulator(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(keepit_sim.create_app(now=datetime.now(UTC)))
    return server


def _config(tmp_path: Path, simulator: TestServer, *names: str) -> Path:
    targets = [{**keepit_sim.demo_target(server_url(simulator)), "name": name} for name in names or (TARGET,)]
    return write_config(tmp_path / "config.yaml", targets, global_={"interval": "30s", "timeout": "10s"})


@pytest.fixture
async def exporters() -> AsyncIterator[list[ExporterProcess]]:
    started: list[ExporterProcess] = []
    yield started
    for exporter in started:
        await exporter.stop()


async def _request(
    exporter: ExporterProcess, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, exporter.url + path, headers=headers) as resp,
    ):
        return resp.status, await resp.read(), dict(resp.headers)


# --- the real exporter --------------------------------------------------------------------


async def test_every_route_is_served(tmp_path: Path, simulator: TestServer, exporters: list[ExporterProcess]) -> None:
    config = _config(tmp_path, simulator)
    exporter = ExporterProcess(config, tmp_path / "data")
    exporters.append(exporter)
    await exporter.start()
    await exporter.wait_for(lambda status: status == 200, what="ready")

    samples = await exporter.metrics()
    assert [value for _, value in select(samples, "backup_target_up", target=TARGET)] == [1.0]
    status, body, headers = await exporter.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert (status, headers.get("Content-Encoding")) == (200, "gzip")

    status, body, headers = await exporter.get("/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert TARGET in body.decode()
    status, body, _ = await exporter.get("/api/v1/status")
    assert status == 200
    assert TARGET in json.dumps(json.loads(body))

    status, body, _ = await exporter.get(f"/probe?target={TARGET}")
    assert status == 200
    assert {labels["target"] for _, labels, _ in parse_exposition(body.decode())} == {TARGET}
    assert (await exporter.get("/probe?target=nope"))[0] == 400

    assert (await exporter.get("/-/ready"))[:2] == (200, b"Ready.\n")
    assert (await exporter.get("/-/healthy"))[:2] == (200, b"Healthy.\n")
    assert (await exporter.get("/-/reload"))[0] == 405
    assert (await exporter.get("/no-such-page"))[0] == 404

    # The reload (marshalled to the main loop) really applies the new config.
    _config(tmp_path, simulator, TARGET, "keepit-added")
    assert await exporter.post("/-/reload") == (200, "Reloaded.\n")
    await exporter.wait_for(
        metric=lambda s: bool(select(s, "backup_target_up", target="keepit-added")), what="reloaded"
    )
    assert "Traceback" not in exporter.logs()


async def test_basic_auth_and_headers_apply_to_every_route(
    tmp_path: Path, simulator: TestServer, exporters: list[ExporterProcess]
) -> None:
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        yaml.safe_dump(
            {"basic_auth_users": {"prometheus": HASH}, "http_server_config": {"headers": {"X-Frame-Options": "deny"}}}
        )
    )
    exporter = ExporterProcess(
        _config(tmp_path, simulator), tmp_path / "data", extra_args=[f"--web.config.file={web_config}"]
    )
    exporters.append(exporter)
    await exporter.start()  # waits on /-/healthy, open to all
    routes = [
        ("GET", "/metrics", 200),
        ("GET", "/", 200),
        ("GET", "/api/v1/status", 200),
        ("GET", f"/probe?target={TARGET}", 200),
        ("GET", "/-/ready", None),  # 200 or 503, depending on the first collection
        ("POST", "/-/reload", 200),
        ("GET", "/no-such-page", 404),
    ]
    for method, path, expected in routes:
        status, _, headers = await _request(exporter, method, path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic "), path
        status, _, headers = await _request(exporter, method, path, {**AUTH})
        assert status == expected if expected is not None else status in (200, 503), (path, status)
        assert headers.get("X-Frame-Options") == "deny", path
    status, _, headers = await _request(exporter, "GET", "/-/healthy")
    assert status == 200
    assert headers.get("X-Frame-Options") == "deny"


async def test_sigterm_with_requests_in_flight_exits_0(
    tmp_path: Path, simulator: TestServer, exporters: list[ExporterProcess]
) -> None:
    exporter = ExporterProcess(_config(tmp_path, simulator), tmp_path / "data")
    await exporter.start()
    await exporter.wait_for(lambda status: status == 200, what="ready")
    statuses: list[int] = []
    enough = asyncio.Event()

    async def client(path: str) -> None:
        # Until the exporter stops answering; every answer it gives must be a good one.
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(exporter.url + path) as resp:
                        await resp.read()
                        statuses.append(resp.status)
                except aiohttp.ClientError:
                    return
                if len(statuses) >= 40:
                    enough.set()

    clients = [asyncio.create_task(client(path)) for path in ("/metrics", "/metrics", "/", "/-/ready", "/probe")]
    await asyncio.wait_for(enough.wait(), HANG_GUARD)
    code = await exporter.stop(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*clients), HANG_GUARD)
    assert code == 0, exporter.logs()[-3000:]
    assert set(statuses) <= {200, 400}, statuses  # /probe without a target is a 400
    assert 'msg="shutting down"' in exporter.logs()
    assert "Traceback" not in exporter.logs()


# --- in-process: the server thread against a blocked main loop ---------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[web.Application, str, ServerThread]]:
    """The exporter's app (no targets) on a ServerThread; the test's loop is the main loop."""
    service = ExporterService(lambda: Config(), tmp_path / "data", VENDORS)
    await service.start(Config())
    app = create_app(service)
    port = free_port()
    server = ServerThread(app, "127.0.0.1", port)
    yield app, f"http://127.0.0.1:{port}", server
    await server.stop()
    await service.stop()


def _get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """Blocking, for threads other than the main loop's."""
    try:
        with urllib.request.urlopen(url, data=data, timeout=HANG_GUARD) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_metrics_answer_while_the_main_loop_is_blocked(
    served: tuple[web.Application, str, ServerThread],
) -> None:
    _, url, server = served
    await server.start()
    released = threading.Event()
    results: dict[str, Any] = {}

    def ready() -> None:
        status, _ = _get(url + "/-/ready")
        results["ready"] = (status, released.is_set())

    ready_thread = threading.Thread(target=ready)

    def scrape() -> None:
        ready_thread.start()
        results["metrics"] = _get(url + "/metrics")
        results["healthy"] = _get(url + "/-/healthy")
        # Time for /-/ready to answer if it (wrongly) ran on the server thread.
        ready_thread.join(0.5)
        results["ready answered while blocked"] = not ready_thread.is_alive()
        released.set()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    # Blocks the main loop, as a long collection callback would, until the scrapes are done.
    scraper.join(HANG_GUARD)
    assert not scraper.is_alive()
    await asyncio.to_thread(ready_thread.join, HANG_GUARD)

    status, body = results["metrics"]
    assert status == 200
    assert b"# TYPE " in body
    assert results["healthy"] == (200, b"Healthy.\n")
    assert results["ready answered while blocked"] is False
    # Answered, by the main loop, once it was free again.
    assert results["ready"] == (200, True)


async def test_routes_run_on_the_main_loop_unless_marked_thread_safe(
    served: tuple[web.Application, str, ServerThread],
) -> None:
    app, url, server = served
    threads: dict[str, threading.Thread] = {}

    # A route added later, the way create_app adds its own: marshalled without asking.
    async def added(request: web.Request) -> web.Response:
        threads["added"] = threading.current_thread()
        return web.Response(text=await request.text())

    @thread_safe
    async def marked(request: web.Request) -> web.Response:
        threads["marked"] = threading.current_thread()
        return web.Response(text="ok")

    app.router.add_post("/added", added)
    app.router.add_get("/marked", marked)
    await server.start()

    # The request body, read on the server thread, reaches the handler on the main loop.
    assert await asyncio.to_thread(_get, url + "/added", b"the body") == (200, b"the body")
    assert await asyncio.to_thread(_get, url + "/marked") == (200, b"ok")
    assert threads["added"] is threading.main_thread()
    assert threads["marked"] is not threading.main_thread()
    assert threads["marked"].name == "http-server"


async def test_a_taken_port_is_an_oserror_from_start(tmp_path: Path) -> None:
    service = ExporterService(lambda: Config(), tmp_path / "data", VENDORS)
    await service.start(Config())
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            server = ServerThread(create_app(service), "127.0.0.1", busy.getsockname()[1])
            with pytest.raises(OSError):
                await server.start()
            await server.stop()  # no-op after a failed start
    finally:
        await service.stop()
