"""The Prometheus text exposition (format 0.0.4), assembled from cached pieces.

Each target's samples are rendered once, after its collection, into one byte
fragment per metric family. A scrape only joins bytes: the families in a fixed
order, each with its HELP/TYPE header once and then every target's fragment
(the format requires all samples of a family to be contiguous, which is why
targets cannot simply be concatenated). Rebuilding after one target's
collection therefore costs that target's rendering plus a join.
"""

from __future__ import annotations

import gzip
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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


def format_value(value: float) -> str:
    """Go-style floats, as Prometheus and client_python print them."""
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
        self._lines.setdefault(family.name, []).append(
            f"{family.name}{suffix}{format_labels(labels)} {format_value(value)}\n"
        )

    def fragments(self) -> dict[str, bytes]:
        return {name: "".join(lines).encode() for name, lines in self._lines.items()}


class Exposition:
    """Per-target fragments plus the assembled, optionally gzipped, body.

    Written by the poller after each collection, read by the HTTP handlers.
    The body is rebuilt lazily on the first read after a change.
    """

    def __init__(self, families: Iterable[Family]) -> None:
        self._families = list(families)
        self._fragments: dict[str, dict[str, bytes]] = {}
        # The exporter's own metrics (process_*, build info), rendered apart.
        self._trailer = b""
        self._lock = threading.Lock()
        self._version = 0
        self._cache: tuple[int, bytes, bytes | None] | None = None

    @property
    def families(self) -> list[Family]:
        return list(self._families)

    def set_target(self, target: str, fragments: Mapping[str, bytes]) -> None:
        with self._lock:
            self._fragments[target] = dict(fragments)
            self._version += 1

    def remove_target(self, target: str) -> None:
        with self._lock:
            if self._fragments.pop(target, None) is not None:
                self._version += 1

    def set_trailer(self, trailer: bytes) -> None:
        with self._lock:
            if trailer != self._trailer:
                self._trailer = trailer
                self._version += 1

    def targets(self) -> list[str]:
        return list(self._fragments)

    def render(self, targets: Iterable[str] | None = None) -> bytes:
        """The body for the given targets (all, plus the trailer, when None); not cached."""
        with self._lock:
            names = list(self._fragments) if targets is None else [t for t in targets if t in self._fragments]
            parts: list[bytes] = []
            for family in self._families:
                chunks = [f for t in names if (f := self._fragments[t].get(family.name))]
                if chunks:
                    parts.append(family.header)
                    parts.extend(chunks)
            if targets is None:
                parts.append(self._trailer)
            return b"".join(parts)

    def body(self, *, gzipped: bool = False) -> bytes:
        """The body for all targets, cached until the next change."""
        with self._lock:
            version = self._version
            cache = self._cache
        if cache is None or cache[0] != version:
            cache = (version, self.render(), None)
        if gzipped and cache[2] is None:
            # Level 1: ~2x faster than 6 for a few % larger output (BASELINES.md).
            cache = (cache[0], cache[1], gzip.compress(cache[1], compresslevel=1, mtime=0))
        with self._lock:
            if self._version == cache[0]:
                self._cache = cache
        return cache[2] if gzipped and cache[2] is not None else cache[1]
