"""Scrape throughput and latency of /metrics (issue 8, benchmarks 1 and 2).

1. `bench_scrape`: the real exporter HTTP app (exporter/server.py, built the
   way exporter/cli.py builds it) serving ~10k and ~100k series, against a bare
   aiohttp handler returning the very same bytes (the physical limit), plain
   and gzipped. Target: exporter throughput >= 0.8x the bare handler's.
2. `bench_scrape_under_collection`: the real exporter process (`python -m
   exporter`) with 500 Keepit targets on slow simulators (every vendor request
   delayed), p99 of /metrics while collections run continuously against the
   same exporter idle. Target: loaded p99 <= 1.5x idle p99. Measured twice:
   under saturating load (wrk, as in 1.), where p99 mostly shows CPU shared
   with the collections on a small machine, and paced (PACED_RATE scrapes/s on
   one connection), the latency of single scrapes as Prometheus makes them,
   which is what waiting behind collection callbacks would show in.

Servers, simulators and the load generator each run in their own process.
The load generator is `wrk` (1 thread, a few connections, `--latency`) when
installed, else an aiohttp client in a subprocess; each Result says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Result, verdict

THROUGHPUT_TARGET = 0.8
P99_TARGET = 1.5
CONNECTIONS = 8
PACED_RATE = 20  # scrapes per second of the paced load
JOBS_PER_TARGET = 6  # ~195 series per synthetic target
GZIP_HEADERS = {"Accept-Encoding": "gzip"}
PLAIN_HEADERS = {"Accept-Encoding": "identity"}
_ENCODINGS = (("plain", PLAIN_HEADERS), ("gzip", GZIP_HEADERS))

_CTX = multiprocessing.get_context("spawn")


# --- load generation -------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    requests_per_second: float
    bytes_per_second: float
    p50: float  # seconds
    p99: float
    tool: str


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _duration(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"wrk duration {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(output: str) -> Load:
    """Requests/s, Transfer/s and the 50% and 99% lines of `wrk --latency`."""
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    transfer = re.search(r"^Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)", output, re.MULTILINE)
    if not (rps and transfer and "50" in percentiles and "99" in percentiles):
        raise ValueError(f"unexpected wrk output:\n{output}")
    return Load(
        float(rps[1]),
        float(transfer[1]) * _SIZES[transfer[2]],
        _duration(percentiles["50"]),
        _duration(percentiles["99"]),
        "wrk",
    )


def _wrk(url: str, seconds: int, headers: dict[str, str]) -> Load:
    wrk = shutil.which("wrk")
    assert wrk is not None
    command = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True, timeout=seconds + 30)
    return parse_wrk(done.stdout)


def _client_load(url: str, seconds: float, headers: dict[str, str], results: Any) -> None:
    """The fallback load generator, run in its own process."""
    import aiohttp

    async def run() -> tuple[list[float], int]:
        latencies: list[float] = []
        received = 0
        deadline = time.perf_counter() + seconds
        async with aiohttp.ClientSession(auto_decompress=False) as session:

            async def worker() -> None:
                nonlocal received
                while time.perf_counter() < deadline:
                    start = time.perf_counter()
                    async with session.get(url, headers=headers) as response:
                        received += len(await response.read())
                    latencies.append(time.perf_counter() - start)

            await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        return latencies, received

    results.put(asyncio.run(run()))


def _aiohttp_load(url: str, seconds: int, headers: dict[str, str]) -> Load:
    results = _CTX.Queue()
    process = _CTX.Process(target=_client_load, args=(url, seconds, headers, results))
    process.start()
    latencies, received = results.get(timeout=seconds + 60)
    process.join(30)
    quantiles = statistics.quantiles(latencies, n=100)
    return Load(len(latencies) / seconds, received / seconds, quantiles[49], quantiles[98], "aiohttp client")


def _paced_client(url: str, seconds: float, headers: dict[str, str], rate: float, results: Any) -> None:
    """One scrape every 1/rate s on one connection, in its own process: latency
    of single scrapes, as Prometheus makes them, rather than of a saturated server."""
    import aiohttp

    async def run() -> list[float]:
        latencies: list[float] = []
        start = time.perf_counter()
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            for tick in range(int(seconds * rate)):
                await asyncio.sleep(max(0.0, start + tick / rate - time.perf_counter()))
                begin = time.perf_counter()
                async with session.get(url, headers=headers) as response:
                    await response.read()
                latencies.append(time.perf_counter() - begin)
        return latencies

    results.put(asyncio.run(run()))


def paced_load(url: str, seconds: int, headers: dict[str, str]) -> Load:
    results = _CTX.Queue()
    process = _CTX.Process(target=_paced_client, args=(url, seconds, headers, PACED_RATE, results))
    process.start()
    latencies = results.get(timeout=seconds + 60)
    process.join(30)
    quantiles = statistics.quantiles(latencies, n=100)
    return Load(len(latencies) / seconds, 0.0, quantiles[49], quantiles[98], f"paced aiohttp client, {PACED_RATE}/s")


def load(url: str, seconds: int, headers: dict[str, str]) -> Load:
    return _wrk(url, seconds, headers) if shutil.which("wrk") else _aiohttp_load(url, seconds, headers)


# --- servers under test -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(url: str, process: SpawnProcess | None = None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and not process.is_alive():
            raise RuntimeError(f"the server for {url} exited with {process.exitcode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _serve_exporter(fragments_file: str, body_dir: str, port: int) -> None:
    """The real exporter app and service, served from the server thread as
    cli._serve does, its exposition filled with pre-rendered synthetic targets
    instead of polls."""
    from exporter.config import Config
    from exporter.httpthread import ServerThread
    from exporter.server import create_app
    from exporter.service import ExporterService
    from exporter.vendors import VENDORS

    async def main() -> None:
        config = Config()
        service = ExporterService(lambda: config, Path(body_dir) / "state", VENDORS)
        await service.start(config, schedule=False)
        for name, fragments in pickle.loads(Path(fragments_file).read_bytes()):  # noqa: ASYNC240 - before serving
            service.exposition.set_target(name, fragments)
        while (snapshot := service.exposition.snapshot()).version != service.exposition.version:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # the background rebuild; nothing to be notified by
        # The bare server serves exactly these bytes.
        (Path(body_dir) / "plain").write_bytes(snapshot.plain)
        (Path(body_dir) / "gzip").write_bytes(snapshot.gzipped)
        await ServerThread(create_app(service), "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_bare(body_dir: str, port: int) -> None:
    """The physical limit: a handler returning cached bytes, nothing else."""
    from aiohttp import web

    from exporter.exposition import CONTENT_TYPE

    plain = (Path(body_dir) / "plain").read_bytes()
    gzipped = (Path(body_dir) / "gzip").read_bytes()

    async def handler(request: web.Request) -> web.Response:
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=gzipped, headers={"Content-Type": CONTENT_TYPE, "Content-Encoding": "gzip"})
        return web.Response(body=plain, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


@contextlib.contextmanager
def _process(target: Any, *args: Any) -> Iterator[SpawnProcess]:
    process = _CTX.Process(target=target, args=args, daemon=True)
    process.start()
    try:
        yield process
    finally:
        process.terminate()
        process.join(10)


def _synthetic(targets: int, path: Path) -> None:
    from benchmarks.render import _targets
    from exporter.metrics import render_target
    from exporter.state import TargetHealth

    health, now = TargetHealth(up=True), time.time()
    rendered = [
        (target.name, render_target(target, state, health, lambda key: timedelta(hours=26), now))
        for target, state in _targets(targets, JOBS_PER_TARGET)
    ]
    path.write_bytes(pickle.dumps(rendered))


def _median(loads: list[Load]) -> Load:
    """Each figure's median over the windows."""
    return Load(
        statistics.median(x.requests_per_second for x in loads),
        statistics.median(x.bytes_per_second for x in loads),
        statistics.median(x.p50 for x in loads),
        statistics.median(x.p99 for x in loads),
        loads[0].tool,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def bench_scrape(*, quick: bool = False) -> list[Result]:
    sizes = [(5, "~1k")] if quick else [(50, "10k"), (500, "100k")]
    results: list[Result] = []
    for targets, label in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
            results += _scrape_size(targets, label, Path(tmp), quick)
    return results


def _scrape_size(targets: int, label: str, tmp: Path, quick: bool) -> list[Result]:
    _synthetic(targets, tmp / "fragments")
    exporter_port, bare_port = _free_port(), _free_port()
    results = []
    with _process(_serve_exporter, str(tmp / "fragments"), str(tmp), exporter_port) as exporter:
        exporter_url = f"http://127.0.0.1:{exporter_port}/metrics"
        _wait_http(exporter_url, exporter)
        plain = (tmp / "plain").read_bytes()
        series = sum(1 for line in plain.splitlines() if not line.startswith(b"#"))
        with _process(_serve_bare, str(tmp), bare_port) as bare:
            bare_url = f"http://127.0.0.1:{bare_port}/metrics"
            _wait_http(bare_url, bare)
            # Alternating short windows, medians: this machine's noise moves single runs by +-50%.
            rounds, seconds = (1, 1) if quick else (3, 2)
            bare_loads: dict[str, list[Load]] = {name: [] for name, _ in _ENCODINGS}
            exporter_loads: dict[str, list[Load]] = {name: [] for name, _ in _ENCODINGS}
            for _ in range(rounds):
                for name, headers in _ENCODINGS:
                    bare_loads[name].append(load(bare_url, seconds, headers))
                    exporter_loads[name].append(load(exporter_url, seconds, headers))
    for name, _ in _ENCODINGS:
        size = len((tmp / name).read_bytes())
        figure, baseline = _median(exporter_loads[name]), _median(bare_loads[name])
        ratio = figure.requests_per_second / baseline.requests_per_second
        results.append(
            Result(
                f"scrape {label} series ({series}), {name} ({size / 1e6:.2f} MB)",
                f"{figure.requests_per_second:.0f} req/s",
                f"{baseline.requests_per_second:.0f} req/s",
                ratio,
                f"exporter {figure.bytes_per_second / 1e6:.0f} MB/s p50 {_ms(figure.p50)} "
                f"p99 {_ms(figure.p99)}; bare aiohttp handler, same bytes, p50 {_ms(baseline.p50)} "
                f"p99 {_ms(baseline.p99)}; {figure.tool}, {CONNECTIONS} conns, median of {rounds}x{seconds} s; "
                f"target >= {THROUGHPUT_TARGET}x: {verdict(ratio >= THROUGHPUT_TARGET)}",
            )
        )
    return results


# --- under collection load ----------------------------------------------------------------


def _serve_keepit(port: int) -> None:
    import logging

    from aiohttp import web

    # The exporter is stopped with requests in flight; their resets are expected.
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)

    from exporter.simulators import SIMULATORS

    web.run_app(SIMULATORS["keepit"].create_app(), host="127.0.0.1", port=port, access_log=None, print=None)


def _post_json(url: str, payload: dict[str, Any]) -> None:
    import json

    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _write_config(path: Path, sims: list[str], targets: int, interval: str, timeout: str, concurrency: int) -> None:
    from exporter.simulators import SIMULATORS

    entries = []
    for index in range(targets):
        entry = SIMULATORS["keepit"].demo_target(sims[index % len(sims)])
        entry["name"] = f"keepit-{index}"
        entries.append(entry)
    document = {
        # A 2-day lookback: ~195 series per target, and a first collection light enough for a quick start.
        "global": {"interval": interval, "timeout": timeout, "lookback": "2d", "max_concurrency": concurrency},
        "targets": entries,
    }
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _wait_ready(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/-/ready", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("exporter not ready")
        time.sleep(0.2)


def bench_scrape_under_collection(*, quick: bool = False) -> list[Result]:
    """Idle first (every target collected once, then nothing due for an hour),
    then continuous collections against slow simulators: with the default
    max_concurrency (8), then with 32 (the 2 cores saturate)."""
    # Quick: one target, whose first poll is not spread over 10 s as several targets' are.
    targets, simulators, delay = (1, 1, 0.05) if quick else (500, 4, 0.2)
    rounds, seconds = (1, 1) if quick else (3, 3)
    with tempfile.TemporaryDirectory(prefix="bench-collect-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        ports = [_free_port() for _ in range(simulators)]
        for port in ports:
            stack.enter_context(_process(_serve_keepit, port))
        sims = [f"http://127.0.0.1:{port}" for port in ports]
        for sim in sims:
            _wait_http(sim + "/_sim/requests")
        config = tmp / "config.yaml"
        _write_config(config, sims, targets, "1h", "60s", 16)
        exporter, base = _start_exporter(config, tmp / "data")
        stack.callback(_stop, exporter)
        _wait_ready(base, 180)
        time.sleep(0.2)  # the last collections' rebuilds
        with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
            series = sum(1 for line in response.read().splitlines() if line.startswith(b"backup_"))
        idle = _windows(base + "/metrics", rounds, seconds)
        idle_paced = _windows(base + "/metrics", rounds, seconds, paced=True)

        for sim in sims:
            _post_json(sim + "/_sim/fault", {"mode": "slow", "delay": delay})
        results = []
        for concurrency in LOADED_CONCURRENCY[:1] if quick else LOADED_CONCURRENCY:
            _write_config(config, sims, targets, LOADED_INTERVAL, LOADED_INTERVAL, concurrency)
            os.kill(exporter.pid, signal.SIGHUP)
            # Restarted targets' first polls are spread over the interval.
            time.sleep(0.5 if quick else 3.0)
            before = _requests(sims)
            loaded = _windows(base + "/metrics", rounds, seconds)
            rate = (_requests(sims) - before) / (rounds * seconds * len(_ENCODINGS))
            loaded_paced = _windows(base + "/metrics", rounds, seconds, paced=True)
            for name, _ in _ENCODINGS:
                label = f"{targets} targets ({series} series), max_concurrency {concurrency}, {name}"
                work = (
                    f"{simulators} Keepit simulators delaying every request {delay:g} s, interval "
                    f"{LOADED_INTERVAL}: ~{rate:.0f} vendor requests/s during the measurement"
                )
                results.append(_p99_result(label, loaded[name], idle[name], work))
                results.append(
                    _p99_result(f"paced {PACED_RATE}/s, {label}", loaded_paced[name], idle_paced[name], work)
                )
    return results


def _windows(url: str, rounds: int, seconds: int, *, paced: bool = False) -> dict[str, Load]:
    """Median figures of alternating plain and gzip windows."""
    loads: dict[str, list[Load]] = {name: [] for name, _ in _ENCODINGS}
    for _ in range(rounds):
        for name, headers in _ENCODINGS:
            loads[name].append((paced_load if paced else load)(url, seconds, headers))
    return {name: _median(found) for name, found in loads.items()}


def _p99_result(label: str, loaded: Load, idle: Load, work: str) -> Result:
    ratio = loaded.p99 / idle.p99
    return Result(
        f"scrape p99 under collection, {label}",
        _ms(loaded.p99),
        _ms(idle.p99),
        ratio,
        f"{work}; loaded {loaded.requests_per_second:.0f} req/s vs idle {idle.requests_per_second:.0f}; "
        f"{loaded.tool}, median of windows; target <= {P99_TARGET}x: {verdict(ratio <= P99_TARGET)}",
    )


def _start_exporter(config: Path, storage: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [sys.executable, "-m", "exporter", "--config.file", str(config)]
    command += ["--web.listen-address", f"127.0.0.1:{port}", "--storage.path", str(storage), "--log.level", "error"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


# Every target due every 10 s, more than max_concurrency can collect against
# the slow simulators: collections queue and run back to back throughout.
# 8 is the default; at 32 collection work saturates this 2-core machine.
LOADED_INTERVAL = "10s"
LOADED_CONCURRENCY = (8, 32)


def _requests(sims: list[str]) -> int:
    import json

    total = 0
    for sim in sims:
        with urllib.request.urlopen(sim + "/_sim/requests", timeout=10) as response:
            total += sum(json.loads(response.read()).values())
    return total
