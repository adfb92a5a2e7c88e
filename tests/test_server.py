"""The HTTP endpoints of the real exporter process, collecting from Keepit
simulators served in-test on loopback: /probe, /-/ready, /-/healthy, the status
page, gzip, /-/reload, and the max_concurrency bound on collections."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

from exporter.simulators import keepit as keepit_sim
from tests.harness import (
    ExporterProcess,
    parse_exposition,
    promtool_check,
    select,
    server_url,
    sim_post,
    write_config,
)

pytestmark = pytest.mark.e2e

Samples = list[tuple[str, dict[str, str], float]]
ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

# Short enough for quick tests; the first polls of N targets are spread over min(10 s, interval).
FAST = {"interval": "3s", "timeout": "3s"}


@dataclass
class RequestTimes:
    """When each vendor request was in the simulator, outermost (fault delays included)."""

    done: list[tuple[int, float, float]] = field(default_factory=list)  # (simulator, start, end), time.time()

    def middleware(self, index: int) -> Any:
        @web.middleware
        async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/_sim/"):
                return await handler(request)
            start = time.time()
            try:
                return await handler(request)
            finally:
                self.done.append((index, start, time.time()))

        return track

    def max_parallel_simulators(self) -> int:
        """The most simulators that had a request in progress at one instant."""
        events = sorted(
            [(start, 1, index) for index, start, _ in self.done] + [(end, -1, index) for index, _, end in self.done],
            # At equal times, ends before starts: touching intervals do not overlap.
            key=lambda event: (event[0], event[1]),
        )
        active: dict[int, int] = {}
        most = 0
        for _, delta, index in events:
            active[index] = active.get(index, 0) + delta
            most = max(most, sum(1 for count in active.values() if count > 0))
        return most


def keepit_sim_app(*, times: RequestTimes | None = None, index: int = 0) -> web.Application:
    app = keepit_sim.create_app(now=datetime.now(UTC))
    if times is not None:
        # Outside the simulator's own fault middleware, so a `slow` delay counts as time in the request.
        app.middlewares.insert(0, times.middleware(index))
    return app


def keepit_target(name: str, server: TestServer, **extra: object) -> dict[str, object]:
    return {**keepit_sim.demo_target(server_url(server)), "name": name, "labels": {"tenant": "acme"}, **extra}


async def sim_requests(server: TestServer) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(server_url(server) + "/_sim/requests") as resp:
        counts: dict[str, int] = await resp.json()
        return counts


def target_samples(samples: Samples, target: str) -> Samples:
    return [s for s in samples if s[1].get("target") == target]


def tried(samples: Samples) -> set[str]:
    """Targets whose first collection has ended, successfully or not."""
    return {lab["target"] for lab, _ in select(samples, "backup_target_up")}


def runs_by_job(samples: Samples, target: str) -> dict[tuple[str, str, str], float]:
    return {
        (lab["job_name"], lab["job_type"], lab["status"]): v
        for lab, v in select(samples, "backup_job_runs_total", target=target)
    }


def job_lines(body: bytes) -> list[str]:
    return sorted(line for line in body.decode().splitlines() if line.startswith("backup_job_"))


@pytest.fixture
async def exporters(tmp_path: Path) -> AsyncIterator[Callable[[Path], Awaitable[ExporterProcess]]]:
    """Starts exporters on a config; stops every one of them at the end of the test."""
    started: list[ExporterProcess] = []

    async def start(config: Path) -> ExporterProcess:
        process = ExporterProcess(config, tmp_path / f"data-{len(started)}")
        started.append(process)
        await process.start()
        return process

    yield start
    for process in started:
        await process.stop()


@dataclass
class Pair:
    exporter: ExporterProcess
    sim_a: TestServer
    sim_b: TestServer


@pytest.fixture
async def pair(
    tmp_path: Path, aiohttp_server: ServerFactory, exporters: Callable[[Path], Awaitable[ExporterProcess]]
) -> Pair:
    """Two healthy Keepit targets, each on its own simulator, both collected once."""
    sim_a = await aiohttp_server(keepit_sim_app())
    sim_b = await aiohttp_server(keepit_sim_app())
    config = write_config(
        tmp_path / "config.yaml", [keepit_target("keepit-a", sim_a), keepit_target("keepit-b", sim_b)], global_=FAST
    )
    exporter = await exporters(config)
    await exporter.wait_for(lambda status: status == 200, what="ready")
    return Pair(exporter, sim_a, sim_b)


async def stable(exporter: ExporterProcess, read: Callable[[], Awaitable[Any]]) -> tuple[bytes, Any]:
    """`read()` bracketed by two scrapes of /metrics whose backup_job_* lines are equal.

    Between collections the job series do not change (the simulators' clocks
    stand still); across one, only backup_job_running_seconds moves, and only
    forward. So equal brackets mean no collection changed anything in between.
    """
    deadline = asyncio.get_running_loop().time() + 20
    while asyncio.get_running_loop().time() < deadline:
        _, before, _ = await exporter.get("/metrics")
        value = await read()
        _, after, _ = await exporter.get("/metrics")
        if job_lines(before) == job_lines(after):
            return before, value
        await asyncio.sleep(0.05)
    raise AssertionError("the job series never stood still for three requests")


# --- /probe ------------------------------------------------------------------------


async def test_probe_returns_only_the_asked_target(pair: Pair) -> None:
    exporter = pair.exporter

    async def both() -> tuple[bytes, bytes]:
        status_a, body_a, headers = await exporter.get("/probe?target=keepit-a")
        status_b, body_b, _ = await exporter.get("/probe?target=keepit-b")
        assert status_a == status_b == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return body_a, body_b

    metrics, (body_a, body_b) = await stable(exporter, both)
    for name, body in (("keepit-a", body_a), ("keepit-b", body_b)):
        samples = parse_exposition(body.decode())
        assert select(samples, "backup_target_up", target=name)[0][1] == 1
        assert select(samples, "backup_job_runs_total", target=name)
        assert all(lab.get("target") == name for _, lab, _ in samples), name
        # One target's series only: none of the exporter's own.
        assert not [n for n, _, _ in samples if n.startswith(("process_", "backup_exporter_"))]
        check = promtool_check(body)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    # Together the two probes hold exactly the job series of /metrics.
    assert sorted(job_lines(body_a) + job_lines(body_b)) == job_lines(metrics)
    assert set(job_lines(body_a)).isdisjoint(job_lines(body_b))


async def test_probe_without_a_known_target_is_400(
    tmp_path: Path, aiohttp_server: ServerFactory, exporters: Callable[[Path], Awaitable[ExporterProcess]]
) -> None:
    sim = await aiohttp_server(keepit_sim_app())
    config = write_config(tmp_path / "config.yaml", [keepit_target("keepit-a", sim)], global_=FAST)
    exporter = await exporters(config)
    await exporter.wait_for(lambda status: status == 200, what="ready")
    status, _, _ = await exporter.get("/probe?target=keepit-a")
    assert status == 200
    for query in ("", "?target=", "?target=nope", "?target=keepit-a%20", "?target=KEEPIT-A", "?module=keepit-a"):
        status, body, _ = await exporter.get("/probe" + query)
        assert status == 400, query
        assert b"backup_" not in body, query


# --- /-/ready and /-/healthy -------------------------------------------------------


async def test_ready_only_once_every_target_was_tried(
    tmp_path: Path, aiohttp_server: ServerFactory, exporters: Callable[[Path], Awaitable[ExporterProcess]]
) -> None:
    fast = await aiohttp_server(keepit_sim_app())
    held = await aiohttp_server(keepit_sim_app())
    # The held target's first request outlasts its 3 s timeout; later ones are quick.
    await sim_post(held, "/_sim/fault", {"mode": "slow", "delay": 4.5, "count": 1})
    config = write_config(
        tmp_path / "config.yaml", [keepit_target("keepit-fast", fast), keepit_target("keepit-held", held)], global_=FAST
    )
    exporter = await exporters(config)

    async def healthy() -> None:
        status, _, _ = await exporter.get("/-/healthy")
        assert status == 200

    # keepit-fast is collected in its first 1.5 s; keepit-held cannot be tried before 1.5 + 3 s.
    await exporter.wait_for(metric=lambda s: "keepit-fast" in tried(s), what="fast target tried")
    status, body, _ = await exporter.get("/-/ready")
    samples = await exporter.metrics()
    assert status == 503, body
    assert tried(samples) == {"keepit-fast"}
    await healthy()

    await exporter.wait_for(lambda status: status == 200, what="ready", within=15)
    await healthy()
    samples = await exporter.metrics()
    assert tried(samples) == {"keepit-fast", "keepit-held"}
    # Tried, not necessarily successful: the held target timed out.
    assert select(samples, "backup_target_up", target="keepit-held")[0][1] == 0
    assert select(samples, "backup_target_collection_errors_total", target="keepit-held", reason="timeout")[0][1] == 1
    assert select(samples, "backup_target_up", target="keepit-fast")[0][1] == 1


# --- the status page ---------------------------------------------------------------


HOSTILE = "<script>alert('pwned')</script>"


async def hostile_vendor(aiohttp_server: ServerFactory) -> TestServer:
    """Answers the account request with markup: the error text then quotes it."""

    async def users(request: web.Request) -> web.Response:
        return web.Response(text=HOSTILE, content_type="application/xml")

    app = web.Application()
    app.router.add_get("/users/", users)
    return await aiohttp_server(app)


async def test_status_page_lists_targets_and_escapes_errors(
    tmp_path: Path, aiohttp_server: ServerFactory, exporters: Callable[[Path], Awaitable[ExporterProcess]]
) -> None:
    good = await aiohttp_server(keepit_sim_app())
    garbage = await aiohttp_server(keepit_sim_app())
    await sim_post(garbage, "/_sim/fault", {"mode": "garbage"})
    hostile = await hostile_vendor(aiohttp_server)
    names = ["keepit-good", "keepit-garbage", "keepit-hostile"]
    config = write_config(
        tmp_path / "config.yaml",
        [keepit_target(n, s) for n, s in zip(names, (good, garbage, hostile), strict=True)],
        global_=FAST,
    )
    exporter = await exporters(config)
    await exporter.wait_for(lambda status: status == 200, what="ready")

    status, body, headers = await exporter.get("/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    page = body.decode()
    rows = {name: _row(page, name) for name in names}
    targets_table = page[: page.index("<h2>Jobs failing")]
    for name in names:
        assert targets_table.count(f"<td>{name}</td>") == 1, name
        assert "<td>keepit</td>" in rows[name]
    assert 'data-state="up"' in rows["keepit-good"]
    assert ">up<" in rows["keepit-good"]
    assert 'data-state="down"' in rows["keepit-garbage"]
    assert ">DOWN<" in rows["keepit-garbage"]
    assert 'data-state="down"' in rows["keepit-hostile"]
    assert ">DOWN<" in rows["keepit-hostile"]
    assert "malformed XML" in rows["keepit-garbage"]
    # The vendor's markup is shown as text, never as markup.
    assert "got &lt;script&gt;" in rows["keepit-hostile"], rows["keepit-hostile"]
    assert "<script" not in page
    # Every cell opened is closed: the error text did not break the table.
    for name in names:
        assert rows[name].count("<td") == rows[name].count("</td>")


def _row(page: str, name: str) -> str:
    start = page.index(f'<tr data-target="{name}"')
    return page[start : page.index("</tr>", start)]


async def test_status_page_lists_failing_and_overdue_jobs(pair: Pair) -> None:
    """SPEC 7: the page shows "the jobs currently failing or past their RPO".
    The simulator's Salesforce connector has failed every backup for 3 days
    (failing, and past its 26 h RPO); Google Workspace's last backup failed."""
    samples = await pair.exporter.metrics()
    failing = {
        lab["job_name"].strip()
        for lab, v in select(samples, "backup_job_last_status", target="keepit-a", status="failed")
        if v == 1
    }
    assert {"Salesforce Production", "Google Workspace"} <= failing  # the exporter knows them
    _, body, _ = await pair.exporter.get("/")
    page = body.decode()
    jobs_table = page[page.index('<table id="jobs">') :]
    for job in ("Salesforce Production", "Google Workspace"):
        assert f'<tr data-target="keepit-a" data-job="{job}" data-problems="failed' in jobs_table, job


# --- gzip ----------------------------------------------------------------------------


async def test_metrics_gzip_matches_the_plain_body(pair: Pair) -> None:
    async def gzipped() -> tuple[bytes, dict[str, str]]:
        status, body, headers = await pair.exporter.get(
            "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        )
        assert status == 200
        return body, headers

    plain, (compressed, headers) = await stable(pair.exporter, gzipped)
    assert headers.get("Content-Encoding") == "gzip"
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    unzipped = gzip.decompress(compressed)
    assert job_lines(unzipped) == job_lines(plain)
    assert len(job_lines(plain)) > 50
    assert len(compressed) < len(unzipped) / 3
    # Without gzip in Accept-Encoding, a plain body.
    _, body, headers = await pair.exporter.get(
        "/metrics", headers={"Accept-Encoding": "identity"}, auto_decompress=False
    )
    assert "Content-Encoding" not in headers
    assert body.startswith(b"# HELP ")


# --- /-/reload -----------------------------------------------------------------------


async def test_reload_is_post_only_and_keeps_targets_running(pair: Pair) -> None:
    exporter = pair.exporter
    status, _, _ = await exporter.get("/-/reload")
    assert status == 405
    before = await exporter.metrics()
    logins = [(await sim_requests(s)).get("GET /users/") for s in (pair.sim_a, pair.sim_b)]
    assert logins == [1, 1]  # the account is looked up once per client

    status, text = await exporter.post("/-/reload")
    assert status == 200, text
    assert "configuration reloaded" in exporter.logs()
    # No target was restarted: still ready, nothing lost, counters unchanged.
    status, _, _ = await exporter.get("/-/ready")
    assert status == 200
    after = await exporter.metrics()
    for name in ("keepit-a", "keepit-b"):
        assert select(after, "backup_target_up", target=name)[0][1] == 1
        runs = runs_by_job(before, name)
        assert runs
        assert runs_by_job(after, name) == runs
    assert select(after, "backup_exporter_config_last_reload_successful")[0][1] == 1

    # Both targets poll again with the clients they had: no new account lookup.
    devices = [(await sim_requests(s)).get("GET /users/{acct}/devices", 0) for s in (pair.sim_a, pair.sim_b)]
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        now = [(await sim_requests(s)).get("GET /users/{acct}/devices", 0) for s in (pair.sim_a, pair.sim_b)]
        if all(n > d for n, d in zip(now, devices, strict=True)):
            break
        assert asyncio.get_running_loop().time() < deadline, "targets stopped polling after the reload"
        await asyncio.sleep(0.1)
    assert [(await sim_requests(s)).get("GET /users/") for s in (pair.sim_a, pair.sim_b)] == [1, 1]


# --- max_concurrency -------------------------------------------------------------------

# Four targets, each on its own simulator that holds every request 0.6 s: a
# collection (5 requests, one after another) then takes >= 3 s, within the 4 s
# timeout. The first polls start spread over the 4 s interval, 1 s apart at
# most, so without a bound the first two collections are certain to overlap.
SLOW_DELAY = 0.6
SLOW = {"interval": "4s", "timeout": "4s"}


async def _slow_targets(
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    exporters: Callable[[Path], Awaitable[ExporterProcess]],
    count: int,
    **global_: object,
) -> tuple[ExporterProcess, RequestTimes]:
    times = RequestTimes()
    targets = []
    for index in range(count):
        server = await aiohttp_server(keepit_sim_app(times=times, index=index))
        await sim_post(server, "/_sim/fault", {"mode": "slow", "delay": SLOW_DELAY})
        # One connector: a fixed five requests per first collection.
        targets.append(keepit_target(f"keepit-{index}", server, connectors=["Salesforce Production"]))
    config = write_config(tmp_path / "config.yaml", targets, global_={**SLOW, **global_})
    return await exporters(config), times


@pytest.mark.parametrize("limit", [1, 2])
async def test_max_concurrency_bounds_parallel_collections(
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    exporters: Callable[[Path], Awaitable[ExporterProcess]],
    limit: int,
) -> None:
    exporter, times = await _slow_targets(tmp_path, aiohttp_server, exporters, 4, max_concurrency=limit)
    await exporter.wait_for(metric=lambda s: len(tried(s)) >= 2, what="two targets collected", within=30)
    samples = await exporter.metrics()
    # No timeouts: a request abandoned by the exporter would go on in the simulator.
    for lab, value in select(samples, "backup_target_up"):
        assert value == 1, (lab, exporter.logs()[-3000:])
    assert not [v for _, v in select(samples, "backup_target_collection_errors_total") if v]
    assert len(times.done) >= 10
    # With limit 2 the count also proves the measurement: the two first polls did overlap.
    assert times.max_parallel_simulators() == limit, times.done


async def test_target_last_success_is_when_the_collection_ended(
    tmp_path: Path, aiohttp_server: ServerFactory, exporters: Callable[[Path], Awaitable[ExporterProcess]]
) -> None:
    """backup_target_last_success_timestamp_seconds: "When the last successful
    collection of the target ended" (its HELP and the README)."""
    exporter, times = await _slow_targets(tmp_path, aiohttp_server, exporters, 1)
    await exporter.wait_for(metric=lambda s: len(tried(s)) == 1, what="collected")
    samples = await exporter.metrics()
    first_collection = list(times.done)
    assert select(samples, "backup_target_up")[0][1] == 1
    last_success = select(samples, "backup_target_last_success_timestamp_seconds")[0][1]
    duration = select(samples, "backup_target_collection_duration_seconds")[0][1]
    started = min(start for _, start, _ in first_collection)
    ended = max(end for _, _, end in first_collection)
    assert duration >= ended - started - 0.05
    assert last_success <= time.time()
    assert last_success >= ended - 0.05, (
        f"last success {last_success:.2f} is {ended - last_success:.2f}s before the collection's "
        f"last response ({ended:.2f}); its first request came at {started:.2f}"
    )
