"""#14.7: the bot's line enters history and transcript when it starts playing, and is cut to what was
heard whatever interrupts it (barge-in, stop, hangup, time limit), even during synthesis."""

from __future__ import annotations

import asyncio

from tests.engine.fakes import FakeBackend, FakeTTS
from tests.engine.harness import Engine, voice

FIRST = "Alpha bravo charlie delta echo foxtrot golf hotel india juliet."
SECOND = "Second sentence waits for its synthesis."
FULL = f"{FIRST} {SECOND}"


def is_heard_part(text: str) -> bool:
    """Some words from the start of the reply, not all of it (audio goes out in 200 ms chunks)."""
    return bool(text) and FULL.startswith(text) and len(text) < len(FULL)


async def speaking_while_synthesising(engine: Engine, backend: FakeBackend, tts: FakeTTS) -> None:
    """The first sentence plays; the second's synthesis has not finished."""
    tts.holds["Second"] = asyncio.Event()
    backend.answer(FULL)
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    # Some of it has been heard: a few of the first sentence's ten words (it lasts 0.25 s).
    await engine.until(lambda: engine.heard_seconds() >= 0.1, "some of the reply heard")


async def test_barge_in_during_synthesis_keeps_the_heard_line_for_the_next_request(
    engine: Engine, backend: FakeBackend, tts: FakeTTS
) -> None:
    await speaking_while_synthesising(engine, backend, tts)
    await engine.feed(voice(0.2))
    assert engine.metric("voicebridge_barge_ins_total") == 1
    await engine.say()
    await engine.listening()
    history = [(turn.role, turn.text) for turn in backend.requests[1].history]
    assert [role for role, _ in history] == ["bot", "caller", "bot"]
    assert history[0] == ("bot", "Hi.")
    interrupted = history[2][1]
    assert is_heard_part(interrupted)
    await engine.call.finish("completed")
    turns = (await engine.records())["conversation"]["turns"]
    bots = [turn for turn in turns if turn["role"] == "bot"]
    assert not bots[0].get("barge_in") and bots[0]["heard"] == "Hi."
    assert bots[1]["barge_in"] and bots[1]["heard"] == interrupted
    assert bots[2]["heard"] == bots[2]["text"] and not bots[2].get("barge_in")


async def test_hangup_during_synthesis_keeps_the_line_in_the_record(
    engine: Engine, backend: FakeBackend, tts: FakeTTS
) -> None:
    await speaking_while_synthesising(engine, backend, tts)
    await engine.call.hangup()
    assert engine.history[-1][0] == "bot" and is_heard_part(engine.history[-1][1])
    turns = (await engine.records())["conversation"]["turns"]
    assert turns[-1]["role"] == "bot" and turns[-1]["heard"] == engine.history[-1][1]


async def test_the_goodbye_during_synthesis_keeps_the_interrupted_line(
    engine: Engine, backend: FakeBackend, tts: FakeTTS
) -> None:
    """The drain timeout's goodbye; the time limit takes the same path."""
    await speaking_while_synthesising(engine, backend, tts)
    await engine.call.end_for_shutdown()
    roles = [role for role, _ in engine.history]
    assert roles == ["bot", "caller", "bot", "bot"]
    assert is_heard_part(engine.history[2][1]) and engine.history[3] == ("bot", "Bye now.")
    turns = (await engine.records())["conversation"]["turns"]
    heard = [turn["heard"] for turn in turns if turn["role"] == "bot"]
    assert heard[1:] == [engine.history[2][1], "Bye now."]
