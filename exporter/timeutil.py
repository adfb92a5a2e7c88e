"""Parsing of the timestamps and durations vendors and the config use.

Vendor values arrive with stray whitespace (`2024-12-22T09:29:38Z `), a `Z`
or an offset or nothing at all, and fractional seconds of any precision; all
come out as aware UTC datetimes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import isodate

_FRACTION = re.compile(r"(\.\d+)")
_SIMPLE_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)\s*$")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "y": 365 * 86400,
}


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime; naive means UTC.

    Raises ValueError on anything that is not a timestamp.
    """
    text = value.strip()
    if not text:
        raise ValueError("empty timestamp")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # datetime.fromisoformat takes at most 6 fractional digits; vendors send 7
    # (.NET) or 1-3. Normalise to exactly 6.
    match = _FRACTION.search(text)
    if match:
        digits = match.group(1)[1:]
        text = text[: match.start()] + "." + (digits + "000000")[:6] + text[match.end() :]
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-01:00 is a valid ISO string whose UTC instant
        # lies past year 9999: no timestamp we can hold, so not a timestamp.
        raise ValueError("timestamp out of range") from None


def format_timestamp(value: datetime) -> str:
    """Second-precision `YYYY-MM-DDTHH:MM:SSZ`, the form vendors document.

    Not strftime: glibc's %Y writes year 999 as `999`, which is no ISO 8601
    (nor anything parse_timestamp reads back).
    """
    utc = value.astimezone(UTC)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}Z"


def parse_duration(value: str | int | float, *, anchor: datetime | None = None) -> timedelta:
    """A duration: Prometheus style (`90s`, `5m`, `26h`, `7d`) or ISO 8601 (`P1M`).

    ISO durations with months or years are anchored to `anchor` (default: now),
    because a month has no fixed length. Raises ValueError on garbage,
    including the empty ISO duration `PT`, which isodate accepts as zero.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    text = value.strip()
    match = _SIMPLE_DURATION.match(text)
    if match:
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if not text.upper().startswith("P") or text.upper() in ("P", "PT") or text.upper().endswith("T"):
        raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 5m, 26h, 7d or P1M)")
    try:
        parsed = isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError) as exc:
        raise ValueError(f"not a duration: {value!r}") from exc
    if isinstance(parsed, timedelta):
        return parsed
    start = anchor or datetime.now(UTC)
    end: datetime = start + parsed
    return end - start


def to_epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)
