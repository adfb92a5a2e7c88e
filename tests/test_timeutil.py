"""parse_timestamp's fast path for `YYYY-MM-DDTHH:MM:SS[.f...]Z` gives what
the general path gives, on every input: the same instant with the same
microseconds, or the same refusal.

The fast path hands the text to datetime.fromisoformat as it is; the general
path rewrites `Z` to `+00:00` and cuts or pads the fraction to six digits
first. These tests hold the two to each other on valid stamps of every
fraction length, on near-misses one character off, and on arbitrary text.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exporter.timeutil import _is_plain_utc, _parse_timestamp_general, parse_timestamp

DETERMINISTIC = settings(derandomize=True, max_examples=400, deadline=None)

instants = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999))
fraction_digits = st.text(alphabet="0123456789", min_size=1, max_size=12)


def _plain(value: datetime, fraction: str | None) -> str:
    text = f"{value.year:04d}-{value:%m-%dT%H:%M:%S}"
    return text + ("" if fraction is None else "." + fraction) + "Z"


def _outcome(parse: object, text: str) -> tuple[str, str]:
    """("ok", exact isoformat) or ("error", exception class): what must match."""
    assert callable(parse)
    try:
        parsed = parse(text)
    except ValueError as exc:
        return "error", type(exc).__name__
    assert isinstance(parsed, datetime)
    assert parsed.utcoffset() == timedelta(0)
    return "ok", parsed.isoformat()


def _general(text: str) -> datetime:
    return _parse_timestamp_general(text.strip())


@DETERMINISTIC
@given(instants, st.none() | fraction_digits)
@example(datetime(2024, 12, 22, 9, 29, 38), None)
@example(datetime(2024, 12, 22, 9, 29, 38), "1234567")  # .NET's seven digits
@example(datetime(9999, 12, 31, 23, 59, 59), "9999999")  # cut, never rounded past year 9999
@example(datetime(1, 1, 1), "0")
def test_fast_path_matches_general_path_on_plain_stamps(value: datetime, fraction: str | None) -> None:
    text = _plain(value, fraction)
    assert _is_plain_utc(text) == (len(text) <= 40)
    assert _outcome(parse_timestamp, text) == _outcome(_general, text)
    if len(text) <= 40:
        parsed = parse_timestamp(text)
        digits = (fraction or "") + "000000"
        assert parsed == value.replace(microsecond=int(digits[:6]), tzinfo=UTC)


@DETERMINISTIC
@given(
    instants,
    st.none() | fraction_digits,
    st.integers(min_value=0, max_value=40),
    st.sampled_from(list("0123456789-T:.Z zZ+/\u0661\uff10\x00")),
)
@example(datetime(2024, 1, 31, 0, 0), None, 6, "3")  # month 33
@example(datetime(2024, 2, 28, 0, 0), None, 9, "9")  # day 29 of 2024 is fine, 2023 is not
@example(datetime(2023, 2, 28, 0, 0), None, 9, "9")
@example(datetime(2024, 1, 1, 23, 59, 0), None, 17, "6")  # a leap second
@example(datetime(2024, 1, 1), None, 12, "\u0661")  # an Arabic-Indic digit
def test_one_character_off_is_read_alike(value: datetime, fraction: str | None, position: int, char: str) -> None:
    text = _plain(value, fraction)
    position = min(position, len(text) - 1)
    mutated = text[:position] + char + text[position + 1 :]
    assert _outcome(parse_timestamp, mutated) == _outcome(_general, mutated)


@DETERMINISTIC
@given(st.text(alphabet="0123456789-T:.Zz +", min_size=0, max_size=34))
@example("2024-01-01T00:00:00.Z")
@example("2024-01-01T00:00:00.+00:00Z")
@example(" 2024-01-01T00:00:00Z ")
@example("2024-01-01T00:00:00z")
def test_arbitrary_text_is_read_alike(text: str) -> None:
    assert _outcome(parse_timestamp, text) == _outcome(_general, text)


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("2024-12-22T09:29:38Z", True),
        ("2024-12-22T09:29:38.5Z", True),
        ("2024-12-22T09:29:38.1234567Z", True),
        # The general path's business: other zones, no zone, lower-case z,
        # a dot without digits, non-ASCII digits.
        ("2024-12-22T09:29:38+01:00", False),
        ("2024-12-22T09:29:38", False),
        ("2024-12-22T09:29:38z", False),
        ("2024-12-22T09:29:38.Z", False),
        ("2024-12-22 09:29:38Z", False),
        ("2024-12-22T09:29:3\u0668Z", False),
    ],
)
def test_which_stamps_take_the_fast_path(text: str, plain: bool) -> None:
    assert _is_plain_utc(text) is plain


@pytest.mark.parametrize(
    "text",
    ["2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T00:00:60Z"],
)
def test_plain_looking_non_dates_are_refused(text: str) -> None:
    assert _is_plain_utc(text)
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_surrounding_whitespace_still_takes_the_fast_path() -> None:
    assert parse_timestamp(" 2024-12-22T09:29:38Z \n") == datetime(2024, 12, 22, 9, 29, 38, tzinfo=UTC)
