"""Command line: flags, logging, signals, and the run modes (serve, --demo,
--once, --check-config).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from exporter import __version__
from exporter.allocator import pin_mmap_threshold
from exporter.config import (
    Config,
    ConfigError,
    TargetConfig,
    describe_targets,
    load_config,
    security_warnings,
    warn_world_readable,
)
from exporter.httpthread import ServerThread
from exporter.logs import LEVELS, RedactingFilter, setup_logging
from exporter.poller import TargetCollector
from exporter.redact import Redactor
from exporter.server import create_app
from exporter.service import ExporterService
from exporter.store import StoreError
from exporter.vendors import VENDORS
from exporter.vendors.base import ConnectResult, check_connection
from exporter.webconfig import WebConfigError, load_web_config

log = logging.getLogger("exporter")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="backup-exporter",
        description="Prometheus exporter for Keepit, AvePoint Cloud Backup, Commvault and Veeam Backup EM.",
    )
    parser.add_argument("--config.file", dest="config_file", default="config.yaml", help="YAML configuration file")
    parser.add_argument(
        "--web.listen-address", dest="listen_address", default=":9977", help="address to serve on (host:port)"
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        help="TLS and basic auth, in the Prometheus exporter-toolkit format",
    )
    parser.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics", help="path of the metrics")
    parser.add_argument("--storage.path", dest="storage_path", default="data/", help="directory of the state database")
    parser.add_argument(
        "--shard.index", dest="shard_index", type=int, default=0, help="this replica's shard, 0..count-1"
    )
    parser.add_argument(
        "--shard.count",
        dest="shard_count",
        type=int,
        default=1,
        help="replicas sharing the targets (by a stable hash of their names)",
    )
    parser.add_argument("--log.level", dest="log_level", default="info", choices=sorted(LEVELS))
    parser.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    parser.add_argument(
        "--demo", action="store_true", help="collect from built-in vendor simulators on loopback; no config needed"
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the config, print what would be collected, exit"
    )
    parser.add_argument(
        "--connect",
        action="store_true",
        help="with --check-config: log in to each target and make one cheap request; exit 1 if any fails",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="collect every target once (with empty state), print the exposition, exit non-zero on any failure",
    )
    parser.add_argument(
        "--target",
        dest="target",
        metavar="NAME",
        default=None,
        help="with --once or --check-config: only the target of this name",
    )
    parser.add_argument("--version", action="version", version=f"backup-exporter {__version__}")
    args = parser.parse_args(argv)
    if args.connect and not args.check_config:
        parser.error("--connect needs --check-config")
    if args.target is not None and not (args.once or args.check_config):
        parser.error("--target needs --once or --check-config")
    return args


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """`:9977` (all interfaces), `127.0.0.1:9977` or `[::1]:9977`."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--web.listen-address: not host:port: {address!r}")
    host = host.strip("[]")
    return (host or None), int(port)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pin_mmap_threshold()
    # Secrets are known only once the config is loaded; the filter is updated then.
    redacting = setup_logging(args.log_level, args.log_format, Redactor([]))
    try:
        return asyncio.run(_main(args, redacting))
    except KeyboardInterrupt:
        return 130


class _ConfigApplied:
    """Called with each config put to use: at start (by _run_mode and again by
    the service, with the same object) and after every successful reload."""

    def __init__(self, redacting: RedactingFilter) -> None:
        self._redacting = redacting
        self._warned: Config | None = None

    def __call__(self, config: Config) -> None:
        self._redacting.redact = Redactor(config.secrets())
        if config is self._warned:
            return
        # Once per load, never per poll: loud enough to be seen at start and
        # after each reload, quiet enough not to drown the log.
        self._warned = config
        for target, warning in security_warnings(config):
            log.warning(warning, extra={"target": target})


async def _main(args: argparse.Namespace, redacting: RedactingFilter) -> int:
    on_config = _ConfigApplied(redacting)

    if args.shard_count < 1 or not 0 <= args.shard_index < args.shard_count:
        print(
            f"backup-exporter: --shard.index must be in 0..{max(args.shard_count, 1) - 1} "
            f"and --shard.count at least 1 (got {args.shard_index} of {args.shard_count})",
            file=sys.stderr,
        )
        return 1

    def sharded(load: Callable[[], Config]) -> Callable[[], Config]:
        return lambda: load().shard(args.shard_index, args.shard_count)

    if args.demo:
        from exporter.demo import DemoSimulators

        async with DemoSimulators() as demo:
            return await _run_mode(args, sharded(demo.config), on_config)

    config_path = Path(args.config_file)
    if not config_path.exists():  # noqa: ASYNC240 - once, before anything runs
        print(_no_config_message(config_path), file=sys.stderr)
        return 1

    def load() -> Config:
        # At every load, reloads too: a chmod or an inline secret may come later.
        if warning := warn_world_readable(config_path):
            log.warning(warning)
        return load_config(config_path)

    return await _run_mode(args, sharded(load), on_config)


def _no_config_message(config_path: Path) -> str:
    example = _EXAMPLE_CONFIG if _EXAMPLE_CONFIG.is_file() else Path("config.yaml.example")
    return (
        f"backup-exporter: config file {config_path} not found.\n"
        f"  Copy the example ({example}) to {config_path} and edit it, or pass --config.file PATH;\n"
        "  check it with --check-config (add --connect to try each target's login);\n"
        "  to see the exporter work without any vendor account, run it with --demo."
    )


# Next to the package in a source checkout or an unpacked release.
_EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml.example"


async def _run_mode(args: argparse.Namespace, load: Callable[[], Config], on_config: Callable[[Config], None]) -> int:
    try:
        config = load()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.target is not None:
        selected = _only_target(config, args.target)
        if selected is None:
            return 1
        config = selected
    on_config(config)
    if args.check_config:
        return await _check_config(config, connect=args.connect)
    if args.once:
        return await _once(config)
    return await _serve(args, config, load, on_config)


def _only_target(config: Config, name: str) -> Config | None:
    chosen = tuple(t for t in config.targets if t.name == name)
    if not chosen:
        known = ", ".join(t.name for t in config.targets) or "none"
        print(
            f"backup-exporter: --target {name}: no such target in {config.source} (targets: {known})", file=sys.stderr
        )
        return None
    return dataclasses.replace(config, targets=chosen)


async def _check_config(config: Config, *, connect: bool) -> int:
    print(describe_targets(config))
    if not connect:
        return 0
    redact = Redactor(config.secrets())
    semaphore = asyncio.Semaphore(config.global_.max_concurrency)

    async def one(target: TargetConfig) -> ConnectResult:
        async with semaphore:
            return await check_connection(target, VENDORS[target.vendor])

    results = await asyncio.gather(*(one(target) for target in config.targets))
    print()
    for result in results:
        # Vendor messages may echo what we sent: never print a secret.
        print(redact(result.render()))
    sys.stdout.flush()
    return 0 if all(result.ok for result in results) else 1


async def _once(config: Config) -> int:
    # Empty, throw-away state: --once is for debugging a target and must not
    # touch the state of an exporter that may be running on the same machine.
    with tempfile.TemporaryDirectory(prefix="backup-exporter-once-") as storage:
        service = ExporterService(lambda: config, storage, VENDORS)
        try:
            await service.start(config, schedule=False)
        except StoreError as exc:
            await service.stop()
            print(f"backup-exporter: --once: {exc}", file=sys.stderr)
            return 1
        try:
            assert service.poller is not None
            results = await service.poller.collect_all_once()
            sys.stdout.buffer.write(service.exposition.render())
            sys.stdout.flush()
            failures = [_once_failure(service.poller.collectors[name]) for name, ok in results.items() if not ok]
        finally:
            await service.stop()
    redact = Redactor(config.secrets())
    for failure in failures:
        print(redact(failure), file=sys.stderr)
    return 1 if failures else 0


def _once_failure(collector: TargetCollector) -> str:
    health = collector.health
    return (
        f"backup-exporter: target {collector.target.name}: collection failed "
        f"(reason={health.last_error_reason}): {health.last_error}"
    )


async def _serve(
    args: argparse.Namespace,
    config: Config,
    load: Callable[[], Config],
    on_config: Callable[[Config], None],
) -> int:
    try:
        host, port = parse_listen_address(args.listen_address)
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    except (ValueError, WebConfigError) as exc:
        print(f"backup-exporter: {exc}", file=sys.stderr)
        return 1
    service = ExporterService(load, args.storage_path, VENDORS, on_config=on_config)
    try:
        await service.start(config)
    except StoreError as exc:
        await service.stop()
        print(f"backup-exporter: {exc} (check --storage.path: it must be a writable directory)", file=sys.stderr)
        return 1
    # HTTP on its own thread and loop: scrapes do not queue behind collection callbacks.
    server = ServerThread(
        create_app(service, args.telemetry_path, web_config),
        host,
        port,
        ssl_context=web_config.ssl_context if web_config else None,
    )
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen", extra={"address": args.listen_address, "error": str(exc)})
        await service.stop()
        return 1
    log.info(
        "serving",
        extra={
            "address": args.listen_address,
            "version": __version__,
            "targets": len(config.targets),
            "shard": f"{args.shard_index}/{args.shard_count}",
            "tls": bool(web_config and web_config.ssl_context),
            "basic_auth": bool(web_config and web_config.users),
        },
    )

    stop = asyncio.Event()
    reloads: set[asyncio.Task[tuple[bool, str]]] = set()
    loop = asyncio.get_running_loop()

    def on_sighup() -> None:
        task = loop.create_task(service.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
    # Stops accepting and finishes requests in flight first: those marshalled to
    # this loop still need the service.
    await server.stop()
    await service.stop()
    return 0
