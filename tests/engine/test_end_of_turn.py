"""Adaptive end of turn (`turn.end_of_turn = "adaptive"`): the words of the caller's pause, transcribed
speculatively, decide how long that pause may last. A finished sentence is answered sooner than the fixed
silence; a turn that stops mid-number or on "and" survives a pause longer than it."""

from __future__ import annotations

import asyncio

import pytest

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import FakeBackend, FakeSTT
from tests.engine.harness import Engine, quiet, until, voice

# The fixed silence is long here so that "sooner" and "longer" are both far from it.
ADAPTIVE = {
    "end_of_turn": "adaptive",
    "end_of_turn_silence_ms": 500,
    "complete_turn_ms": 150,
    "incomplete_turn_ms": 1000,
    "unsure_turn_ms": 700,
    "max_utterance_s": 5.0,
}


async def listening(open_engine: OpenEngine, **turn: object) -> Engine:
    engine = await open_engine({"turn": {**ADAPTIVE, **turn}})
    await engine.listening()
    return engine


async def test_a_finished_sentence_ends_the_turn_before_the_fixed_silence(
    open_engine: OpenEngine, stt: FakeSTT, backend: FakeBackend
) -> None:
    engine = await listening(open_engine)
    stt.hear("What time do you open?")
    await engine.feed(voice(0.3) + quiet(0.2))  # 200 ms of pause: past the guess, far short of 500 ms
    await until(lambda: engine.call.state != "listening", "the turn to end on its words")
    await engine.listening()
    assert [request.text for request in backend.requests] == ["What time do you open?"]
    assert engine.history[-1] == ("bot", "You said What time do you open?.")


async def test_the_same_pause_does_not_end_the_turn_with_a_fixed_end_of_turn(
    open_engine: OpenEngine, stt: FakeSTT, backend: FakeBackend
) -> None:
    """The control: only the setting differs, and the 200 ms pause stays a pause."""
    engine = await listening(open_engine, end_of_turn="fixed")
    stt.hear("What time do you open?")
    await engine.feed(voice(0.3) + quiet(0.2))
    await until(lambda: stt.finished == ["What time do you open?"], "the guess")
    await engine.feed(quiet(0.1))
    assert engine.call.state == "listening"


async def test_a_number_read_in_groups_survives_a_pause_longer_than_the_fixed_silence(
    open_engine: OpenEngine, stt: FakeSTT, backend: FakeBackend
) -> None:
    engine = await listening(open_engine)
    stt.hear("My number is 98765")
    stt.hear("My number is 98765 43210.")
    await engine.feed(voice(0.3) + quiet(0.15))
    await until(lambda: stt.finished == ["My number is 98765"], "the guess of the pause")
    await engine.feed(quiet(0.55))  # 700 ms in all: a fixed 500 ms would have cut the number here
    assert engine.call.state == "listening"
    await engine.feed(voice(0.3) + quiet(0.3))
    await engine.listening()
    assert backend.requests[-1].text == "My number is 98765 43210."  # the guess's answer was dropped
    callers = [text for who, text in engine.history if who == "caller"]
    assert callers[-1] == "My number is 98765 43210." and "My number is 98765" not in callers


async def test_a_hesitation_still_ends_the_turn_after_the_longer_limit(
    open_engine: OpenEngine, stt: FakeSTT, backend: FakeBackend
) -> None:
    """A turn ending on "for" waits longer, not for ever: past incomplete_turn_ms it is answered as is."""
    engine = await listening(open_engine)
    stt.hear("I want a table for")
    await engine.feed(voice(0.3) + quiet(0.15))
    await until(lambda: stt.finished == ["I want a table for"], "the guess of the pause")
    await engine.feed(quiet(0.7))
    assert engine.call.state == "listening"
    # Past the 1000 ms limit the turn ends. Frame by frame, letting the call's tasks run between them:
    # once in a full-suite run on a loaded machine the end was not yet judged at the 1050th ms with no
    # frame after it, so the line goes on as a provider's does, up to 1500 ms of pause.
    for _ in range(35):  # 850 + 35 x 20 ms
        await engine.feed(quiet(0.02))
        await asyncio.sleep(0.01)
        if engine.call.state != "listening":
            break
    assert engine.call.state != "listening", "the turn did not end within 1.5 s of pause"
    await engine.listening()
    assert engine.history[-2] == ("caller", "I want a table for")


async def test_words_that_say_nothing_wait_the_unsure_limit(open_engine: OpenEngine, stt: FakeSTT) -> None:
    engine = await listening(open_engine)
    stt.hear("okay")  # no closing punctuation, no continuing word: unsure
    await engine.feed(voice(0.3) + quiet(0.15))
    await until(lambda: stt.finished == ["okay"], "the guess")
    await engine.feed(quiet(0.4))  # 550 ms: past the fixed 500
    assert engine.call.state == "listening"
    await engine.feed(quiet(0.2))  # 750 ms: past the unsure 700
    await until(lambda: engine.call.state != "listening", "the unsure limit")


async def test_a_yes_to_the_bots_question_ends_the_turn_at_once(
    open_engine: OpenEngine, stt: FakeSTT, backend: FakeBackend
) -> None:
    engine = await open_engine({"turn": ADAPTIVE, "prompts": {"greeting": "Shall I book it for you?"}})
    await engine.listening()
    stt.hear("Yes.")
    await engine.feed(voice(0.3) + quiet(0.2))
    await until(lambda: engine.call.state != "listening", "the answer to end the turn on its words")
    await engine.listening()
    assert [request.text for request in backend.requests] == ["Yes."]


@pytest.mark.parametrize("words", ["Yes.", "Thank you."])
async def test_a_short_statement_after_no_question_waits_the_unsure_limit(
    open_engine: OpenEngine, stt: FakeSTT, words: str
) -> None:
    """The control: the greeting "Hi." asked nothing, and "Thank you." often opens more ("Thank you, ...")."""
    engine = await listening(open_engine)
    stt.hear(words)
    await engine.feed(voice(0.3) + quiet(0.15))
    await until(lambda: stt.finished == [words], "the guess")
    await engine.feed(quiet(0.4))  # 550 ms: a complete thought would have ended at 150
    assert engine.call.state == "listening"
    await engine.feed(quiet(0.2))  # 750 ms: past the unsure 700
    await until(lambda: engine.call.state != "listening", "the unsure limit")
