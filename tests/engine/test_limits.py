"""Time limits: the call's length (config, budget, business) ends it with a goodbye; a stream that sends no
start, goes silent, or stops echoing our marks is cut (the session's watchdogs), the call then `dropped`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import FakeBackend, FakeSocket, FakeSTT, FakeTTS
from tests.engine.harness import ProviderCalls, build_services, engine_settings, quiet, until, voice
from voicebridge.backends.base import BusinessSettings
from voicebridge.call.services import CallServices
from voicebridge.call.session import StreamSession
from voicebridge.sim.providers import ExotelCaller

# 0.01 minutes: the call is cut 0.6 s after its greeting started.
SHORT_MINUTES = 0.01


@pytest.mark.parametrize("where", ["config", "budget", "business"])
async def test_the_call_length_limit_says_goodbye_and_ends_the_call(
    open_engine: OpenEngine, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "config":
        engine = await open_engine({"calls": {"max_call_minutes": SHORT_MINUTES}})
    elif where == "budget":
        engine = await open_engine(max_minutes=SHORT_MINUTES)
    else:
        engine = await open_engine(business=BusinessSettings(max_call_minutes=SHORT_MINUTES))
    provider = ProviderCalls(engine, monkeypatch)
    await engine.listening()
    assert not engine.call.ended  # the limit counts from the greeting, not at once
    await engine.until(lambda: engine.wire.closed, "the time limit")
    assert engine.call.outcome == "time_limit" and engine.history[-1] == ("bot", "Bye now.")
    assert provider.hang_ups == 1


async def test_a_call_ended_before_its_limit_leaves_no_timer_running(open_engine: OpenEngine) -> None:
    engine = await open_engine({"calls": {"max_call_minutes": SHORT_MINUTES}})
    await engine.listening()
    timer = engine.call._actions.time_limit
    assert timer is not None and not timer.cancelled()
    await engine.call.hangup()
    assert timer.cancelled() and engine.call.outcome == "hangup"


async def open_session(
    tmp_path: Path, limits: dict[str, Any], send: list[str]
) -> tuple[CallServices, FakeSocket, asyncio.Task[None]]:
    """A StreamSession on a fake socket that has been sent `send`, with the watchdog `limits`."""
    settings = engine_settings(tmp_path, limits={"ws_heartbeat_s": 0, **limits})
    services = await build_services(settings, FakeSTT(), FakeTTS(), FakeBackend(), tmp_path / "o.db")
    socket = FakeSocket()
    # The daemon's abort cuts the connection under the read loop; the fake's close does the same.
    session = StreamSession(
        services,
        socket,
        "CA-limits",
        8000,
        abort=lambda: socket.incoming.put_nowait(None),  # type: ignore[arg-type]
    )
    for text in send:
        socket.incoming.put_nowait(text)
    return services, socket, asyncio.create_task(session.run())


async def test_a_stream_with_no_start_is_closed_and_no_call_made(tmp_path: Path) -> None:
    services, socket, running = await open_session(tmp_path, {"start_timeout_s": 1}, [])
    await asyncio.wait_for(running, 5)
    assert socket.close_code == 1008 and services.registry.active_count == 0
    rejected = services.metrics.registry.get_sample_value
    assert rejected("voicebridge_calls_rejected_total", {"reason": "no_start"}) == 1
    await services.outbox.close()


@pytest.mark.parametrize("watchdog", ["inbound_idle", "unacknowledged_audio"])
async def test_a_stream_gone_quiet_or_deaf_drops_the_call(tmp_path: Path, watchdog: str) -> None:
    """Silent past limits.inbound_idle_s; or no echo of the greeting's mark limits.mark_echo_timeout_s after
    its audio should have played (the fake socket never echoes)."""
    caller = ExotelCaller("CA-limits", "SS-limits")
    limits = {"inbound_idle_s": 1} if watchdog == "inbound_idle" else {"mark_echo_timeout_s": 0.25}
    messages = [caller.connected(), caller.start(), caller.media(voice(0.1))]
    services, socket, running = await open_session(tmp_path, limits, messages)
    await until(lambda: services.registry.active_count == 1 or running.done(), "the call admitted")
    if (
        watchdog == "unacknowledged_audio"
    ):  # media keeps coming (the caller is quiet): only the echo is missing
        for _ in range(60):
            socket.incoming.put_nowait(caller.media(quiet(0.02)))
            await asyncio.sleep(0.02)
            if running.done():
                break
    await asyncio.wait_for(running, 5)
    record = services.registry.finished("CA-limits")
    assert record is not None and record.outcome == "dropped"
    sample = services.metrics.registry.get_sample_value
    assert sample("voicebridge_errors_total", {"kind": watchdog}) == 1
    assert sample("voicebridge_calls_active") == 0
    if watchdog == "inbound_idle":
        assert socket.close_code == 1001  # we close the half-open stream ourselves
    await services.outbox.close()
