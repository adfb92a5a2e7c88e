"""Logging: logfmt quoting, JSON output and the redacting filter, through real
`logging` loggers and handlers writing to a buffer."""

from __future__ import annotations

import io
import json
import logging
import re
import shlex
from collections.abc import Callable, Iterator

import pytest

from exporter.logs import JsonFormatter, LogfmtFormatter, RedactingFilter
from exporter.redact import Redactor

SECRET = "Dæmo%+,?()pw-s3cret"  # a test value: the thing that must not leak
LOGGER = "tests.logs"


class Capture:
    """A logger whose records go through a RedactingFilter and a formatter into a buffer."""

    def __init__(self, formatter: logging.Formatter, redact: Callable[[str], str]) -> None:
        self.buffer = io.StringIO()
        self.handler = logging.StreamHandler(self.buffer)
        self.handler.setFormatter(formatter)
        self.handler.addFilter(RedactingFilter(redact))
        self.logger = logging.getLogger(LOGGER)

    def lines(self) -> list[str]:
        return self.buffer.getvalue().splitlines()


@pytest.fixture(params=["logfmt", "json"])
def capture(request: pytest.FixtureRequest) -> Iterator[Capture]:
    formatter: logging.Formatter = LogfmtFormatter() if request.param == "logfmt" else JsonFormatter()
    yield from _attached(Capture(formatter, Redactor([SECRET])))


@pytest.fixture
def logfmt() -> Iterator[Capture]:
    yield from _attached(Capture(LogfmtFormatter(), Redactor([])))


@pytest.fixture
def jsonlog() -> Iterator[Capture]:
    yield from _attached(Capture(JsonFormatter(), Redactor([])))


def _attached(capture: Capture) -> Iterator[Capture]:
    logger = capture.logger
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(capture.handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield capture
    finally:
        logger.removeHandler(capture.handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def parse_logfmt(line: str) -> dict[str, str]:
    """An independent logfmt reader: key=value pairs, values bare or double-quoted
    with backslash escapes (\\n, \\t, \\", \\\\)."""
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
    fields: dict[str, str] = {}
    position = 0
    pair = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s+|$)')
    while position < len(line):
        match = pair.match(line, position)
        assert match, f"not logfmt at column {position}: {line!r}"
        key, raw = match.groups()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), "\\" + m.group(1)), raw[1:-1])
        assert key not in fields, f"key {key} twice in {line!r}"
        fields[key] = raw
        position = match.end()
    return fields


# --- logfmt ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "two words",
        'say "hi"',
        "line one\nline two",
        "a=b",
        "back\\slash",
        "tab\there",
        "",
        'all of it: "x=1"\n\\ end ',
    ],
)
def test_logfmt_values_round_trip(logfmt: Capture, value: str) -> None:
    logfmt.logger.info("collection failed", extra={"error": value, "target": "keepit-dk"})
    [line] = logfmt.lines()
    fields = parse_logfmt(line)
    assert fields["error"] == value
    assert fields["target"] == "keepit-dk"
    assert fields["msg"] == "collection failed"
    assert fields["level"] == "info"
    assert fields["logger"] == LOGGER


def test_logfmt_quotes_only_what_needs_it(logfmt: Capture) -> None:
    logfmt.logger.warning("two words", extra={"bare": "keepit-dk", "spaced": "a b", "count": 3})
    [line] = logfmt.lines()
    assert " bare=keepit-dk " in line
    assert ' spaced="a b" ' in line
    assert line.endswith(" count=3")
    assert ' msg="two words" ' in line
    # warning is spelled the Prometheus way.
    assert " level=warn " in line
    assert re.match(r"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=warn logger=\S+ ", line), line
    # A shell-like split agrees on the number of fields: nothing leaked out of its quotes.
    assert len(shlex.split(line)) == 7  # ts level logger msg bare spaced count


def test_logfmt_control_characters_stay_on_one_line(logfmt: Capture) -> None:
    """A vendor error text with a control character must neither split the log
    line (str.splitlines breaks on \\r, \\x0b, \\x0c; a terminal returns to
    column 0 on \\r and lets the rest overwrite the line) nor hide raw in a value.
    go-logfmt quotes any value with a rune <= ' ' and escapes it."""
    values = ["carriage\rreturn", "vertical\x0btab", "form\x0cfeed", "nul\x00byte", "esc\x1b[2Jape"]
    for value in values:
        logfmt.logger.warning("collection failed", extra={"error": value})
    lines = logfmt.buffer.getvalue().split("\n")[:-1]
    assert len(lines) == len(values)
    bad = [line for line in lines if len(line.splitlines()) != 1 or any(c < " " for c in line)]
    assert not bad, f"raw control characters in log lines: {bad!r}"


def test_logfmt_multiline_message_and_exception_stay_on_one_line(logfmt: Capture) -> None:
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        logfmt.logger.exception("a\nb")
    [line] = logfmt.lines()
    fields = parse_logfmt(line)
    assert fields["msg"] == "a\nb"
    assert fields["level"] == "error"
    assert "Traceback (most recent call last)" in fields["exc"]
    assert "ValueError: first\nsecond" in fields["exc"]


# --- JSON --------------------------------------------------------------------------


def test_json_lines_parse_and_carry_extra_fields(jsonlog: Capture) -> None:
    class Unserialisable:
        def __str__(self) -> str:
            return "custom object"

    jsonlog.logger.info(
        "first collection of %s",
        "keepit-dk",
        extra={"target": "keepit-dk", "jobs": 7, "ratio": 0.5, "ok": True, "obj": Unserialisable(), "q": 'a "b"\n'},
    )
    jsonlog.logger.debug("second")
    first, second = (json.loads(line) for line in jsonlog.lines())
    assert first["msg"] == "first collection of keepit-dk"
    assert first["level"] == "info"
    assert first["logger"] == LOGGER
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert first["target"] == "keepit-dk"
    assert first["jobs"] == 7
    assert first["ratio"] == 0.5
    assert first["ok"] is True
    assert first["obj"] == "custom object"
    assert first["q"] == 'a "b"\n'
    # Only what was passed in: none of LogRecord's own attributes.
    assert not {"args", "levelno", "pathname", "lineno", "funcName", "process", "thread"} & set(first)
    assert second["msg"] == "second"
    assert second["level"] == "debug"
    assert "target" not in second


def test_json_exception_is_a_field(jsonlog: Capture) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        jsonlog.logger.exception("failed")
    [line] = jsonlog.lines()
    record = json.loads(line)
    assert record["level"] == "error"
    assert record["exc"].startswith("Traceback (most recent call last)")
    assert record["exc"].rstrip().endswith("RuntimeError: boom")


# --- redaction (both formats) --------------------------------------------------------


def _no_secret(capture: Capture) -> str:
    text = capture.buffer.getvalue()
    assert text, "nothing was logged"
    assert SECRET not in text
    # Nor a recognisable part of it (JSON writes the "æ" as \\u00e6).
    assert "s3cret" not in text
    return text


def test_redacts_the_message(capture: Capture) -> None:
    capture.logger.warning(f"login with {SECRET} refused")
    assert "login with <redacted> refused" in _no_secret(capture)


def test_redacts_percent_args(capture: Capture) -> None:
    capture.logger.warning("login as %s with %s refused", "api-token", SECRET)
    text = _no_secret(capture)
    assert "login as api-token with <redacted> refused" in text


def test_redacts_string_extra_fields(capture: Capture) -> None:
    capture.logger.warning("collection failed", extra={"error": f"GET /users/?pw={SECRET}: HTTP 401", "target": "kp"})
    text = _no_secret(capture)
    assert "GET /users/?pw=<redacted>: HTTP 401" in text
    assert "kp" in text


def test_redacts_exception_tracebacks(capture: Capture) -> None:
    def login() -> None:
        raise PermissionError(f"bad password {SECRET!r} for api-token")

    try:
        try:
            login()
        except PermissionError as exc:
            raise RuntimeError(f"collection aborted ({SECRET})") from exc
    except RuntimeError:
        capture.logger.exception("unexpected error collecting target")
    text = _no_secret(capture)
    assert "PermissionError: bad password" in text
    assert "RuntimeError: collection aborted (<redacted>)" in text
    assert "in login" in text  # the traceback itself is still there


def test_redacts_exception_objects_and_containers_in_extra(capture: Capture) -> None:
    """`extra={"error": exc}` is a common idiom; the filter promises every
    configured secret is replaced in every record."""
    error = PermissionError(f"bad password {SECRET}")
    capture.logger.warning("login refused", extra={"error": error, "attempts": [f"pw={SECRET}"]})
    _no_secret(capture)


def test_redaction_leaves_other_text_alone(capture: Capture) -> None:
    capture.logger.info("nothing secret here: %d jobs", 7, extra={"target": "keepit-dk"})
    text = capture.buffer.getvalue()
    assert "nothing secret here: 7 jobs" in text
    assert "<redacted>" not in text
