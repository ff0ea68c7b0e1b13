"""Issue 16, item 5: a barge-in that says nothing (noise, a cough, a back-channel "hmm") resumes the reply
it cut from the start of the sentence it was cut in; a barge-in with words still cancels and clears. The
conversation keeps the bot's line as the caller heard it."""

from __future__ import annotations

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import TTS_SECONDS_PER_CHAR, FakeBackend, FakeSTT, FakeTTS, tts_pcm
from tests.engine.harness import RATE, Engine, quiet, voice

# No commas: each is spoken whole (a long first sentence would be cut at its first clause).
S1 = "Alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima."
S2 = "Mike november oscar papa quebec romeo sierra tango uniform victor whiskey."
S3 = "Xray yankee zulu and that is the whole alphabet from the start to the end."
FULL = f"{S1} {S2} {S3}"


def seconds(text: str) -> float:
    return len(text) * TTS_SECONDS_PER_CHAR


async def speaking(engine: Engine, backend: FakeBackend, stt: FakeSTT, heard_s: float) -> None:
    """The caller asks; the three-sentence reply plays until `heard_s` of it has been heard."""
    stt.hear("spell the alphabet")
    backend.answer(FULL)
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    await engine.until(lambda: engine.heard_seconds() >= heard_s, f"{heard_s}s of the reply heard")


async def noise(engine: Engine) -> int:
    """A 400 ms burst over the bot, long enough to barge in, then the pause that ends its turn; returns
    where on the wire the cut happened."""
    await engine.feed(voice(0.4))
    assert engine.metric("voicebridge_barge_ins_total") == 1
    cut = len(engine.wire.frames)
    assert engine.wire.kinds()[-1] == "clear"
    await engine.feed(quiet(0.3))
    return cut


def media_bytes(engine: Engine, since: int) -> int:
    return sum(frame["bytes"] for frame in engine.wire.frames[since:] if frame["event"] == "media")


async def assert_resumed(engine: Engine, backend: FakeBackend, cut: int, words: str, rest: list[str]) -> None:
    """The rest of the reply was heard, from the cut sentence on, and the log holds the whole line once."""
    await engine.listening()
    assert engine.metric("voicebridge_false_interruptions_total") == 1
    assert len(backend.requests) == 1  # nothing the caller said over the bot went to the backend
    assert media_bytes(engine, cut) >= len(tts_pcm(" ".join(rest), RATE)) - 2 * len(rest)
    assert engine.wire.kinds()[-1] == "mark"
    assert engine.history == [("bot", "Hi."), ("caller", "spell the alphabet"), ("bot", FULL)]
    await engine.call.finish("completed")
    turns = (await engine.records())["conversation"]["turns"]
    line = turns[-1]
    assert line["role"] == "bot" and line["text"] == line["heard"] == FULL and not line.get("barge_in")
    assert line["false_interruptions"] == [words]


async def test_a_noise_burst_in_the_first_sentence_resumes_the_reply_from_its_start(
    engine: Engine, backend: FakeBackend, stt: FakeSTT, tts: FakeTTS
) -> None:
    await speaking(engine, backend, stt, 0.1)
    stt.hear("")  # what Whisper makes of noise
    cut = await noise(engine)
    await assert_resumed(engine, backend, cut, "", [S1, S2, S3])
    assert tts.spoken == [S1, S2, S3, S1, S2, S3]


async def test_a_cut_in_the_second_sentence_resumes_from_the_second(
    engine: Engine, backend: FakeBackend, stt: FakeSTT, tts: FakeTTS
) -> None:
    await speaking(engine, backend, stt, seconds(S1) + 0.05)
    stt.hear("")
    cut = await noise(engine)
    await assert_resumed(engine, backend, cut, "", [S2, S3])
    assert tts.spoken == [S1, S2, S3, S2, S3]


async def test_a_backchannel_hmm_resumes_the_reply(
    engine: Engine, backend: FakeBackend, stt: FakeSTT, tts: FakeTTS
) -> None:
    await speaking(engine, backend, stt, 0.1)
    stt.hear("Hmm...")
    cut = await noise(engine)
    await assert_resumed(engine, backend, cut, "Hmm...", [S1, S2, S3])


async def test_a_real_interruption_still_cancels_and_clears(
    engine: Engine, backend: FakeBackend, stt: FakeSTT, tts: FakeTTS
) -> None:
    await speaking(engine, backend, stt, 0.1)
    stt.hear("Okay, wait")  # back-channel words and more: an interruption
    cut = await noise(engine)
    await engine.listening()
    assert engine.metric("voicebridge_false_interruptions_total") == 0
    assert [request.text for request in backend.requests] == ["spell the alphabet", "Okay, wait"]
    assert tts.spoken == [S1, S2, S3, "You said Okay, wait."]
    assert engine.history[-2:] == [("caller", "Okay, wait"), ("bot", "You said Okay, wait.")]
    interrupted = engine.history[2][1]
    assert interrupted and FULL.startswith(interrupted) and len(interrupted) < len(S1)
    assert media_bytes(engine, cut) == len(tts_pcm("You said Okay, wait.", RATE)) // 3200 * 3200 + 3200


async def test_a_second_false_interruption_in_the_resumed_reply_resumes_again(
    engine: Engine, backend: FakeBackend, stt: FakeSTT, tts: FakeTTS
) -> None:
    await speaking(engine, backend, stt, 0.1)
    stt.hear("")
    await noise(engine)
    await engine.until(lambda: tts.spoken[3:] == [S1, S2, S3], "the resumed reply")
    await engine.until(lambda: engine.heard_seconds() >= seconds(S1) + 0.05, "its second sentence heard")
    stt.hear("mm")
    await engine.feed(voice(0.4) + quiet(0.3))
    await engine.listening()
    assert engine.metric("voicebridge_false_interruptions_total") == 2
    assert tts.spoken == [S1, S2, S3, S1, S2, S3, S2, S3]
    assert engine.history[-1] == ("bot", FULL)
    await engine.call.finish("completed")
    line = (await engine.records())["conversation"]["turns"][-1]
    assert line["heard"] == FULL and line["false_interruptions"] == ["", "mm"]


async def test_a_reply_cut_before_its_last_sentence_was_split_off_resumes_with_it(
    open_engine: OpenEngine, backend: FakeBackend, stt: FakeSTT, tts: FakeTTS
) -> None:
    """The whole reply came in one delta, but its last sentence was still in the splitter (it is split off
    only when the stream ends, and the stream is read only as the pacer has room): the resumed reply
    says it too. Found over the wire with Piper, where the third sentence was lost."""
    long_sentences = [f"{word} " * 60 + "end." for word in ("alpha", "bravo", "charlie")]  # ~1.4 s each
    engine = await open_engine({"limits": {"max_pending_audio_s": 1.0}})
    await engine.listening()
    stt.hear("tell me everything")
    backend.answer(" ".join(long_sentences))
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    await engine.until(lambda: engine.heard_seconds() >= 0.1, "the reply heard")
    assert len(tts.spoken) < 3  # the pacer is full: the last sentence waits in the splitter
    stt.hear("")
    await noise(engine)
    await engine.listening()
    assert engine.metric("voicebridge_false_interruptions_total") == 1
    assert tts.spoken[-3:] == long_sentences  # resumed from the first, and the last is not lost
    assert engine.history[-1] == ("bot", " ".join(long_sentences))
