"""Crash safety of the state database, with the real exporter process.

`kill -9` strikes while collections are in flight and while state is being
written; each time, the restarted exporter must count every finished run the
vendors reported exactly once (SPEC 6: one transaction per target per
collection). A state file that is not ours, or damaged, is moved aside with
a message naming where it went, and the exporter starts from scratch.

Ground truth is what a full-history collection by the vendor client returns
from each simulator, taken in this process with a fresh session at every
simulated time the exporter collects at, as a union: runs leave the
simulators' 30-day window as their clocks move.

The simulators' clocks start at the wall clock and are moved forward by days,
so the vendors run ahead of the exporter's clock, as in test_e2e_keepit: the
exporter then keeps every run id since its own now, and asks again from there
at every poll (state.MAX_CLOCK_SKEW), which makes every collection large.
Not behind it: a Commvault server more than two days behind the exporter's
clock makes the exporter count old runs again (completedJobLookupTime is
relative to the server's clock), which is not what this file is about.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from exporter.config import TargetConfig, load_config
from exporter.model import Collection, JobKey, Run, Status
from exporter.simulators import SIMULATORS
from exporter.state import TargetState, apply_collection
from exporter.store import Store, StoreError
from exporter.vendors import VENDORS
from exporter.vendors.base import HttpClient
from tests.harness import (
    ExporterProcess,
    kill_exporter,
    promtool_check,
    reap_exporter,
    select,
    server_url,
    write_config,
)

pytestmark = pytest.mark.e2e

ALL_VENDORS = ("keepit", "veeam", "commvault", "avepoint")
# The simulators keep 30 days; the first truth query asks for more than that.
FULL_HISTORY = timedelta(days=60)
# A run finishing between two simulated times began at most this long before
# the earlier one (the longest simulated runs take about half a day).
RUN_SPAN = timedelta(days=10)
MOVED_ASIDE = "moved aside"
KILL_ITERATIONS = 15

ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Sim:
    name: str
    server: TestServer
    target: TargetConfig | None = None

    async def post(self, path: str, payload: dict[str, Any]) -> None:
        async with aiohttp.ClientSession() as s, s.post(server_url(self.server) + path, json=payload) as resp:
            assert resp.status == 200, await resp.text()

    async def vendor_requests(self) -> int:
        async with aiohttp.ClientSession() as s, s.get(server_url(self.server) + "/_sim/requests") as resp:
            counts: dict[str, int] = await resp.json()
            return sum(counts.values())

    async def finished_run_ids(self, since: datetime, now: datetime) -> set[str]:
        """The finished runs a fresh client collects since `since`."""
        assert self.target is not None
        http = HttpClient(self.target.url)
        client = VENDORS[self.target.vendor].client(self.target, http)
        try:
            collection = await client.collect(since, now)
        finally:
            await client.close()
            await http.close()
        return {run.run_id for run in collection.runs if run.status.finished}


@dataclass
class Fleet:
    """Simulators, the exporter config collecting from them, and the ground truth."""

    sims: list[Sim]
    config: Path
    now: datetime
    truth: dict[str, set[str]] = field(default_factory=dict)
    _truth_at: datetime | None = None

    async def refresh_truth(self) -> None:
        """Add the finished runs the simulators report now; call it at every simulated time."""
        since = self.now - FULL_HISTORY if self._truth_at is None else self._truth_at - RUN_SPAN
        found = await asyncio.gather(*(sim.finished_run_ids(since, self.now) for sim in self.sims))
        for sim, ids in zip(self.sims, found, strict=True):
            self.truth.setdefault(sim.name, set()).update(ids)
        self._truth_at = self.now

    async def advance(self, seconds: float) -> None:
        await asyncio.gather(*(sim.post("/_sim/clock", {"advance": seconds}) for sim in self.sims))
        self.now += timedelta(seconds=seconds)

    def expected(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in self.truth.items()}


@pytest.fixture
def fleet_factory(tmp_path: Path, aiohttp_server: ServerFactory) -> Callable[..., Awaitable[Fleet]]:
    async def build(vendors: Sequence[str], *, interval: str = "1s") -> Fleet:
        now = datetime.now(UTC).replace(microsecond=0)
        sims: list[Sim] = []
        targets: list[dict[str, Any]] = []
        for index, vendor in enumerate(vendors):
            spec = SIMULATORS[vendor]
            # A seed per simulator: two of one vendor hold different histories.
            server = await aiohttp_server(spec.create_app(seed=index + 1, now=now))
            target = spec.demo_target(server_url(server))
            target["name"] = f"{vendor}-{index}"
            targets.append(target)
            sims.append(Sim(target["name"], server))
        global_ = {"interval": interval, "timeout": interval, "lookback": "45d", "max_concurrency": len(targets)}
        config = write_config(tmp_path / "config.yaml", targets, global_=global_)
        for sim, target_config in zip(sims, load_config(config).targets, strict=True):
            sim.target = target_config
        fleet = Fleet(sims, config, now)
        await fleet.refresh_truth()
        return fleet

    return build


def counted(samples: list[tuple[str, dict[str, str], float]], fleet: Fleet) -> dict[str, int]:
    """backup_job_runs_total summed per target."""
    return {
        sim.name: round(sum(v for _, v in select(samples, "backup_job_runs_total", target=sim.name)))
        for sim in fleet.sims
    }


async def collected(process: ExporterProcess, fleet: Fleet) -> list[tuple[str, dict[str, str], float]]:
    """The exposition once every target has succeeded since the process started
    (the simulators' clocks stand still meanwhile, so it reflects their now)."""
    seen: list[list[tuple[str, dict[str, str], float]]] = []

    def all_up(samples: list[tuple[str, dict[str, str], float]]) -> bool:
        ups = [select(samples, "backup_target_up", target=sim.name) for sim in fleet.sims]
        if all(up and up[0][1] == 1 for up in ups):
            seen.append(samples)
            return True
        return False

    await process.wait_for(metric=all_up, what="collected from every target", within=60)
    return seen[-1]


def corrupt_files(storage: Path) -> list[Path]:
    return sorted(storage.glob("state.db.corrupt-*"))


def logs_of(tmp_path: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in sorted(tmp_path.glob("exporter-*.log")))


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 30.0) -> None:
    """Hang guard only: polls `check`, never asserts on how long it took."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"not {what} within {within}s"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("vendor", ALL_VENDORS)
async def test_kill_during_a_collection_loses_and_double_counts_nothing(
    vendor: str, tmp_path: Path, fleet_factory: Callable[..., Awaitable[Fleet]]
) -> None:
    fleet = await fleet_factory([vendor])
    sim = fleet.sims[0]
    storage = tmp_path / "data"
    first = ExporterProcess(fleet.config, storage)
    await first.start()
    assert counted(await collected(first, fleet), fleet) == fleet.expected()

    # Three days of new runs, and the next collection stopped partway: every
    # vendor request slow, and once two have arrived, the rest held far
    # longer than the kill takes to come.
    await fleet.advance(3 * 86400)
    await sim.post("/_sim/fault", {"mode": "slow", "delay": 0.2})
    start = await sim.vendor_requests()
    await until(partial(_more_requests, sim, start + 2), "collecting")
    await sim.post("/_sim/fault", {"mode": "slow", "delay": 60})
    held = await sim.vendor_requests()
    await until(partial(_more_requests, sim, held + 1), "waiting on a held request")
    assert await kill_exporter(first) == -9

    await sim.post("/_sim/fault", {"mode": "none"})
    await fleet.refresh_truth()
    second = ExporterProcess(fleet.config, storage)
    await second.start()
    samples = await collected(second, fleet)
    await second.stop()
    assert counted(samples, fleet) == fleet.expected()
    assert fleet.expected()[sim.name] > 0
    assert not corrupt_files(storage)
    assert MOVED_ASIDE not in logs_of(tmp_path)


async def _more_requests(sim: Sim, at_least: int) -> bool:
    return await sim.vendor_requests() >= at_least


async def test_kill_at_many_moments_including_state_writes(
    tmp_path: Path, fleet_factory: Callable[..., Awaitable[Fleet]]
) -> None:
    # Every vendor, polled every second; each clock move brings tens to
    # hundreds of new runs per target, so state writes are frequent and large.
    # The moves are kept to hours and days: the vendors run ahead of the
    # exporter's clock, and every poll asks again from the exporter's now.
    fleet = await fleet_factory(ALL_VENDORS)
    storage = tmp_path / "data"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    kills: list[str] = []
    for iteration in range(KILL_ITERATIONS):
        process = ExporterProcess(fleet.config, storage)
        await _start_and_refresh(process, fleet, refresh=iteration > 0)
        samples = await collected(process, fleet)
        context = f"seed {seed}, after kills {kills}"
        assert counted(samples, fleet) == fleet.expected(), context
        assert not corrupt_files(storage), context

        if iteration % 2:
            # Half the kills at a random moment of the next second and a half...
            await fleet.advance(rng.uniform(0.25, 2) * 86400)
            delay = rng.uniform(0, 1.5)
            await asyncio.sleep(delay)
            kills.append(f"{delay:.2f}s")
        else:
            # ...half as soon as the state file is next written to.
            async with kill_on_next_write(process, storage):
                await fleet.advance(rng.uniform(0.25, 2) * 86400)
            kills.append("write")
        assert await (kill_exporter(process) if iteration % 2 else reap_exporter(process)) == -9
        if _wal_ends_inside_a_transaction(storage):
            kills[-1] += " (inside a transaction)"

    print(f"\nkills: {len(kills)}: {', '.join(kills)}")
    final = ExporterProcess(fleet.config, storage)
    await _start_and_refresh(final, fleet, refresh=True)
    samples = await collected(final, fleet)
    assert await final.stop() == 0
    assert counted(samples, fleet) == fleet.expected(), f"seed {seed}, after kills {kills}"
    assert all(n > 0 for n in fleet.expected().values())
    assert not corrupt_files(storage)
    assert MOVED_ASIDE not in logs_of(tmp_path)
    with sqlite3.connect(storage / "state.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def _start_and_refresh(process: ExporterProcess, fleet: Fleet, *, refresh: bool) -> None:
    """Start the exporter while the ground truth for the simulators' (unchanged) now is read."""
    if not refresh:
        await process.start()
        return
    await asyncio.gather(process.start(), fleet.refresh_truth())


def _wal_ends_inside_a_transaction(storage: Path) -> bool:
    """Whether the kill left frames of a transaction that never committed at
    the end of the WAL (SQLite's file format, section 4: a frame's second
    header word is zero unless it is a commit frame; frames of the current
    generation carry the header's salts)."""
    try:
        wal = (storage / "state.db-wal").read_bytes()
    except FileNotFoundError:
        return False
    if len(wal) < 32:
        return False
    page_size = int.from_bytes(wal[8:12], "big")
    salts = wal[16:24]
    last_commit: int | None = None
    offset = 32
    while offset + 24 + page_size <= len(wal) and wal[offset + 8 : offset + 16] == salts:
        last_commit = int.from_bytes(wal[offset + 4 : offset + 8], "big")
        offset += 24 + page_size
    return last_commit == 0


# Watches the WAL from a process of its own, in a busy loop, so that neither
# this event loop nor the GIL delays the kill: it lands within microseconds of
# SQLite's first write, often before the transaction's commit frame.
_KILL_ON_WRITE = """
import os, signal, sys, time
pid, path = int(sys.argv[1]), sys.argv[2]

def signature():
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size

before = signature()
print("watching", flush=True)
deadline = time.monotonic() + 30
while signature() == before:
    if time.monotonic() > deadline:
        sys.exit(1)
os.kill(pid, signal.SIGKILL)
"""


@contextlib.asynccontextmanager
async def kill_on_next_write(process: ExporterProcess, storage: Path) -> AsyncIterator[None]:
    """SIGKILL `process` at the first change to its WAL after the block."""
    assert process.proc is not None
    watcher = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILL_ON_WRITE,
        str(process.proc.pid),
        str(storage / "state.db-wal"),
        stdout=asyncio.subprocess.PIPE,
    )
    assert watcher.stdout is not None
    assert await asyncio.wait_for(watcher.stdout.readline(), timeout=30) == b"watching\n"
    yield
    assert await asyncio.wait_for(watcher.wait(), timeout=60) == 0, "no state write within 30s"


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True)


def _random_bytes(storage: Path) -> bytes:
    data = random.Random(7).randbytes(64 * 1024)
    (storage / "state.db").write_bytes(data)
    return data


def _foreign_sqlite(storage: Path) -> bytes:
    with sqlite3.connect(storage / "state.db") as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
        conn.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    conn.close()
    return (storage / "state.db").read_bytes()


async def _damaged_rows(storage: Path) -> bytes:
    """Our own schema, readable by SQLite, with a row a later version or a hand
    edit could have left: valid SQLite, unreadable state."""
    store = Store(storage)
    await store.open()
    state = TargetState("keepit-0")
    now = datetime.now(UTC)
    run = Run("r1", JobKey("Mailboxes", "backup"), Status.SUCCESS, now - timedelta(hours=2), now - timedelta(hours=1))
    apply_collection(state, Collection(runs=(run,)), now, job_retention=timedelta(days=30))
    await store.save(state)
    await store.close()
    with sqlite3.connect(storage / "state.db") as conn:
        conn.execute("UPDATE jobs SET data = ?", (json.dumps({"key": ["Mailboxes", "backup"], "runs": "many"}),))
    conn.close()
    return (storage / "state.db").read_bytes()


async def _bad_state(kind: str, storage: Path) -> bytes:
    _make_dir(storage)
    if kind == "random-bytes":
        return _random_bytes(storage)
    if kind == "foreign-sqlite":
        return _foreign_sqlite(storage)
    return await _damaged_rows(storage)


@pytest.mark.parametrize("kind", ["random-bytes", "foreign-sqlite", "damaged-rows"])
async def test_bad_state_file_is_moved_aside_and_collection_starts_from_scratch(
    kind: str, tmp_path: Path, fleet_factory: Callable[..., Awaitable[Fleet]]
) -> None:
    fleet = await fleet_factory(["keepit"])
    storage = tmp_path / "data"
    original = await _bad_state(kind, storage)

    process = ExporterProcess(fleet.config, storage)
    await process.start()
    samples = await collected(process, fleet)
    _, body, _ = await process.get("/metrics")
    assert await process.stop() == 0

    # Every run counted once, from scratch: nothing of the bad file was used.
    assert counted(samples, fleet) == fleet.expected()
    assert promtool_check(body).returncode == 0
    [aside] = corrupt_files(storage)
    line = next(line for line in process.logs().splitlines() if MOVED_ASIDE in line)
    assert "level=error" in line
    assert f"moved_to={aside}" in line
    assert f"path={storage / 'state.db'}" in line
    if kind == "damaged-rows":
        # Closed cleanly before the move: the file aside holds every row.
        with sqlite3.connect(aside) as conn:
            assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
        conn.close()
    else:
        # Moved as it was: not even converted to WAL mode first.
        assert aside.read_bytes() == original
    if kind == "foreign-sqlite":
        with sqlite3.connect(aside) as conn:
            assert conn.execute("SELECT amount FROM invoices").fetchall() == [(12.5,)]
        conn.close()
    # The fresh database is ours and holds what was collected.
    reopened = Store(storage)
    await reopened.open()
    assert (
        sum(sum(job.runs_total.values()) for job in (await reopened.load())["keepit-0"].jobs.values())
        == (fleet.expected()["keepit-0"])
    )
    await reopened.close()


async def test_bad_files_moved_aside_in_the_same_second_are_all_kept(tmp_path: Path) -> None:
    kept = []
    for attempt in range(3):
        (tmp_path / "state.db").write_bytes(f"not a database, attempt {attempt}".encode() * 100)
        store = Store(tmp_path)
        await store.open()
        assert await store.load() == {}
        await store.close()
        kept = corrupt_files(tmp_path)
    assert len(kept) == 3
    assert {path.read_bytes() for path in kept} == {f"not a database, attempt {a}".encode() * 100 for a in range(3)}


async def test_a_value_of_the_wrong_type_does_not_stop_the_exporter_later(tmp_path: Path) -> None:
    """A watermark stored as text would raise inside every later collection;
    it is refused at load, like any other damage."""
    store = Store(tmp_path)
    await store.open()
    await store.save(TargetState("t", watermark=1.0))
    await store.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("UPDATE targets SET watermark = 'yesterday'")
    conn.close()
    reopened = Store(tmp_path)
    await reopened.open()
    assert await reopened.load() == {}
    await reopened.close()
    assert len(corrupt_files(tmp_path)) == 1


async def test_uncreatable_storage_directory_is_a_store_error_and_touches_nothing(tmp_path: Path) -> None:
    # A file where the directory should be: no user, root included, can create it.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("operator's file")
    store = Store(blocker / "state" / "state.db")
    with pytest.raises(StoreError, match=r"cannot open the state database .*cannot create its directory"):
        await store.open()
    assert blocker.read_text() == "operator's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-directory"]  # noqa: ASYNC240 - a test
