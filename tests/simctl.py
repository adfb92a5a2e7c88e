"""Driving a vendor simulator from a test: the /_sim control endpoints every
simulator shares (exporter/simulators/base.py). Vendor tests subclass
SimControl for their dataset and their own control endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer


async def no_sleep(_: float) -> None:
    """HttpClient's sleep in tests: retries and Retry-After cost no time."""
    return


@dataclass
class SimControl:
    server: TestServer
    app: web.Application
    control: aiohttp.ClientSession

    @property
    def root(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def post(self, path: str, payload: dict[str, Any]) -> Any:
        async with self.control.post(self.server.make_url(path), json=payload) as response:
            assert response.status == 200, await response.text()
            return await response.json() if response.content_type == "application/json" else None

    async def get(self, path: str) -> Any:
        async with self.control.get(self.server.make_url(path)) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def fault(self, **payload: Any) -> None:
        await self.post("/_sim/fault", payload)

    async def advance(self, seconds: float) -> None:
        await self.post("/_sim/clock", {"advance": seconds})

    async def clock(self, when: datetime) -> None:
        await self.post("/_sim/clock", {"now": when.isoformat()})

    async def requests(self) -> dict[str, int]:
        counts: dict[str, int] = await self.get("/_sim/requests")
        return counts

    async def reset_requests(self) -> None:
        async with self.control.delete(self.server.make_url("/_sim/requests")) as response:
            assert response.status == 200
