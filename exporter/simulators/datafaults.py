"""Data faults every vendor simulator can show: answers that are well formed
but wrong in the ways real vendors are wrong.

Set with `POST /_sim/data` (read back with GET); the body replaces the whole
setting, so an omitted key is switched off:

- `"duplicate": true`: every run, session, job or connector row of a list
  answer appears twice in a row, with the same id. The list is doubled
  before paging, so a total or page count counts both copies and a pair may
  straddle two pages.
- `"reverse": true`: every list answer comes in the opposite of the vendor's
  order (newest first where it sorts oldest first, and the other way round).
  Each page is reversed on its own, so paging still walks the same rows.
- `"future_seconds": s`: the vendor's clock is `s` seconds ahead of ours. Runs
  happen when they happen, but every run time the vendor reports, filters on
  or counts back from is `s` seconds later (Commvault's `Date` header too;
  Keepit's snapshot history and Veeam's repositories are no run data and keep
  the true clock).
- `"flip_status": true`: the vendor re-classifies finished runs: each one is
  reported with another final status than its real one (a success as failed,
  anything else as a success), as a console re-evaluating a run between polls.
- `"hide": [names]`: those jobs (Keepit connectors, Veeam jobs, Commvault
  clients or `client/backupset/subclient` paths, AvePoint services) are gone:
  they and their runs vanish from every answer, as if deleted.

Under `/_sim/`, so the fault middleware of base.py never faults these routes.
The helpers below are generic over a simulator's row type; each simulator
says how to read a row's names and how to shift or re-classify one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web

from exporter.simulators.base import control_json, sim_now

T = TypeVar("T")

KEYS = frozenset({"duplicate", "reverse", "future_seconds", "flip_status", "hide"})
# A year: far enough for any skew worth testing, near enough that no
# simulated timestamp leaves datetime's range.
MAX_FUTURE_SECONDS = 366 * 86400.0


@dataclass
class DataFaults:
    """What is wrong with the data the simulator serves; all off by default."""

    duplicate: bool = False
    reverse: bool = False
    future_seconds: float = 0.0
    flip_status: bool = False
    hide: frozenset[str] = field(default_factory=frozenset)

    def configure(self, payload: Mapping[str, Any]) -> None:
        """Replace the setting from a control request; ValueError on bad input,
        leaving the current setting as it was."""
        unknown = set(payload) - KEYS
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
        duplicate = _flag(payload, "duplicate")
        reverse = _flag(payload, "reverse")
        flip_status = _flag(payload, "flip_status")
        future_seconds = _seconds(payload, "future_seconds")
        hide = _names(payload, "hide")
        self.duplicate, self.reverse, self.flip_status = duplicate, reverse, flip_status
        self.future_seconds, self.hide = future_seconds, hide

    @property
    def skew(self) -> timedelta:
        return timedelta(seconds=self.future_seconds)

    def hides(self, names: Iterable[str]) -> bool:
        """Whether a row known by any of `names` is hidden; names match
        ignoring surrounding spaces, which vendors add and clients strip."""
        return any(name.strip() in self.hide for name in names)

    def as_dict(self) -> dict[str, Any]:
        return {
            "duplicate": self.duplicate,
            "reverse": self.reverse,
            "future_seconds": self.future_seconds,
            "flip_status": self.flip_status,
            "hide": sorted(self.hide),
        }


def _flag(payload: Mapping[str, Any], key: str) -> bool:
    value = payload.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


def _seconds(payload: Mapping[str, Any], key: str) -> float:
    value = payload.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number of seconds")
    if not math.isfinite(value) or not 0 <= value <= MAX_FUTURE_SECONDS:
        raise ValueError(f"{key} must be between 0 and {MAX_FUTURE_SECONDS:.0f}")
    return float(value)


def _names(payload: Mapping[str, Any], key: str) -> frozenset[str]:
    value = payload.get(key, [])
    if not isinstance(value, list) or not all(isinstance(name, str) and name.strip() for name in value):
        raise ValueError(f"{key} must be a list of non-empty names")
    return frozenset(name.strip() for name in value)


DATA_FAULTS = web.AppKey("sim_data_faults", DataFaults)


def data_faults(request: web.Request) -> DataFaults:
    return request.app[DATA_FAULTS]


def vendor_now(request: web.Request) -> datetime:
    """The vendor's now: the simulated now plus the clock skew."""
    return sim_now(request) + data_faults(request).skew


def prepare(
    faults: DataFaults,
    rows: Iterable[T],
    *,
    names: Callable[[T], Iterable[str]],
    shift: Callable[[T, timedelta], T],
    flip: Callable[[T], T] | None = None,
) -> list[T]:
    """The rows as the faulty vendor holds them, before it filters or pages
    them: hidden ones gone, times in the vendor's clock, outcomes
    re-classified. `flip` changes the outcome a row shows once finished; the
    caller renders the rows at vendor_now(), so each is in progress or
    finished exactly when it really is."""
    kept = [row for row in rows if not faults.hides(names(row))]
    if faults.future_seconds:
        kept = [shift(row, faults.skew) for row in kept]
    if faults.flip_status and flip is not None:
        kept = [flip(row) for row in kept]
    return kept


def doubled(faults: DataFaults, rows: Sequence[T]) -> list[T]:
    """The list a vendor pages over: each row twice in a row when duplicating."""
    if not faults.duplicate:
        return list(rows)
    return [row for row in rows for _ in range(2)]


def arranged(faults: DataFaults, page: Sequence[T]) -> list[T]:
    """One answer's rows in the order they are sent."""
    return list(reversed(page)) if faults.reverse else list(page)


def listed(
    faults: DataFaults,
    rows: Iterable[T],
    *,
    names: Callable[[T], Iterable[str]],
) -> list[T]:
    """An unpaged inventory (connectors, jobs): hidden rows gone, the rest
    doubled and ordered as the faults say."""
    kept = [row for row in rows if not faults.hides(names(row))]
    return arranged(faults, doubled(faults, kept))


async def _get_data(request: web.Request) -> web.Response:
    return web.json_response(data_faults(request).as_dict())


async def _post_data(request: web.Request) -> web.Response:
    payload = await control_json(request)
    try:
        data_faults(request).configure(payload)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    return web.json_response(data_faults(request).as_dict())


def add_data_fault_routes(app: web.Application) -> None:
    """Give `app` its DataFaults (all off) and the `/_sim/data` routes."""
    app[DATA_FAULTS] = DataFaults()
    app.router.add_get("/_sim/data", _get_data)
    app.router.add_post("/_sim/data", _post_data)
