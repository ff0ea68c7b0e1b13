"""The node backend fake (tests/fakes/node_api.py) served from a thread of its own, so a module-scoped
daemon can talk to it across tests; it also keeps every request's raw (undecoded) path."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

from aiohttp import web

from tests.fakes.node_api import FakeNodeApi

# Every path the daemon may request from the backend (docs/backend-api.md); one path segment per sid.
BACKEND_PATHS = re.compile(
    r"/v1/(health|business\?to=[^/?#&]*|budget/check"
    r"|calls/(?!\.\.?/)[^/?#]+/(messages|dtmf|events|cost|conversation|callbacks))"
)


class RawPathNodeApi(FakeNodeApi):
    """The fake, also recording each request's path as it came over the wire (before percent-decoding)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.raw_paths: list[str] = []

    @web.middleware
    async def _check(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.raw_paths.append(request.raw_path)
        return await super()._check(request, handler)


class BackendThread:
    """Runs a RawPathNodeApi on its own event loop in a daemon thread until `stop()`."""

    def __init__(self, fake: RawPathNodeApi) -> None:
        self.fake = fake
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="hostile-node-backend", daemon=True)

    def start(self) -> RawPathNodeApi:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the node backend fake did not start")
        return self.fake

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def escaped_paths(self) -> list[str]:
        """Requests the daemon made outside the documented backend paths (a sid steering the URL)."""
        return [path for path in list(self.fake.raw_paths) if not BACKEND_PATHS.fullmatch(path)]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.fake:
            self._ready.set()
            await self._stop.wait()
