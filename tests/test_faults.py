"""Network and payload faults over real HTTP against all four vendor simulators,
through the exporter's own collection code in-process: TargetCollector with the
vendor client, HttpClient, state, SQLite store and exposition.

Every fault follows one story. A good collection at T0; the simulated clock
moves on (new runs exist while the fault is on); the fault is switched on and
the collection fails with one counted error of the expected `reason`,
`backup_target_up 0` and every job series as it was; the fault is switched off
and the next collection succeeds and counts each finished run exactly once:
as many as the simulator holds for the whole window, asked of it afresh.

Retry sleeps are recorded, not slept: the suite stays fast, and a test can see
which waits HttpClient asked for (Retry-After honoured, none past the deadline).
"""

from __future__ import annotations

import asyncio
import io
import tracemalloc
import xml.sax
import xml.sax.handler
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import xmltodict
import yaml
from aiohttp import web

from exporter.config import Config, TargetConfig, parse_config
from exporter.exposition import Exposition
from exporter.metrics import FAMILIES
from exporter.model import FINISHED_STATUSES
from exporter.poller import TargetCollector
from exporter.redact import Redactor
from exporter.simulators import SIMULATORS
from exporter.simulators import keepit as keepit_sim
from exporter.simulators.base import BILLION_LAUGHS, CLOCK, DRIP_BYTES, XXE_PROBE_MARKER, XXE_PROBE_PATH
from exporter.state import TargetState
from exporter.store import Store
from exporter.vendors import VENDORS
from exporter.vendors.base import HttpClient
from tests.harness import parse_exposition
from tests.simctl import no_sleep

T0 = datetime(2025, 3, 10, 14, 30, tzinfo=UTC)
# Long enough for new runs of every vendor to appear while the fault is on.
LATER = timedelta(hours=3)
LOOKBACK = timedelta(days=2)
# The target's timeout: what the hang and drip faults cost, and 10x what a
# good collection of these simulators takes.
TIMEOUT_SECONDS = 2
DRIP_DELAY = 0.5
JOB_SERIES = ("backup_job_", "backup_snapshot_", "backup_repository_")
# Its value is (the exporter's now) - (the oldest running start): it moves
# with the wall clock between renders, fault or not.
MOVING_SERIES = "backup_job_running_seconds"
MiB = 1024 * 1024

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Variant:
    """A vendor simulator and the config of the target collecting from it."""

    vendor: str
    options: Mapping[str, Any] = field(default_factory=dict)


VARIANTS = {
    "keepit": Variant("keepit"),
    "veeam": Variant("veeam"),
    "veeam-xml": Variant("veeam", {"format": "xml"}),
    "commvault": Variant("commvault"),
    "commvault-xml": Variant("commvault", {"format": "xml"}),
    "avepoint": Variant("avepoint"),
}
# The four vendors as --demo collects them (Veeam and Commvault in JSON).
VENDOR_VARIANTS = ("keepit", "veeam", "commvault", "avepoint")
# XML entity faults also where Veeam and Commvault are asked for XML, so that
# the entities sit in the very documents their parsers read.
XML_VARIANTS = tuple(VARIANTS)


# --- the simulator, on a port that can be closed and opened again ------------


class Sim:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.runner = web.AppRunner(app, access_log=None)
        self.port = 0
        self._site: web.TCPSite | None = None
        self._control: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def now(self) -> datetime:
        return self.app[CLOCK].now()

    async def start(self) -> None:
        await self.runner.setup()
        await self.open_port()
        self._control = aiohttp.ClientSession()

    async def open_port(self) -> None:
        self._site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await self._site.start()
        self.port = self.runner.addresses[0][1]

    async def close_port(self) -> None:
        """Connection refused from now on: no listener, and no kept-alive connection either."""
        assert self._site is not None
        assert self.runner.server is not None
        await self._site.stop()
        self._site = None
        for connection in self.runner.server.connections:
            connection.force_close()

    async def post(self, path: str, payload: Mapping[str, Any]) -> Any:
        assert self._control is not None
        async with self._control.post(self.url + path, json=dict(payload)) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def get(self, path: str) -> Any:
        assert self._control is not None
        async with self._control.get(self.url + path) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def fault(self, **payload: Any) -> None:
        await self.post("/_sim/fault", payload)

    async def advance(self, delta: timedelta) -> None:
        await self.post("/_sim/clock", {"advance": delta.total_seconds()})

    async def xxe_fetches(self) -> int:
        count: int = (await self.get(XXE_PROBE_PATH + "/count"))["count"]
        return count

    async def close(self) -> None:
        if self._control is not None:
            await self._control.close()
        await self.runner.cleanup()


# --- the exporter's collection of one target ---------------------------------


@dataclass
class Sleeps:
    """HttpClient's sleep: records the waits asked for, and returns at once."""

    asked: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.asked.append(delay)


@dataclass(frozen=True)
class View:
    """What the exposition says about the target at one moment."""

    text: str
    up: float | None
    errors: dict[str, float]
    job_series: Series
    runs_counted: float
    last_success: float | None

    def stable_job_series(self) -> Series:
        return {key: value for key, value in self.job_series.items() if key[0] != MOVING_SERIES}


def view_of(text: str) -> View:
    samples = parse_exposition(text)
    ups = [value for name, _, value in samples if name == "backup_target_up"]
    successes = [value for name, _, value in samples if name == "backup_target_last_success_timestamp_seconds"]
    return View(
        text=text,
        up=ups[0] if ups else None,
        errors={
            labels["reason"]: value
            for name, labels, value in samples
            if name == "backup_target_collection_errors_total"
        },
        job_series={
            (name, frozenset(labels.items())): value for name, labels, value in samples if name.startswith(JOB_SERIES)
        },
        runs_counted=sum(value for name, _, value in samples if name == "backup_job_runs_total"),
        last_success=successes[0] if successes else None,
    )


# (variant, simulated now) -> distinct finished runs from T0 - LOOKBACK to now:
# the simulators' datasets are pure functions of (seed, origin, now), so the
# answer is asked of the vendor once per suite.
_finished_runs: dict[tuple[str, datetime], int] = {}


class Rig:
    """One simulator and the exporter's collector of it."""

    def __init__(self, variant: str, sim: Sim, config: Config, store: Store) -> None:
        self.variant = variant
        self.sim = sim
        self.config = config
        self.target: TargetConfig = config.targets[0]
        self.store = store
        self.exposition = Exposition(FAMILIES)
        self.sleeps = Sleeps()
        self.collector = TargetCollector(
            self.target,
            VENDORS[self.target.vendor],
            config,
            TargetState(name=self.target.name),
            store,
            self.exposition,
            Redactor(config.secrets()),
            # The exporter's now is the simulator's: both move with /_sim/clock.
            clock=sim.now,
        )
        # The collector builds its HttpClient itself; its retry sleep is the
        # one thing replaced, so the rest of the path stays the real one.
        self.collector._http._sleep = self.sleeps

    async def collect(self) -> bool:
        return await self.collector.collect_once()

    def view(self) -> View:
        return view_of(self.exposition.render().decode())

    async def finished_runs_on_the_vendor(self) -> int:
        """Distinct finished runs the simulator holds from T0 - lookback to now,
        asked in one go by a fresh client with no state."""
        key = (self.variant, self.sim.now())
        if key not in _finished_runs:
            _finished_runs[key] = await self._ask_finished_runs()
        return _finished_runs[key]

    async def _ask_finished_runs(self) -> int:
        http = HttpClient(self.target.url, sleep=no_sleep)
        client = VENDORS[self.target.vendor].client(self.target, http)
        try:
            collection = await client.collect(T0 - LOOKBACK, self.sim.now())
        finally:
            await client.close()
            await http.close()
        return len({run.run_id for run in collection.runs if run.status in FINISHED_STATUSES})

    async def close(self) -> None:
        await self.collector.close()
        await self.store.close()
        await self.sim.close()


async def start_rig(variant_id: str, directory: Path) -> Rig:
    variant = VARIANTS[variant_id]
    spec = SIMULATORS[variant.vendor]
    sim = Sim(spec.create_app(seed=1, now=T0))
    await sim.start()
    target = {
        **spec.demo_target(sim.url),
        "timeout": f"{TIMEOUT_SECONDS}s",
        "lookback": f"{LOOKBACK.days}d",
        **variant.options,
    }
    config = parse_config(yaml.safe_dump({"targets": [target]}), "<test_faults>")
    store = Store(directory)
    await store.open()
    return Rig(variant_id, sim, config, store)


@pytest.fixture
async def rigs(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[Rig]]]:
    made: list[Rig] = []

    async def make(variant_id: str) -> Rig:
        rig = await start_rig(variant_id, tmp_path / f"state-{len(made)}")
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.close()


# --- the story every fault follows -------------------------------------------


async def good_collection_then_later(rig: Rig) -> View:
    """A good collection at T0, then the clock moves on; the view after T0."""
    assert await rig.collect(), rig.collector.health.last_error
    before = rig.view()
    assert before.up == 1
    assert before.runs_counted > 0
    assert before.runs_counted == await rig.finished_runs_on_the_vendor()
    await rig.sim.advance(LATER)
    return before


def assert_failed_once(rig: Rig, before: View, reason: str) -> View:
    after = rig.view()
    assert rig.collector.health.last_error_reason == reason, rig.collector.health.last_error
    assert after.up == 0
    assert after.errors == {**before.errors, reason: before.errors[reason] + 1}
    # Last good values kept: the same series, the same values.
    assert after.job_series.keys() == before.job_series.keys()
    assert after.stable_job_series() == before.stable_job_series()
    assert after.last_success == before.last_success
    assert_no_wait_past_the_deadline(rig)
    return after


def assert_no_wait_past_the_deadline(rig: Rig) -> None:
    # A retry that cannot end inside the collection's timeout is not waited for.
    assert all(delay < TIMEOUT_SECONDS for delay in rig.sleeps.asked), rig.sleeps.asked


async def assert_recovers(rig: Rig, before: View, failed: View) -> None:
    assert await rig.collect(), rig.collector.health.last_error
    now = rig.view()
    assert now.up == 1
    assert now.errors == failed.errors
    assert now.last_success is not None
    assert before.last_success is not None
    assert now.last_success > before.last_success
    # Every finished run counted once: none lost to the fault, none twice.
    assert now.runs_counted > before.runs_counted
    assert now.runs_counted == await rig.finished_runs_on_the_vendor()


@dataclass(frozen=True)
class Fault:
    id: str
    payload: Mapping[str, Any]
    reason: str
    # tracemalloc peak allowed during the failing collection.
    memory_bound: int | None = None
    # Part of the error message, where the reason alone could hide the cause.
    says: str | None = None

    @property
    def mode(self) -> str:
        return str(self.payload["mode"])


NETWORK_AND_STATUS_FAULTS = (
    Fault("reset", {"mode": "reset"}, "connection"),
    Fault("500", {"mode": "500"}, "http"),
    Fault("503", {"mode": "503"}, "http"),
    Fault("429-retry-after-beyond-timeout", {"mode": "429", "retry_after": 30}, "http"),
    Fault("503-retry-after-beyond-timeout", {"mode": "503", "retry_after": 30}, "http"),
    Fault("401", {"mode": "401"}, "auth"),
    Fault("403", {"mode": "403"}, "auth"),
    # 80 MiB, read until the 64 MiB limit is passed: the limit plus a margin,
    # never the whole body (nor the whole body twice, as a join would).
    Fault("huge", {"mode": "huge"}, "parse", memory_bound=100 * MiB, says="byte limit"),
    # Faults that strike after two good requests: late in the collection,
    # some of it already read; none of that may be applied.
    Fault("reset-late", {"mode": "reset", "after": 2}, "connection"),
    Fault("truncated-late", {"mode": "truncated", "after": 2}, "parse"),
)
PAYLOAD_FAULTS = (
    Fault("truncated", {"mode": "truncated"}, "parse"),
    Fault("garbage", {"mode": "garbage"}, "parse"),
    Fault("empty", {"mode": "empty"}, "parse"),
    # The normal body, labelled text/html: what a proxy's error or login page
    # answering 200 looks like. Refused, whatever the body.
    Fault("wrong-content-type", {"mode": "wrong_content_type"}, "parse"),
)
ENTITY_FAULTS = (
    # Refused at the DTD: nothing is expanded (the document expands to 3 GB).
    Fault("entity-expansion", {"mode": "entity_expansion"}, "parse", memory_bound=4 * MiB),
    Fault("external-entity", {"mode": "external_entity"}, "parse"),
)
FAILING = [
    pytest.param(variant, fault, id=f"{fault.id}-{variant}")
    for faults, variants in (
        (NETWORK_AND_STATUS_FAULTS, VENDOR_VARIANTS),
        (PAYLOAD_FAULTS, VENDOR_VARIANTS),
        (ENTITY_FAULTS, XML_VARIANTS),
    )
    for fault in faults
    for variant in variants
]


async def collect_failing(rig: Rig, fault: Fault) -> bool:
    if fault.memory_bound is None:
        return await rig.collect()
    tracemalloc.start()
    try:
        ok = await rig.collect()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < fault.memory_bound, f"peak {peak / MiB:.1f} MiB"
    return ok


@pytest.mark.parametrize(("variant", "fault"), FAILING)
async def test_fault_is_counted_last_values_kept_and_recovered(
    rigs: Callable[[str], Awaitable[Rig]], variant: str, fault: Fault
) -> None:
    rig = await rigs(variant)
    before = await good_collection_then_later(rig)
    await rig.sim.fault(**fault.payload)

    assert not await collect_failing(rig, fault)
    failed = assert_failed_once(rig, before, fault.reason)
    if fault.says is not None:
        assert fault.says in (rig.collector.health.last_error or "")
    if fault.mode == "external_entity":
        assert await rig.sim.xxe_fetches() == 0
        assert_nothing_of_etc_passwd(failed.text + (rig.collector.health.last_error or ""))

    await rig.sim.fault(mode="none")
    await assert_recovers(rig, before, failed)


def assert_nothing_of_etc_passwd(text: str) -> None:
    assert XXE_PROBE_MARKER not in text
    for line in Path("/etc/passwd").read_text(encoding="utf-8").splitlines():
        if line.strip():
            assert line not in text


@pytest.mark.parametrize("variant", VENDOR_VARIANTS)
async def test_connection_refused_is_counted_and_recovered(rigs: Callable[[str], Awaitable[Rig]], variant: str) -> None:
    rig = await rigs(variant)
    before = await good_collection_then_later(rig)
    await rig.sim.close_port()

    assert not await rig.collect()
    failed = assert_failed_once(rig, before, "connection")
    # Connection errors are retried, within the timeout.
    assert rig.sleeps.asked

    await rig.sim.open_port()
    await assert_recovers(rig, before, failed)


TIMEOUT_FAULTS = (
    # Accepted, never answered.
    Fault("hang", {"mode": "hang"}, "timeout"),
    # No read waits long, the whole answer takes longer than the timeout.
    Fault("drip", {"mode": "drip", "delay": DRIP_DELAY}, "timeout"),
)


@pytest.mark.parametrize("fault", TIMEOUT_FAULTS, ids=lambda f: f.id)
async def test_timeout_is_counted_and_recovered(rigs: Callable[[str], Awaitable[Rig]], fault: Fault) -> None:
    """The four vendors at once: each failing collection lasts the target's timeout."""
    started = [await rigs(variant) for variant in VENDOR_VARIANTS]
    befores = [await good_collection_then_later(rig) for rig in started]
    for rig in started:
        await rig.sim.fault(**fault.payload)

    results = await asyncio.gather(*(rig.collect() for rig in started))
    for rig, before, ok in zip(started, befores, results, strict=True):
        assert not ok, rig.variant
        failed = assert_failed_once(rig, before, fault.reason)
        await rig.sim.fault(mode="none")
        await assert_recovers(rig, before, failed)


# --- faults that a collection must survive -----------------------------------


@dataclass(frozen=True)
class Survived:
    id: str
    payload: Mapping[str, Any]
    # The wait HttpClient must have asked for (Retry-After honoured).
    waited: float | None = None


SURVIVED = (
    Survived("429-once-retry-after-1", {"mode": "429", "retry_after": 1, "count": 1}, waited=1.0),
    Survived("503-once-retry-after-1", {"mode": "503", "retry_after": 1, "count": 1}, waited=1.0),
    Survived("reset-once", {"mode": "reset", "count": 1}),
)


@pytest.mark.parametrize("survived", SURVIVED, ids=lambda s: s.id)
@pytest.mark.parametrize("variant", VENDOR_VARIANTS)
async def test_transient_fault_is_survived_within_the_collection(
    rigs: Callable[[str], Awaitable[Rig]], variant: str, survived: Survived
) -> None:
    rig = await rigs(variant)
    before = await good_collection_then_later(rig)
    await rig.sim.fault(**survived.payload)

    assert await rig.collect(), rig.collector.health.last_error
    now = rig.view()
    assert now.up == 1
    assert now.errors == before.errors
    assert (await rig.sim.get("/_sim/fault"))["mode"] == "none", "the fault never struck"
    if survived.waited is not None:
        assert survived.waited in rig.sleeps.asked
    assert_no_wait_past_the_deadline(rig)
    assert now.runs_counted > before.runs_counted
    assert now.runs_counted == await rig.finished_runs_on_the_vendor()


# A session or token rejected in the middle of paging, on the first
# collection (the one with most pages): log in again, ask for the same page
# again, go on. The simulators' own expiry, and for every vendor a single 401
# after two good requests (Keepit has no session, basic auth goes with every
# request: it is sent again).
#
# Not after a good collection and a clock jump: the simulators then expire
# the idle session themselves, and a second 401 right after logging in again
# is, rightly, an auth error.
MID_PAGING_EXPIRY: dict[str, tuple[str, str, dict[str, Any]]] = {
    "veeam-session-expiry": ("veeam", "/_sim/veeam/expire", {"after": 1}),
    "commvault-token-expiry": ("commvault", "/_sim/commvault/expire", {"after": 1}),
    "avepoint-token-expiry": ("avepoint", "/_sim/avepoint/expire", {"after": 1}),
    **{
        f"{variant}-401-once": (variant, "/_sim/fault", {"mode": "401", "count": 1, "after": 2})
        for variant in VENDOR_VARIANTS
    },
}


@pytest.mark.parametrize("case", sorted(MID_PAGING_EXPIRY))
async def test_session_expiring_mid_paging_is_survived(rigs: Callable[[str], Awaitable[Rig]], case: str) -> None:
    variant, path, payload = MID_PAGING_EXPIRY[case]
    rig = await rigs(variant)
    await rig.sim.post(path, payload)

    assert await rig.collect(), rig.collector.health.last_error
    now = rig.view()
    assert now.up == 1
    assert sum(now.errors.values()) == 0
    assert rig.collector.health.requests_total["401"] >= 1, "the session never expired"
    assert now.runs_counted == await rig.finished_runs_on_the_vendor()


# --- the simulator's fault modes themselves ----------------------------------


@pytest.fixture
async def keepit(rigs: Callable[[str], Awaitable[Rig]]) -> AsyncIterator[tuple[Sim, aiohttp.ClientSession]]:
    rig = await rigs("keepit")
    auth = aiohttp.encode_basic_auth(keepit_sim.DEMO_USERNAME, keepit_sim.DEMO_PASSWORD)
    async with aiohttp.ClientSession(rig.sim.url, headers={"Authorization": auth}) as client:
        yield rig.sim, client


async def test_sim_reset_sends_headers_and_part_of_the_body_then_resets(
    keepit: tuple[Sim, aiohttp.ClientSession],
) -> None:
    sim, client = keepit
    async with client.get("/users/") as response:
        whole = await response.read()
    await sim.fault(mode="reset", count=1)
    async with client.get("/users/") as response:
        assert response.status == 200
        assert response.content_length == len(whole)
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_sim_drip_sends_the_whole_body_slowly(keepit: tuple[Sim, aiohttp.ClientSession]) -> None:
    sim, client = keepit
    async with client.get("/users/") as response:
        whole = await response.read()
    await sim.fault(mode="drip", delay=0, count=1)
    async with client.get("/users/") as response:
        chunks = [chunk async for chunk in response.content.iter_any()]
    assert b"".join(chunks) == whole
    assert len(whole) > DRIP_BYTES


async def test_sim_hang_never_answers(keepit: tuple[Sim, aiohttp.ClientSession]) -> None:
    sim, client = keepit
    await sim.fault(mode="hang", count=1)
    with pytest.raises(TimeoutError):
        async with client.get("/users/", timeout=aiohttp.ClientTimeout(total=0.5)):
            pass
    # Control routes are never faulted; the next vendor request is answered.
    async with client.get("/users/") as response:
        assert response.status == 200


async def test_sim_entity_expansion_is_a_billion_laughs(keepit: tuple[Sim, aiohttp.ClientSession]) -> None:
    sim, client = keepit
    await sim.fault(mode="entity_expansion", count=1)
    async with client.get("/users/") as response:
        assert response.content_type == "application/xml"
        body = await response.read()
    assert body == BILLION_LAUGHS
    # With entities on, its third level already expands to a thousand "lol".
    small = body.replace(b"<lolz>&lol9;</lolz>", b"<lolz>&lol3;</lolz>")
    assert xmltodict.parse(small, disable_entities=False)["lolz"] == "lol" * 1000


async def test_sim_external_entity_is_fetched_by_a_parser_that_resolves_it(
    keepit: tuple[Sim, aiohttp.ClientSession],
) -> None:
    """The probe is no dummy: a parser resolving external entities fetches it,
    and the file's content lands in the element the exporter reads."""
    sim, client = keepit
    await sim.fault(mode="external_entity", count=1)
    async with client.get("/users/") as response:
        assert response.content_type == "application/xml"
        body = await response.read()
    assert b'SYSTEM "file:///etc/passwd"' in body
    assert f'SYSTEM "{sim.url}{XXE_PROBE_PATH}"'.encode() in body
    assert b"<id>&xxe;&probe;</id>" in body

    texts: list[str] = []

    class Texts(xml.sax.handler.ContentHandler):
        def characters(self, content: str) -> None:
            texts.append(content)

    def unsafe_parse() -> None:
        parser = xml.sax.make_parser()
        parser.setFeature(xml.sax.handler.feature_external_ges, True)
        parser.setContentHandler(Texts())
        parser.parse(io.BytesIO(body))

    # In a thread: the parser fetches the probe synchronously from this loop's server.
    await asyncio.to_thread(unsafe_parse)
    assert await sim.xxe_fetches() == 1
    assert XXE_PROBE_MARKER in "".join(texts)
    assert "root:" in "".join(texts)


async def test_sim_after_lets_requests_pass_before_the_fault(keepit: tuple[Sim, aiohttp.ClientSession]) -> None:
    sim, client = keepit
    await sim.fault(mode="500", after=2, count=1)
    statuses = []
    for _ in range(4):
        async with client.get("/users/") as response:
            statuses.append(response.status)
    assert statuses == [200, 200, 500, 200]
    async with client.post("/_sim/fault", json={"mode": "500", "after": -1}) as response:
        assert response.status == 400
