"""`make run`'s promise: --demo serves every vendor's series from the simulators."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from exporter.simulators import SIMULATORS
from exporter.vendors import VENDORS
from tests.harness import ExporterProcess, parse_exposition, promtool_check, select

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def demo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ExporterProcess]:
    tmp = tmp_path_factory.mktemp("demo")
    # --demo needs no config: the file named here does not exist.
    process = ExporterProcess(tmp / "absent.yaml", tmp / "data", extra_args=["--demo"])
    await process.start()
    await process.wait_for(lambda status: status == 200, what="ready", within=60)
    yield process
    await process.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_demo_serves_every_vendor(demo: ExporterProcess) -> None:
    status, body, _ = await demo.get("/metrics")
    assert status == 200
    result = promtool_check(body)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    samples = parse_exposition(body.decode())

    assert set(SIMULATORS) == set(VENDORS), "every vendor needs a simulator for --demo"
    up = {lab["vendor"]: v for lab, v in select(samples, "backup_target_up")}
    assert up == dict.fromkeys(VENDORS, 1.0)
    for vendor in VENDORS:
        runs = select(samples, "backup_job_runs_total", vendor=vendor)
        assert sum(v for _, v in runs) > 50, vendor
        assert select(samples, "backup_job_rpo_seconds", vendor=vendor), vendor
        # The alert rules rely on these demo scenarios: a job whose last run
        # failed, with its reason, for every vendor.
        failed = [lab for lab, v in select(samples, "backup_job_last_status", vendor=vendor, status="failed") if v]
        assert failed, f"{vendor}: no job whose last run failed"
        assert select(samples, "backup_job_last_failure_info", vendor=vendor), vendor


@pytest.mark.asyncio(loop_scope="module")
async def test_demo_has_jobs_past_their_rpo(demo: ExporterProcess) -> None:
    samples = await demo.metrics()
    now = time.time()
    rpo = {(lab["target"], lab["job_name"], lab["job_type"]): v for lab, v in select(samples, "backup_job_rpo_seconds")}
    overdue = {
        lab["vendor"]
        for lab, v in select(samples, "backup_job_last_success_timestamp_seconds")
        if (key := (lab["target"], lab["job_name"], lab["job_type"])) in rpo and now - v > rpo[key]
    }
    assert overdue == set(VENDORS)


@pytest.mark.asyncio(loop_scope="module")
async def test_demo_status_page_names_every_target(demo: ExporterProcess) -> None:
    status, page, _ = await demo.get("/")
    assert status == 200
    for vendor in VENDORS:
        assert f"<td>{vendor}-demo</td>".encode() in page


@pytest.mark.asyncio(loop_scope="module")
async def test_only_jobs_that_create_recovery_points_have_an_rpo(demo: ExporterProcess) -> None:
    samples = await demo.metrics()
    with_rpo = {(lab["vendor"], lab["job_type"]) for lab, _ in select(samples, "backup_job_rpo_seconds")}
    job_types = {(lab["vendor"], lab["job_type"]) for lab, _ in select(samples, "backup_job_runs_total")}
    # The demo has restores (Keepit, AvePoint) and AvePoint deletion/retention/export jobs.
    without = job_types - with_rpo
    assert {("keepit", "restore"), ("keepit", "srestore"), ("avepoint", "deletion")} <= without
    assert {job_type for _, job_type in with_rpo} >= {"backup", "backup_copy"}
    assert not any("restore" in job_type for _, job_type in with_rpo)
    # Nor does the status page call them overdue.
    _, page, _ = await demo.get("/")
    problems = page.decode().split("<h2>Jobs failing")[1]
    assert "<td>deletion</td>" not in problems
