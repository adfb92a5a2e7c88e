"""The parsers' fast paths (issue 8, collection throughput) read every input
as the general paths they short-cut do.

Each `_reference_*` below is the general path as it stood before its fast
path was added, kept here verbatim as the specification. Every fast path is
held to it on generated inputs, valid and invalid alike: the same value, or
the same ParseError with the same message. Then whole pages rendered by the
simulators are parsed twice, once with the module's helpers and once with
the references put in their place, and must give the same runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from benchmarks.collect import AVEPOINT_JOB, _avepoint_body, _commvault_body, _keepit_body, _veeam_body
from exporter.timeutil import _parse_timestamp_general
from exporter.vendors import avepoint, commvault, keepit, veeam
from exporter.vendors.base import ParseError
from exporter.vendors.payload import INT64_LIMIT, short

DETERMINISTIC = settings(derandomize=True, max_examples=300, deadline=None)

# --- the general paths, as they were ------------------------------------------------


def _reference_keepit_text(node: Mapping[str, Any], key: str, what: str) -> str | None:
    value = node.get(key)
    if isinstance(value, dict):
        if any(not k.startswith("@") and k != "#text" for k in value):
            raise ParseError(f"{what}: <{key}> has child elements, expected a value")
        value = value.get("#text")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{what}: <{key}> appears more than once")
    return value.strip() or None


def _reference_veeam_text(node: Mapping[str, Any], key: str, what: str) -> str | None:
    value = node.get(key)
    if isinstance(value, dict):
        if any(not k.startswith("@") and k != "#text" for k in value):
            raise ParseError(f"{what}: {key} has child elements, expected a value")
        value = value.get("#text")
    if value is None:
        return None
    if isinstance(value, bool):
        raise ParseError(f"{what}: {key} is a boolean, expected text")
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise ParseError(f"{what}: {key} appears more than once or is not a value")
    return value.strip() or None


def _reference_job_type_of(value: str) -> str:
    boundary = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
    words = re.split(r"[\s_-]+", value.strip())
    return "_".join(boundary.sub("_", word).lower() for word in words if word)


def _reference_commvault_scalar(node: Mapping[str, Any], key: str, what: str) -> str | int | float | bool | None:
    if key in node and "@" + key in node:
        raise ParseError(f"{what}: {key} is both an attribute and an element")
    value = commvault._field(node, key)
    if isinstance(value, dict):
        if any(not k.startswith("@") and k != "#text" for k in value):
            raise ParseError(f"{what}: {key} holds an object, expected a value")
        value = value.get("#text")
    if isinstance(value, list):
        raise ParseError(f"{what}: {key} appears more than once")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ParseError(f"{what}: {key} has an unexpected type")


def _reference_commvault_int(node: Mapping[str, Any], key: str, what: str) -> int | None:
    value = _reference_commvault_scalar(node, key, what)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ParseError(f"{what}: {key} is a boolean, expected a number")
    number: float | int
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise ParseError(f"{what}: {key} is {short(text, 40)!r}, not a number") from None
    else:
        number = value
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise ParseError(f"{what}: {key} is {number!r}, expected a whole number")
        number = int(number)
    if number < 0:
        raise ParseError(f"{what}: {key} is negative ({number})")
    if number >= INT64_LIMIT:
        raise ParseError(f"{what}: {key} is {short(str(number), 40)}, out of the Int64 range")
    return number


def _reference_avepoint_count(value: Any, key: str, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and re.match(r"^[0-9]{1,18}$", value.strip()):
        return int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < INT64_LIMIT:
        raise ParseError(f"{what}: {key} is {short(repr(value), 40)}, expected a non-negative integer")
    return value


def _reference_state_key(state: str) -> str:
    return re.sub(r"[\s_-]+", "", state).lower()


# --- comparing --------------------------------------------------------------------------


def _outcome(fn: Callable[..., object], *args: Any) -> tuple[str, object]:
    """("ok", value with its type) or ("error", message): what must match."""
    try:
        value = fn(*args)
    except ParseError as exc:
        return "error", str(exc)
    return "ok", (type(value), value)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=" \t0123456789.-+eE_abc\u0661", max_size=12)
)
xml_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["#text", "@Type", "@attr", "child"]), inner, max_size=3)
    ),
    max_leaves=6,
)
KEY = "jobId"
nodes = st.dictionaries(st.sampled_from([KEY, "@" + KEY, "@attr", "other"]), xml_values, max_size=4)


@DETERMINISTIC
@given(nodes)
@example({KEY: "12"})
@example({KEY: 12, "@" + KEY: 12})
@example({"@" + KEY: "7"})
@example({"@attr": {KEY: 5}})
@example({KEY: {"#text": " 3 ", "@Type": "x"}})
@example({KEY: True})
def test_keepit_and_veeam_text_read_alike(node: dict[str, Any]) -> None:
    assert _outcome(keepit._text, node, KEY, "w") == _outcome(_reference_keepit_text, node, KEY, "w")
    assert _outcome(veeam._text, node, KEY, "w") == _outcome(_reference_veeam_text, node, KEY, "w")


@DETERMINISTIC
@given(nodes)
@example({KEY: 2**63})
@example({KEY: 2**63 - 1})
@example({KEY: -1})
@example({KEY: 0})
@example({KEY: False})
@example({KEY: 12, "@" + KEY: "12"})
@example({KEY: None, "@" + KEY: "12"})
def test_commvault_scalar_and_int_read_alike(node: dict[str, Any]) -> None:
    assert _outcome(commvault._scalar, node, KEY, "w") == _outcome(_reference_commvault_scalar, node, KEY, "w")
    assert _outcome(commvault._int, node, KEY, "w") == _outcome(_reference_commvault_int, node, KEY, "w")


@DETERMINISTIC
@given(scalars)
@example(2**63)
@example(2**63 - 1)
@example(True)
@example(-3)
@example(" 42 ")
def test_avepoint_count_reads_alike(value: Any) -> None:
    assert _outcome(avepoint._count, value, "k", "w") == _outcome(_reference_avepoint_count, value, "k", "w")


@DETERMINISTIC
@given(st.text(alphabet=" \t_-aAbBzZ09İ", max_size=16))
@example("Finished With Exception")
@example("FinishedWithException")
@example("IMMEDIATE_BACKUP-copy")
def test_cached_state_and_job_type_keys_read_alike(text: str) -> None:
    # Twice: the cached answer must be the computed one.
    for _ in range(2):
        assert avepoint._state_key(text) == _reference_state_key(text)
        assert veeam.job_type_of(text) == _reference_job_type_of(text)


# --- whole pages -------------------------------------------------------------------------

COUNT = 150


def _general_timestamp(value: str) -> Any:
    return _parse_timestamp_general(value.strip())


PAGES: dict[str, tuple[Callable[[], bytes], Callable[[bytes], object]]] = {
    "keepit xml": (lambda: _keepit_body(COUNT), lambda body: keepit.parse_jobs(body, "Jira Cloud")),
    "veeam xml": (lambda: _veeam_body(COUNT, "xml"), lambda body: veeam.parse_sessions(body)),
    "veeam json": (lambda: _veeam_body(COUNT, "json"), lambda body: veeam.parse_sessions(body)),
    "commvault json": (lambda: _commvault_body(COUNT, "json"), lambda body: commvault.parse_job_list(body, "json")),
    "commvault xml": (lambda: _commvault_body(COUNT, "xml"), lambda body: commvault.parse_job_list(body, "xml")),
    "avepoint json": (lambda: _avepoint_body(COUNT), lambda body: avepoint.parse_jobs_page(body, AVEPOINT_JOB)),
}


@pytest.fixture
def general_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fast path of this module replaced by its reference."""
    for module in (keepit, veeam, avepoint):
        monkeypatch.setattr(module, "parse_timestamp", _general_timestamp)
    monkeypatch.setattr(keepit, "_text", _reference_keepit_text)
    monkeypatch.setattr(veeam, "_text", _reference_veeam_text)
    monkeypatch.setattr(veeam, "job_type_of", _reference_job_type_of)
    monkeypatch.setattr(commvault, "_scalar", _reference_commvault_scalar)
    monkeypatch.setattr(commvault, "_int", _reference_commvault_int)
    monkeypatch.setattr(avepoint, "_count", _reference_avepoint_count)
    monkeypatch.setattr(avepoint, "_state_key", _reference_state_key)


@pytest.fixture(scope="module")
def pages() -> dict[str, tuple[bytes, object]]:
    """Each simulator page, and what the parsers make of it with their fast paths."""
    parsed = {}
    for name, (render, parse) in PAGES.items():
        body = render()
        parsed[name] = (body, parse(body))
    return parsed


@pytest.mark.parametrize("name", sorted(PAGES))
def test_simulator_pages_parse_alike(name: str, pages: dict[str, tuple[bytes, object]], general_paths: None) -> None:
    body, fast = pages[name]
    general = PAGES[name][1](body)
    assert general == fast
    runs = getattr(fast, "rows", None) or getattr(fast, "sessions", None) or getattr(fast, "runs", None) or fast
    assert isinstance(runs, list | tuple)
    assert len(runs) == COUNT
