"""The running exporter: config, state store, poller and exposition, and the
one reload routine that SIGHUP and POST /-/reload both call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, generate_latest
from prometheus_client.platform_collector import PlatformCollector

from exporter import __version__
from exporter.config import Config, ConfigError
from exporter.exposition import Exposition
from exporter.metrics import FAMILIES
from exporter.poller import Poller
from exporter.store import Store
from exporter.vendors.base import VendorSpec

log = logging.getLogger(__name__)

# The exporter's own metrics are re-rendered this often (they are O(1) in
# targets, but the cached body and its gzip are rebuilt when they change).
SELF_METRICS_INTERVAL_SECONDS = 10.0


class SelfMetrics:
    """backup_exporter_* and process_* on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        build = Gauge(
            "backup_exporter_build_info",
            "Version of backup-exporter; always 1.",
            ["version"],
            registry=self.registry,
        )
        build.labels(version=__version__).set(1)
        self.reload_ok = Gauge(
            "backup_exporter_config_last_reload_successful",
            "1 if the last configuration load succeeded; a failed reload keeps the old config.",
            registry=self.registry,
        )
        self.reload_time = Gauge(
            "backup_exporter_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            registry=self.registry,
        )
        self.targets = Gauge(
            "backup_exporter_targets", "Targets this exporter instance collects.", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ExporterService:
    def __init__(
        self,
        load_config: Callable[[], Config],
        storage_path: str | Path,
        vendors: Mapping[str, VendorSpec],
        *,
        on_config: Callable[[Config], None] = lambda config: None,
    ) -> None:
        self._load_config = load_config
        self._vendors = vendors
        self._on_config = on_config
        self.store = Store(storage_path)
        self.exposition = Exposition(FAMILIES)
        self.self_metrics = SelfMetrics()
        self.config: Config | None = None
        self.poller: Poller | None = None
        self._reload_lock = asyncio.Lock()
        self._self_task: asyncio.Task[None] | None = None
        self.started = time.time()

    async def start(self, config: Config, *, schedule: bool = True) -> None:
        """Raises StoreError when the state database cannot be opened or read."""
        await self.store.open()
        states = await self.store.load()
        self.poller = Poller(self.store, self.exposition, self._vendors, states)
        await self._apply(config, schedule=schedule)
        self._refresh_self_metrics()
        if schedule:
            self._self_task = asyncio.create_task(self._self_metrics_loop(), name="self-metrics")

    async def _apply(self, config: Config, *, schedule: bool = True) -> None:
        assert self.poller is not None
        self._on_config(config)
        await self.poller.apply(config, start=schedule)
        self.config = config
        self.self_metrics.reload_ok.set(1)
        self.self_metrics.reload_time.set(time.time())
        self.self_metrics.targets.set(len(config.targets))

    async def reload(self) -> tuple[bool, str]:
        """Validate the config file, then swap it in; a bad file keeps the old config."""
        async with self._reload_lock:
            try:
                config = await asyncio.to_thread(self._load_config)
            except ConfigError as exc:
                self.self_metrics.reload_ok.set(0)
                log.error("reload failed, keeping the previous configuration", extra={"error": str(exc)})
                self._refresh_self_metrics()
                return False, str(exc)
            await self._apply(config)
            self._refresh_self_metrics()
            log.info("configuration reloaded", extra={"targets": len(config.targets)})
            return True, "ok"

    def _refresh_self_metrics(self) -> None:
        self.exposition.set_trailer(self.self_metrics.render())

    async def _self_metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(SELF_METRICS_INTERVAL_SECONDS)
            self._refresh_self_metrics()

    @property
    def ready(self) -> bool:
        return self.poller is not None and self.poller.ready

    async def stop(self) -> None:
        if self._self_task is not None:
            self._self_task.cancel()
            await asyncio.gather(self._self_task, return_exceptions=True)
        if self.poller is not None:
            await self.poller.stop()
        await self.store.close()
