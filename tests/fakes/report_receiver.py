"""A local receiver of post-call reports (docs/post-call-report.md), and the verifiers as the doc has them.

The receiver keeps every request's raw body and headers, answers `statuses` first (one per request, e.g.
503 for a while), then 200; it does not verify anything itself, so tests can check the documented
verifier against what really arrived.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiohttp import web

DOC = Path(__file__).resolve().parents[2] / "docs" / "post-call-report.md"

Verifier = Callable[..., bool]


def doc_block(name: str) -> str:
    """The code block right after `<!-- verifier:{name} -->` in the doc, as the doc has it."""
    found = re.search(rf"<!-- verifier:{name} -->\n```\w+\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert found is not None, f"no verifier:{name} block in {DOC}"
    return found.group(1)


def documented_python_verifier() -> Verifier:
    """`verify` from the doc's Python block, executed as it stands there."""
    namespace: dict[str, object] = {}
    exec(compile(doc_block("python"), str(DOC), "exec"), namespace)  # the doc's own code, nothing else
    verify = namespace["verify"]
    assert callable(verify)
    return verify


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class ReportReceiver:
    """Async context manager serving the receiver on a free loopback port."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    port: int = 0  # 0: any free one; a fixed one lets a daemon started earlier find it

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _report(self, request: web.Request) -> web.Response:
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append(Received(dict(request.headers), await request.read(), status))
        return web.json_response({"ok": status < 300}, status=status)

    def delivered(self) -> list[Received]:
        return [seen for seen in self.received if 200 <= seen.answered < 300]

    async def __aenter__(self) -> ReportReceiver:
        app = web.Application()
        app.router.add_post("/report", self._report)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/report"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
