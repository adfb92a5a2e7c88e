"""Load and soak: /metrics keeps answering while every target fails slowly and
100 scrapers hit it at once; thousands of collections in accelerated time keep
memory and state bounded.

Only correctness is asserted, never speed: the machine is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from exporter.config import parse_config
from exporter.exposition import Exposition
from exporter.metrics import FAMILIES
from exporter.poller import TargetCollector
from exporter.redact import Redactor
from exporter.simulators import SIMULATORS
from exporter.state import OVERLAP, SEEN_RUN_MARGIN, TargetState
from exporter.store import Store
from exporter.vendors import VENDORS
from tests.harness import ExporterProcess, parse_exposition, promtool_check, select, server_url, write_config

ALL_VENDORS = ("keepit", "veeam", "commvault", "avepoint")
SCRAPERS = 100
SCRAPE_SECONDS = 4.0
COMPLETE_BODY_END = b"\nbackup_exporter_targets 8.0\n"

ServerFactory = Callable[..., Awaitable[TestServer]]


# --- every target failing slowly, 100 scrapers ------------------------------------------


@pytest.fixture
async def blackhole() -> AsyncIterator[str]:
    """A port that accepts connections and never answers, as a vendor whose
    proxy is up but whose backend is stuck."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@dataclass
class Scrapes:
    statuses: dict[str, list[int]] = field(default_factory=lambda: {"/metrics": [], "/-/healthy": []})
    errors: list[str] = field(default_factory=list)
    incomplete: int = 0
    sample: bytes = b""


async def scrape(url: str, path: str, until: float, scrapes: Scrapes) -> None:
    """One scraper: its own connection, fetching `path` back to back until `until`."""
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=30)  # a hang guard, not a latency bound
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while loop.time() < until:
            try:
                async with session.get(url + path) as resp:
                    body = await resp.read()
                    scrapes.statuses[path].append(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                scrapes.errors.append(f"{path}: {type(exc).__name__}: {exc}")
                continue
            if path == "/metrics":
                # The exporter's own series come last: a body that ends with
                # them was sent whole.
                if not body.endswith(COMPLETE_BODY_END):
                    scrapes.incomplete += 1
                scrapes.sample = body
            else:
                await asyncio.sleep(0.05)


@pytest.mark.e2e
async def test_metrics_keep_serving_while_every_target_fails_slowly(
    tmp_path: Path, aiohttp_server: ServerFactory, blackhole: str
) -> None:
    targets: list[dict[str, Any]] = []
    for vendor in ALL_VENDORS:
        spec = SIMULATORS[vendor]
        server = await aiohttp_server(spec.create_app(now=datetime.now(UTC)))
        # Three times the targets' timeout on every vendor request.
        async with aiohttp.ClientSession() as session:
            fault = {"mode": "slow", "delay": 3}
            async with session.post(server_url(server) + "/_sim/fault", json=fault) as resp:
                assert resp.status == 200
        slow = spec.demo_target(server_url(server))
        silent = spec.demo_target(blackhole)
        slow["name"], silent["name"] = f"{vendor}-slow", f"{vendor}-silent"
        targets += [slow, silent]
    config = write_config(
        tmp_path / "config.yaml",
        targets,
        global_={"interval": "1s", "timeout": "1s", "max_concurrency": len(targets)},
    )
    exporter = ExporterProcess(config, tmp_path / "data")
    await exporter.start()
    try:
        scrapes = Scrapes()
        until = asyncio.get_running_loop().time() + SCRAPE_SECONDS
        await asyncio.gather(
            *(scrape(exporter.url, "/metrics", until, scrapes) for _ in range(SCRAPERS)),
            scrape(exporter.url, "/-/healthy", until, scrapes),
        )
        final = await exporter.metrics()
    finally:
        await exporter.stop()

    assert scrapes.errors == []
    assert scrapes.incomplete == 0
    assert len(scrapes.statuses["/metrics"]) >= SCRAPERS
    assert set(scrapes.statuses["/metrics"]) == {200}
    assert scrapes.statuses["/-/healthy"]
    assert set(scrapes.statuses["/-/healthy"]) == {200}
    result = promtool_check(scrapes.sample)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    parse_exposition(scrapes.sample.decode())
    # The premise: every target was failing, on its timeout, all along.
    for target in targets:
        assert select(final, "backup_target_up", target=target["name"])[0][1] == 0, target["name"]
        [(_, timeouts)] = select(
            final, "backup_target_collection_errors_total", target=target["name"], reason="timeout"
        )
        assert timeouts >= 1, target["name"]
        assert not select(final, "backup_job_runs_total", target=target["name"])


# --- soak: thousands of collections in accelerated time --------------------------------

# Each round collects once from every soak vendor; the first WARMUP_ROUNDS
# fetch the history and reach the steady state that memory is measured from.
SOAK_VENDORS = ("commvault", "veeam")
WARMUP_ROUNDS = 150
ROUNDS = 1050
# Resident memory may grow by this much after the warm-up...
RSS_GROWTH_LIMIT = 5 * 1024 * 1024
# ...and the interpreter's live allocations by this many blocks: a leak of
# five small objects per collection would pass it. (tracemalloc would name
# the culprit, but slows every allocation several-fold: a soak this long
# with it would take minutes, so the cheap counters are the test.)
BLOCKS_GROWTH_LIMIT = 10_000

_SIMULATOR_MAIN = """
import asyncio, sys
from datetime import datetime
from exporter.simulators import SIMULATORS
from exporter.simulators.base import start_simulator

async def main():
    app = SIMULATORS[sys.argv[1]].create_app(now=datetime.fromisoformat(sys.argv[2]))
    _, url = await start_simulator(app)
    print(url, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def simulator_process(vendor: str, now: datetime) -> AsyncIterator[str]:
    """The vendor simulator in a process of its own, so that what it holds is
    not counted as the collector's memory."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SIMULATOR_MAIN, vendor, now.isoformat(), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line.startswith(b"http://"), line
        yield line.decode().strip()
    finally:
        proc.kill()
        await proc.wait()


@dataclass
class MovingClock:
    """The collector's now, moved in step with its simulator's."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class SoakTarget:
    collector: TargetCollector
    url: str
    clock: MovingClock
    failures: int = 0
    max_seen_warm: int = 0
    max_seen_after: int = 0
    max_jobs_warm: int = 0
    max_jobs_after: int = 0


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def memory_in_use() -> tuple[int, int]:
    """Resident bytes and the interpreter's allocated blocks, after a full collection."""
    gc.collect()
    return rss_bytes(), sys.getallocatedblocks()


def step_seconds(rng: random.Random, round_: int) -> float:
    """Mostly an hour or a few (a poll that brings a run or two, runs leaving the
    vendor's 30-day window, seen run ids pruned every round); now and then a
    three-day gap, as after an outage, which brings hundreds at once."""
    if round_ % 97 == 96:
        return 3 * 86400
    return rng.uniform(1, 6) * 3600


async def collect_round(control: aiohttp.ClientSession, targets: list[SoakTarget], seconds: float) -> None:
    async def one(target: SoakTarget) -> None:
        async with control.post(target.url + "/_sim/clock", json={"advance": seconds}) as resp:
            assert resp.status == 200, await resp.text()
        target.clock.now += timedelta(seconds=seconds)
        if not await target.collector.collect_once():
            target.failures += 1

    await asyncio.gather(*(one(t) for t in targets))


def track_sizes(target: SoakTarget, *, warm: bool) -> None:
    state = target.collector.state
    if warm:
        target.max_seen_warm = max(target.max_seen_warm, len(state.seen_runs))
        target.max_jobs_warm = max(target.max_jobs_warm, len(state.jobs))
    else:
        target.max_seen_after = max(target.max_seen_after, len(state.seen_runs))
        target.max_jobs_after = max(target.max_jobs_after, len(state.jobs))


async def test_soak_keeps_memory_and_state_bounded(tmp_path: Path) -> None:
    rng = random.Random(20261204)
    now = datetime.now(UTC).replace(microsecond=0)
    store = Store(tmp_path)
    await store.open()
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(simulator_process(v, now)) for v in SOAK_VENDORS]
        document = {
            "global": {"interval": "1m", "timeout": "30s", "lookback": "45d"},
            "targets": [SIMULATORS[v].demo_target(url) for v, url in zip(SOAK_VENDORS, urls, strict=True)],
        }
        config = parse_config(yaml.safe_dump(document), "<soak>")
        exposition = Exposition(FAMILIES)
        redact = Redactor(config.secrets())
        targets: list[SoakTarget] = []
        for target_config, url in zip(config.targets, urls, strict=True):
            clock = MovingClock(now)
            collector = TargetCollector(
                target_config,
                VENDORS[target_config.vendor],
                config,
                TargetState(name=target_config.name),
                store,
                exposition,
                redact,
                clock=clock,
            )
            soak = SoakTarget(collector, url, clock)
            targets.append(soak)
            stack.push_async_callback(soak.collector.close)
        control = await stack.enter_async_context(aiohttp.ClientSession())

        for round_ in range(WARMUP_ROUNDS):
            await collect_round(control, targets, step_seconds(rng, round_))
            for target in targets:
                track_sizes(target, warm=True)
        rss_before, blocks_before = memory_in_use()
        for round_ in range(WARMUP_ROUNDS, ROUNDS):
            await collect_round(control, targets, step_seconds(rng, round_))
            for target in targets:
                track_sizes(target, warm=False)
        rss_after, blocks_after = memory_in_use()

    collections = sum(t.collector.collections for t in targets)
    simulated = targets[0].clock.now - now
    print(
        f"\nsoak: {collections} collections over {simulated.days} simulated days "
        f"({', '.join(SOAK_VENDORS)}); after warm-up ({WARMUP_ROUNDS} rounds) "
        f"RSS {rss_before / 2**20:.2f} -> {rss_after / 2**20:.2f} MiB, "
        f"allocated blocks {blocks_before} -> {blocks_after}; "
        + "; ".join(
            f"{t.collector.target.name}: seen runs max {t.max_seen_warm} warm-up / {t.max_seen_after} after, "
            f"jobs {t.max_jobs_warm} / {t.max_jobs_after}, failures {t.failures}"
            for t in targets
        )
    )
    assert collections >= 2000
    assert all(t.failures == 0 for t in targets)
    assert rss_after - rss_before < RSS_GROWTH_LIMIT
    assert blocks_after - blocks_before < BLOCKS_GROWTH_LIMIT
    horizon = (OVERLAP + SEEN_RUN_MARGIN).total_seconds()
    for target in targets:
        state = target.collector.state
        # The run ids kept are those a later poll can still return, no more.
        assert state.watermark is not None
        assert min(state.seen_runs.values()) >= state.watermark - horizon
        assert target.max_seen_after <= 2 * target.max_seen_warm
        assert target.max_jobs_after <= target.max_jobs_warm
        assert sum(sum(job.runs_total.values()) for job in state.jobs.values()) > len(state.seen_runs)
    # What was pruned from memory was pruned from the database too.
    await store.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        rows = dict(conn.execute("SELECT target, count(*) FROM seen_runs GROUP BY target").fetchall())
    conn.close()
    assert rows == {t.collector.target.name: len(t.collector.state.seen_runs) for t in targets}
