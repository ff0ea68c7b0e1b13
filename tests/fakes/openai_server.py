"""A local fake of OpenAI's chat-completions endpoint, streaming as the real one does.

`POST /v1/chat/completions` with `"stream": true` answers `text/event-stream`: one `data: {chunk}` event
per piece (`object: chat.completion.chunk`, the text in `choices[0].delta.content`; the first chunk carries
only the role, the last an empty delta and `finish_reason: "stop"`), then `data: [DONE]`. A wrong bearer
token gets 401 with an error object that quotes part of the key, as the real service's does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web


def _chunk(delta: dict[str, str], finish_reason: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1764000000,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


@dataclass
class FakeOpenAI:
    """Async context manager serving the fake on a free loopback port; `url` is the API base (…/v1)."""

    api_key: str = "sk-fake"
    pieces: list[str] = field(default_factory=lambda: ["Sure", ", we open", " at nine."])
    status: int = 200  # anything else answers an error object
    bodies: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        given = request.headers.get("Authorization", "")
        self.auth_headers.append(given)
        if given != f"Bearer {self.api_key}":
            shown = given.removeprefix("Bearer ")[:6]
            error = {"message": f"Incorrect API key provided: {shown}****", "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=401)
        if self.status != 200:
            error = {"message": "The server had an error", "type": "server_error"}
            return web.json_response({"error": error}, status=self.status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunk({"role": "assistant", "content": ""}))
        for piece in self.pieces:
            await response.write(_chunk({"content": piece}))
        await response.write(_chunk({}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
