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
    if _is_plain_utc(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            # Not a date after all (month 13, ...): the general path decides.
            pass
    return _parse_timestamp_general(text)


def _is_plain_utc(text: str) -> bool:
    """Whether `text` has the shape vendors nearly always send,
    `YYYY-MM-DDTHH:MM:SS[.f...]Z`, which datetime.fromisoformat (3.11+) reads
    as _parse_timestamp_general does: `Z` as UTC, fractions of any length cut
    to microseconds. Every collected run carries two or three timestamps, and
    the general path's regex and string surgery cost as much as the rest of
    the run's parse."""
    size = len(text)
    return (
        20 <= size <= 40
        and text[-1] == "Z"
        and text[4] == text[7] == "-"
        and text[10] == "T"
        and text[13] == text[16] == ":"
        and (size == 20 or (text[19] == "." and text[20:-1].isdigit()))
        and text.isascii()
    )


def _parse_timestamp_general(text: str) -> datetime:
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
