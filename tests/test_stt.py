"""The faster-whisper engine with the shipped model: accuracy over the phone path, noise gating, sharing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from voicebridge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16
from voicebridge.config import Settings, SttConfig
from voicebridge.speech.base import SpeechEngineError
from voicebridge.speech.models import ModelCache
from voicebridge.speech.stt import WhisperSTT
from voicebridge.speech.wer import normalise_words, word_error_rate

SENTENCES = [
    "Thank you for calling. Your appointment is confirmed for tomorrow at ten.",
    "I would like to check the status of my order, please.",
    "My name is Priya Sharma and my account number ends in four five six.",
    "Can you send the invoice to my email address before Friday?",
    "The delivery was supposed to arrive on Monday, but it never came.",
    "Please transfer me to someone in the billing department.",
]


def phone_line(pcm16: bytes) -> bytes:
    """What survives an 8 kHz μ-law phone call."""
    return ulaw_to_pcm16(pcm16_to_ulaw(pcm16))


@pytest.fixture(scope="module")
def engine(model_cache: ModelCache) -> WhisperSTT:
    return WhisperSTT(Settings().stt, model_cache)


async def test_word_error_rate_over_the_phone_path(
    engine: WhisperSTT, speak: Callable[[str, int], bytes]
) -> None:
    reference_words = errors = 0.0
    for sentence in SENTENCES:
        transcript = await engine.transcribe(phone_line(speak(sentence, 8000)), 8000)
        words = len(normalise_words(sentence))
        errors += word_error_rate(sentence, transcript.text) * words
        reference_words += words
        assert transcript.engine == "whisper" and transcript.audio_seconds > 1.0
    assert errors / reference_words <= 0.10


@pytest.mark.parametrize("level", [0, 30, 300, 1000])
async def test_silence_and_line_noise_give_no_text(engine: WhisperSTT, level: int) -> None:
    samples = np.random.default_rng(level).normal(0, level, 3 * 8000) if level else np.zeros(3 * 8000)
    transcript = await engine.transcribe(samples.astype("<i2").tobytes(), 8000)
    assert transcript.text == ""


async def test_long_utterance_falls_back_to_the_full_window(
    engine: WhisperSTT, speak: Callable[[str, int], bytes]
) -> None:
    text = " ".join(SENTENCES[:4])
    pcm = phone_line(speak(text, 8000))
    assert len(pcm) / 2 / 8000 > Settings().stt.window_seconds  # longer than the short window
    transcript = await engine.transcribe(pcm, 8000)
    assert word_error_rate(text, transcript.text) <= 0.15


async def test_one_model_shared_by_engines_and_concurrent_calls(
    model_cache: ModelCache, speak: Callable[[str, int], bytes]
) -> None:
    first, second = WhisperSTT(Settings().stt, model_cache), WhisperSTT(Settings().stt, model_cache)
    chosen = [SENTENCES[0], SENTENCES[1], SENTENCES[3], SENTENCES[4]]
    audio = [phone_line(speak(sentence, 8000)) for sentence in chosen]
    results = await asyncio.gather(
        *(engine.transcribe(pcm, 8000) for engine in (first, second) for pcm in audio)
    )
    assert model_cache.loads["whisper"] == 1
    for result, sentence in zip(results, chosen * 2, strict=True):
        assert word_error_rate(sentence, result.text) <= 0.2
    assert first.queue_depth == 0 and first.in_flight == 0


async def test_rates_other_than_8k_are_resampled(
    engine: WhisperSTT, speak: Callable[[str, int], bytes]
) -> None:
    transcript = await engine.transcribe(speak(SENTENCES[1], 16000), 16000)
    assert word_error_rate(SENTENCES[1], transcript.text) <= 0.1


def test_missing_model_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(SpeechEngineError, match="no CTranslate2 Whisper model"):
        WhisperSTT(SttConfig(model_path=str(tmp_path)), ModelCache())


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("Confirmed for tomorrow at ten.", "confirmed for tomorrow at 10", 0.0),
        ("the cat sat", "the bat sat", 1 / 3),
        ("the cat sat", "the cat", 1 / 3),
        ("the cat", "the cat sat down", 1.0),
        ("", "", 0.0),
        ("", "words", 1.0),
        ("Hello, world!", "hello world", 0.0),
        ("ends in four five six", "ends in 456", 0.0),
    ],
)
def test_word_error_rate(reference: str, hypothesis: str, expected: float) -> None:
    assert word_error_rate(reference, hypothesis) == pytest.approx(expected)
