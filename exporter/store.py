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
from exporter.state import JobState, LastRun, SnapshotState, TargetState

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._connect()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error(
                "state database is unreadable or not ours; moved aside, starting with empty state",
                extra={"path": str(self.path), "moved_to": str(aside), "error": str(exc)},
            )
            for suffix in ("", "-wal", "-shm"):
                source = Path(str(self.path) + suffix)
                if source.exists():
                    source.rename(Path(str(aside) + suffix))
            self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables and app_id != APPLICATION_ID:
                raise sqlite3.DatabaseError(f"foreign database (application_id {app_id:#x})")
            if tables and version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"unknown schema version {version}")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _load_sync(self) -> dict[str, TargetState]:
        conn = self._require()
        states: dict[str, TargetState] = {}
        for target, watermark, last_success, snapshots in conn.execute(
            "SELECT target, watermark, last_success, snapshots FROM targets"
        ):
            state = states[target] = TargetState(name=target, watermark=watermark, last_success=last_success)
            for raw in json.loads(snapshots):
                snapshot = _snapshot_from_dict(raw)
                state.snapshots[snapshot.key] = snapshot
        for target, data in conn.execute("SELECT target, data FROM jobs"):
            job = _job_from_dict(json.loads(data))
            states.setdefault(target, TargetState(name=target)).jobs[job.key] = job
        for target, run_id, ts in conn.execute("SELECT target, run_id, ts FROM seen_runs"):
            states.setdefault(target, TargetState(name=target)).seen_runs[run_id] = ts
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
            conn.executemany(
                "INSERT OR REPLACE INTO seen_runs (target, run_id, ts) VALUES (?, ?, ?)",
                [(target, run_id, ts) for run_id, ts in payload["new_seen"]],
            )
            conn.executemany(
                "DELETE FROM seen_runs WHERE target=? AND run_id=?",
                [(target, run_id) for run_id in payload["pruned_seen"]],
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
    return job


def _snapshot_to_dict(snapshot: SnapshotState) -> dict[str, Any]:
    data = asdict(snapshot)
    data["key"] = [snapshot.key.job_name, snapshot.key.job_type]
    return data


def _snapshot_from_dict(data: dict[str, Any]) -> SnapshotState:
    key = data.pop("key")
    return SnapshotState(key=JobKey(*key), **data)
