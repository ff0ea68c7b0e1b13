"""Input limits on a real daemon: garbage, floods and oversized messages close that stream, not others."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import aiohttp
import pytest

from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = start_daemon(
        tmp_path_factory.mktemp("limits"),
        {
            "prompts": {"greeting": "Hello, how can I help?"},
            "limits": {"max_bad_messages": 20, "max_messages_per_second": 100, "max_message_bytes": 65536},
        },
    )
    yield process
    process.terminate()


async def rejections(daemon: DaemonProcess, kind: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.http}/metrics") as response:
        text = await response.text()
    found = re.search(rf'voicebridge_protocol_rejections_total{{kind="{kind}"}} ([0-9.e+]+)', text)
    return float(found.group(1)) if found else 0.0


async def test_repeated_garbage_closes_that_call_while_another_goes_on(limited: DaemonProcess) -> None:
    async with SimulatedCaller(f"{limited.ws}/ws/stream/CA-good", call_sid="CA-good") as good:
        async with SimulatedCaller(f"{limited.ws}/ws/stream/CA-bad", call_sid="CA-bad") as bad:
            for index in range(30):
                await bad.send_text("{not json" if index % 2 else '{"event": "media", "media": 5}')
            await asyncio.wait_for(bad.closed.wait(), 10)
            assert bad.close_code == 1008
        assert not good.closed.is_set()
        assert await good.listen_until_mark(timeout=20) is not None


async def test_oversized_media_is_refused_and_a_flood_is_cut(limited: DaemonProcess) -> None:
    before = await rejections(limited, "media_too_large")
    async with SimulatedCaller(f"{limited.ws}/ws/stream/CA-big", call_sid="CA-big") as caller:
        await caller.send_text(caller.wire.media(bytes(8000 * 2 * 3)))  # 3 s in one message: over 2 s
        await asyncio.sleep(0.3)
        assert await rejections(limited, "media_too_large") == before + 1
        assert not caller.closed.is_set()
    flood_before = await rejections(limited, "rate_limited")
    async with SimulatedCaller(f"{limited.ws}/ws/stream/CA-flood", call_sid="CA-flood") as caller:
        for _ in range(400):  # 400 x 20 ms at once: far over 100 messages a second
            await caller.send_text(caller.wire.media(bytes(320)))
            if caller.closed.is_set():
                break
        await asyncio.wait_for(caller.closed.wait(), 10)
        assert caller.close_code == 1008
    assert await rejections(limited, "rate_limited") >= flood_before + 20


async def test_a_message_over_the_size_limit_closes_with_1009(limited: DaemonProcess) -> None:
    async with SimulatedCaller(f"{limited.ws}/ws/stream/CA-huge", call_sid="CA-huge") as caller:
        await caller.send_text('{"event": "media", "media": {"payload": "' + "A" * 100_000 + '"}}')
        await asyncio.wait_for(caller.closed.wait(), 10)
        assert caller.close_code == 1009
    async with aiohttp.ClientSession() as session, session.get(f"{limited.http}/live") as response:
        assert response.status == 200
