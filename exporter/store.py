"""SQLite persistence of TargetState under --storage.path.

One transaction per target per collection, so a crash (even kill -9) leaves
either the state before or the state after that collection: never counters
without the run ids that produced them. WAL mode keeps readers and the writer
apart; synchronous=NORMAL is durable against process crashes, which is what
the exporter must survive (a power cut may lose the last collection, which the
next poll's overlap fetches again without double counting).

All database work runs on one dedicated thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from exporter.model import JobKey, Status
from exporter.state import DURATION_BUCKETS, JobState, LastRun, SnapshotState, TargetState

log = logging.getLogger(__name__)

APPLICATION_ID = 0x42455850  # "BEXP": marks the file as ours (PRAGMA application_id)
SCHEMA_VERSION = 1
DB_NAME = "state.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS targets (
    target TEXT PRIMARY KEY,
    watermark REAL,
    last_success REAL,
    snapshots TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS jobs (
    target TEXT NOT NULL,
    job_name TEXT NOT NULL,
    job_type TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (target, job_name, job_type)
);
CREATE TABLE IF NOT EXISTS seen_runs (
    target TEXT NOT NULL,
    run_id TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (target, run_id)
) WITHOUT ROWID;
"""


class StoreError(Exception):
    pass


class _NotOurs(sqlite3.DatabaseError):
    """A readable SQLite file that is not this exporter's state (or is damaged)."""


# SQLite's result codes for a file that is damaged or no database at all. Any
# other failure (locked, read-only, disk full, no permission) is about the
# surroundings: moving the file aside would not help and could hide a healthy
# state from the exporter that comes next.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def _unusable(exc: Exception) -> bool:
    if isinstance(exc, _NotOurs):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return True  # a value in the file we cannot make sense of
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


class Store:
    """The state database. Methods are coroutines that run on the DB thread."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / DB_NAME
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-db")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self._run(self._open_sync)

    async def close(self) -> None:
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    async def load(self) -> dict[str, TargetState]:
        result: dict[str, TargetState] = await self._run(self._load_sync)
        return result

    async def save(self, state: TargetState) -> None:
        """Write the changes in `state` atomically; on success they are marked saved."""
        payload = _changes(state)
        await self._run(self._save_sync, payload)
        state.mark_saved()

    # -- on the DB thread --------------------------------------------------

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # A file in the way, no permission, a read-only disk: nothing to move aside.
            raise StoreError(
                f"cannot open the state database {self.path}: cannot create its directory: {exc.strerror or exc}"
            ) from exc
        try:
            self._conn = self._connect()
        except sqlite3.DatabaseError as exc:
            # A directory or device where the file should be is no database either.
            not_a_file = self.path.exists() and not self.path.is_file()
            if not (_unusable(exc) or not_a_file):
                raise StoreError(f"cannot open the state database {self.path}: {exc}") from exc
            try:
                self._move_aside(exc)
            except OSError as move_error:
                # A damaged file in a directory we may not write: kept as it is.
                raise StoreError(
                    f"cannot open the state database {self.path}: it is unusable ({exc}) and cannot be "
                    f"moved aside: {move_error.strerror or move_error}"
                ) from move_error
            self._conn = self._connect()

    def _move_aside(self, exc: Exception) -> None:
        """Keep an unusable file for inspection (never delete what may be an
        operator's data) and make room for an empty database."""
        aside = self._aside_path()
        log.error(
            "state database is unreadable or not ours; moved aside, starting with empty state",
            extra={"path": str(self.path), "moved_to": str(aside), "error": str(exc)},
        )
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                source.rename(Path(str(aside) + suffix))

    def _aside_path(self) -> Path:
        # A second bad file within the same second must not replace the first.
        stamp = int(time.time())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        serial = 1
        while any(Path(str(aside) + suffix).exists() for suffix in ("", "-wal", "-shm")):
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{serial}")
            serial += 1
        return aside

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # Identify the file before changing anything in it: a foreign
            # database is moved aside as it was, not converted to WAL first.
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables and app_id != APPLICATION_ID:
                raise _NotOurs(f"foreign database (application_id {app_id:#x})")
            if tables and version != SCHEMA_VERSION:
                raise _NotOurs(f"unknown schema version {version}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            if app_id != APPLICATION_ID or version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise _NotOurs(f"quick_check: {'; '.join(str(p) for p in problems[:3])}")
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _load_sync(self) -> dict[str, TargetState]:
        try:
            return self._read_states()
        except (sqlite3.DatabaseError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # A row we cannot read (a damaged page, a hand edit, a bad
            # downgrade) would otherwise stop the exporter from ever starting.
            if isinstance(exc, sqlite3.DatabaseError) and not _unusable(exc):
                raise StoreError(f"reading the state database {self.path}: {exc}") from exc
            self._close_sync()
            self._move_aside(exc)
            self._conn = self._connect()
            return {}

    def _read_states(self) -> dict[str, TargetState]:
        conn = self._require()
        states: dict[str, TargetState] = {}
        for target, watermark, last_success, snapshots in conn.execute(
            "SELECT target, watermark, last_success, snapshots FROM targets"
        ):
            state = states[target] = TargetState(
                name=_text(target), watermark=_epoch(watermark), last_success=_epoch(last_success)
            )
            for raw in json.loads(snapshots):
                snapshot = _snapshot_from_dict(raw)
                state.snapshots[snapshot.key] = snapshot
        for target, data in conn.execute("SELECT target, data FROM jobs"):
            job = _job_from_dict(json.loads(data))
            states.setdefault(_text(target), TargetState(name=target)).jobs[job.key] = job
        for target, run_id, ts in conn.execute("SELECT target, run_id, ts FROM seen_runs"):
            seen = states.setdefault(_text(target), TargetState(name=target)).seen_runs
            seen[_text(run_id)] = _number(ts)
        return states

    def _save_sync(self, payload: dict[str, Any]) -> None:
        conn = self._require()
        target = payload["target"]
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO targets (target, watermark, last_success, snapshots) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(target) DO UPDATE SET watermark=excluded.watermark, "
                "last_success=excluded.last_success, snapshots=excluded.snapshots",
                (target, payload["watermark"], payload["last_success"], payload["snapshots"]),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO jobs (target, job_name, job_type, data) VALUES (?, ?, ?, ?)",
                [(target, name, type_, data) for name, type_, data in payload["jobs"]],
            )
            conn.executemany(
                "DELETE FROM jobs WHERE target=? AND job_name=? AND job_type=?",
                [(target, name, type_) for name, type_ in payload["deleted_jobs"]],
            )
            # Deletes first: a run id pruned and then seen again before a
            # write succeeded is remembered, as it is in memory.
            conn.executemany(
                "DELETE FROM seen_runs WHERE target=? AND run_id=?",
                [(target, run_id) for run_id in payload["pruned_seen"]],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO seen_runs (target, run_id, ts) VALUES (?, ?, ?)",
                [(target, run_id, ts) for run_id, ts in payload["new_seen"]],
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"writing state of target {target!r} to {self.path}: {exc}") from exc

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("state database is not open")
        return self._conn


def _changes(state: TargetState) -> dict[str, Any]:
    """A snapshot of what to write, taken on the event loop so the DB thread
    never reads state the loop is changing."""
    return {
        "target": state.name,
        "watermark": state.watermark,
        "last_success": state.last_success,
        "snapshots": json.dumps([_snapshot_to_dict(s) for s in state.snapshots.values()]),
        "jobs": [
            (key.job_name, key.job_type, json.dumps(_job_to_dict(state.jobs[key])))
            for key in state.dirty_jobs
            if key in state.jobs
        ],
        "deleted_jobs": [(key.job_name, key.job_type) for key in state.deleted_jobs],
        "new_seen": list(state.new_seen.items()),
        "pruned_seen": list(state.pruned_seen),
    }


def _job_to_dict(job: JobState) -> dict[str, Any]:
    data = asdict(job)
    data["key"] = [job.key.job_name, job.key.job_type]
    if job.last is not None:
        data["last"]["status"] = job.last.status.value
    return data


def _job_from_dict(data: dict[str, Any]) -> JobState:
    last = data.pop("last")
    key = data.pop("key")
    job = JobState(key=JobKey(*key), **data)
    if last is not None:
        last["status"] = Status(last["status"])
        job.last = LastRun(**last)
    _check_job(job)
    return job


def _check_job(job: JobState) -> None:
    """Refuse, at load, values that would fail later inside a collection."""
    _check_key(job.key)
    if len(job.duration_buckets) != len(DURATION_BUCKETS) + 1:
        raise ValueError(f"job {job.key.job_name!r} has {len(job.duration_buckets)} duration buckets")
    if not all(isinstance(n, int) for n in (*job.duration_buckets, *job.runs_total.values())):
        raise ValueError(f"job {job.key.job_name!r} has counters that are not integers")
    for value in (job.last_seen, job.duration_sum, job.last_success_end, job.running_oldest_start):
        _epoch(value)
    if job.last is not None:
        for value in (job.last.start, job.last.end, job.last.duration):
            _epoch(value)


def _check_key(key: JobKey) -> None:
    if not all(isinstance(part, str) for part in (key.job_name, key.job_type)):
        raise ValueError(f"job key {key!r} is not two strings")


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, found {type(value).__name__}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, found {type(value).__name__}")
    return float(value)


def _epoch(value: object) -> float | None:
    return None if value is None else _number(value)


def _snapshot_to_dict(snapshot: SnapshotState) -> dict[str, Any]:
    data = asdict(snapshot)
    data["key"] = [snapshot.key.job_name, snapshot.key.job_type]
    return data


def _snapshot_from_dict(data: dict[str, Any]) -> SnapshotState:
    key = data.pop("key")
    snapshot = SnapshotState(key=JobKey(*key), **data)
    _check_key(snapshot.key)
    for value in (
        snapshot.last_seen,
        snapshot.newest_timestamp,
        snapshot.newest_size,
        snapshot.previous_size,
        snapshot.last_complete,
        snapshot.last_partial,
    ):
        _epoch(value)
    return snapshot
