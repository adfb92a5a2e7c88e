"""Run the real exporter as a subprocess and read what it serves.

Used by the end-to-end tests: nothing of the exporter is imported or mocked,
it is started as an operator would start it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml
from aiohttp.test_utils import TestServer

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_exposition(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample; a deliberately small, independent parser."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"unparseable exposition line: {line!r}"
        labels = dict(LABEL.findall(match.group(2) or ""))
        samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def select(
    samples: Sequence[tuple[str, dict[str, str], float]], name: str, **labels: str
) -> list[tuple[dict[str, str], float]]:
    return [(lab, v) for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]


def promtool_check(body: bytes) -> subprocess.CompletedProcess[bytes]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make test` installs Debian's prometheus package"
    return subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False)


class ExporterProcess:
    def __init__(self, config_file: Path, storage: Path, *, extra_args: Sequence[str] = ()) -> None:
        self.config_file = config_file
        self.storage = storage
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.log_path = storage.parent / f"exporter-{self.port}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={self.config_file}",
            f"--storage.path={self.storage}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=debug",
            *self.extra_args,
            stdout=self._log,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        await self.wait_for(lambda s: s == 200, path="/-/healthy", what="healthy")

    async def get(self, path: str, **kwargs: object) -> tuple[int, bytes, dict[str, str]]:
        async with (
            aiohttp.ClientSession(auto_decompress=kwargs.pop("auto_decompress", True)) as session,  # type: ignore[arg-type]
            session.get(self.url + path, **kwargs) as resp,  # type: ignore[arg-type]
        ):
            return resp.status, await resp.read(), dict(resp.headers)

    async def post(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.post(self.url + path) as resp:
            return resp.status, await resp.text()

    async def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        status, body, _ = await self.get("/metrics")
        assert status == 200
        return parse_exposition(body.decode())

    async def wait_for(
        self,
        check: Callable[[int], bool] | None = None,
        *,
        path: str = "/-/ready",
        metric: Callable[[list[tuple[str, dict[str, str], float]]], bool] | None = None,
        within: float = 30.0,
        what: str = "ready",
    ) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"exporter exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if metric is not None:
                    if metric(await self.metrics()):
                        return
                else:
                    status, _, _ = await self.get(path)
                    if check is None or check(status):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"exporter not {what} within {within}s:\n{self.logs()[-4000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc and self.proc.returncode is not None else 0
        self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout=15)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        self._log.close()
        return code


# --- helpers for tests that run a simulator in-process (pytest-aiohttp's aiohttp_server) ---


def server_url(server: TestServer) -> str:
    """The base URL of an aiohttp TestServer, without the trailing slash."""
    return str(server.make_url("")).rstrip("/")


async def sim_post(server: TestServer, path: str, payload: dict[str, object]) -> None:
    """POST a JSON control request (/_sim/fault, /_sim/clock) to a simulator."""
    async with aiohttp.ClientSession() as session, session.post(server_url(server) + path, json=payload) as resp:
        assert resp.status == 200, await resp.text()


def write_config(
    path: Path,
    targets: Sequence[Mapping[str, object]],
    *,
    global_: Mapping[str, object] | None = None,
    mode: int = 0o600,
) -> Path:
    """A YAML config with the given targets and `global` keys, readable only by its owner by default."""
    config: dict[str, object] = {"targets": [dict(t) for t in targets]}
    if global_:
        config["global"] = dict(global_)
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    path.chmod(mode)
    return path


def unescape_label_value(value: str) -> str:
    """The label value as written in the exposition (`\\\\`, `\\"`, `\\n` escapes) back to the raw string."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


async def kill_exporter(process: ExporterProcess) -> int:
    """SIGKILL: no shutdown code runs, as with `kill -9`, the OOM killer or a
    node lost mid-write. Returns the exit code (-9)."""
    assert process.proc is not None
    process.proc.kill()
    return await reap_exporter(process)


async def reap_exporter(process: ExporterProcess) -> int:
    """The exit code of an exporter that something else has signalled. (Not
    `kill()` on a process that may be dead already: Popen polls before it
    signals, reaping the child behind asyncio's back, which then reports 255.)"""
    assert process.proc is not None
    code = await process.proc.wait()
    process._log.close()
    return code


_PROJECT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str
    # stdout as written, for checks of the bytes (promtool).
    raw_stdout: bytes = b""

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


async def run_cli(*args: str, cwd: Path, within: float = 60) -> CliResult:
    """Run the exporter to completion without blocking the event loop (a
    simulator it talks to may be served by this same loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(_PROJECT), "PYTHONUNBUFFERED": "1"},
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), within)  # a hang guard only
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"exporter {' '.join(args)} did not exit within {within}s") from None
    assert proc.returncode is not None
    return CliResult(proc.returncode, stdout.decode(), stderr.decode(), stdout)
