"""Collection throughput per vendor: runs parsed and normalised per second.

Baseline: a bare `xmltodict.parse(body)` or `json.loads(body)` of the same
bytes, the least any Python collector must spend on a page. Figure: the
exporter's own parser for that page (what the vendor client calls per page),
which reads the payload safely and builds the model's Run objects. Issue 8's
target: collection at least 0.5x the bare parse.

Payloads are rendered by the simulators' own rendering code (the shapes the
simulators and the vendor notes give), over several 30-day windows of their
datasets so that one page holds thousands of runs. Baseline and figure are
timed alternately, so that both see the same load on a shared machine.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import xmltodict
from aiohttp.test_utils import make_mocked_request

from benchmarks.common import Result, verdict
from exporter.model import JobKey
from exporter.simulators import avepoint as sim_avepoint
from exporter.simulators import commvault as sim_commvault
from exporter.simulators import keepit as sim_keepit
from exporter.simulators import veeam as sim_veeam
from exporter.vendors import avepoint, commvault, keepit, veeam

TARGET = 0.5
SEED = 7
ORIGIN = datetime(2025, 6, 1, 12, tzinfo=UTC)
# Each simulator holds 30 days of history at any simulated now; earlier
# windows give more runs of the same shapes.
WINDOW = timedelta(days=30)
AVEPOINT_JOB = JobKey(job_name="Exchange Online", job_type="backup")

T = TypeVar("T")


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    runs: int
    baseline: Callable[[bytes], object]
    parse: Callable[[bytes], Sequence[object]]
    # What the parser does beyond the bare parse, for the note.
    extra: str


def _windows(count: int, listing: Callable[[datetime], Sequence[T]]) -> list[T]:
    """`count` items from successive 30-day windows back from ORIGIN."""
    found: list[T] = []
    window = 0
    while len(found) < count:
        found += listing(ORIGIN - window * WINDOW)
        window += 1
    return found[:count]


def _keepit_body(count: int) -> bytes:
    dataset = sim_keepit.KeepitDataset(SEED, ORIGIN)
    devices = [device for device in dataset.devices if device.plan.has_jobs]
    jobs = _windows(count, lambda now: [job for device in devices for job in dataset.jobs(device, now)])
    return sim_keepit._render_jobs(jobs, ORIGIN, fail_reason_stat=True).encode()


def _accept(fmt: str) -> dict[str, str]:
    return {"Accept": "application/json" if fmt == "json" else "application/xml", "Host": "sim.invalid"}


def _body_of(response: Any) -> bytes:
    body = response.body
    if not isinstance(body, bytes):
        raise TypeError("simulator answered with a streamed body")
    return body


def _veeam_body(count: int, fmt: str) -> bytes:
    app = sim_veeam.create_app(seed=SEED, now=ORIGIN)
    path = "/api/query?type=BackupJobSession&format=Entities"
    request = make_mocked_request("GET", path, headers=_accept(fmt), app=app)
    renderer = sim_veeam.Renderer(request)
    dataset = app[sim_veeam.DATASET]
    sessions = _windows(count, dataset.sessions)
    entities = [sim_veeam._session_entity(renderer, dataset, session, ORIGIN) for session in sessions]
    return _body_of(sim_veeam._query_result(renderer, "BackupJobSessions", entities, False, 1, 1, count))


def _commvault_body(count: int, fmt: str) -> bytes:
    app = sim_commvault.create_app(seed=SEED, now=ORIGIN)
    request = make_mocked_request("GET", "/commandcenter/api/Job", headers=_accept(fmt), app=app)
    jobs = _windows(count, app[sim_commvault.DATASET].jobs)
    summaries = [sim_commvault._summary(job, ORIGIN) for job in jobs]
    return _body_of(sim_commvault._render_jobs(request, summaries, count, 0))


def _avepoint_body(count: int) -> bytes:
    dataset = sim_avepoint.AvePointDataset(SEED, ORIGIN)
    runs = _windows(count, dataset.runs)
    items = [sim_avepoint._render_run(run, ORIGIN, sim_avepoint.Behaviour(), older=False) for run in runs]
    # The envelope of the simulator's jobs handler (which needs a live request).
    envelope = {
        "statusCode": 200,
        "message": "",
        "data": items,
        "requestId": "0HNEVHLNSPSEJ:00000002",
        "timestamp": ORIGIN.isoformat().replace("+00:00", "Z"),
        "metadata": {"totalCount": count, "nextLink": ""},
    }
    return json.dumps(envelope).encode()


def _cases(count: int) -> list[Case]:
    bare_xml: Callable[[bytes], object] = xmltodict.parse
    bare_json: Callable[[bytes], object] = json.loads
    return [
        Case(
            "keepit xml",
            _keepit_body(count),
            count,
            bare_xml,
            lambda body: keepit.parse_jobs(body, "Microsoft 365 Backup"),
            "force_list and no entities; each execsummary is escaped XML parsed again",
        ),
        Case(
            "veeam xml",
            _veeam_body(count, "xml"),
            count,
            bare_xml,
            lambda body: veeam.parse_sessions(body).sessions,
            "namespaces processed, force_list, no entities; keys case-folded",
        ),
        Case(
            "veeam json",
            _veeam_body(count, "json"),
            count,
            bare_json,
            lambda body: veeam.parse_sessions(body).sessions,
            "NaN refused; keys case-folded",
        ),
        Case(
            "commvault json",
            _commvault_body(count, "json"),
            count,
            bare_json,
            lambda body: commvault.parse_job_list(body, "json").rows,
            "NaN refused",
        ),
        Case(
            "commvault xml",
            _commvault_body(count, "xml"),
            count,
            bare_xml,
            lambda body: commvault.parse_job_list(body, "xml").rows,
            "force_list and no entities",
        ),
        Case(
            "avepoint json",
            _avepoint_body(count),
            count,
            bare_json,
            lambda body: avepoint.parse_jobs_page(body, AVEPOINT_JOB).runs,
            "NaN refused; keys case-folded",
        ),
    ]


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _measure(case: Case, repeat: int) -> Result:
    found = len(case.parse(case.body))
    if found != case.runs:
        raise RuntimeError(f"{case.name}: the parser found {found} runs in a payload of {case.runs}")
    baseline_times: list[float] = []
    figure_times: list[float] = []
    # Alternating, so that a burst of load on the shared machine hits both.
    for _ in range(repeat):
        baseline_times.append(_timed(lambda: case.baseline(case.body)))
        figure_times.append(_timed(lambda: case.parse(case.body)))
    baseline = case.runs / statistics.median(baseline_times)
    figure = case.runs / statistics.median(figure_times)
    ratio = figure / baseline
    bare = "xmltodict.parse" if case.baseline is xmltodict.parse else "json.loads"
    return Result(
        f"collect {case.name} ({case.runs} runs/page)",
        f"{figure:,.0f} runs/s",
        f"{baseline:,.0f} runs/s",
        ratio,
        f"baseline: bare {bare}; the parser adds: {case.extra}; target >= {TARGET}x: {verdict(ratio >= TARGET)}",
    )


def bench_collect(*, quick: bool = False) -> list[Result]:
    count, repeat = (200, 3) if quick else (3000, 9)
    return [_measure(case, repeat) for case in _cases(count)]
