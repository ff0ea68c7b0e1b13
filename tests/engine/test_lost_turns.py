"""#14.6: a finished turn is never lost when the caller speaks again before its transcription is done."""

from __future__ import annotations

import asyncio

import pytest

from tests.engine.fakes import FakeBackend, FakeSTT
from tests.engine.harness import Engine, quiet, until, voice
from voicebridge.call import conversation as conversation_module


async def test_a_turn_cut_at_the_maximum_reaches_the_backend_when_the_caller_talks_on(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    """turn.max_utterance_s is 1 s here: 1.6 s of continuous speech is two turns, the first forced."""
    first = asyncio.Event()
    stt.hear("my account number is twelve", hold=first)
    stt.hear("and I want my balance")
    await engine.feed(voice(1.6))
    # The caller's speech after the cut interrupted the first turn while it was being transcribed.
    assert engine.metric("voicebridge_barge_ins_total") == 1
    await engine.feed(quiet(0.3))
    first.set()  # the first part's words arrive only after the second turn ended
    await engine.listening()
    texts = [request.text for request in backend.requests]
    assert texts == ["my account number is twelve and I want my balance"]
    assert ("caller", "my account number is twelve and I want my balance") in engine.history


async def test_a_turn_transcribed_before_the_caller_talks_on_is_prefixed_once(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    held = asyncio.Event()
    backend.answer("Let me see.", "Anything else?", hold=held)
    backend.answer("Fine.")
    stt.hear("first part")
    stt.hear("second part")
    await engine.feed(voice(1.0))
    await engine.until(lambda: len(backend.requests) == 1, "the first request")
    await engine.feed(voice(0.3) + quiet(0.3))
    await engine.listening()
    assert [request.text for request in backend.requests][-1] == "first part second part"


async def test_a_turn_still_unanswered_at_hangup_stays_in_the_record(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    backend.answer("Let me see", " what we have.", hold=asyncio.Event())
    stt.hear("what time do you open")
    await engine.say()
    await engine.until(lambda: len(backend.requests) == 1, "the request")
    await engine.call.hangup()
    turns = (await engine.records())["conversation"]["turns"]
    assert [(turn["role"], turn.get("text")) for turn in turns] == [
        ("bot", "Hi."),
        ("caller", "what time do you open"),
    ]


async def test_a_turn_talked_over_then_hung_up_on_stays_in_the_record(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    backend.answer("Let me see", " what we have.", hold=asyncio.Event())
    stt.hear("what time do you open")
    await engine.say()
    await engine.until(lambda: len(backend.requests) == 1, "the request")
    await engine.feed(voice(0.3))  # the caller talks over the thinking bot, and is still talking
    assert engine.call.state == "listening"
    await engine.call.hangup()
    turns = (await engine.records())["conversation"]["turns"]
    assert ("caller", "what time do you open") in [(turn["role"], turn.get("text")) for turn in turns]


async def test_a_keypad_entry_answered_instead_of_a_turn_keeps_the_turn_in_history(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    backend.answer("Let me see", " what we have.", hold=asyncio.Event())
    stt.hear("I want to pay my bill")
    await engine.say()
    await engine.until(lambda: len(backend.requests) == 1, "the request")
    for key in "42#":
        await engine.call.on_dtmf(key)
    await engine.listening()
    digits = backend.requests[1]
    assert (digits.kind, digits.text) == ("digits", "42")
    assert [(turn.role, turn.text) for turn in digits.history][-1] == ("caller", "I want to pay my bill")
    assert ("caller", "I want to pay my bill") in engine.history


async def test_words_being_transcribed_at_the_hangup_are_waited_for(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    """#14 review 5: the caller's last turn, still being transcribed when the call ends, reaches the log."""
    transcribed = asyncio.Event()
    stt.hear("please call me back tomorrow", hold=transcribed)
    await engine.say()
    await engine.until(lambda: engine.call.state == "thinking" and len(stt.calls) == 1, "the transcription")
    hanging_up = asyncio.create_task(engine.call.hangup())
    await until(lambda: engine.call.state == "ended", "teardown to begin")
    transcribed.set()
    await hanging_up
    assert engine.history[-1] == ("caller", "please call me back tomorrow")
    turns = (await engine.records())["conversation"]["turns"]
    assert turns[-1]["role"] == "caller" and turns[-1]["text"] == "please call me back tomorrow"
    assert backend.requests == []


async def test_words_never_transcribed_leave_a_counted_placeholder(
    engine: Engine, stt: FakeSTT, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#14 review 5: teardown waits only so long; the log then says words were said but not transcribed."""
    monkeypatch.setattr(conversation_module, "TRANSCRIPTION_WAIT_S", 0.1)
    stt.hear("never finished", hold=asyncio.Event())
    await engine.say()
    await engine.until(lambda: engine.call.state == "thinking" and len(stt.calls) == 1, "the transcription")
    await engine.call.hangup()
    assert engine.history[-1] == ("caller", "[not transcribed: call ended]")
    assert engine.metric("voicebridge_errors_total", kind="not_transcribed") == 1
    turns = (await engine.records())["conversation"]["turns"]
    assert turns[-1]["text"] == "[not transcribed: call ended]"


async def test_a_finished_speculative_transcription_is_kept_at_the_hangup(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    """#14 review 5: the caller paused, their words were transcribed as a guess, then the call ended: the
    end of the call ends their turn, and its words stay in the log."""
    backend.speculative_safe = False  # the guess waits for the turn's end before asking the backend
    stt.hear("I will think about it")
    await engine.feed(voice(0.3))
    for _ in range(10):  # a pause: the guess starts well before the turn's end of silence
        if engine.call._reply is not None:
            break
        await engine.feed(quiet(0.02))
    reply = engine.call._reply
    assert reply is not None and not reply.gate.is_set()
    await until(lambda: stt.finished == ["I will think about it"], "the guess's transcription")
    await engine.call.hangup()
    assert engine.history[-1] == ("caller", "I will think about it")
    assert backend.requests == []
