"""A real Prometheus server (Debian's package) on loopback, for end-to-end tests."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.harness import free_port


class PrometheusError(AssertionError):
    pass


class PrometheusProcess:
    """Starts `prometheus` with the given config; queries its HTTP API."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: `make test` installs Debian's prometheus package"
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            stdout=self._log,
            stderr=self._log,
        )
        await self._wait_ready()

    async def _wait_ready(self, within: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                async with aiohttp.ClientSession() as session, session.get(f"{self.url}/-/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise PrometheusError(f"prometheus not ready within {within}s:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def api(self, path: str, **params: str) -> Any:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            body = await resp.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; raises PrometheusError when the expression does not parse."""
        data = await self.api("query", query=expr)
        result = data["result"]
        # Scalars and strings come back as a single [ts, value] pair.
        return result if data["resultType"] in ("vector", "matrix") else [{"metric": {}, "value": result}]

    async def wait_for(self, expr: str, *, at_least: int = 1, within: float = 45.0) -> list[dict[str, Any]]:
        """Polls until `expr` returns at least `at_least` series (the first
        scrape comes ~6 s after start, whatever the interval)."""
        deadline = asyncio.get_running_loop().time() + within
        result: list[dict[str, Any]] = []
        while asyncio.get_running_loop().time() < deadline:
            result = await self.query(expr)
            if len(result) >= at_least:
                return result
            await asyncio.sleep(0.5)
        raise PrometheusError(f"{expr!r} returned {len(result)} series, wanted {at_least}, within {within}s")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()
