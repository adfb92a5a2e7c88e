"""A bug of ours after a collection must not end a target's polling silently.

The vendor client here is a stand-in for a vendor module with a bug: it
returns a Collection holding something that is not a Run, which makes
applying it fail inside our own code. The exporter must report the target
down with a counted error, keep its last values, and collect again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from exporter.config import Config, TargetConfig, parse_config
from exporter.exposition import Exposition
from exporter.metrics import FAMILIES
from exporter.model import Collection, JobKey, Run, Status
from exporter.poller import TargetCollector
from exporter.redact import Redactor
from exporter.state import TargetState
from exporter.store import Store
from exporter.vendors import VENDORS
from exporter.vendors.base import HttpClient, VendorSpec
from tests.harness import parse_exposition, select

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
GOOD_RUN = Run("r1", JobKey("Mailboxes", "backup"), Status.SUCCESS, NOW - timedelta(hours=2), NOW - timedelta(hours=1))


class BuggyClient:
    """Good on the first poll, broken on the second, good again on the third."""

    polls = 0

    def __init__(self, target: TargetConfig, http: HttpClient) -> None:
        self.target = target

    async def collect(self, since: datetime, now: datetime) -> Collection:
        BuggyClient.polls += 1
        if BuggyClient.polls == 2:
            broken: Any = ("not a run",)
            return Collection(runs=broken)
        return Collection(runs=(GOOD_RUN,))

    async def close(self) -> None:
        pass


def _config() -> Config:
    text = "targets:\n  - {name: t, vendor: keepit, url: 'http://127.0.0.1:9', username: u, password: p}\n"
    return parse_config(text, "test.yml", environ={}, vendors=VENDORS)


async def test_internal_error_is_counted_values_kept_and_polling_goes_on(tmp_path: Path) -> None:
    config = _config()
    (target,) = config.targets
    spec = VendorSpec(name="keepit", client=BuggyClient, options={}, secrets=())
    store = Store(tmp_path / "state.db")
    await store.open()
    exposition = Exposition(FAMILIES)
    collector = TargetCollector(
        target, spec, config, TargetState(name="t"), store, exposition, Redactor([]), clock=lambda: NOW
    )
    try:
        results = [await asyncio.wait_for(collector.collect_once(), timeout=30) for _ in range(2)]
        after_bug = parse_exposition(exposition.render().decode())
        results.append(await asyncio.wait_for(collector.collect_once(), timeout=30))
    finally:
        await collector.close()
        await store.close()

    assert results == [True, False, True]
    assert select(after_bug, "backup_target_up", target="t")[0][1] == 0
    assert select(after_bug, "backup_target_collection_errors_total", target="t", reason="parse")[0][1] == 1
    # The job's last values from the first poll are still served.
    success = select(after_bug, "backup_job_last_success_timestamp_seconds", target="t", job_name="Mailboxes")
    assert success[0][1] == (NOW - timedelta(hours=1)).timestamp()
    assert collector.health.up is True
    assert dict(collector.health.errors_total) == {"parse": 1}
