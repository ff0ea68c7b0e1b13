"""Issue 16, items 2 and 3: call languages and voices in the config, Whisper and the Azure SSML.

Only the English tiny.en model ships here, so the multilingual path is proven with a spy around it (the
model cache is WhisperSTT's injection point): the spy says it is multilingual and records what the
engine asks of it (the prompt's language token, detection, the language given to transcribe()).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from voicebridge.config.load import load_settings, render_toml
from voicebridge.config.schema import Settings, SttConfig, TtsConfig
from voicebridge.speech.base import SpeechEngineError, Voice
from voicebridge.speech.languages import voice_for, whisper_code
from voicebridge.speech.models import ModelCache, default_whisper_path
from voicebridge.speech.stt import WhisperSTT
from voicebridge.speech.tts.azure import build_ssml

Speak = Callable[[str, int], bytes]


# --- config ---------------------------------------------------------------------------------------------


def test_numbers_tables_load_from_toml_and_show(tmp_path: Path) -> None:
    path = tmp_path / "voicebridge.toml"
    path.write_text(
        '[tts]\nvoices = { hi = "hi-IN-SwaraNeural" }\n'
        '[numbers."+918047491899"]\nlanguage = "hi-IN"\nvoice = "hi-IN-SwaraNeural"\n'
        'system_prompt = "Speak Hindi."\nmax_call_minutes = 5\n'
    )
    settings = load_settings(path)
    number = settings.numbers["+918047491899"]
    assert (number.language, number.voice, number.max_call_minutes) == ("hi-IN", "hi-IN-SwaraNeural", 5)
    assert settings.tts.voices == {"hi": "hi-IN-SwaraNeural"}
    assert '[numbers."+918047491899"]' in render_toml(settings)  # `config show` copes with the tables


@pytest.mark.parametrize(
    "numbers",
    [
        {"not a number": {}},
        {"+91 80474": {}},
        {"+918047491899": {"language": "hindi please"}},
        {"+918047491899": {"language": "auto"}},  # detection is the engine's, not a number's
        {"+918047491899": {"colour": "blue"}},
        {"+918047491899": {"max_call_minutes": 0}},
    ],
)
def test_bad_number_tables_are_config_errors(numbers: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(numbers=numbers)


def test_languages_are_validated_where_the_config_names_them() -> None:
    assert SttConfig(language="auto").language == "auto"
    with pytest.raises(ValidationError):
        SttConfig(language="en_US!")
    with pytest.raises(ValidationError):
        TtsConfig(voices={"not a language": "hi-IN-SwaraNeural"})


def test_voices_by_language_fall_back_to_the_primary_subtag() -> None:
    voices = {"hi": "hi-IN-SwaraNeural", "en-IN": "en-IN-NeerjaNeural"}
    assert voice_for(voices, "hi-IN") == "hi-IN-SwaraNeural"
    assert voice_for(voices, "en-in") == "en-IN-NeerjaNeural"
    assert voice_for(voices, "ta-IN") == "" and voice_for(voices, "auto") == ""
    assert whisper_code("hi-IN") == "hi"


# --- Azure SSML -------------------------------------------------------------------------------------------


def test_ssml_names_the_calls_voice_and_language() -> None:
    config = TtsConfig(azure_voice="en-IN-NeerjaNeural")
    ssml = build_ssml("नमस्ते", config, Voice("hi-IN-SwaraNeural", "hi-IN"))
    assert 'xml:lang="hi-IN"' in ssml and '<voice name="hi-IN-SwaraNeural">' in ssml
    # No voice of its own: the configured one, and its locale as the language.
    default = build_ssml("Hello", config)
    assert 'xml:lang="en-IN"' in default and '<voice name="en-IN-NeerjaNeural">' in default
    # A Piper path is no Azure voice: Azure speaks its configured voice in the call's language.
    piper = build_ssml("Hello", config, Voice("/opt/voices/hi.onnx", "hi"))
    assert 'xml:lang="hi"' in piper and '<voice name="en-IN-NeerjaNeural">' in piper


# --- Whisper --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["hi", "hi-IN", "auto"])
def test_an_english_only_model_refuses_another_language_at_start_up(
    model_cache: ModelCache, language: str
) -> None:
    with pytest.raises(SpeechEngineError, match=r"multilingual Whisper model.*English-only"):
        WhisperSTT(SttConfig(language=language), model_cache)


class SpyModel:
    """Stands for the CTranslate2 Whisper model: multilingual, delegating to tiny.en, recording prompts."""

    is_multilingual = True

    def __init__(self, real: Any) -> None:
        self._real = real
        self.prompts: list[list[int]] = []
        self.detections = 0

    def encode(self, *args: Any, **options: Any) -> Any:
        return self._real.encode(*args, **options)

    def generate(self, encoded: Any, prompts: list[list[int]], **options: Any) -> Any:
        self.prompts.append(prompts[0])
        return self._real.generate(encoded, prompts, **options)

    def detect_language(self, encoded: Any) -> list[list[tuple[str, float]]]:
        self.detections += 1
        return [[("<|hi|>", 0.93), ("<|en|>", 0.05)]]


class SpyWhisper:
    """Stands for faster-whisper's WhisperModel around the real tiny.en; records transcribe()'s language."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.model = SpyModel(real.model)
        self.hf_tokenizer = real.hf_tokenizer
        self.feature_extractor = real.feature_extractor
        self.languages: list[str | None] = []

    def transcribe(self, audio: Any, language: str | None = None, **options: Any) -> Any:
        self.languages.append(language)
        return self._real.transcribe(audio, language=None, **options)


class SpyCache:
    def __init__(self, real: ModelCache) -> None:
        self.spy = SpyWhisper(real.whisper(default_whisper_path()))

    def whisper(self, path: str, threads: int = 1, workers: int = 2) -> SpyWhisper:
        return self.spy


def _language_tokens(stt: WhisperSTT, prompt: list[int]) -> list[str]:
    """The language tokens ("<|hi|>") of a decoding prompt."""
    vocabulary = stt.languages.tokenizer("en").tokenizer
    tokens = [vocabulary.id_to_token(token) for token in prompt]
    return [token for token in tokens if re.fullmatch(r"<\|[a-z]{2,3}\|>", token)]


@pytest.fixture
def spy_stt(model_cache: ModelCache) -> tuple[WhisperSTT, SpyCache, list[str]]:
    fallbacks: list[str] = []
    cache = SpyCache(model_cache)
    stt = WhisperSTT(SttConfig(language="en"), cache, fallbacks.append)  # type: ignore[arg-type]
    return stt, cache, fallbacks


async def test_each_transcription_decodes_in_the_calls_language(
    spy_stt: tuple[WhisperSTT, SpyCache, list[str]], speak: Speak
) -> None:
    stt, cache, fallbacks = spy_stt
    pcm = speak("one two three", 8000)
    try:
        hindi = await stt.transcribe(pcm, 8000, language="hi-IN")
        english = await stt.transcribe(pcm, 8000)  # "": the configured language
        unknown = await stt.transcribe(pcm, 8000, language="xx")
    finally:
        stt.close()
    prompts = cache.spy.model.prompts
    assert [_language_tokens(stt, prompt) for prompt in prompts] == [["<|hi|>"], ["<|en|>"], ["<|en|>"]]
    assert (hindi.language, english.language, unknown.language) == ("hi", "en", "en")
    assert fallbacks == ["xx"] and cache.spy.model.detections == 0


async def test_auto_detects_from_the_window_and_reports_it(
    spy_stt: tuple[WhisperSTT, SpyCache, list[str]], speak: Speak
) -> None:
    stt, cache, _ = spy_stt
    try:
        heard = await stt.transcribe(speak("one two three", 8000), 8000, language="auto")
    finally:
        stt.close()
    assert cache.spy.model.detections == 1 and heard.language == "hi"
    assert _language_tokens(stt, cache.spy.model.prompts[-1]) == ["<|hi|>"]


def test_the_long_path_gives_faster_whisper_the_language(
    spy_stt: tuple[WhisperSTT, SpyCache, list[str]], speak: Speak
) -> None:
    stt, cache, _ = spy_stt
    pcm = np.frombuffer(speak("one two three", 16000), dtype="<i2").astype(np.float32) / 32768
    try:
        stt._decode_full(pcm, "hi")
        detected = stt._decode_full(pcm, None)  # auto: faster-whisper detects, info.language reports it
    finally:
        stt.close()
    assert cache.spy.languages == ["hi", None] and detected.language == "en"


# --- Piper voices per call ---------------------------------------------------------------------------


def _voice_copy(source: Path, target: Path) -> str:
    """Another path to the shipped voice (a hard link where the filesystem allows): a voice of its own."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    shutil.copyfile(f"{source}.json", f"{target}.json")
    return str(target)


async def test_piper_loads_a_calls_voice_once_and_keeps_a_bounded_few(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voicebridge.speech import models
    from voicebridge.speech.models import default_piper_path
    from voicebridge.speech.tts.piper import PiperTTS

    monkeypatch.setattr(models, "PIPER_VOICES_KEPT", 1)
    cache = ModelCache()
    engine = PiperTTS(TtsConfig(), cache)
    first = _voice_copy(Path(default_piper_path()), tmp_path / "a.onnx")
    second = _voice_copy(Path(default_piper_path()), tmp_path / "b.onnx")

    async def say(voice: Voice) -> int:
        audio = b"".join([piece async for piece in engine.synthesize("Hello.", 8000, voice)])
        assert audio
        return cache.loads["piper"]

    try:
        assert cache.loads["piper"] == 1  # the configured voice
        assert await say(Voice("hi-IN-SwaraNeural", "hi-IN")) == 1  # an Azure name: the configured voice
        assert await say(Voice(first, "hi")) == 2
        assert await say(Voice(first, "hi")) == 2  # loaded once
        assert await say(Voice(second, "ta")) == 3  # and the first one dropped: one kept
        assert await say(Voice(first, "hi")) == 4
    finally:
        engine.close()
