"""A guess (the transcription started at the caller's pause) is confirmed when the pause becomes the end
of the turn: until then the STT scheduler may put it behind confirmed turns, and nothing of it goes out."""

from __future__ import annotations

import asyncio

from tests.engine.fakes import FakeBackend, FakeSTT, FakeTTS
from tests.engine.harness import Engine, quiet, until, voice


async def pause(engine: Engine) -> None:
    """Speech, then a pause past speculative_ms and short of the end of turn; nothing fed after it."""
    await engine.feed(voice(0.3) + quiet(0.12))


async def test_a_guess_is_confirmed_to_the_stt_when_the_pause_ends_the_turn(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    held = asyncio.Event()
    stt.hear("book a table", hold=held)
    await pause(engine)
    await until(lambda: len(stt.confirmations) == 1, "the guess")
    assert not stt.confirmations[0]() and engine.call.state == "listening"
    await engine.feed(quiet(0.2))  # the pause becomes the end of the turn
    assert stt.confirmations[0]() and engine.call.state == "thinking"
    held.set()
    await engine.listening()
    assert [request.text for request in backend.requests] == ["book a table"]
    assert engine.metric("voicebridge_speculative_transcriptions_total", fate="used") == 1


async def test_nothing_of_a_guessed_reply_goes_out_before_the_turn_ends(
    engine: Engine, backend: FakeBackend, tts: FakeTTS
) -> None:
    """A backend safe to ask early answers the guess, and the TTS renders it; the wire stays quiet."""
    frames = len(engine.wire.frames)
    await pause(engine)
    await until(lambda: len(tts.spoken) == 1, "the guessed reply's synthesis")
    await asyncio.sleep(0.05)
    assert len(backend.requests) == 1 and len(engine.wire.frames) == frames
    assert engine.call.state == "listening"
    await engine.feed(quiet(0.2))
    await engine.listening()
    assert "media" in engine.wire.kinds()[frames:]
    assert engine.history[-1] == ("bot", "You said hello there.")


async def test_a_backend_unsafe_to_ask_early_is_asked_only_once_the_turn_ends(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    backend.speculative_safe = False
    stt.hear("book a table")
    await pause(engine)
    await until(lambda: stt.finished == ["book a table"], "the guess transcribed")
    await asyncio.sleep(0.05)
    assert backend.requests == []
    await engine.feed(quiet(0.2))
    await engine.listening()
    assert [request.text for request in backend.requests] == ["book a table"]


async def test_a_discarded_guess_is_never_heard_even_once_answered(
    engine: Engine, stt: FakeSTT, backend: FakeBackend, tts: FakeTTS
) -> None:
    """The guess was answered and rendered, then the caller spoke on: its reply is dropped unheard."""
    stt.hear("book a")
    stt.hear("book a table for two")
    await pause(engine)
    await until(lambda: len(tts.spoken) == 1, "the guessed reply's synthesis")
    await engine.feed(voice(0.3) + quiet(0.3))
    await engine.listening()
    assert [request.text for request in backend.requests] == ["book a", "book a table for two"]
    assert backend.requests[0].closed  # its stream let go, not left open beside the new one
    assert engine.history[-2:] == [
        ("caller", "book a table for two"),
        ("bot", "You said book a table for two."),
    ]
    assert ("caller", "book a") not in engine.history
    assert engine.metric("voicebridge_speculative_transcriptions_total", fate="discarded") == 1
