"""What every vendor simulator shares: switchable faults, a movable clock,
request counting, and serving an app on loopback.

Control routes live under `/_sim/` and are never faulted, counted nor
authenticated:

- `GET|POST /_sim/fault`: read or set the fault applied to vendor routes,
  JSON `{"mode": ..., "delay": s, "retry_after": s, "count": n, "size": bytes,
  "after": n}`; the next `after` vendor requests (default 0) pass untouched, so
  a fault can strike mid-paging; then `count` requests get the fault and it
  clears itself (omitted: until switched off).
- `GET /_sim/xxe-probe`: the URL the `external_entity` fault declares an
  entity on; every fetch is counted, and `GET /_sim/xxe-probe/count` reads
  `{"count": n}`, so a test proves that no client ever resolved the entity.

Fault modes (`mode`):

- `none`: no fault.
- `500`, `503`, `429`, `401`, `403`: that status and a short text body; 429
  and 503 carry `Retry-After: <retry_after>` when `retry_after` is given.
- `slow`: the normal answer, after `delay` seconds.
- `hang`: the request is read and never answered (until the app shuts down),
  as a server that accepts connections but whose backend is stuck; `slow`
  with a large delay is the same to a client, but ties up the simulator's
  shutdown for that long.
- `drip`: the normal status, headers and Content-Length, then the body
  `DRIP_BYTES` at a time with `delay` seconds between chunks: no single read
  waits long, but the whole answer takes as long as its size says.
- `reset`: the normal status, headers and Content-Length, about half the
  body, then the TCP connection is reset (SO_LINGER 0), as when a server or
  proxy dies mid-answer.
- `garbage`: a body malformed as XML and as JSON alike, normal Content-Type.
- `truncated`: the first half of the normal body, with a matching
  Content-Length (cut by the server, not by the network).
- `empty`: an empty body, normal status and Content-Type.
- `wrong_content_type`: the normal body labelled `text/html`.
- `huge`: `size` bytes (default over HttpClient's 64 MiB limit) of chunked
  body with no Content-Length, so only a streaming size limit catches it.
- `entity_expansion`: a "billion laughs" XML document (nested entities that
  expand to about 3 GB), `application/xml`.
- `external_entity`: the normal answer as XML with a DOCTYPE declaring
  external entities on `file:///etc/passwd` and on `/_sim/xxe-probe`, used
  as the text of the first element that has text (the root, for a non-XML
  answer), `application/xml`.
- `GET|POST /_sim/clock`: read the simulated now, or move it with
  `{"now": ISO}` or `{"advance": seconds}`.
- `GET|DELETE /_sim/requests`: vendor requests so far by "METHOD route", or reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.timeutil import parse_timestamp

CONTROL_PREFIX = "/_sim/"
FAULT_MODES = (
    "none",
    "500",
    "401",
    "403",
    "429",
    "503",
    "slow",
    "garbage",
    "truncated",
    "empty",
    "wrong_content_type",
    "huge",
    "reset",
    "drip",
    "hang",
    "entity_expansion",
    "external_entity",
)
# Over HttpClient's default 64 MiB body limit.
DEFAULT_HUGE_BYTES = 80 * 1024 * 1024
# Malformed as XML and as JSON alike.
GARBAGE_BODY = b"<<garbage>>{[ not valid \x00"
_CHUNK = 64 * 1024
# A slow drip: a few bytes per write.
DRIP_BYTES = 8
XXE_PROBE_PATH = "/_sim/xxe-probe"
# What the probe answers: seen anywhere in an exporter's output, it proves
# the external entity was fetched.
XXE_PROBE_MARKER = "xxe-probe-was-fetched"
XML_CONTENT_TYPE = "application/xml; charset=utf-8"


def _billion_laughs(levels: int = 9) -> bytes:
    """lol1 is ten lol, lol2 ten lol1, ...: 3 bytes times 10**levels once expanded."""
    entities = ['  <!ENTITY lol0 "lol">']
    for level in range(1, levels + 1):
        entities.append(f'  <!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">')
    lines = ['<?xml version="1.0"?>', "<!DOCTYPE lolz [", *entities, "]>", f"<lolz>&lol{levels};</lolz>", ""]
    return "\n".join(lines).encode()


BILLION_LAUGHS = _billion_laughs()


@dataclass
class Faults:
    """The fault applied to vendor requests; `count` None means until switched off."""

    mode: str = "none"
    delay: float = 0.0
    retry_after: float | None = None
    count: int | None = None
    size: int = DEFAULT_HUGE_BYTES
    # Vendor requests still to pass untouched before the fault strikes.
    after: int = 0

    def configure(self, payload: Mapping[str, Any]) -> None:
        """Replace the fault from a control request; ValueError on bad input."""
        unknown = set(payload) - {"mode", "delay", "retry_after", "count", "size", "after"}
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
        mode = str(payload.get("mode", "none"))
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {', '.join(FAULT_MODES)}")
        delay = _number(payload, "delay", 0.0)
        retry_after = payload.get("retry_after")
        count = payload.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise ValueError("count must be a positive integer")
        size = _number(payload, "size", DEFAULT_HUGE_BYTES)
        after = payload.get("after", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise ValueError("after must be a non-negative integer")
        self.mode = mode
        self.delay = delay
        self.retry_after = None if retry_after is None else _number(payload, "retry_after", 0.0)
        self.count = count
        self.size = int(size)
        self.after = after

    def take(self) -> Faults | None:
        """The fault for the request arriving now, consuming one of `count`."""
        if self.mode == "none":
            return None
        if self.after > 0:
            self.after -= 1
            return None
        current = replace(self)
        if self.count is not None:
            self.count -= 1
            if self.count <= 0:
                self.mode, self.count = "none", None
        return current

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "delay": self.delay,
            "retry_after": self.retry_after,
            "count": self.count,
            "size": self.size,
            "after": self.after,
        }


def _number(payload: Mapping[str, Any], key: str, default: float) -> float:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a non-negative number")
    return float(value)


class SimClock:
    """The simulator's now: fixed when given one, else wall time, plus any advance."""

    def __init__(self, now: datetime | None = None) -> None:
        self._fixed = now.astimezone(UTC) if now is not None else None
        self._offset = timedelta()

    def now(self) -> datetime:
        if self._fixed is not None:
            return self._fixed
        return datetime.now(UTC) + self._offset

    def set(self, when: datetime) -> None:
        self._fixed = when.astimezone(UTC)
        self._offset = timedelta()

    def advance(self, seconds: float) -> None:
        if self._fixed is not None:
            self._fixed += timedelta(seconds=seconds)
        else:
            self._offset += timedelta(seconds=seconds)


@dataclass
class RequestLog:
    """Vendor requests by "METHOD /route/{template}", for assertions on paging and logins."""

    counts: Counter[str] = field(default_factory=Counter)

    def record(self, request: web.Request) -> None:
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else "<unmatched>"
        self.counts[f"{request.method} {template}"] += 1


@dataclass
class XxeProbe:
    """Fetches of the `external_entity` fault's probe URL."""

    fetches: int = 0


FAULTS = web.AppKey("sim_faults", Faults)
CLOCK = web.AppKey("sim_clock", SimClock)
REQUESTS = web.AppKey("sim_requests", RequestLog)
XXE_PROBE = web.AppKey("sim_xxe_probe", XxeProbe)
# Set when the app shuts down: a hung request then ends, so shutting the
# simulator down does not wait for its handlers' grace period.
SHUTTING_DOWN = web.AppKey("sim_shutting_down", asyncio.Event)


def is_control(request: web.Request) -> bool:
    return request.path.startswith(CONTROL_PREFIX)


def sim_now(request: web.Request) -> datetime:
    return request.app[CLOCK].now()


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_control(request):
        return await handler(request)
    request.app[REQUESTS].record(request)
    fault = request.app[FAULTS].take()
    if fault is None:
        return await handler(request)
    return await _apply_fault(fault, request, handler)


async def _apply_fault(fault: Faults, request: web.Request, handler: Handler) -> web.StreamResponse:
    mode = fault.mode
    if mode in ("500", "503", "429", "401", "403"):
        headers = {}
        if fault.retry_after is not None and mode in ("429", "503"):
            headers["Retry-After"] = str(int(fault.retry_after))
        return web.Response(status=int(mode), text=f"simulated HTTP {mode}\n", headers=headers)
    if mode == "slow":
        await asyncio.sleep(fault.delay)
        return await handler(request)
    if mode == "hang":
        await request.app[SHUTTING_DOWN].wait()
        return web.Response(status=503, text="simulator shutting down\n")
    if mode == "entity_expansion":
        return web.Response(body=BILLION_LAUGHS, headers={"Content-Type": XML_CONTENT_TYPE})
    normal = await handler(request)
    if not isinstance(normal, web.Response) or not isinstance(normal.body, bytes):
        return normal
    if mode == "huge":
        return await _huge(request, normal, fault.size)
    if mode == "drip":
        return await _drip(request, normal, fault.delay)
    if mode == "reset":
        return await _reset(request, normal)
    if mode == "external_entity":
        return _with_body(normal, _external_entity(normal.body, request), content_type=XML_CONTENT_TYPE)
    if mode == "wrong_content_type":
        return _with_body(normal, normal.body, content_type="text/html; charset=utf-8")
    bodies = {"garbage": GARBAGE_BODY, "truncated": normal.body[: len(normal.body) // 2], "empty": b""}
    return _with_body(normal, bodies[mode])


def _headers_of(normal: web.Response) -> dict[str, str]:
    return {k: v for k, v in normal.headers.items() if k.lower() not in ("content-length", "content-type")}


def _with_body(normal: web.Response, body: bytes, content_type: str | None = None) -> web.Response:
    headers = _headers_of(normal)
    headers["Content-Type"] = content_type or normal.headers.get("Content-Type") or "application/octet-stream"
    return web.Response(status=normal.status, body=body, headers=headers)


async def _start_stream(request: web.Request, normal: web.Response, body: bytes) -> web.StreamResponse:
    """The normal status and headers, promising `body`'s length, sent."""
    response = web.StreamResponse(status=normal.status, headers=_headers_of(normal))
    response.content_type = normal.content_type
    if normal.charset:
        response.charset = normal.charset
    response.content_length = len(body)
    await response.prepare(request)
    return response


async def _drip(request: web.Request, normal: web.Response, delay: float) -> web.StreamResponse:
    assert isinstance(normal.body, bytes)
    body = normal.body
    response = await _start_stream(request, normal, body)
    # The client gives up (its timeout) by closing the connection; that ends the drip.
    with contextlib.suppress(ConnectionError):
        for start in range(0, len(body), DRIP_BYTES):
            await response.write(body[start : start + DRIP_BYTES])
            await asyncio.sleep(delay)
        await response.write_eof()
    return response


async def _reset(request: web.Request, normal: web.Response) -> web.StreamResponse:
    assert isinstance(normal.body, bytes)
    body = normal.body
    response = await _start_stream(request, normal, body)
    with contextlib.suppress(ConnectionError):
        await response.write(body[: len(body) // 2])
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: close() sends a RST instead of a FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return response


# The first element with text: `>text<`, text not only whitespace.
_FIRST_TEXT = re.compile(rb">(\s*[^<>\s][^<>]*)<")
_XML_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>")


def _external_entity(normal: bytes, request: web.Request) -> bytes:
    """`normal` (when XML) with its first text replaced by external entities."""
    probe = request.url.origin().with_path(XXE_PROBE_PATH)
    doctype = (
        f'<!DOCTYPE doc [\n  <!ENTITY xxe SYSTEM "file:///etc/passwd">\n  <!ENTITY probe SYSTEM "{probe}">\n]>\n'
    ).encode()
    body = normal.removeprefix(b"\xef\xbb\xbf")
    if not body.lstrip().startswith(b"<"):
        return b'<?xml version="1.0"?>\n' + doctype + b"<doc>&xxe;&probe;</doc>\n"
    body, replaced = _FIRST_TEXT.subn(b">&xxe;&probe;<", body, count=1)
    if not replaced:
        return b'<?xml version="1.0"?>\n' + doctype + b"<doc>&xxe;&probe;</doc>\n"
    declaration = _XML_DECLARATION.match(body)
    if declaration is None:
        return doctype + body.lstrip()
    return body[: declaration.end()] + b"\n" + doctype + body[declaration.end() :].lstrip()


async def _huge(request: web.Request, normal: web.Response, size: int) -> web.StreamResponse:
    """`size` bytes, chunked, so that only a streaming size limit catches it."""
    response = web.StreamResponse(status=200)
    response.headers["Content-Type"] = normal.headers.get("Content-Type", "application/octet-stream")
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = b" " * _CHUNK
    sent = 0
    # The client hangs up once its limit is reached; that ends the stream.
    with contextlib.suppress(ConnectionError):
        while sent < size:
            await response.write(chunk[: min(_CHUNK, size - sent)])
            sent += _CHUNK
        await response.write_eof()
    return response


async def _get_xxe_probe(request: web.Request) -> web.Response:
    request.app[XXE_PROBE].fetches += 1
    return web.Response(text=XXE_PROBE_MARKER + "\n")


async def _get_xxe_probe_count(request: web.Request) -> web.Response:
    return web.json_response({"count": request.app[XXE_PROBE].fetches})


async def _release_hung_requests(app: web.Application) -> None:
    app[SHUTTING_DOWN].set()


async def _get_fault(request: web.Request) -> web.Response:
    return web.json_response(request.app[FAULTS].as_dict())


async def _post_fault(request: web.Request) -> web.Response:
    payload = await control_json(request)
    try:
        request.app[FAULTS].configure(payload)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    return web.json_response(request.app[FAULTS].as_dict())


async def _get_clock(request: web.Request) -> web.Response:
    return web.json_response({"now": sim_now(request).isoformat()})


async def _post_clock(request: web.Request) -> web.Response:
    payload = await control_json(request)
    clock = request.app[CLOCK]
    try:
        if "now" in payload:
            clock.set(parse_timestamp(str(payload["now"])))
        elif "advance" in payload:
            clock.advance(_number(payload, "advance", 0.0))
        else:
            raise ValueError('give {"now": ISO} or {"advance": seconds}')
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    return web.json_response({"now": clock.now().isoformat()})


async def _get_requests(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[REQUESTS].counts))


async def _delete_requests(request: web.Request) -> web.Response:
    request.app[REQUESTS].counts.clear()
    return web.json_response({})


async def control_json(request: web.Request) -> Mapping[str, Any]:
    """The JSON object body of a control request; 400 otherwise."""
    try:
        payload = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON\n") from None
    if not isinstance(payload, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object\n")
    return payload


def create_sim_app(*, now: datetime | None = None, middlewares: Sequence[Middleware] = ()) -> web.Application:
    """An app with the fault, clock and request-log machinery; `middlewares`
    (a vendor's authentication, say) run inside the fault middleware."""
    app = web.Application(middlewares=[fault_middleware, *middlewares])
    app[FAULTS] = Faults()
    app[CLOCK] = SimClock(now)
    app[REQUESTS] = RequestLog()
    app[XXE_PROBE] = XxeProbe()
    app[SHUTTING_DOWN] = asyncio.Event()
    app.on_shutdown.append(_release_hung_requests)
    app.router.add_get("/_sim/fault", _get_fault)
    app.router.add_post("/_sim/fault", _post_fault)
    app.router.add_get("/_sim/clock", _get_clock)
    app.router.add_post("/_sim/clock", _post_clock)
    app.router.add_get("/_sim/requests", _get_requests)
    app.router.add_delete("/_sim/requests", _delete_requests)
    app.router.add_get(XXE_PROBE_PATH, _get_xxe_probe)
    app.router.add_get(XXE_PROBE_PATH + "/count", _get_xxe_probe_count)
    return app


async def start_simulator(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve `app` on 127.0.0.1 on a free port; the caller ends it with `runner.cleanup()`."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


class AppFactory(Protocol):
    def __call__(self, *, seed: int = 1, now: datetime | None = None) -> web.Application: ...


@dataclass(frozen=True)
class SimulatorSpec:
    """A vendor simulator: its app, and the config target that collects from it in --demo."""

    name: str
    create_app: AppFactory
    # The raw config dict of a target for `url` (name, vendor, url, credentials, labels).
    demo_target: Callable[[str], dict[str, Any]]
