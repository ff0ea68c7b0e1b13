"""Issue 16, item 5 (its option): with `turn.barge_in_min_words`, speech over the bot cancels the reply only
once it says that many words (back-channel words aside), transcribed while it goes on; a burst with no
words never cuts the bot off at all."""

from __future__ import annotations

import asyncio

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import FakeBackend, FakeSTT, FakeTTS, Hearing
from tests.engine.harness import Engine, quiet, voice

# About four seconds of the fake TTS's audio: long enough to talk over for a while.
REPLY = " ".join(
    f"On {day} we open at nine in the morning and close at six in the evening as always."
    for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "holidays")
)


async def replying(open_engine: OpenEngine, backend: FakeBackend, stt: FakeSTT, words: int = 2) -> Engine:
    engine = await open_engine({"turn": {"barge_in_min_words": words}})
    await engine.listening()
    stt.hear("when are you open")
    backend.answer(REPLY)
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    return engine


async def test_a_wordless_burst_over_the_bot_never_cuts_it_off(
    open_engine: OpenEngine, backend: FakeBackend, stt: FakeSTT, tts: FakeTTS
) -> None:
    engine = await replying(open_engine, backend, stt)
    stt.default = Hearing("")  # what Whisper makes of a cough, however often it is asked
    await engine.feed(voice(0.4) + quiet(0.3))
    await engine.listening()
    assert "clear" not in engine.wire.kinds()
    assert engine.metric("voicebridge_barge_ins_total") == 0
    assert engine.metric("voicebridge_overlaps_ignored_total") == 1
    assert [request.text for request in backend.requests] == ["when are you open"]
    assert engine.history[-1] == ("bot", REPLY)  # heard whole


async def test_backchannel_words_do_not_count(
    open_engine: OpenEngine, backend: FakeBackend, stt: FakeSTT, tts: FakeTTS
) -> None:
    engine = await replying(open_engine, backend, stt)
    stt.default = Hearing("Okay, hmm.")
    await engine.feed(voice(0.4) + quiet(0.3))
    await engine.listening()
    assert "clear" not in engine.wire.kinds()
    assert engine.metric("voicebridge_overlaps_ignored_total") == 1
    assert len(backend.requests) == 1


async def test_words_while_the_overlap_goes_on_cut_the_reply_before_it_ends(
    open_engine: OpenEngine, backend: FakeBackend, stt: FakeSTT, tts: FakeTTS
) -> None:
    engine = await replying(open_engine, backend, stt)
    stt.default = Hearing("wait what about Sunday")
    cleared_while_talking = False
    # 0.8 s of speech (under the harness's 1 s utterance limit) over 1.6 s, so the overlap is checked while
    # it goes on.
    for _ in range(4):
        await engine.feed(voice(0.2))
        cleared_while_talking = cleared_while_talking or "clear" in engine.wire.kinds()
        await asyncio.sleep(0.2)
    assert cleared_while_talking and engine.call._detector.in_utterance
    assert engine.metric("voicebridge_barge_ins_total") == 1
    await engine.feed(quiet(0.3))
    await engine.listening()
    assert [request.text for request in backend.requests] == ["when are you open", "wait what about Sunday"]


async def test_an_overlap_whose_words_come_at_its_end_barges_in_then_and_is_answered(
    open_engine: OpenEngine, backend: FakeBackend, stt: FakeSTT, tts: FakeTTS
) -> None:
    engine = await replying(open_engine, backend, stt)
    # The whole turn, judged when it ends (too short for a check before), then transcribed as a turn.
    stt.hear("stop please")
    stt.hear("stop please")
    await engine.feed(voice(0.35) + quiet(0.3))
    await engine.listening()
    assert engine.wire.kinds().count("clear") == 1
    assert engine.metric("voicebridge_barge_ins_total") == 1
    assert engine.metric("voicebridge_overlaps_ignored_total") == 0
    assert [request.text for request in backend.requests] == ["when are you open", "stop please"]
    assert engine.history[-2] == ("caller", "stop please")


async def test_without_the_option_speech_over_the_bot_cuts_it_at_once(
    engine: Engine, backend: FakeBackend, stt: FakeSTT
) -> None:
    stt.hear("when are you open")
    backend.answer(REPLY)
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    stt.default = Hearing("")
    await engine.feed(voice(0.4))
    assert engine.wire.kinds()[-1] == "clear" and engine.metric("voicebridge_barge_ins_total") == 1
