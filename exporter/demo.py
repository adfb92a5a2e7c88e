"""--demo: every vendor simulator on loopback, and a config collecting from them."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from exporter.config import Config, parse_config
from exporter.simulators import SIMULATORS
from exporter.simulators.base import start_simulator

log = logging.getLogger(__name__)

# Short enough to watch things change, long enough not to spin the CPU.
DEMO_GLOBAL: dict[str, Any] = {"interval": "30s", "timeout": "25s", "lookback": "14d", "max_concurrency": 4}


class DemoSimulators:
    """Starts the simulators; `config()` returns the demo configuration."""

    def __init__(self, global_overrides: dict[str, Any] | None = None) -> None:
        self._runners: list[web.AppRunner] = []
        self._targets: list[dict[str, Any]] = []
        self.urls: dict[str, str] = {}
        self._global = {**DEMO_GLOBAL, **(global_overrides or {})}

    async def __aenter__(self) -> DemoSimulators:
        for vendor, simulator in SIMULATORS.items():
            runner, url = await start_simulator(simulator.create_app())
            self._runners.append(runner)
            self.urls[vendor] = url
            self._targets.append(simulator.demo_target(url))
            log.info("demo simulator started", extra={"vendor": vendor, "url": url})
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for runner in self._runners:
            await runner.cleanup()

    def config(self) -> Config:
        document = {"global": self._global, "targets": self._targets}
        return parse_config(yaml.safe_dump(document), "<demo>")
