"""Hangup and transfer from the management doors, in each state of the call."""

from __future__ import annotations

import asyncio

import pytest

from tests.engine.fakes import FakeBackend, FakeSTT
from tests.engine.harness import Engine
from voicebridge.call import call as call_module

STATES = ["listening", "thinking", "speaking"]


@pytest.fixture(autouse=True)
def short_transcription_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """In "thinking" the caller's transcription is held for good: teardown gives up on it sooner."""
    monkeypatch.setattr(call_module, "TRANSCRIPTION_WAIT_S", 0.1)


async def into(engine: Engine, state: str, stt: FakeSTT, backend: FakeBackend) -> None:
    if state == "thinking":
        stt.hear("hold on", hold=asyncio.Event())
        await engine.say()
    elif state == "speaking":
        backend.answer("This is a long reply that keeps playing for a while. " * 6)
        await engine.say()
    await engine.until(lambda: engine.call.state == state, state)


def assert_torn_down(engine: Engine, outcome: str) -> None:
    call, registry = engine.call, engine.services.registry
    assert call.ended and call.outcome == outcome and engine.wire.closed
    assert registry.active_count == 0 and registry.finished(call.call_sid) is not None
    assert not call._tasks  # nothing of the call still runs
    assert engine.metric("voicebridge_calls_active") == 0
    assert engine.metric("voicebridge_calls_total", outcome=outcome, provider="exotel") == 1


@pytest.mark.parametrize("state", STATES)
async def test_hangup_ends_the_call_in_any_state(
    engine: Engine, stt: FakeSTT, backend: FakeBackend, state: str
) -> None:
    await into(engine, state, stt, backend)
    await engine.services.registry.hangup(engine.call.call_sid)
    assert_torn_down(engine, "hangup")
    assert {"event:ended", "cost", "conversation"} <= set(await engine.records())


@pytest.mark.parametrize("state", STATES)
async def test_transfer_says_the_line_then_ends_the_call_in_any_state(
    engine: Engine, stt: FakeSTT, backend: FakeBackend, state: str
) -> None:
    await into(engine, state, stt, backend)
    frames_before = len(engine.wire.frames)
    await engine.services.registry.transfer(engine.call.call_sid, "+919800000009")
    assert_torn_down(engine, "transferred")
    assert engine.services.registry.facts.transfer_destination(engine.call.call_sid) == "+919800000009"
    assert ("bot", "Transferring.") in engine.history
    # The words of a turn still being transcribed are not lost, they are marked as such.
    last = ("caller", call_module.NOT_TRANSCRIBED) if state == "thinking" else ("bot", "Transferring.")
    assert engine.history[-1] == last
    assert "mark" in engine.wire.kinds()[frames_before:]
