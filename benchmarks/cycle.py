"""Benchmark 6: wall time of one collection cycle of many targets against
vendors that take 100 ms to answer every request, at max_concurrency 32.

The real Poller and TargetCollectors (`Poller.collect_all_once`) collect
Keepit targets from Keepit simulators whose "slow" fault delays every vendor
request by 100 ms. The simulators run in a separate process, so their event
loop does not share the exporter's CPU time. Requests per target come from
the simulators' request log, so the ideal is exact:

    ideal = targets / max_concurrency x latency x requests per target

The figure is the median wall time of the cycles after a first one (which
logs in). Issue 8 target: within 1.5x of the ideal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from benchmarks.common import Result, verdict

LATENCY = 0.1
CONCURRENCY = 32
TARGET_RATIO = 1.5


async def _serve(apps: int) -> None:
    """Child process: `apps` slow Keepit simulators; prints their URLs, runs until stdin closes."""
    from exporter.simulators import SIMULATORS, start_simulator

    urls = []
    runners = []
    for seed in range(apps):
        runner, url = await start_simulator(SIMULATORS["keepit"].create_app(seed=seed + 1))
        runners.append(runner)
        urls.append(url)
    print(json.dumps(urls), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for runner in runners:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _simulators(apps: int) -> AsyncIterator[list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.cycle",
        str(apps),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        yield list(json.loads(line))
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _sim(session: aiohttp.ClientSession, method: str, url: str, payload: Any = None) -> Any:
    async with session.request(method, url, json=payload) as response:
        response.raise_for_status()
        return await response.json()


async def _requests(session: aiohttp.ClientSession, urls: list[str]) -> int:
    total = 0
    for url in urls:
        total += sum((await _sim(session, "GET", f"{url}/_sim/requests")).values())
        await _sim(session, "DELETE", f"{url}/_sim/requests")
    return total


def _config_text(urls: list[str], targets: int) -> str:
    from exporter.simulators import SIMULATORS

    entries = []
    for i in range(targets):
        entry = SIMULATORS["keepit"].demo_target(urls[i % len(urls)])
        entry["name"] = f"keepit-{i:03d}"
        entries.append(entry)
    return json.dumps({"global": {"max_concurrency": CONCURRENCY, "timeout": "120s"}, "targets": entries})


async def _cycles(targets: int, cycles: int, apps: int) -> tuple[list[float], float, int]:
    """Wall times of `cycles` cycles after a warm one, requests per target, and failures."""
    from exporter.config import parse_config
    from exporter.exposition import Exposition
    from exporter.metrics import FAMILIES
    from exporter.poller import Poller
    from exporter.store import Store
    from exporter.vendors import VENDORS

    async with _simulators(apps) as urls, aiohttp.ClientSession() as control:
        for url in urls:
            await _sim(control, "POST", f"{url}/_sim/fault", {"mode": "slow", "delay": LATENCY})
        config = parse_config(_config_text(urls, targets), "cycle-bench")
        with tempfile.TemporaryDirectory() as storage:
            store = Store(storage)
            await store.open()
            poller = Poller(store, Exposition(FAMILIES), VENDORS, {})
            try:
                await poller.apply(config, start=False)
                await poller.collect_all_once()  # logs in
                await _requests(control, urls)
                times: list[float] = []
                requests = 0
                failed = 0
                for _ in range(cycles):
                    started = time.perf_counter()
                    results = await poller.collect_all_once()
                    times.append(time.perf_counter() - started)
                    failed += sum(1 for ok in results.values() if not ok)
                    requests += await _requests(control, urls)
            finally:
                await poller.stop()
                await store.close()
    return times, requests / (targets * cycles), failed


async def _simulator_alone(url: str, concurrency: int, requests: int) -> float:
    """Requests per second one slow simulator serves at `concurrency`, measured
    with no exporter in the way: tells whether it can be the bottleneck."""
    async with aiohttp.ClientSession() as session:
        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with semaphore, session.get(f"{url}/users/") as response:
                await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        return requests / (time.perf_counter() - started)


async def _bench(targets: int, cycles: int, apps: int) -> list[Result]:
    times, per_target, failed = await _cycles(targets, cycles, apps)
    async with _simulators(1) as urls, aiohttp.ClientSession() as control:
        await _sim(control, "POST", f"{urls[0]}/_sim/fault", {"mode": "slow", "delay": LATENCY})
        sim_rate = await _simulator_alone(urls[0], CONCURRENCY, CONCURRENCY * 5)
    measured = statistics.median(times)
    ideal = targets / CONCURRENCY * LATENCY * per_target
    ratio = measured / ideal
    met = verdict(ratio <= TARGET_RATIO)
    return [
        Result(
            f"cycle of {targets} targets, 100 ms latency, concurrency {CONCURRENCY}",
            f"{measured:.2f} s",
            f"{ideal:.2f} s ideal",
            ratio,
            f"{per_target:.1f} requests/target, median of {len(times)} cycles, {failed} failed; "
            f"1 simulator alone: {sim_rate:.0f} req/s (ideal needs {CONCURRENCY / LATENCY:.0f}); "
            f"target <= {TARGET_RATIO}x: {met}",
        )
    ]


def bench_cycle(*, quick: bool = False) -> list[Result]:
    targets, cycles, apps = (20, 2, 1) if quick else (500, 3, 4)
    return asyncio.run(_bench(targets, cycles, apps))


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
