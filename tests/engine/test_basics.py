"""The call engine's everyday paths: greeting, a turn, speculation, barge-in, DTMF."""

from __future__ import annotations

import asyncio

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import FakeBackend, FakeSTT, FakeTTS
from tests.engine.harness import Engine, quiet, voice
from voicebridge.backends.base import ReplyAction


async def test_greeting_is_played_then_marked_and_recorded(open_engine: OpenEngine) -> None:
    engine = await open_engine()
    await engine.listening()
    assert engine.wire.kinds()[0] == "media" and engine.wire.kinds()[-1] == "mark"
    assert engine.history == [("bot", "Hi.")]
    assert (await engine.records())["event:started"]["event"] == "started"


async def test_a_turn_is_transcribed_answered_spoken_and_logged(
    engine: Engine, stt: FakeSTT, backend: FakeBackend, tts: FakeTTS
) -> None:
    stt.hear("what time do you open")
    await engine.say()
    await engine.listening()
    assert [r.text for r in backend.requests] == ["what time do you open"]
    assert backend.requests[0].history == engine.call.conversation.history()[:1]  # the greeting only
    assert tts.spoken == ["You said what time do you open."]
    assert engine.history[1:] == [
        ("caller", "what time do you open"),
        ("bot", "You said what time do you open."),
    ]
    await engine.call.finish("completed")
    turns = (await engine.records())["conversation"]["turns"]
    assert [(t["role"], t.get("heard")) for t in turns][-1] == ("bot", "You said what time do you open.")


async def test_speculation_is_used_when_the_pause_becomes_the_end_of_turn(
    engine: Engine, stt: FakeSTT
) -> None:
    await engine.say()
    await engine.listening()
    assert len(stt.calls) == 1  # the speculative transcription was the turn's
    assert engine.metric("voicebridge_speculative_transcriptions_total", fate="used") == 1
    assert engine.metric("voicebridge_speculative_transcriptions_total", fate="discarded") == 0


async def test_speculation_is_discarded_when_speech_resumes(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    hold = asyncio.Event()
    stt.hear("half a sentence", hold=hold)
    stt.hear("the whole sentence")
    await engine.feed(voice(0.3) + quiet(0.12))  # past speculative_ms, short of the end of turn
    await engine.until(lambda: len(stt.calls) == 1, "the speculative transcription")
    await engine.feed(voice(0.3) + quiet(0.3))
    await engine.listening()
    assert engine.metric("voicebridge_speculative_transcriptions_total", fate="discarded") == 1
    assert [r.text for r in backend.requests] == ["the whole sentence"]
    assert stt.cancelled == 1


async def test_barge_in_during_playback_keeps_only_what_was_heard(
    engine: Engine, backend: FakeBackend
) -> None:
    full = "One two three four five six seven eight nine ten. " * 8
    backend.answer(full)
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    await engine.feed(quiet(0.1))
    await engine.feed(voice(0.2))
    assert engine.wire.kinds().count("clear") == 1
    assert engine.metric("voicebridge_barge_ins_total") == 1
    said = engine.call.conversation.history()[-1]
    assert said.role == "bot" and full.startswith(said.text) and len(said.text) < len(full.strip())


async def test_barge_in_with_no_words_goes_back_to_listening(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    backend.answer("A long answer that takes a while to play. " * 6)
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    stt.hear("")
    await engine.say(0.3)
    await engine.listening()
    assert len(backend.requests) == 1  # a cough is not a question
    assert engine.metric("voicebridge_barge_ins_total") == 1


async def test_dtmf_entry_goes_to_the_backend_as_digits(engine: Engine, backend: FakeBackend) -> None:
    backend.answer("Enter your PIN.", ReplyAction("collect_digits", max_digits=4))
    await engine.say()
    await engine.listening()
    for digit in "1234":
        await engine.call.on_dtmf(digit)
    await engine.listening()
    assert [(r.kind, r.text) for r in backend.requests] == [("reply", "hello there"), ("digits", "1234")]
    assert engine.history[-1] == ("bot", "You said 1234.")


async def test_a_failed_transcription_gets_the_apology_and_the_call_goes_on(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    stt.hear(error="injected: the STT worker died")
    await engine.say()
    await engine.listening()
    assert engine.history[-2:] == [("caller", "[speech not recognised]"), ("bot", "Sorry?")]
    assert engine.metric("voicebridge_errors_total", kind="stt") == 1 and backend.requests == []
    await engine.say()
    await engine.listening()
    assert engine.history[-1] == ("bot", "You said hello there.")


async def test_repeated_backend_failures_end_the_call_politely(engine: Engine, backend: FakeBackend) -> None:
    for _ in range(2):
        backend.answer("Let me ", error="injected: HTTP 500")
    await engine.say()
    await engine.listening()
    assert engine.history[-1] == ("bot", "Sorry?")  # an unfinished sentence is never spoken
    await engine.say()
    await engine.until(lambda: engine.call.ended, "the call to end")
    assert engine.call.outcome == "backend_failed"
    assert engine.history[-2:] == [("caller", "hello there"), ("bot", "Bye now.")]
