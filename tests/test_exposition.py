"""The assembled /metrics body: rebuilt in a background thread after changes,
never waited for by a scrape, plain and gzip always of one version, no change
lost when changes arrive during a rebuild, and the trailer as its own gzip member."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable

from exporter.exposition import Exposition, Family, FragmentWriter

UP = Family("backup_target_up", "gauge", "1 if the last collection succeeded.")
RUNS = Family("backup_job_runs_total", "counter", "Finished runs.")
FAMILIES = (UP, RUNS)

# Hang guard only: nothing asserts on how long anything takes.
HANG_GUARD_SECONDS = 30.0


def fragments(target: str, value: float, jobs: int = 3) -> dict[str, bytes]:
    writer = FragmentWriter()
    writer.sample(UP, [("target", target)], 1)
    for job in range(jobs):
        writer.sample(RUNS, [("target", target), ("job_name", f"job-{job}")], value)
    return writer.fragments()


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.005)


def settled(exposition: Exposition) -> bytes:
    """The served body once it reflects every change made so far."""
    eventually(lambda: exposition.snapshot().version == exposition.version)
    return exposition.body()


class Gate:
    """A rebuild hook that, once closed, holds every rebuild until opened."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self.waiting = threading.Event()
        self.rebuilds = 0

    def __call__(self) -> None:
        self.rebuilds += 1
        self.waiting.set()
        assert self._open.wait(HANG_GUARD_SECONDS), "gate never opened"

    def close(self) -> None:
        self.waiting.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()


def in_thread(fn: Callable[[], bytes]) -> bytes:
    """Runs fn in another thread, so that a blocking fn fails the test instead of hanging it."""
    result: list[bytes] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(HANG_GUARD_SECONDS)
    assert not thread.is_alive(), "the call blocked on the rebuild in flight"
    return result[0]


def test_first_scrape_builds_the_body_itself() -> None:
    exposition = Exposition(FAMILIES)
    assert exposition.body() == b""
    exposition.set_target("a", fragments("a", 1))
    body = settled(exposition)
    assert body == exposition.render()
    assert body.startswith(b"# HELP backup_target_up ")
    assert b'backup_job_runs_total{target="a",job_name="job-2"} 1\n' in body


def test_a_scrape_after_a_change_eventually_serves_it() -> None:
    exposition = Exposition(FAMILIES)
    exposition.set_target("a", fragments("a", 1))
    settled(exposition)
    exposition.set_target("a", fragments("a", 7))
    eventually(lambda: b'job_name="job-0"} 7\n' in exposition.body())
    exposition.remove_target("a")
    eventually(lambda: b'target="a"' not in exposition.body())


def test_a_scrape_never_waits_for_a_rebuild_in_flight() -> None:
    gate = Gate()
    exposition = Exposition(FAMILIES, rebuild_hook=gate)
    exposition.set_target("a", fragments("a", 1))
    old = settled(exposition)
    old_gzip = exposition.body(gzipped=True)

    gate.close()
    exposition.set_target("a", fragments("a", 2))
    assert gate.waiting.wait(HANG_GUARD_SECONDS)  # a rebuild is now held in the hook
    assert in_thread(exposition.body) == old
    assert in_thread(lambda: exposition.body(gzipped=True)) == old_gzip

    gate.open()
    eventually(lambda: b'job_name="job-0"} 2\n' in exposition.body())


def test_changes_during_a_rebuild_are_not_lost_and_are_coalesced() -> None:
    gate = Gate()
    exposition = Exposition(FAMILIES, rebuild_hook=gate)
    exposition.set_target("a", fragments("a", 1))
    settled(exposition)

    gate.close()
    exposition.set_target("a", fragments("a", 2))
    assert gate.waiting.wait(HANG_GUARD_SECONDS)
    rebuilds_before = gate.rebuilds
    # These arrive while the rebuild of version "a=2" is held.
    for target in ("b", "c", "d"):
        exposition.set_target(target, fragments(target, 3))
    exposition.set_trailer(b"# TYPE backup_exporter_targets gauge\nbackup_exporter_targets 4\n")
    gate.open()

    body = settled(exposition)
    assert body == exposition.render()
    for target in "abcd":
        assert f'backup_target_up{{target="{target}"}} 1\n'.encode() in body
    assert body.endswith(b"backup_exporter_targets 4\n")
    # The five changes during the held rebuild took one more rebuild, not five.
    assert gate.rebuilds == rebuilds_before + 1


def test_gzip_and_plain_bodies_are_always_of_one_version() -> None:
    exposition = Exposition(FAMILIES)
    exposition.set_target("a", fragments("a", 0))
    stop = threading.Event()

    def writer() -> None:
        value = 0
        while not stop.is_set():
            value += 1
            exposition.set_target(f"t{value % 5}", fragments(f"t{value % 5}", value, jobs=50))
            if value % 7 == 0:
                exposition.set_trailer(f"backup_exporter_targets {value}\n".encode())

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        versions: set[int] = set()
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        # Read while the writer writes, until several versions were seen.
        while len(versions) < 5:
            assert time.monotonic() < deadline, "the served body never changed"
            snapshot = exposition.snapshot()
            assert gzip.decompress(snapshot.gzipped) == snapshot.plain
            versions.add(snapshot.version)
    finally:
        stop.set()
        thread.join(HANG_GUARD_SECONDS)
    body = settled(exposition)
    assert gzip.decompress(exposition.body(gzipped=True)) == body == exposition.render()


def test_the_trailer_is_a_separate_gzip_member() -> None:
    """Refreshing the exporter's own metrics must not re-gzip every target's series."""
    exposition = Exposition(FAMILIES)
    for target in "ab":
        exposition.set_target(target, fragments(target, 1))
    exposition.set_trailer(b"backup_exporter_targets 2\n")
    first = settled(exposition)
    first_gzip = exposition.body(gzipped=True)
    exposition.set_trailer(b"backup_exporter_targets 3\n")
    second = settled(exposition)
    second_gzip = exposition.body(gzipped=True)

    assert second == first.replace(b"targets 2\n", b"targets 3\n")
    assert gzip.decompress(second_gzip) == second
    # The targets' member is reused byte for byte; only the trailer member differs.
    targets_member = gzip.compress(exposition.render(["a", "b"]), compresslevel=1, mtime=0)
    assert first_gzip.startswith(targets_member)
    assert second_gzip.startswith(targets_member)
    assert second_gzip[len(targets_member) :] == gzip.compress(b"backup_exporter_targets 3\n", 1, mtime=0)


def test_render_of_some_targets_is_current_and_has_no_trailer() -> None:
    """/probe renders one target's series synchronously from the newest fragments."""
    gate = Gate()
    exposition = Exposition(FAMILIES, rebuild_hook=gate)
    exposition.set_target("a", fragments("a", 1))
    exposition.set_trailer(b"backup_exporter_targets 1\n")
    settled(exposition)
    gate.close()
    exposition.set_target("b", fragments("b", 5))
    assert gate.waiting.wait(HANG_GUARD_SECONDS)
    probe = exposition.render(["b", "unknown"])
    gate.open()
    assert probe == b"".join(
        [UP.header, b'backup_target_up{target="b"} 1\n', RUNS.header]
        + [f'backup_job_runs_total{{target="b",job_name="job-{j}"}} 5\n'.encode() for j in range(3)]
    )
    assert exposition.render([]) == b""
