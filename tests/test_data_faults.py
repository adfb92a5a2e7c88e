"""Wrong data from every vendor, and the exporter counting right under it.

Each test starts one vendor simulator on loopback with a fixed clock and
drives the exporter's real collection (TargetCollector: vendor client,
HttpClient, state, SQLite store, metrics) against it over HTTP, switching the
simulator's data faults (`POST /_sim/data`, exporter/simulators/datafaults.py)
and moving its clock between polls. What the exporter publishes is read back
from its rendered exposition.

The ground truth comes from the simulator's dataset objects, not from the
exporter: every run that finished by the simulated now and lies in the window
the first poll asked for (the lookback), or started later. Two views of it are
compared with what the exporter shows, neither needing the exporter's job
names: the sorted per-job run counts (each run counted once, none lost), and
the sorted per-job (end, status) of the newest finished run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from exporter.config import Config, parse_config
from exporter.exposition import Exposition
from exporter.metrics import FAMILIES
from exporter.poller import TargetCollector
from exporter.redact import Redactor
from exporter.simulators import SIMULATORS, avepoint, commvault, keepit, start_simulator, veeam
from exporter.simulators.base import CLOCK
from exporter.simulators.datafaults import DATA_FAULTS
from exporter.state import MAX_CLOCK_SKEW, TargetState
from exporter.store import Store
from exporter.vendors import VENDORS
from exporter.vendors.base import ERROR_REASONS
from tests.harness import parse_exposition, select

T0 = datetime(2025, 3, 10, 17, 0, tzinfo=UTC)
LOOKBACK = timedelta(days=7)
HOUR = 3600.0
DAY = 24 * HOUR
# Commvault's client asks for runs that completed this long before its window.
COMMVAULT_LOOKUP_MARGIN = timedelta(minutes=10)

# Per vendor, a job to hide that always has a long run in progress ("long":
# Keepit's Jira connector, 9-11.5 h runs; Veeam's NAS job, 20-23.5 h;
# AvePoint's Teams, 9-11.5 h; Commvault's lab/home subclient, 24-25.5 h),
# and one with short, frequent runs ("short"), several of which start and end
# while it is gone (Salesforce every 8 h, SQL Backup every 2 h, SQL
# transaction logs hourly, Exchange Online every 40 min).
HIDDEN: Mapping[str, Mapping[str, str]] = {
    "keepit": {"long": "Jira Cloud", "short": "Salesforce Production"},
    "veeam": {"long": "NAS Archive", "short": "SQL Backup"},
    "commvault": {"long": "FILESRV-LAB/lab/home", "short": "SQLPROD01/defaultBackupSet/TransactionLogs"},
    "avepoint": {"long": "Teams", "short": "Exchange Online"},
}
# Vendors whose jobs are known from an inventory (Keepit's connectors, Veeam's
# job list), so that the exporter sees a job come back and looks back for the
# runs it had while it was gone. Commvault's jobs are known only by their runs,
# and AvePoint's services from the config: for them, runs that started and
# ended while the job was gone, before the window of the poll that finds it
# back, are not counted.
INVENTORIED = frozenset({"keepit", "veeam"})

Samples = list[tuple[str, dict[str, str], float]]


@dataclass(frozen=True)
class Fact:
    """A finished run as the simulator's dataset knows it."""

    group: Hashable  # one job of the exporter, by other means than its name
    names: tuple[str, ...]  # what a hide fault may call its job
    start: float
    end: float
    status: str  # the exporter's status of the run's real outcome


# --- the ground truth, from each simulator's dataset --------------------------------

_KEEPIT_STATUS = {"succeeded": "success", "failed": "failed", "cancelled": "cancelled"}
_VEEAM_STATUS = {"Success": "success", "Warning": "warning", "Failed": "failed", "None": "cancelled"}
_COMMVAULT_STATUS = {
    "Completed": "success",
    "Completed w/ one or more errors": "warning",
    "Completed w/ one or more warnings": "warning",
    "Committed": "warning",
    "Failed": "failed",
    "Failed to Start": "failed",
    "Abnormal Terminated Cleanup": "failed",
    "Killed": "cancelled",
}
_AVEPOINT_STATUS = {
    "Finished": "success",
    "Finished with Exception": "warning",
    "Partially Finished": "warning",
    "Failed": "failed",
}


def keepit_truth(app: web.Application, since: datetime, now: datetime) -> dict[str, Fact]:
    data = app[keepit.DATASET]
    return {
        job.guid: Fact(
            (device.guid, job.type),
            (device.name.strip(),),
            job.started.timestamp(),
            job.ends.timestamp(),
            _KEEPIT_STATUS[job.outcome],
        )
        for device in data.devices
        if device.plan.has_jobs
        for job in data.jobs(device, now)
        if job.finished(now) and job.scheduled >= since
    }


def veeam_truth(app: web.Application, since: datetime, now: datetime) -> dict[str, Fact]:
    return {
        s.uid: Fact(
            s.plan.key, (s.plan.name,), s.created.value.timestamp(), s.ends.value.timestamp(), _VEEAM_STATUS[s.outcome]
        )
        for s in app[veeam.DATASET].sessions(now)
        if s.finished(now) and s.created.value >= since
    }


def commvault_truth(app: web.Application, since: datetime, now: datetime) -> dict[str, Fact]:
    return {
        str(job.job_id): Fact(
            job.plan.key,
            (job.plan.client, f"{job.plan.client}/{job.plan.backupset}/{job.plan.subclient}"),
            job.submitted.timestamp(),
            job.ends.timestamp(),
            _COMMVAULT_STATUS[job.outcome],
        )
        for job in app[commvault.DATASET].jobs(now)
        if job.finished(now)
        and job.plan.job_type == "Backup"
        and job.visible
        and job.ends >= since - COMMVAULT_LOOKUP_MARGIN
    }


def avepoint_truth(app: web.Application, since: datetime, now: datetime) -> dict[str, Fact]:
    return {
        run.id: Fact(
            (run.object_type, run.job_type),
            (avepoint.OBJECT_TYPES[run.object_type],),
            run.started.timestamp(),
            run.ends.timestamp(),
            _AVEPOINT_STATUS[run.outcome],
        )
        for run in app[avepoint.DATASET].runs(now)
        if run.finished(now) and run.started >= since
    }


TRUTH: Mapping[str, Callable[[web.Application, datetime, datetime], dict[str, Fact]]] = {
    "keepit": keepit_truth,
    "veeam": veeam_truth,
    "commvault": commvault_truth,
    "avepoint": avepoint_truth,
}


def flipped(status: str) -> str:
    """The status flip_status reports instead (see datafaults.py)."""
    return "failed" if status == "success" else "success"


# --- what the exporter shows ---------------------------------------------------------

JobId = tuple[str, str]


def _job(labels: Mapping[str, str]) -> JobId:
    return labels["job_name"], labels["job_type"]


def runs_by_job(samples: Samples) -> dict[JobId, float]:
    counts: Counter[JobId] = Counter()
    for labels, value in select(samples, "backup_job_runs_total"):
        counts[_job(labels)] += int(value)
    return dict(counts)


def runs_by_status(samples: Samples) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for labels, value in select(samples, "backup_job_runs_total"):
        counts[labels["status"]] += int(value)
    return {status: n for status, n in counts.items() if n}


def last_runs(samples: Samples) -> dict[JobId, tuple[float, str]]:
    ends = {_job(labels): value for labels, value in select(samples, "backup_job_last_run_end_timestamp_seconds")}
    statuses = {_job(labels): labels["status"] for labels, value in select(samples, "backup_job_last_status") if value}
    return {job: (end, statuses[job]) for job, end in ends.items()}


def job_series(samples: Samples, job: JobId) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every series of one job that describes its past (not its runs in progress)."""
    past = (
        "backup_job_runs_total",
        "backup_job_last_status",
        "backup_job_last_run_end_timestamp_seconds",
        "backup_job_last_success_timestamp_seconds",
        "backup_job_run_duration_seconds_count",
    )
    return sorted(
        (name, tuple(sorted(labels.items())), value)
        for name, labels, value in samples
        if name in past and _job(labels) == job
    )


# --- one simulator and one exporter collection -----------------------------------------


@dataclass
class Exporter:
    """The exporter's side for one target: collector, state and its store."""

    collector: TargetCollector
    store: Store
    exposition: Exposition

    @classmethod
    async def start(cls, config: Config, app: web.Application, storage: Path) -> Exporter:
        """As the exporter starts: open the store, load the state saved there."""
        target = config.targets[0]
        store = Store(storage)
        await store.open()
        state = (await store.load()).get(target.name) or TargetState(name=target.name)
        exposition = Exposition(FAMILIES)
        collector = TargetCollector(
            target,
            VENDORS[target.vendor],
            config,
            state,
            store,
            exposition,
            Redactor(config.secrets()),
            clock=lambda: app[CLOCK].now(),
        )
        return cls(collector, store, exposition)

    async def stop(self) -> None:
        await self.collector.close()
        await self.store.close()


@dataclass
class Rig:
    vendor: str
    app: web.Application
    url: str
    control: aiohttp.ClientSession
    config: Config
    storage: Path
    exporter: Exporter
    since0: datetime
    # Every run the exporter should have counted, with its status as first reported.
    counted: dict[str, Fact] = field(default_factory=dict)

    @property
    def state(self) -> TargetState:
        return self.exporter.collector.state

    async def restart(self) -> None:
        """Stop the exporter and start it again on the state it saved."""
        await self.exporter.stop()
        self.exporter = await Exporter.start(self.config, self.app, self.storage)

    @property
    def now(self) -> datetime:
        return self.app[CLOCK].now()

    async def faults(self, **payload: Any) -> None:
        async with self.control.post(f"{self.url}/_sim/data", json=payload) as response:
            assert response.status == 200, await response.text()

    async def advance(self, seconds: float) -> None:
        async with self.control.post(f"{self.url}/_sim/clock", json={"advance": seconds}) as response:
            assert response.status == 200, await response.text()

    async def poll(self) -> Samples:
        """One collection, which must succeed; the exposition after it. The
        runs finished by now join the ground truth with the status the
        simulator reports for them now (flipped or not): that is the status
        they are first counted with."""
        assert await self.exporter.collector.collect_once() is True
        samples = parse_exposition(self.exporter.exposition.render().decode())
        assert select(samples, "backup_target_up") == [({"target": f"{self.vendor}-demo", "vendor": self.vendor}, 1)]
        errors = {labels["reason"]: value for labels, value in select(samples, "backup_target_collection_errors_total")}
        assert errors == dict.fromkeys(ERROR_REASONS, 0)
        flip = self.app[DATA_FAULTS].flip_status
        for run_id, fact in TRUTH[self.vendor](self.app, self.since0, self.now).items():
            if run_id not in self.counted:
                status = flipped(fact.status) if flip else fact.status
                self.counted[run_id] = Fact(fact.group, fact.names, fact.start, fact.end, status)
        return samples

    def truth(self, now: datetime | None = None) -> dict[str, Fact]:
        """The runs finished by `now` (default: the simulator's), with their real status."""
        return TRUTH[self.vendor](self.app, self.since0, now or self.now)

    def check_counts(self, samples: Samples, lost: frozenset[str] = frozenset()) -> None:
        """Every finished run counted once, under its job, none lost but `lost`."""
        counted = [fact for run_id, fact in self.counted.items() if run_id not in lost]
        expected = Counter(fact.group for fact in counted)
        assert sorted(n for n in runs_by_job(samples).values() if n) == sorted(expected.values())
        assert runs_by_status(samples) == dict(Counter(fact.status for fact in counted))

    def check_last_runs(self, samples: Samples, truth: Mapping[str, Fact] | None = None) -> None:
        """Per job, the last run is the newest finished one (by end time)."""
        newest: dict[Hashable, Fact] = {}
        for fact in (self.counted if truth is None else truth).values():
            if fact.group not in newest or fact.end > newest[fact.group].end:
                newest[fact.group] = fact
        shown = sorted(last_runs(samples).values())
        expected = sorted((fact.end, fact.status) for fact in newest.values())
        assert [status for _, status in shown] == [status for _, status in expected]
        assert [end for end, _ in shown] == pytest.approx([end for end, _ in expected], abs=1e-3)


@pytest.fixture(params=list(SIMULATORS))
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    vendor: str = request.param
    spec = SIMULATORS[vendor]
    app = spec.create_app(seed=1, now=T0)
    runner, url = await start_simulator(app)
    document = {"global": {"lookback": f"{LOOKBACK.days}d"}, "targets": [spec.demo_target(url)]}
    config = parse_config(yaml.safe_dump(document), "<test>")
    control = aiohttp.ClientSession()
    rig = Rig(
        vendor=vendor,
        app=app,
        url=url,
        control=control,
        config=config,
        storage=tmp_path,
        exporter=await Exporter.start(config, app, tmp_path),
        since0=T0 - LOOKBACK,
    )
    try:
        yield rig
    finally:
        await control.close()
        await rig.exporter.stop()
        await runner.cleanup()


# --- the faults --------------------------------------------------------------------------


async def test_duplicate_rows_count_once(rig: Rig) -> None:
    """Every row twice (same id), also across page boundaries: each run is
    counted once, and the newest run of each job is its last."""
    await rig.faults(duplicate=True)
    samples = await rig.poll()
    assert rig.counted
    rig.check_counts(samples)
    rig.check_last_runs(samples)
    await rig.advance(6 * HOUR)
    samples = await rig.poll()
    rig.check_counts(samples)
    await rig.faults()
    await rig.advance(HOUR)
    samples = await rig.poll()
    rig.check_counts(samples)
    rig.check_last_runs(samples)


async def test_reversed_order_changes_nothing(rig: Rig) -> None:
    """Rows in the opposite of the vendor's order: the same counts as in
    order, and each job's last run is its newest finished one, not the one
    listed last."""
    await rig.faults(reverse=True)
    reversed_first = await rig.poll()
    rig.check_counts(reversed_first)
    rig.check_last_runs(reversed_first)
    await rig.advance(5 * HOUR)
    samples = await rig.poll()
    rig.check_counts(samples)
    rig.check_last_runs(samples)
    # In order, at the same now: nothing moves.
    await rig.faults()
    again = await rig.poll()
    assert runs_by_job(again) == runs_by_job(samples)
    assert last_runs(again) == last_runs(samples)


@pytest.mark.parametrize("skew", [2 * HOUR, 2 * DAY], ids=["2h", "2d"])
async def test_clock_skew(rig: Rig, skew: float) -> None:
    """The vendor's clock `skew` ahead of ours, then right again: no run is
    counted twice when its times move back, the watermark never goes past
    our now + MAX_CLOCK_SKEW, nothing is lost after the skew (runs in
    progress during it included), and each job's last run is again its
    newest one once new runs have come in."""
    samples = await rig.poll()
    rig.check_counts(samples)
    await rig.faults(future_seconds=skew)
    for _ in range(2):
        samples = await rig.poll()
        rig.check_counts(samples)
        assert rig.state.watermark is not None
        assert rig.state.watermark <= (rig.now + MAX_CLOCK_SKEW).timestamp()
        assert_not_ahead(rig, samples)
        await rig.advance(HOUR)
    await rig.faults()
    samples = await rig.poll()
    rig.check_counts(samples)
    await rig.advance(6 * HOUR)
    samples = await rig.poll()
    rig.check_counts(samples)
    assert_not_ahead(rig, samples)
    # Past the longest schedule of any job (AvePoint's weekly deletions),
    # so that every job has a run newer than the skewed ones.
    await rig.advance(8 * DAY)
    samples = await rig.poll()
    rig.check_counts(samples)
    rig.check_last_runs(samples, rig.truth())


def assert_not_ahead(rig: Rig, samples: Samples) -> None:
    """No time of a finished run lies further in our future than
    MAX_CLOCK_SKEW, whatever the vendor's clock says: a last success two days
    ahead would silence an RPO alert for two days."""
    limit = (rig.now + MAX_CLOCK_SKEW).timestamp()
    for name in (
        "backup_job_last_run_start_timestamp_seconds",
        "backup_job_last_run_end_timestamp_seconds",
        "backup_job_last_success_timestamp_seconds",
    ):
        ahead = [(labels["job_name"], value - limit) for labels, value in select(samples, name) if value > limit]
        assert not ahead, f"{name} ahead of {rig.now} + {MAX_CLOCK_SKEW}: {ahead}"


async def test_reclassified_runs_are_not_counted_again(rig: Rig) -> None:
    """Finished runs reported with another status than before.

    A run is counted once, with the status it had when the exporter first saw
    it finished; a later re-classification by the vendor changes no counter
    and no last-run series: backup_job_last_status keeps showing the status
    the job's last run was counted with (the counters and the last status
    stay consistent; the exporter does not follow a vendor re-writing
    history). Runs first seen while the vendor re-classifies are counted with
    the status it reports then.
    """
    before = await rig.poll()
    rig.check_counts(before)
    await rig.faults(flip_status=True)
    during = await rig.poll()
    assert runs_by_status(during) == runs_by_status(before)
    assert last_runs(during) == last_runs(before)
    await rig.advance(6 * HOUR)
    during = await rig.poll()
    rig.check_counts(during)
    rig.check_last_runs(during)
    await rig.faults()
    after = await rig.poll()
    assert runs_by_status(after) == runs_by_status(during)
    await rig.advance(6 * HOUR)
    after = await rig.poll()
    rig.check_counts(after)
    rig.check_last_runs(after)


@pytest.mark.parametrize("kind", ["long", "short"])
async def test_vanished_job_keeps_its_series_and_resumes(rig: Rig, kind: str) -> None:
    """A job that disappears (a deleted connector, job, client or service) is
    no error: the collection succeeds, its series keep their last values and
    no run of it is counted while it is gone. When it comes back, its runs
    are counted again, none twice; none is lost that was in progress when it
    went. Of the runs that started and ended while it was gone, an inventory
    vendor loses none (the exporter looks back once it sees the job again);
    the others lose exactly those that ended before the window of the poll
    that finds the job back (see INVENTORIED)."""
    before = await rig.poll()
    rig.check_counts(before)
    names = (HIDDEN[rig.vendor][kind],)
    hidden = [job for job in runs_by_job(before) if any(job[0] == n or job[0].startswith(n + "/") for n in names)]
    assert hidden, f"no job {names[0]!r} in {sorted(runs_by_job(before))}"
    await rig.faults(hide=list(names))
    gone_at = rig.now
    counted_before = set(rig.counted)
    # Gone for two days: longer than any run, so that the runs in progress
    # elsewhere, which hold the window back, do not cover its runs by chance.
    for _ in range(3):
        await rig.advance(16 * HOUR)
        during = await rig.poll()
        for job in hidden:
            assert job_series(during, job) == job_series(before, job)
    assert sum(runs_by_job(during).values()) > sum(runs_by_job(before).values()), "other jobs' runs still count"
    window = rig.state.since(rig.now, LOOKBACK)
    await rig.faults()
    after = await rig.poll()
    # The look-back, where there is one, is the poll after the one that finds it.
    after = await rig.poll()
    meanwhile = {r: f for r, f in rig.counted.items() if r not in counted_before and set(f.names) & set(names)}
    gap = {run_id for run_id, fact in meanwhile.items() if fact.start > gone_at.timestamp()}
    if kind == "long":
        assert len(gap) < len(meanwhile), "a run in progress when the job went must have ended while it was gone"
    else:
        assert gap, "runs must have started and ended while the job was gone"
    lost = frozenset() if rig.vendor in INVENTORIED else frozenset(_outside(rig, gap, window))
    rig.check_counts(after, lost)
    assert lost <= gap
    if not lost:
        rig.check_last_runs(after)
        assert all(job_series(after, job) != job_series(before, job) for job in hidden)


def _outside(rig: Rig, run_ids: set[str], since: datetime) -> set[str]:
    """The runs a poll asking from `since` does not get: AvePoint filters on
    the start, Commvault on the end (less its client's margin)."""
    if rig.vendor == "commvault":
        return {r for r in run_ids if rig.counted[r].end < (since - COMMVAULT_LOOKUP_MARGIN).timestamp()}
    return {r for r in run_ids if rig.counted[r].start < since.timestamp()}


async def test_runs_in_progress_count_once_when_finished(rig: Rig) -> None:
    """Runs in progress at one poll are counted once, when a later poll finds
    them finished; the polls while they still run count nothing for them."""
    samples = await rig.poll()
    assert sum(value for _, value in select(samples, "backup_job_running")) > 0
    rig.check_counts(samples)
    start = rig.now
    steps = 8
    later = start + timedelta(seconds=steps * 3.5 * HOUR)
    in_progress = {
        run_id
        for run_id, fact in rig.truth(later).items()
        if fact.start <= start.timestamp() and run_id not in rig.counted
    }
    assert in_progress, "the simulators always have runs in progress"
    for _ in range(steps):
        await rig.advance(3.5 * HOUR)
        samples = await rig.poll()
        rig.check_counts(samples)
    assert in_progress <= set(rig.counted)


async def test_a_restart_while_a_job_is_gone_loses_nothing(rig: Rig) -> None:
    """The runs in progress that a vanished job had are still waited for
    after the exporter restarts on its saved state."""
    await rig.poll()
    name = HIDDEN[rig.vendor]["long"]
    await rig.faults(hide=[name])
    await rig.advance(16 * HOUR)
    await rig.poll()
    await rig.restart()
    await rig.advance(16 * HOUR)
    await rig.poll()
    await rig.faults()
    await rig.poll()
    samples = await rig.poll()
    rig.check_counts(samples)
    rig.check_last_runs(samples)


OFF = {"duplicate": False, "reverse": False, "future_seconds": 0.0, "flip_status": False, "hide": []}
BAD_SETTINGS: list[Any] = [
    {"duplicate": True, "shuffle": True},
    {"duplicate": "yes"},
    {"reverse": 1},
    {"flip_status": None},
    {"future_seconds": "7200"},
    {"future_seconds": True},
    {"future_seconds": -60},
    {"future_seconds": 10**12},
    {"hide": "Jira Cloud"},
    {"hide": ["Jira Cloud", 3]},
    {"hide": [" "]},
    ["duplicate"],
]


async def test_the_control_route_takes_only_what_it_knows(rig: Rig) -> None:
    """POST /_sim/data replaces the whole setting and refuses, with a 400 and
    no change, an unknown key or a value of the wrong type or range."""
    async with rig.control.get(f"{rig.url}/_sim/data") as response:
        assert await response.json() == OFF
    setting = {"duplicate": True, "future_seconds": 90, "hide": ["b ", "a"]}
    async with rig.control.post(f"{rig.url}/_sim/data", json=setting) as response:
        assert response.status == 200
        shown = await response.json()
    assert shown == {**OFF, "duplicate": True, "future_seconds": 90.0, "hide": ["a", "b"]}
    for bad in BAD_SETTINGS:
        async with rig.control.post(f"{rig.url}/_sim/data", json=bad) as response:
            assert response.status == 400, bad
    async with rig.control.post(f"{rig.url}/_sim/data", data=b"{not json") as response:
        assert response.status == 400
    async with rig.control.get(f"{rig.url}/_sim/data") as response:
        assert await response.json() == shown
