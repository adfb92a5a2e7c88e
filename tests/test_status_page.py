"""The status page `/` and `/api/v1/status` (issue 9).

Through HTTP against the real exporter process collecting from the Keepit
simulator on loopback: targets with their state, failing jobs, escaping of a
hostile vendor job name, no configured secret anywhere, the JSON saying what
the HTML says, and basic auth when a web config is set. The status model's
"running too long" rule, which must agree with the BackupJobRunningTooLong
alert, is checked on constructed state.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler, Middleware

from exporter import statuspage
from exporter.config import parse_config
from exporter.model import JobKey
from exporter.simulators import keepit as keepit_sim
from exporter.simulators.base import is_control
from exporter.state import DURATION_BUCKETS, JobState
from exporter.status import (
    RUNNING_TOO_LONG,
    JobProblem,
    StatusReport,
    TargetStatus,
    histogram_quantile,
    is_running_too_long,
    problems_of,
    public_url,
    running_limit,
)
from tests.harness import ExporterProcess, server_url, sim_post, write_config

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

FAST = {"interval": "3s", "timeout": "3s"}
PASSWORD = keepit_sim.DEMO_PASSWORD
HOSTILE_NAME = 'Sales <script>alert("x")</script> Production'
# The simulator's XML, rewritten on the way out: a job name with markup and
# quotes, and a failure text that quotes the configured password back.
REWRITES = {
    "Salesforce Production": "Sales &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Production",
    "api_limit_exceeded": f"api_limit_exceeded for {PASSWORD}",
}


def rewriting(replacements: dict[str, str]) -> Middleware:
    @web.middleware
    async def rewrite(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if is_control(request) or not isinstance(response, web.Response) or not isinstance(response.body, bytes):
            return response
        text = response.body.decode()
        for old, new in replacements.items():
            text = text.replace(old, new)
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return web.Response(
            status=response.status,
            body=text.encode(),
            headers=headers,
            content_type=response.content_type,
            charset=response.charset,
        )

    return rewrite


def keepit_app(*, rewrite: bool = False) -> web.Application:
    app = keepit_sim.create_app(now=datetime.now(UTC))
    if rewrite:
        app.middlewares.insert(0, rewriting(REWRITES))
    return app


def keepit_target(name: str, server: TestServer) -> dict[str, object]:
    return {**keepit_sim.demo_target(server_url(server)), "name": name}


class Tables(HTMLParser):
    """The attributes of every `tr` of each table with an id, and every link."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[dict[str, str]]] = {}
        self.links: list[str] = []
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = values.get("id")
            self.rows.setdefault(self._table or "", [])
        elif tag == "tr" and self._table and "data-target" in values:
            self.rows[self._table].append(values)
        elif tag == "a":
            self.links.append(values.get("href", ""))
        elif tag == "script":
            raise AssertionError("the page has a <script> element")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None


def parse_page(page: str) -> Tables:
    tables = Tables()
    tables.feed(page)
    return tables


@pytest.fixture
async def exporters(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ExporterProcess]]]:
    started: list[ExporterProcess] = []

    async def start(config: Path, *extra_args: str) -> ExporterProcess:
        process = ExporterProcess(config, tmp_path / f"data-{len(started)}", extra_args=extra_args)
        started.append(process)
        await process.start()
        return process

    yield start
    for process in started:
        await process.stop()


@pytest.mark.e2e
async def test_page_and_api_show_targets_failures_escaped_and_without_secrets(
    tmp_path: Path, aiohttp_server: ServerFactory, exporters: Callable[..., Awaitable[ExporterProcess]]
) -> None:
    hostile = await aiohttp_server(keepit_app(rewrite=True))
    broken = await aiohttp_server(keepit_app())
    await sim_post(broken, "/_sim/fault", {"mode": "garbage"})
    config = write_config(
        tmp_path / "config.yaml",
        [keepit_target("keepit-hostile", hostile), keepit_target("keepit-broken", broken)],
        global_=FAST,
    )
    exporter = await exporters(config)
    await exporter.wait_for(lambda status: status == 200, what="ready")

    status, body, headers = await exporter.get("/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    page = body.decode()
    tables = parse_page(page)
    states = {row["data-target"]: row["data-state"] for row in tables.rows["targets"]}
    assert states == {"keepit-hostile": "up", "keepit-broken": "down"}
    jobs = {(row["data-target"], row["data-job"]): row["data-problems"].split() for row in tables.rows["jobs"]}
    # The hostile name arrived whole, as text: escaped in the markup, intact once parsed.
    assert "failed" in jobs[("keepit-hostile", HOSTILE_NAME)]
    assert "failed" in jobs[("keepit-hostile", "Google Workspace")]
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "1 down" in page
    assert "2 targets" in page

    # The failure text quoting the password reached the page, redacted.
    assert "api_limit_exceeded for &lt;redacted&gt;" in page
    api_status, api_body, api_headers = await exporter.get("/api/v1/status")
    assert api_status == 200
    assert api_headers["Content-Type"].startswith("application/json")
    document = json.loads(api_body)
    config_secrets = parse_config(config.read_text(), "<test>").secrets()
    assert PASSWORD in config_secrets
    metrics_status, metrics_body, _ = await exporter.get("/metrics")
    assert metrics_status == 200
    metrics = metrics_body.decode()
    # The same failure text is a label value of backup_job_last_failure_info.
    assert 'reason="api_limit_exceeded for <redacted>' in metrics
    for secret in config_secrets:
        assert secret not in page
        assert secret not in api_body.decode()
        assert secret not in json.dumps(document, ensure_ascii=False)
        assert secret not in metrics

    # The JSON says what the HTML says.
    assert {t["name"]: t["state"] for t in document["targets"]} == states
    assert {(j["target"], j["job_name"]): j["problems"] for j in document["jobs"]} == jobs
    assert document["summary"] == {
        "targets": 2,
        "up": 1,
        "down": 1,
        "unknown": 0,
        "jobs_needing_attention": len(jobs),
    }
    by_name = {t["name"]: t for t in document["targets"]}
    assert by_name["keepit-broken"]["last_error_reason"] == "parse"
    assert by_name["keepit-broken"]["errors"]["parse"] >= 1
    assert by_name["keepit-broken"]["last_success"] is None
    assert by_name["keepit-hostile"]["last_success"]["rfc3339"].endswith("Z")
    assert by_name["keepit-hostile"]["url"] == server_url(hostile)
    sales = next(j for j in document["jobs"] if j["job_name"] == HOSTILE_NAME)
    assert sales["reason"] is not None
    assert "<redacted>" in sales["reason"]
    assert sales["rpo_seconds"] > 0

    # Links: metrics, per-target probe, the API, the docs.
    assert {"/metrics", "/api/v1/status", statuspage.DOCS_URL} <= set(tables.links)
    assert {"/probe?target=keepit-hostile", "/probe?target=keepit-broken"} <= set(tables.links)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.e2e
async def test_page_and_api_need_the_same_auth_as_metrics(
    tmp_path: Path, aiohttp_server: ServerFactory, exporters: Callable[..., Awaitable[ExporterProcess]]
) -> None:
    sim = await aiohttp_server(keepit_app())
    config = write_config(tmp_path / "config.yaml", [keepit_target("keepit-a", sim)], global_=FAST)
    web_password = "page pass:word"
    hashed = bcrypt.hashpw(web_password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(yaml.safe_dump({"basic_auth_users": {"admin": hashed}}))
    exporter = await exporters(config, f"--web.config.file={web_config}")
    for path in ("/", "/api/v1/status", "/metrics"):
        status, _, headers = await exporter.get(path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic "), path
        status, _, _ = await exporter.get(path, headers=basic("admin", "wrong"))
        assert status == 401, path
        status, body, _ = await exporter.get(path, headers=basic("admin", web_password))
        assert status == 200, path
    status, body, _ = await exporter.get("/api/v1/status", headers=basic("admin", web_password))
    assert [t["name"] for t in json.loads(body)["targets"]] == ["keepit-a"]


# --- the status model, on constructed state ------------------------------------------


NOW = 1_800_000_000.0


def job(*, running_for: float | None = None, durations: dict[float, int] | None = None) -> JobState:
    """A job with finished runs of the given durations (duration -> count), maybe one run in progress."""
    state = JobState(key=JobKey("nightly", "backup"), last_seen=NOW)
    for duration, count in (durations or {}).items():
        index = next((i for i, bound in enumerate(DURATION_BUCKETS) if duration <= bound), len(DURATION_BUCKETS))
        state.duration_buckets[index] += count
        state.duration_count += count
        state.duration_sum += duration * count
    state.last_success_end = NOW - 3600
    if running_for is not None:
        state.running = 1
        state.running_oldest_start = NOW - running_for
    return state


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    bounds = (60.0, 300.0, 900.0)
    assert histogram_quantile(0.95, bounds, [0, 0, 10, 0]) == pytest.approx(300 + 600 * 9.5 / 10)
    assert histogram_quantile(0.5, bounds, [10, 0, 0, 0]) == pytest.approx(30)
    # In +Inf: the highest finite bound, as Prometheus answers.
    assert histogram_quantile(0.95, bounds, [0, 0, 0, 10]) == 900
    assert histogram_quantile(0.95, bounds, [0, 0, 0, 0]) is None


def test_running_too_long_is_twice_the_p95_once_five_runs_are_known() -> None:
    durations = {600.0: 10}  # all in (300, 900]: p95 = 870 s, limit 1740 s
    assert running_limit(job(durations=durations), None) == pytest.approx(1740)
    assert is_running_too_long(job(running_for=1800, durations=durations), None, NOW)
    assert not is_running_too_long(job(running_for=1700, durations=durations), None, NOW)
    assert RUNNING_TOO_LONG in problems_of(job(running_for=1800, durations=durations), None, NOW)
    assert not problems_of(job(running_for=1700, durations=durations), None, NOW)
    # Four runs are too few for a percentile: no limit without an RPO.
    assert running_limit(job(durations={600.0: 4}), None) is None
    assert not is_running_too_long(job(running_for=86400 * 3, durations={600.0: 4}), None, NOW)
    # Nothing in progress: nothing running too long.
    assert not is_running_too_long(job(durations=durations), 60, NOW)


def test_running_longer_than_the_rpo_is_too_long_whichever_comes_first() -> None:
    # With no history, the RPO alone.
    assert is_running_too_long(job(running_for=7300), 7200, NOW)
    assert not is_running_too_long(job(running_for=7100), 7200, NOW)
    # The RPO is shorter than twice the p95 here: the RPO decides.
    assert running_limit(job(durations={600.0: 10}), 1000) == 1000
    assert is_running_too_long(job(running_for=1100, durations={600.0: 10}), 1000, NOW)
    # A long RPO: twice the p95 decides.
    assert running_limit(job(durations={600.0: 10}), 86400) == pytest.approx(1740)


def test_urls_lose_their_userinfo_query_and_fragment() -> None:
    assert public_url("https://user:pw@vendor.example:8443/api/v1?token=abc#x") == "https://vendor.example:8443/api/v1"
    assert public_url("http://[::1]:9000/") == "http://[::1]:9000/"


def _report(targets: tuple[TargetStatus, ...], jobs: tuple[JobProblem, ...] = ()) -> StatusReport:
    return StatusReport(generated=NOW, targets=targets, jobs=jobs)


def _target(name: str, state: str = "up", **extra: Any) -> TargetStatus:
    fields: dict[str, Any] = {
        "name": name,
        "vendor": "keepit",
        "url": "https://vendor.example",
        "state": state,
        "last_success": NOW - 200,
        "last_attempt": NOW - 200,
        "next_poll": NOW + 120,
        "last_error": None,
        "last_error_reason": None,
        "jobs": 3,
        "consecutive_failures": 0,
        "errors": {},
        **extra,
    }
    return TargetStatus(**fields)


def test_render_says_all_good_with_relative_and_absolute_times() -> None:
    page = statuspage.render(_report((_target("a"), _target("b"))), version="1.0", telemetry_path="/m")
    assert "2 targets: 2 up, 0 down \u2014 no job needs attention" in page
    assert 'id="all-good"' in page
    assert "3m ago" in page
    assert "in 2m" in page
    assert 'title="2027-01-15 08:02:00 UTC"' in page  # NOW + 120 s, the next poll
    assert 'href="/m"' in page


def test_render_escapes_names_in_attributes_and_probe_links() -> None:
    name = 'a&b "c" <d>'
    down = _target(name, "down", last_error='got <b>"bad"</b>', consecutive_failures=2)
    problem = JobProblem(name, "keepit", 'j"<x>', "backup", ("failed", "past_rpo"), None, 3600.0, "r<", None, None)
    page = statuspage.render(_report((down,), (problem,)), version="1.0", telemetry_path="/metrics")
    tables = parse_page(page)
    assert tables.rows["targets"] == [{"data-target": name, "data-state": "down"}]
    assert tables.rows["jobs"] == [{"data-target": name, "data-job": 'j"<x>', "data-problems": "failed past_rpo"}]
    assert "/probe?target=a%26b%20%22c%22%20%3Cd%3E" in tables.links
    assert "<b>" not in page
    assert "<x>" not in page
    assert "<d>" not in page
    assert "1 target: 0 up, 1 down \u2014 1 job needs attention" in page
    assert 'id="all-good"' not in page
