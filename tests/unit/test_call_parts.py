"""Per-call building blocks without a network: turn detection, sentence splitting, digit collection."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from voicebridge.audio.levels import trim_trailing_quiet
from voicebridge.audio.resample import resample_once
from voicebridge.audio.turn import (
    PauseStarted,
    SpeechResumed,
    SpeechStarted,
    SpeechSustained,
    TurnDetector,
    TurnEnded,
    detector_ingress,
)
from voicebridge.call.digits import DigitCollector
from voicebridge.call.resume import FalseInterruptions
from voicebridge.call.sentences import SentenceSplitter, heard_text
from voicebridge.config.schema import TurnConfig
from voicebridge.records.provider_facts import FACTS_KEPT, ProviderFacts

RATE = 16_000


def silence(seconds: float) -> bytes:
    return bytes(int(RATE * seconds) * 2)


def feed_in_slices(detector: TurnDetector, pcm: bytes, slice_bytes: int = 1234) -> list[object]:
    events: list[object] = []
    for offset in range(0, len(pcm), slice_bytes):
        events.extend(detector.feed(pcm[offset : offset + slice_bytes]))
    return events


@pytest.fixture(scope="module")
def utterance(speak: Callable[[str, int], bytes]) -> bytes:
    return resample_once(speak("Hello, I would like to check my account balance.", 8000), 8000, RATE)


def test_turn_ends_after_configured_silence(utterance: bytes) -> None:
    detector = TurnDetector(TurnConfig(end_of_turn_silence_ms=500, speculative_ms=200))
    events = feed_in_slices(detector, silence(0.3) + utterance + silence(0.3))
    kinds = [type(event) for event in events]
    assert SpeechStarted in kinds and SpeechSustained in kinds and PauseStarted in kinds
    assert TurnEnded not in kinds  # 300 ms (plus the voice's fade-out) is not yet the end
    ended = [e for e in feed_in_slices(detector, silence(0.3)) if isinstance(e, TurnEnded)]
    assert len(ended) == 1
    turn = ended[0]
    assert not turn.forced
    # The utterance keeps the speech (with a little pre-roll and tail), not the trailing silence.
    assert 0.8 * len(utterance) <= len(turn.pcm16) <= len(utterance) + len(silence(0.5))
    pause = [e for e in events if isinstance(e, PauseStarted)][-1]
    assert pause.pcm16 == turn.pcm16  # speculation saw exactly the audio the turn ended with


@pytest.mark.parametrize(
    "text", ["What time does the clinic open on Saturday?", "My order has not arrived yet."]
)
def test_the_turn_ends_500_ms_after_the_last_word_not_later(
    speak: Callable[[str, int], bytes], text: str
) -> None:
    """Phone audio at 8 kHz in 20 ms chunks: nothing held back in resampling delays the end of the turn."""
    chunk = 320  # 20 ms at 8 kHz
    speech = bytes(chunk * 10) + trim_trailing_quiet(speak(text, 8000))
    line = speech + bytes(chunk * 50)
    ingress, detector = detector_ingress(8000), TurnDetector(TurnConfig(end_of_turn_silence_ms=500))
    chunks = [line[n : n + chunk] for n in range(0, len(line), chunk)]
    ended_after = next(
        n + 1
        for n, piece in enumerate(chunks)
        if any(isinstance(e, TurnEnded) for e in detector.feed(ingress.process(piece)))
    )
    late_ms = ended_after * 20 - len(speech) / 16 - 500
    # The 20 ms VAD frame holding the last word, and one more it may spill into; soxr's HQ filter
    # held back another 65-100 ms here.
    assert 0 <= late_ms <= 40


def test_speech_resuming_after_a_pause_is_reported(utterance: bytes) -> None:
    detector = TurnDetector(TurnConfig(end_of_turn_silence_ms=600, speculative_ms=200))
    events = feed_in_slices(detector, utterance + silence(0.15) + utterance + silence(0.7))
    kinds = [type(event) for event in events]
    assert kinds.index(PauseStarted) < kinds.index(SpeechResumed) < kinds.index(TurnEnded)
    assert kinds.count(TurnEnded) == 1


def test_blip_is_not_a_turn_and_not_a_barge_in(utterance: bytes) -> None:
    detector = TurnDetector(TurnConfig(min_speech_ms=200, barge_in_min_ms=300))
    blip = utterance[len(utterance) // 3 : len(utterance) // 3 + int(RATE * 0.15) * 2]
    events = feed_in_slices(detector, silence(0.2) + blip + silence(1.0))
    assert not any(isinstance(e, (SpeechSustained, TurnEnded)) for e in events)


def test_silence_and_noise_open_no_utterance() -> None:
    import numpy as np

    noise = (np.random.default_rng(1).normal(0, 30, RATE * 2)).astype("<i2").tobytes()
    detector = TurnDetector(TurnConfig())
    assert feed_in_slices(detector, silence(2.0) + noise) == []


def test_long_speech_is_cut_at_the_maximum(utterance: bytes) -> None:
    detector = TurnDetector(TurnConfig(max_utterance_s=2.0))
    ended = [e for e in feed_in_slices(detector, utterance * 3) if isinstance(e, TurnEnded)]
    assert ended and ended[0].forced


def test_sentence_splitter_streams_whole_sentences() -> None:
    splitter = SentenceSplitter()
    out: list[str] = []
    for delta in ["Hello the", "re. How are", " you? I am fine", "! Bye"]:
        out += splitter.feed(delta)
    assert out == ["Hello there.", "How are you?", "I am fine!"]
    assert splitter.flush() == ["Bye"]
    assert splitter.flush() == []


def test_heard_text_cuts_at_what_was_played() -> None:
    sentences = [("First sentence here.", 1.0), ("Second one has five words.", 2.0)]
    assert heard_text(sentences, 0.0) == ""
    assert heard_text(sentences, 1.0) == "First sentence here."
    assert heard_text(sentences, 2.0) == "First sentence here. Second one"
    assert heard_text(sentences, 9.0) == "First sentence here. Second one has five words."


def test_digit_collection_is_deterministic() -> None:
    collector = DigitCollector(max_digits=4)
    assert [collector.press(d) for d in "12"] == [None, None]
    assert collector.press("#") == "12"
    assert collector.press("#") is None  # nothing collected: '#' alone is not an entry
    assert [collector.press(d) for d in "9876"] == [None, None, None, "9876"]
    collector.press("5")
    assert collector.expire() == "5" and collector.expire() is None


def test_webhook_facts_are_kept_for_recent_calls_only() -> None:
    """A daemon that runs for months must not keep every status callback and transfer it ever saw."""
    facts = ProviderFacts()
    assert facts.record_callback("CA-first", "status", {"Status": "completed"})
    assert not facts.record_callback("CA-first", "status", {"Status": "completed"})  # a retry
    facts.set_transfer("CA-first", "+919800000000")
    for n in range(FACTS_KEPT):
        facts.record_callback(f"CA-{n}", "recording", {"RecordingUrl": f"https://r/{n}"})
        facts.set_transfer(f"CA-{n}", "+919800000001")
    assert facts.callbacks("CA-first") == [] and facts.transfer_destination("CA-first") is None
    assert facts.callbacks(f"CA-{FACTS_KEPT - 1}")[0]["RecordingUrl"] == f"https://r/{FACTS_KEPT - 1}"
    assert facts.transfer_destination("CA-0") == "+919800000001"


def test_a_long_first_sentence_is_spoken_from_its_first_clause() -> None:
    long = "Thank you for waiting, your appointment with Doctor Rao is confirmed for tomorrow at ten."
    splitter = SentenceSplitter()
    assert splitter.feed(
        long + " See you then. And, again, thank you for waiting so very long today, truly."
    ) == [
        "Thank you for waiting,",
        "your appointment with Doctor Rao is confirmed for tomorrow at ten.",
        "See you then.",
    ]
    # Only the first: later sentences stay whole, as does a clause too short to stand alone.
    assert splitter.flush() == ["And, again, thank you for waiting so very long today, truly."]
    short_head = SentenceSplitter()
    assert short_head.feed("You said: I need to move my booking to Friday morning please. ") == [
        "You said: I need to move my booking to Friday morning please."
    ]


def test_the_first_clause_goes_out_while_its_sentence_still_streams_in() -> None:
    splitter = SentenceSplitter()
    out: list[str] = []
    for delta in [
        "Thank you for waiting, your appoint",
        "ment with Doctor Rao is confirmed",
        " for tomorrow.",
    ]:
        out.append(splitter.feed(delta))
    assert out == [[], ["Thank you for waiting,"], []]
    assert splitter.flush() == ["your appointment with Doctor Rao is confirmed for tomorrow."]
    # A clause too short to stand alone is never cut off, however long the sentence grows.
    whole = SentenceSplitter()
    assert whole.feed("Sure thing, I have booked you in for ten tomorrow morning with Doctor Rao") == []
    assert whole.flush() == ["Sure thing, I have booked you in for ten tomorrow morning with Doctor Rao"]


def test_backchannel_words_are_single_words_matched_without_case_or_punctuation() -> None:
    judge = FalseInterruptions(TurnConfig(backchannel_words=["Haan", "ok"]))
    assert judge.says_nothing("") and judge.says_nothing("Haan... OK!") and judge.says_nothing("  ")
    assert not judge.says_nothing("ok, wait") and not judge.says_nothing("hmm")
    with pytest.raises(ValidationError):
        TurnConfig(backchannel_words=["uh huh"])
    with pytest.raises(ValidationError):
        TurnConfig(reprompt_after_s=-1)
