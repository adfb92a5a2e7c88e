"""HttpClient policies that are not specific to a vendor, over real HTTP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.vendors.base import HttpClient, ParseError


class CountingAuth:
    def __init__(self) -> None:
        self.logins = 0

    async def headers(self, http: HttpClient) -> Mapping[str, str]:
        self.logins += 1
        return {"Authorization": "Bearer token"}

    async def invalidate(self, http: HttpClient) -> None:
        return None


async def test_credentials_never_go_to_another_host(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    http = HttpClient(str(server.make_url("/api/")))
    auth = CountingAuth()
    http.auth = auth
    try:
        assert (await http.request("GET", "jobs")).status == 200
        # Same host, absolute link: fine. Another host (or port): refused before any I/O.
        assert (await http.request("GET", str(server.make_url("/api/next")))).status == 200
        other = str(server.make_url("/api/next")).replace("127.0.0.1", "localhost")
        with pytest.raises(ParseError, match="refusing to send credentials"):
            await http.request("GET", other)
        # Unauthenticated requests (an OAuth token endpoint elsewhere) may go anywhere.
        assert (await http.request("GET", other, authenticate=False)).status == 200
    finally:
        await http.close()
    assert seen == ["Bearer token", "Bearer token", ""]
    assert auth.logins == 2
