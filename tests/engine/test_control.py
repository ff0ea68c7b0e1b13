"""Hangup and transfer from the management doors, in each state of the call."""

from __future__ import annotations

import asyncio

import pytest

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import FakeBackend, FakeSTT
from tests.engine.harness import Engine, ProviderCalls, quiet, until, voice
from voicebridge.call import conversation as conversation_module
from voicebridge.call.conversation import NOT_TRANSCRIBED

STATES = ["listening", "thinking", "speaking"]


@pytest.fixture(autouse=True)
def short_transcription_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """In "thinking" the caller's transcription is held for good: teardown gives up on it sooner."""
    monkeypatch.setattr(conversation_module, "TRANSCRIPTION_WAIT_S", 0.1)


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
    last = ("caller", NOT_TRANSCRIBED) if state == "thinking" else ("bot", "Transferring.")
    assert engine.history[-1] == last
    assert "mark" in engine.wire.kinds()[frames_before:]


# About a second of greeting, to hang up or transfer during; closing lines of about a third of a second.
LONG_GREETING = "Welcome to the clinic, thank you for calling, tell me how I can help you today. " * 3
LONG_LINE = "Please hold while I put you through to a colleague of mine, it will only take a moment."
NUMBER, OTHER_NUMBER = "+919800000009", "+919800000008"
# What each state's hangup or transfer ends as: a closing line under way is the one way out, and plays on.
OUTCOMES = {
    ("greeting", "hangup"): "hangup",
    ("greeting", "transfer"): "transferred",
    ("guessing", "hangup"): "hangup",
    ("guessing", "transfer"): "transferred",
    ("goodbye", "hangup"): "shutdown",
    ("goodbye", "transfer"): "shutdown",
    ("transfer line", "hangup"): "transferred",
    ("transfer line", "transfer"): "transferred",
}


def closing_line(engine: Engine, kind: str) -> bool:
    reply = engine.call._reply
    return engine.call.closing and reply is not None and reply.mark.startswith(f"{kind}-")


@pytest.mark.parametrize(("state", "way"), list(OUTCOMES))
async def test_hangup_and_transfer_during_the_greeting_a_guess_and_the_closing_lines(
    open_engine: OpenEngine, stt: FakeSTT, monkeypatch: pytest.MonkeyPatch, state: str, way: str
) -> None:
    prompts = (
        {"greeting": LONG_GREETING} if state == "greeting" else {"goodbye": LONG_LINE, "transfer": LONG_LINE}
    )
    engine = await open_engine({"prompts": prompts})
    provider = ProviderCalls(engine, monkeypatch)
    registry = engine.services.registry
    closing: asyncio.Task[None] | None = None
    if state == "greeting":
        await until(lambda: engine.heard_seconds() > 0.1, "some of the greeting heard")
    else:
        await engine.listening()
    if state == "guessing":
        stt.hear("hold on", hold=asyncio.Event())
        await engine.feed(voice(0.3) + quiet(0.12))
        await until(lambda: len(stt.calls) == 1, "the guess")
        assert engine.call._reply is not None and not engine.call._reply.gate.is_set()
    elif state == "goodbye":
        closing = asyncio.create_task(engine.call.end_for_shutdown())
        await until(lambda: closing_line(engine, "goodbye"), "the goodbye line")
    elif state == "transfer line":
        closing = asyncio.create_task(registry.transfer(engine.call.call_sid, NUMBER))
        await until(lambda: closing_line(engine, "transfer"), "the transfer line")
    state_before = engine.call.state
    if way == "hangup":
        await registry.hangup(engine.call.call_sid)
    else:
        await registry.transfer(engine.call.call_sid, OTHER_NUMBER)
    outcome = OUTCOMES[(state, way)]
    assert_torn_down(engine, outcome)
    if closing is not None:
        assert closing.done()  # the asker waited for the line already under way, and for the teardown
        assert engine.history[-1] == ("bot", LONG_LINE) and state_before == "speaking"
    if outcome == "transferred":
        destination = NUMBER if state == "transfer line" else OTHER_NUMBER
        assert provider.transfers == [destination] and provider.hang_ups == 0
        assert registry.facts.transfer_destination(engine.call.call_sid) == destination
    else:
        assert provider.hang_ups == 1 and provider.transfers == []
    if state == "greeting":  # the greeting's line keeps what the caller heard of it
        greeting = engine.history[0]
        assert greeting[0] == "bot" and greeting[1] and LONG_GREETING.startswith(greeting[1])
        assert len(greeting[1]) < len(LONG_GREETING.strip())
