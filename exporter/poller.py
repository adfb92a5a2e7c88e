"""Collection: one asyncio task per target, on its own interval with jitter.

A target's next poll is scheduled after its current one ends, so polls of one
target never overlap; a shared semaphore bounds how many run at once. A failed
collection changes only the target's health: job series keep their last known
values (they are facts about the past) and `backup_target_up` drops to 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from exporter.config import Config, TargetConfig
from exporter.exposition import Exposition
from exporter.metrics import render_target
from exporter.model import Collection, JobKey
from exporter.redact import Redactor
from exporter.state import TargetHealth, TargetState, apply_collection
from exporter.store import Store, StoreError
from exporter.vendors.base import (
    CollectionError,
    HttpClient,
    ParseError,
    TimeoutCollectionError,
    VendorClient,
    VendorSpec,
    build_ssl_context,
)

log = logging.getLogger(__name__)

# The first poll of each target is spread over this many seconds (at most its
# interval), so a restart with hundreds of targets does not hit every vendor at once.
FIRST_POLL_SPREAD_SECONDS = 10.0
JITTER_FRACTION = 0.1


class TargetCollector:
    """Collects one target: owns its HTTP session, vendor client, state and health."""

    def __init__(
        self,
        target: TargetConfig,
        spec: VendorSpec,
        config: Config,
        state: TargetState,
        store: Store,
        exposition: Exposition,
        redact: Redactor,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.target = target
        self.config = config
        self.state = state
        self.health = TargetHealth()
        self._store = store
        self._exposition = exposition
        self._redact = redact
        self._clock = clock
        self._http = HttpClient(
            target.url,
            ssl_context=build_ssl_context(target.tls.ca_file, target.tls.insecure_skip_verify),
        )
        self.client: VendorClient = spec.client(target, self._http)
        self._protects = spec.protects
        self._requests_seen: dict[str, int] = {}
        self.collections = 0
        self.last_summary: Mapping[str, int] = {}

    def rpo_for(self, key: JobKey) -> timedelta | None:
        """The job's RPO; None for job types that create no recovery point."""
        if not self._protects(key.job_type):
            return None
        return self.config.rpo_for(self.target, key)

    def publish(self) -> None:
        """Render this target's series into the shared exposition."""
        fragments = render_target(self.target, self.state, self.health, self.rpo_for, time.time())
        self._exposition.set_target(self.target.name, fragments)

    async def collect_once(self) -> bool:
        """One collection, bounded by the target's timeout. Never raises (but CancelledError)."""
        try:
            return await self._collect_and_apply()
        except Exception as exc:
            # A bug of ours in applying or publishing a collection: the target
            # is reported down with a counted error and keeps being polled,
            # instead of its task dying silently with the last values frozen.
            log.exception("internal error applying a collection", extra={"target": self.target.name})
            self._failed(ParseError(f"internal error ({type(exc).__name__}) applying the collection; see the log"))
            with contextlib.suppress(Exception):
                self.publish()
            return False

    async def _collect_and_apply(self) -> bool:
        now = self._clock()
        since = self.state.since(now, self.target.lookback)
        started = time.monotonic()
        error: CollectionError | None = None
        timeout = self.target.timeout.total_seconds()
        self._http.deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout(timeout):
                collection = await self.client.collect(since, now)
        except TimeoutError:
            error = _timeout_error(self.target)
        except CollectionError as exc:
            error = exc
        except Exception as exc:
            # A vendor payload we did not foresee must not kill the target's task.
            log.exception("unexpected error collecting target", extra={"target": self.target.name})
            error = _unexpected(exc)
        self.health.last_duration = time.monotonic() - started
        self.health.last_attempt = time.time()
        self._count_requests()
        self.collections += 1
        if error is not None:
            self._failed(error)
            self.publish()
            return False

        collection = _without_secrets(collection, self._redact)
        result = apply_collection(self.state, collection, now, job_retention=self.config.global_.job_retention)
        # When the collection ended, not when it started: `now` above is the
        # vendor query's reference time.
        self.state.last_success = time.time()
        self.last_summary = collection.summary
        try:
            await self._store.save(self.state)
        except StoreError as exc:
            # The in-memory state is right and the unsaved changes stay marked
            # dirty; the next successful save writes them.
            log.error("could not save state", extra={"target": self.target.name, "error": str(exc)})
        recovered = self.health.up is False
        first = self.health.up is None
        failed_polls = self.health.consecutive_failures
        self.health.up = True
        self.health.last_error = None
        self.health.last_error_reason = None
        self.health.consecutive_failures = 0
        if first or recovered:
            log.info(
                "target recovered" if recovered else "first collection",
                extra={
                    "target": self.target.name,
                    "vendor": self.target.vendor,
                    "jobs": len(self.state.jobs),
                    "new_runs": result.new_runs,
                    **({"failed_polls": failed_polls} if recovered else {}),
                    **{k: v for k, v in collection.summary.items()},
                },
            )
        elif result.new_jobs or result.expired_jobs:
            log.info(
                "jobs changed",
                extra={
                    "target": self.target.name,
                    "new_jobs": len(result.new_jobs),
                    "expired_jobs": len(result.expired_jobs),
                    "added": _job_names(result.new_jobs),
                    "removed": _job_names(result.expired_jobs),
                },
            )
        self.publish()
        return True

    def _failed(self, error: CollectionError) -> None:
        message = self._redact(str(error))[:500]
        self.health.errors_total[error.reason] += 1
        self.health.consecutive_failures += 1
        changed = self.health.up is not False or self.health.last_error_reason != error.reason
        self.health.up = False
        self.health.last_error = message
        self.health.last_error_reason = error.reason
        # Log on state changes only, not on every failed poll of a dead target.
        if changed:
            log.warning(
                "collection failed",
                extra={
                    "target": self.target.name,
                    "vendor": self.target.vendor,
                    "reason": error.reason,
                    "error": message,
                },
            )

    def _count_requests(self) -> None:
        for code, count in self._http.stats.by_code.items():
            delta = count - self._requests_seen.get(code, 0)
            if delta:
                self.health.requests_total[code] += delta
                self._requests_seen[code] = count

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.client.close(), timeout=10)
        except Exception as exc:
            log.warning("closing vendor session failed", extra={"target": self.target.name, "error": str(exc)})
        await self._http.close()


# Enough names to see what changed; a config change adding hundreds of jobs
# must not produce a line of hundreds of names.
_LOGGED_JOB_NAMES = 10


def _job_names(keys: Sequence[JobKey]) -> str:
    names = [f"{key.job_name}/{key.job_type}" for key in keys[:_LOGGED_JOB_NAMES]]
    more = len(keys) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _timeout_error(target: TargetConfig) -> CollectionError:
    return TimeoutCollectionError(f"collection exceeded the timeout of {target.timeout.total_seconds():.0f}s")


def _without_secrets(collection: Collection, redact: Redactor) -> Collection:
    """Vendor text can quote a credential (a failed login's message naming the
    password it was given): failure reasons and job info are kept, and so
    exported, only redacted."""
    runs = list(collection.runs)
    changed = False
    for index, run in enumerate(runs):
        if run.reason and (clean := redact(run.reason)) != run.reason:
            runs[index] = replace(run, reason=clean)
            changed = True
    info = {key: {name: redact(value) for name, value in labels.items()} for key, labels in collection.job_info.items()}
    if info != collection.job_info:
        changed = True
    return replace(collection, runs=tuple(runs), job_info=info) if changed else collection


def _unexpected(exc: Exception) -> CollectionError:
    return ParseError(f"unexpected {type(exc).__name__} while reading the vendor's answer")


class Poller:
    """Runs one task per target; applies config reloads without losing state."""

    def __init__(
        self,
        store: Store,
        exposition: Exposition,
        vendors: Mapping[str, VendorSpec],
        states: dict[str, TargetState],
    ) -> None:
        self._store = store
        self._exposition = exposition
        self._vendors = vendors
        self._states = states
        self._collectors: dict[str, TargetCollector] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._semaphore = asyncio.Semaphore(1)
        self._concurrency = 1
        self._config = Config()

    @property
    def collectors(self) -> Mapping[str, TargetCollector]:
        return self._collectors

    @property
    def ready(self) -> bool:
        """Every target has been tried at least once."""
        return all(c.health.up is not None for c in self._collectors.values())

    async def apply(self, config: Config, *, start: bool = True) -> None:
        """Start, stop or restart target tasks to match `config`; unchanged targets keep running.

        With start=False the collectors are built but not scheduled (--once).
        """
        self._config = config
        if config.global_.max_concurrency != self._concurrency:
            # Tasks holding the old semaphore release into it; new polls use the new one.
            self._semaphore = asyncio.Semaphore(config.global_.max_concurrency)
            self._concurrency = config.global_.max_concurrency
        wanted = {t.name: t for t in config.targets}
        redact = Redactor(config.secrets())
        # A target whose settings changed is restarted, but keeps its health:
        # its up/down state and error counters describe the same vendor.
        kept_health: dict[str, TargetHealth] = {}
        for name in list(self._collectors):
            if name not in wanted or wanted[name] != self._collectors[name].target:
                kept_health[name] = self._collectors[name].health
                await self._stop(name)
                if name not in wanted:
                    self._exposition.remove_target(name)
        for spread_index, (name, target) in enumerate(wanted.items()):
            if name in self._collectors:
                # Same target config; overrides or globals may still have changed.
                self._collectors[name].config = config
                self._collectors[name].publish()
                continue
            state = self._states.setdefault(name, TargetState(name=name))
            collector = TargetCollector(
                target, self._vendors[target.vendor], config, state, self._store, self._exposition, redact
            )
            if name in kept_health:
                collector.health = kept_health[name]
            self._collectors[name] = collector
            # Last known job values are facts about the past: serve them at once.
            collector.publish()
            if not start:
                continue
            delay = _first_delay(spread_index, len(wanted), target)
            self._tasks[name] = asyncio.create_task(self._loop(collector, delay), name=f"poll:{name}")

    async def _loop(self, collector: TargetCollector, delay: float) -> None:
        collector.health.next_poll = time.time() + delay
        await asyncio.sleep(delay)
        while True:
            async with self._semaphore:
                await collector.collect_once()
            interval = collector.target.interval.total_seconds()
            wait = interval * random.uniform(1 - JITTER_FRACTION, 1 + JITTER_FRACTION)
            collector.health.next_poll = time.time() + wait
            await asyncio.sleep(wait)

    async def collect_all_once(self) -> dict[str, bool]:
        """--once: every target once, concurrently within max_concurrency."""

        async def one(collector: TargetCollector) -> bool:
            async with self._semaphore:
                return await collector.collect_once()

        results = await asyncio.gather(*(one(c) for c in self._collectors.values()))
        return dict(zip(self._collectors, results, strict=True))

    async def _stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        collector = self._collectors.pop(name, None)
        if collector is not None:
            await collector.close()

    async def stop(self) -> None:
        for name in list(self._collectors):
            await self._stop(name)


def _first_delay(index: int, count: int, target: TargetConfig) -> float:
    spread = min(FIRST_POLL_SPREAD_SECONDS, target.interval.total_seconds())
    if count <= 1:
        return 0.0
    return spread * index / count + random.uniform(0, spread / count)
