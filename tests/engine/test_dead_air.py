"""Issue 16, item 4: no dead air. A silent caller is re-prompted, then told goodbye (outcome `no_input`);
a backend slow to start answering is covered by one filler line, and the reply follows it whole."""

from __future__ import annotations

import asyncio

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import FakeBackend, FakeTTS
from tests.engine.harness import Engine, quiet, until, voice

REPROMPT = {"turn": {"reprompt_after_s": 0.3, "max_reprompts": 2}, "prompts": {"reprompt": "Still there?"}}
FILLER = {"backend": {"filler_after_ms": 300}, "prompts": {"filler": "One moment."}}


def bot_lines(engine: Engine) -> list[str]:
    return [text for who, text in engine.history if who == "bot"]


async def test_a_silent_caller_hears_the_reprompt_twice_then_goodbye(open_engine: OpenEngine) -> None:
    engine = await open_engine(REPROMPT)
    await engine.until(lambda: engine.wire.closed, "the call to end on the caller's silence")
    assert bot_lines(engine) == ["Hi.", "Still there?", "Still there?", "Bye now."]
    assert engine.call.outcome == "no_input"
    assert engine.metric("voicebridge_reprompts_total") == 2
    assert engine.metric("voicebridge_calls_total", outcome="no_input", provider="exotel") == 1
    records = await engine.records()
    assert records["event:ended"]["outcome"] == "no_input"
    heard = [turn["heard"] for turn in records["conversation"]["turns"] if turn["role"] == "bot"]
    assert heard == ["Hi.", "Still there?", "Still there?", "Bye now."]


async def test_the_callers_speech_starts_the_count_again(open_engine: OpenEngine) -> None:
    engine = await open_engine(REPROMPT)
    await engine.until(lambda: "Still there?" in bot_lines(engine), "the first re-prompt")
    await engine.listening()
    await engine.say()
    await engine.until(lambda: engine.call.ended, "the call to end on the caller's silence")
    # Two more re-prompts after the answer, not one: the first was answered.
    assert bot_lines(engine) == [
        "Hi.",
        "Still there?",
        "You said hello there.",
        "Still there?",
        "Still there?",
        "Bye now.",
    ]
    assert engine.call.outcome == "no_input"


async def test_a_keypress_starts_the_count_again(open_engine: OpenEngine) -> None:
    engine = await open_engine({**REPROMPT, "turn": {"reprompt_after_s": 0.3, "max_reprompts": 1}})
    await engine.until(lambda: "Still there?" in bot_lines(engine), "the first re-prompt")
    await engine.listening()
    await engine.call.on_dtmf("#")  # an (empty) entry, answered by the backend
    await engine.until(lambda: engine.call.ended, "the call to end on the caller's silence")
    assert bot_lines(engine).count("Still there?") == 2 and engine.call.outcome == "no_input"


async def test_no_reprompt_when_off(open_engine: OpenEngine) -> None:
    engine = await open_engine({**REPROMPT, "turn": {"reprompt_after_s": 0}})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0  # more than three times what the re-prompt would have waited
    await engine.until(lambda: loop.time() > deadline, "a second of silence")
    assert bot_lines(engine) == ["Hi."] and not engine.call.ended
    assert engine.metric("voicebridge_reprompts_total") == 0


async def test_a_backend_slow_to_answer_gets_the_filler_once_then_the_reply(
    open_engine: OpenEngine, backend: FakeBackend, tts: FakeTTS
) -> None:
    engine = await open_engine(FILLER)
    await engine.listening()
    backend.answer("Your table is booked.", delay_s=2.0)
    frames = len(engine.wire.frames)
    await engine.say()
    await engine.until(lambda: engine.metric("voicebridge_fillers_total") == 1, "the filler")
    await engine.until(lambda: "media" in engine.wire.kinds()[frames:], "the filler's audio")
    assert not backend.requests[0].completed  # the caller hears it while the backend is still silent
    await engine.listening()
    assert engine.metric("voicebridge_fillers_total") == 1  # once in the turn, however long it waits
    assert tts.spoken == ["Your table is booked."]  # the filler came from the phrase cache
    assert engine.history[-1] == ("bot", "Your table is booked.")
    await engine.say()
    await engine.listening()
    # The backend never sees the filler as the bot's words.
    sent = [(turn.role, turn.text) for turn in backend.requests[1].history]
    assert sent == [("bot", "Hi."), ("caller", "hello there"), ("bot", "Your table is booked.")]
    await engine.call.finish("completed")
    turns = (await engine.records())["conversation"]["turns"]
    line = next(turn for turn in turns if turn.get("text") == "Your table is booked.")
    # Heard whole (the filler did not cut it), and the record says a filler went before it.
    assert line["filler"] == "One moment." and line["heard"] == "Your table is booked."


async def test_no_filler_for_a_backend_that_answers_in_time(
    open_engine: OpenEngine, backend: FakeBackend
) -> None:
    engine = await open_engine(FILLER)
    await engine.listening()
    await engine.say()
    await engine.listening()
    assert engine.metric("voicebridge_fillers_total") == 0
    assert engine.history[-1] == ("bot", "You said hello there.")


async def test_a_guess_never_plays_the_filler_before_its_turn_ends(
    open_engine: OpenEngine, backend: FakeBackend
) -> None:
    """The guess's backend is slower than the filler's wait, and the caller keeps pausing: nothing goes out;
    then the caller speaks on, and the guess is dropped without a filler ever being heard."""
    engine = await open_engine(FILLER)
    await engine.listening()
    backend.answer("Too early.", delay_s=1.0)
    frames = len(engine.wire.frames)
    await engine.feed(voice(0.3) + quiet(0.12))  # a pause past speculative_ms, short of the end of turn
    await until(lambda: len(backend.requests) == 1, "the guess's backend request")
    await asyncio.sleep(0.6)  # twice the filler's wait
    assert engine.wire.frames[frames:] == [] and engine.metric("voicebridge_fillers_total") == 0
    await engine.feed(voice(0.3) + quiet(0.3))
    await engine.listening()
    assert engine.metric("voicebridge_fillers_total") == 0
    assert engine.history[-1] == ("bot", "You said hello there.")
