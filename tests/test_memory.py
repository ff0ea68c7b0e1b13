"""The idle memory returner trims the heap once per busy spell, never while a call is live."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from voicebridge.daemon.memory import IdleMemoryReturner, glibc_malloc_trim
from voicebridge.daemon.registry import CallRecord, CallRegistry


@dataclass
class QuietCall:
    """The least a registry needs of a live call."""

    call_sid: str

    def snapshot(self) -> dict[str, Any]:
        return {"call_sid": self.call_sid}

    async def hangup(self) -> None:
        return None

    async def transfer(self, number: str) -> None:
        return None

    async def end_for_shutdown(self) -> None:
        return None


def record(call_sid: str) -> CallRecord:
    return CallRecord(call_sid, "exotel", "+91", "+91", 0.0, 1.0, 1.0, 0, "completed", [])


async def test_trims_once_after_the_last_call_ends_and_not_while_calls_are_live() -> None:
    registry = CallRegistry(10)
    trims: list[int] = []
    returner = IdleMemoryReturner(registry, lambda: trims.append(registry.active_count) is None, 0.01)
    task = asyncio.create_task(returner.run())
    try:
        await asyncio.sleep(0.05)
        assert trims == []  # no call has ended yet: nothing to give back
        first, second = QuietCall("CA-1"), QuietCall("CA-2")
        assert registry.admit(first) and registry.admit(second)
        registry.finish(first, record("CA-1"))
        await asyncio.sleep(0.05)
        assert trims == []  # CA-2 is still live
        registry.finish(second, record("CA-2"))
        await asyncio.sleep(0.05)
        assert trims == [0] and returner.trims == 1  # once, with no call live
        await asyncio.sleep(0.05)
        assert returner.trims == 1  # idle and nothing new ended: no more trims
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_real_glibc_trim_runs() -> None:
    trim = glibc_malloc_trim()
    assert trim is not None  # these machines run glibc
    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # ~128 MB of small-ish heap, then freed
    del blocks
    assert isinstance(await asyncio.to_thread(trim), bool)
