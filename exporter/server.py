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
    return "gzip" in request.headers.get("Accept-Encoding", "").lower()


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


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    ago = max(0, int(time.time() - ts))
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{stamp} ({ago}s ago)"


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
</table></body></html>
"""
    return web.Response(text=page, content_type="text/html")
