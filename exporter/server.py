"""HTTP endpoints. Handlers only read what the poller prepared: no vendor
call and no rendering of target series happens on a request.
"""

from __future__ import annotations

import time

from aiohttp import web

from exporter import __version__, statuspage
from exporter.exposition import CONTENT_TYPE
from exporter.httpthread import on_main_loop, thread_safe
from exporter.redact import Redactor
from exporter.service import ExporterService
from exporter.status import StatusReport, build_status, status_json
from exporter.webconfig import WebConfig, middleware

SERVICE = web.AppKey("service", ExporterService)
TELEMETRY_PATH = web.AppKey("telemetry_path", str)


def create_app(
    service: ExporterService, telemetry_path: str = "/metrics", web_config: WebConfig | None = None
) -> web.Application:
    # on_main_loop innermost: auth and headers still apply to every route, and every
    # handler not marked @thread_safe (any route added here later too) runs on the
    # main loop, which owns the service, when served by exporter.httpthread.ServerThread.
    app = web.Application(middlewares=[*([middleware(web_config)] if web_config else []), on_main_loop()])
    app[SERVICE] = service
    app[TELEMETRY_PATH] = telemetry_path
    app.router.add_get("/", landing_page)
    app.router.add_get(statuspage.API_PATH, status_api)
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


@thread_safe  # Exposition.body() only reads the last complete snapshot (or builds one under its lock)
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


@thread_safe
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


def _report(service: ExporterService) -> StatusReport:
    collectors = service.poller.collectors.values() if service.poller else ()
    redact = Redactor(service.config.secrets() if service.config else [])
    return build_status(collectors, time.time(), redact)


async def landing_page(request: web.Request) -> web.Response:
    page = statuspage.render(
        _report(request.app[SERVICE]), version=__version__, telemetry_path=request.app[TELEMETRY_PATH]
    )
    return web.Response(text=page, content_type="text/html")


async def status_api(request: web.Request) -> web.Response:
    links = {
        "metrics": request.app[TELEMETRY_PATH],
        "probe": statuspage.PROBE_PATH,
        "page": "/",
        "docs": statuspage.DOCS_URL,
    }
    document = status_json(_report(request.app[SERVICE]), version=__version__, links=links)
    return web.json_response(document)
