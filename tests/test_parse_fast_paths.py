"""The parsers' fast paths (issue 8, collection throughput) read every input
as the general paths they short-cut do.

Each fast path sits in front of the general path it short-cuts, which stays
in the module (`*_general`, `_whole_number`, the uncached function behind an
lru_cache). Every fast path is held to it on generated inputs, valid and
invalid alike: the same value, or the same ParseError with the same message.
Then whole pages rendered by the simulators are parsed twice, once as the
modules do and once with only the general paths, and must give the same runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from benchmarks.collect import AVEPOINT_JOB, _avepoint_body, _commvault_body, _keepit_body, _veeam_body
from exporter.timeutil import _parse_timestamp_general
from exporter.vendors import avepoint, commvault, keepit, veeam
from exporter.vendors.base import ParseError

DETERMINISTIC = settings(derandomize=True, max_examples=300, deadline=None)

# --- the general paths the fast paths short-cut ---------------------------------------


def _commvault_int_general(node: Mapping[str, Any], key: str, what: str) -> int | None:
    return commvault._whole_number(commvault._scalar_general(node, key, what), key, what)


def _uncached(fn: Callable[[str], str]) -> Callable[[str], str]:
    wrapped: Callable[[str], str] = fn.__wrapped__  # type: ignore[attr-defined]
    return wrapped


_general_state_key = _uncached(avepoint._state_key)
_general_job_type_of = _uncached(veeam.job_type_of)


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
    assert _outcome(keepit._text, node, KEY, "w") == _outcome(keepit._text_general, node, KEY, "w")
    assert _outcome(veeam._text, node, KEY, "w") == _outcome(veeam._text_general, node, KEY, "w")


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
    assert _outcome(commvault._scalar, node, KEY, "w") == _outcome(commvault._scalar_general, node, KEY, "w")
    assert _outcome(commvault._int, node, KEY, "w") == _outcome(_commvault_int_general, node, KEY, "w")


@DETERMINISTIC
@given(scalars)
@example(2**63)
@example(2**63 - 1)
@example(True)
@example(-3)
@example(" 42 ")
def test_avepoint_count_reads_alike(value: Any) -> None:
    assert _outcome(avepoint._count, value, "k", "w") == _outcome(avepoint._count_general, value, "k", "w")


@DETERMINISTIC
@given(st.text(alphabet=" \t_-aAbBzZ09İ", max_size=16))
@example("Finished With Exception")
@example("FinishedWithException")
@example("IMMEDIATE_BACKUP-copy")
def test_cached_state_and_job_type_keys_read_alike(text: str) -> None:
    # Twice: the cached answer must be the computed one.
    for _ in range(2):
        assert avepoint._state_key(text) == _general_state_key(text)
        assert veeam.job_type_of(text) == _general_job_type_of(text)


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
    """Every fast path replaced by the general path it short-cuts."""
    for module in (keepit, veeam, avepoint):
        monkeypatch.setattr(module, "parse_timestamp", _general_timestamp)
    monkeypatch.setattr(keepit, "_text", keepit._text_general)
    monkeypatch.setattr(veeam, "_text", veeam._text_general)
    monkeypatch.setattr(veeam, "job_type_of", _general_job_type_of)
    monkeypatch.setattr(commvault, "_scalar", commvault._scalar_general)
    monkeypatch.setattr(commvault, "_int", _commvault_int_general)
    monkeypatch.setattr(avepoint, "_count", avepoint._count_general)
    monkeypatch.setattr(avepoint, "_state_key", _general_state_key)


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
