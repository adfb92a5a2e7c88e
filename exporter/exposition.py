"""The Prometheus text exposition (format 0.0.4), assembled from cached pieces.

Each target's samples are rendered once, after its collection, into one byte
fragment per metric family. A scrape only joins bytes: the families in a fixed
order, each with its HELP/TYPE header once and then every target's fragment
(the format requires all samples of a family to be contiguous, which is why
targets cannot simply be concatenated). Rebuilding after one target's
collection therefore costs that target's rendering plus a join.

The join and its gzip (tens of ms at 100k series) never run on a scrape: a
change starts a rebuild in a background thread and scrapes keep getting the
newest complete body meanwhile. Only the very first scrape, before any body
exists, builds one itself.

Staleness bound: a change is served once the rebuild in flight when it
arrived (if any), a pause of REBUILD_PAUSE times that rebuild's duration and
one more rebuild are done: at most 5 rebuild durations, and 1 when changes are
rare. A rebuild costs ~30 ms at 100k series (11.6 MB: join ~4 ms, gzip level 1
~23 ms) and well under 1 ms at 1k, so the bound is ~150 ms at 100k series.
"""

from __future__ import annotations

import gzip
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# After a rebuild that took d seconds, the next one starts no sooner than
# REBUILD_PAUSE * d later (and at once when the exposition was quiet that long).
REBUILD_PAUSE = 3.0


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    type: str  # gauge | counter | histogram
    help: str

    @property
    def header(self) -> bytes:
        help_text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        return f"# HELP {self.name} {help_text}\n# TYPE {self.name} {self.type}\n".encode()


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_labels(labels: Sequence[tuple[str, str]]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels) + "}"


def with_label(label_text: str, name: str, value: str) -> str:
    """`label_text` (as format_labels made it) with one more label at the end."""
    pair = f'{name}="{escape_label_value(value)}"'
    return f"{label_text[:-1]},{pair}}}" if label_text else f"{{{pair}}}"


_MAX_EXACT_INT = 10**15


def format_value(value: float) -> str:
    """Go-style floats, as Prometheus and client_python print them."""
    if type(value) is int and -_MAX_EXACT_INT < value < _MAX_EXACT_INT:
        return str(value)  # counters and flags: most samples
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0" if isinstance(value, float) else str(int(value))
    return repr(float(value))


class FragmentWriter:
    """Collects the sample lines of one target, per family."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str]] = {}

    def sample(
        self,
        family: Family,
        labels: Sequence[tuple[str, str]],
        value: float,
        *,
        suffix: str = "",
    ) -> None:
        self.line(family, format_labels(labels), value, suffix=suffix)

    def line(self, family: Family, label_text: str, value: float, *, suffix: str = "") -> None:
        """A sample whose labels are already formatted (format_labels, with_label):
        a job's ~30 series share one label set, escaped once instead of per series."""
        lines = self._lines.get(family.name)
        if lines is None:
            lines = self._lines[family.name] = []
        lines.append(f"{family.name}{suffix}{label_text} {format_value(value)}\n")

    def fragments(self) -> dict[str, bytes]:
        return {name: "".join(lines).encode() for name, lines in self._lines.items()}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One complete body, plain and gzipped, of one version of the exposition."""

    version: int
    plain: bytes
    gzipped: bytes


@dataclass(frozen=True, slots=True)
class _TargetsCache:
    """The targets' part of a body: the first `size` bytes of `plain`, gzipped alone."""

    version: int
    plain: bytes
    size: int
    gzipped: bytes


def _gzip(data: bytes | memoryview) -> bytes:
    # Level 1: ~2x faster than 6 for a few % larger output (BASELINES.md).
    return gzip.compress(data, compresslevel=1, mtime=0) if data else b""


class Exposition:
    """Per-target fragments plus the assembled, plain and gzipped, body.

    Written by the poller after each collection, read by the HTTP handlers.
    A change starts a rebuild in a background thread; at most one runs at a
    time and it loops while changes keep arriving, so a burst of collections
    costs a few rebuilds, not one each. Readers get the last complete
    snapshot without waiting.

    The gzipped body is the gzip of the target series followed by a separate
    gzip member for the trailer (the exporter's own metrics): a multi-member
    stream is one valid gzip body (RFC 1952 2.2) that Python's gzip and Go's
    compress/gzip (so Prometheus) decode whole. The trailer changes every few
    seconds; this way that costs gzipping a few KB, not the whole body.

    `rebuild_hook`, when given, is called by every rebuild before it joins:
    tests slow rebuilds down with it.
    """

    def __init__(self, families: Iterable[Family], *, rebuild_hook: Callable[[], None] | None = None) -> None:
        self._families = list(families)
        self._fragments: dict[str, dict[str, bytes]] = {}
        # The exporter's own metrics (process_*, build info), rendered apart.
        self._trailer = b""
        self._rebuild_hook = rebuild_hook
        # Guards everything below and the two above; never held while joining or gzipping.
        self._lock = threading.Lock()
        self._version = 0  # any change
        self._targets_version = 0  # changes of target fragments only
        self._rebuilding = False
        self._snapshot: Snapshot | None = None
        # What the last rebuild made of its parts, reused when they did not change.
        self._targets_cache: _TargetsCache | None = None
        self._trailer_cache: tuple[bytes, bytes] = (b"", b"")
        self._last_rebuild_end = 0.0  # time.monotonic()
        self._last_rebuild_seconds = 0.0

    @property
    def families(self) -> list[Family]:
        return list(self._families)

    @property
    def version(self) -> int:
        """Bumped by every change; compare with `snapshot().version`."""
        with self._lock:
            return self._version

    def set_target(self, target: str, fragments: Mapping[str, bytes]) -> None:
        with self._lock:
            self._fragments[target] = dict(fragments)
            self._changed(targets=True)

    def remove_target(self, target: str) -> None:
        with self._lock:
            if self._fragments.pop(target, None) is not None:
                self._changed(targets=True)

    def set_trailer(self, trailer: bytes) -> None:
        with self._lock:
            if trailer != self._trailer:
                self._trailer = trailer
                self._changed(targets=False)

    def targets(self) -> list[str]:
        with self._lock:
            return list(self._fragments)

    def render(self, targets: Iterable[str] | None = None) -> bytes:
        """The body for the given targets (all, plus the trailer, when None), from
        the current fragments; synchronous and not cached."""
        with self._lock:
            names = list(self._fragments) if targets is None else [t for t in targets if t in self._fragments]
            parts = self._target_parts(names)
            if targets is None:
                parts.append(self._trailer)
        return b"".join(parts)

    def body(self, *, gzipped: bool = False) -> bytes:
        """The newest complete body for all targets; never waits for a rebuild."""
        snapshot = self.snapshot()
        return snapshot.gzipped if gzipped else snapshot.plain

    def snapshot(self) -> Snapshot:
        """The newest complete snapshot; built here only when none exists yet."""
        snapshot = self._snapshot
        if snapshot is None:
            self._rebuild()
            snapshot = self._snapshot
            assert snapshot is not None
        return snapshot

    # --- rebuilding ---------------------------------------------------------------

    def _changed(self, *, targets: bool) -> None:
        """Called with the lock held after every change."""
        self._version += 1
        if targets:
            self._targets_version += 1
        if not self._rebuilding:
            self._rebuilding = True
            threading.Thread(target=self._rebuild_loop, name="exposition-rebuild", daemon=True).start()

    def _rebuild_loop(self) -> None:
        """Rebuild until a rebuild saw the latest version: changes that arrive during
        one rebuild are all picked up by the next, so none is lost."""
        try:
            while True:
                with self._lock:
                    if self._snapshot is not None and self._snapshot.version == self._version:
                        self._rebuilding = False
                        return
                # Back-to-back rebuilds under continuous collections would keep a
                # core busy gzipping and take the GIL for every join, slowing the
                # scrapes they serve: rebuild at most 1 / (1 + REBUILD_PAUSE) of the time.
                pause = self._last_rebuild_end + REBUILD_PAUSE * self._last_rebuild_seconds - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self._rebuild()
        except Exception:
            # MemoryError and the like: keep serving the last body; the next change retries.
            log.exception("rebuilding the exposition failed")
            with self._lock:
                self._rebuilding = False

    def _rebuild(self) -> None:
        with self._lock:
            version, targets_version = self._version, self._targets_version
            # References only: fragments are replaced on change, never mutated.
            parts = self._target_parts(list(self._fragments))
            trailer = self._trailer
        if self._rebuild_hook is not None:
            self._rebuild_hook()
        start = time.monotonic()
        cached = self._targets_cache
        if cached is None or cached.version != targets_version:
            # One copy of the body (the join holds the GIL); gzip releases it.
            plain = b"".join([*parts, trailer])
            size = len(plain) - len(trailer)
            cached = _TargetsCache(targets_version, plain, size, _gzip(memoryview(plain)[:size]))
        else:
            plain = b"".join([memoryview(cached.plain)[: cached.size], trailer])
        trailer_cache = self._trailer_cache
        if trailer_cache[0] != trailer:
            trailer_cache = (trailer, _gzip(trailer))
        snapshot = Snapshot(version, plain, cached.gzipped + trailer_cache[1])
        with self._lock:
            if self._targets_cache is None or self._targets_cache.version < cached.version:
                self._targets_cache = cached
            self._trailer_cache = trailer_cache
            if self._snapshot is None or self._snapshot.version < version:
                self._snapshot = snapshot
            self._last_rebuild_end = time.monotonic()
            self._last_rebuild_seconds = self._last_rebuild_end - start

    def _target_parts(self, names: Sequence[str]) -> list[bytes]:
        """Each family's header and the targets' fragments of it, in order; lock held."""
        parts: list[bytes] = []
        for family in self._families:
            chunks = [f for t in names if (f := self._fragments[t].get(family.name))]
            if chunks:
                parts.append(family.header)
                parts.extend(chunks)
        return parts
