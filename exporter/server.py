"""HTTP endpoints. Handlers only read what the poller prepared: no vendor
call and no rendering of target series happens on a request.
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime

from aiohttp import web

from exporter import __version__
from exporter.exposition import CONTENT_TYPE
from exporter.service import ExporterService
from exporter.status import job_problems
from exporter.webconfig import WebConfig, middleware

SERVICE = web.AppKey("service", ExporterService)
TELEMETRY_PATH = web.AppKey("telemetry_path", str)


def create_app(
    service: ExporterService, telemetry_path: str = "/metrics", web_config: WebConfig | None = None
) -> web.Application:
    app = web.Application(middlewares=[middleware(web_config)] if web_config else [])
    app[SERVICE] = service
    app[TELEMETRY_PATH] = telemetry_path
    app.router.add_get("/", landing_page)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    return app


def _wants_gzip(request: web.Request) -> bool:
    """True when Accept-Encoding lists gzip (or *) with a non-zero q-value."""
    for item in request.headers.get("Accept-Encoding", "").lower().split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() not in ("gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        return q > 0
    return False


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    gzipped = _wants_gzip(request)
    body = service.exposition.body(gzipped=gzipped)
    headers = {"Content-Type": CONTENT_TYPE}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


async def probe(request: web.Request) -> web.Response:
    """One target's series, for per-target scrape settings and sharding in Prometheus."""
    service = request.app[SERVICE]
    name = request.query.get("target", "")
    known = service.config.targets if service.config else ()
    if not name or name not in {t.name for t in known}:
        return web.Response(status=400, text=f"unknown target {name!r}\n")
    return web.Response(body=service.exposition.render([name]), headers={"Content-Type": CONTENT_TYPE})


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[SERVICE].ready:
        return web.Response(text="Ready.\n")
    return web.Response(status=503, text="Not ready: not every target has been collected once.\n")


async def reload(request: web.Request) -> web.Response:
    ok, message = await request.app[SERVICE].reload()
    if ok:
        return web.Response(text="Reloaded.\n")
    # The message names file, key path and problem; it never holds secret values.
    return web.Response(status=500, text=f"Reload failed, previous configuration kept:\n{message}\n")


def _ago(seconds: float) -> str:
    """A short human duration: 45s, 3m 20s, 5h 7m, 2d 18h."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{stamp} ({_ago(time.time() - ts)} ago)"


def _problem_rows(service: ExporterService) -> str:
    collectors = service.poller.collectors.values() if service.poller else ()
    rows = []
    for problem in job_problems(collectors, time.time()):
        rows.append(
            "<tr>"
            f"<td>{html.escape(problem.target)}</td>"
            f"<td>{html.escape(problem.vendor)}</td>"
            f"<td>{html.escape(problem.job_name)}</td>"
            f"<td>{html.escape(problem.job_type)}</td>"
            f'<td class="down">{html.escape(", ".join(problem.problems))}</td>'
            f"<td>{html.escape(_when(problem.last_success))}</td>"
            f"<td>{html.escape('none' if problem.rpo_seconds is None else _ago(problem.rpo_seconds))}</td>"
            f"<td>{html.escape(problem.reason or '')}</td>"
            "</tr>"
        )
    return "".join(rows) or '<tr><td colspan="8">No job is failing or past its RPO.</td></tr>'


async def landing_page(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    rows = []
    collectors = service.poller.collectors if service.poller else {}
    for name, collector in collectors.items():
        health = collector.health
        up = "not yet tried" if health.up is None else ("up" if health.up else "DOWN")
        rows.append(
            "<tr>"
            f"<td>{html.escape(name)}</td>"
            f"<td>{html.escape(collector.target.vendor)}</td>"
            f'<td class="{html.escape(up.split()[0].lower())}">{html.escape(up)}</td>'
            f"<td>{html.escape(_when(collector.state.last_success))}</td>"
            f"<td>{len(collector.state.jobs)}</td>"
            f"<td>{html.escape(health.last_error or '')}</td>"
            f'<td><a href="/probe?target={html.escape(name)}">probe</a></td>'
            "</tr>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>backup-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.down{{color:#b00;font-weight:bold}}
.up{{color:#070}}</style></head>
<body><h1>backup-exporter {html.escape(__version__)}</h1>
<p><a href="{html.escape(request.app[TELEMETRY_PATH])}">Metrics</a>
 &middot; <a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a></p>
<h2>Targets</h2>
<table><tr><th>Target</th><th>Vendor</th><th>State</th><th>Last successful collection</th><th>Jobs</th>
<th>Last error</th><th></th></tr>
{"".join(rows) or '<tr><td colspan="7">No targets configured.</td></tr>'}
</table>
<h2>Jobs failing or past their RPO</h2>
<table><tr><th>Target</th><th>Vendor</th><th>Job</th><th>Type</th><th>Problem</th><th>Last success</th>
<th>RPO</th><th>Reason</th></tr>
{_problem_rows(service)}
</table></body></html>
"""
    return web.Response(text=page, content_type="text/html")
