"""Logging in logfmt (the Prometheus ecosystem's default) or JSON.

Structured fields are passed with `extra={...}`. A redacting filter replaces
every configured secret in every record, including exception text, so a
secret that slips into a message still never reaches the log.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else came in through `extra`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record.levelname.lower().replace("warning", "warn"),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0:
        # Vendor text must not be able to forge log lines or drive a terminal.
        return f"\\x{ord(char):02x}"
    return char


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="') or any(_escape_char(c) != c for c in text):
        return '"' + "".join(_escape_char(c) for c in text) + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


class RedactingFilter(logging.Filter):
    """Applies `redact` to the message, its arguments, extras and exception text."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD:
                setattr(record, key, self._redact_value(value))
        if record.exc_info:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
            record.__dict__["exc"] = record.exc_text
        return True

    def _redact_value(self, value: Any) -> Any:
        """Strings redacted; containers walked; numbers kept; anything else
        (an exception, an object) becomes its redacted str()."""
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, list | tuple | set | frozenset):
            return [self._redact_value(item) for item in value]
        if isinstance(value, dict):
            return {str(self._redact_value(k)): self._redact_value(v) for k, v in value.items()}
        return self.redact(str(value))


def setup_logging(level: str, fmt: str, redact: Callable[[str], str]) -> RedactingFilter:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    redacting = RedactingFilter(redact)
    handler.addFilter(redacting)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # aiohttp's access log would log every scrape at info.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return redacting
