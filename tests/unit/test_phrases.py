"""The fixed phrases in a call's own voice (issue 16): rendered once per voice, the greeting before the call
needs it, the configured voice's render standing in for any that cannot be rendered in it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from tests.engine.fakes import FakeTTS
from voicebridge.call.phrases import VOICES_KEPT, PhraseCache
from voicebridge.config.schema import PromptsConfig
from voicebridge.speech.base import DEFAULT_VOICE, SpeechEngineError, Voice


class VoicedTTS(FakeTTS):
    """The fake TTS, with audio that says which voice rendered it (so renders can be told apart)."""

    async def synthesize(  # type: ignore[override]
        self, text: str, sample_rate: int, voice: Voice = DEFAULT_VOICE
    ) -> AsyncIterator[bytes]:
        self.spoken.append(text)
        self.voices.append(voice)
        if any(key in text for key in self.fail_on):
            raise SpeechEngineError(f"fake TTS refuses {text[:30]!r}")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        yield (voice.name or "configured").encode().ljust(4800, b"\x01")


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the background renders never finished")


PROMPTS = PromptsConfig(greeting="Hi there.", goodbye="Bye now.", reprompt="Still there?", filler="")
SWARA = Voice("hi-IN-SwaraNeural", "hi-IN")


async def prepared(tts: FakeTTS) -> PhraseCache:
    phrases = PhraseCache()
    await phrases.prepare(tts, PROMPTS)
    tts.voices.clear()
    tts.spoken.clear()
    return phrases


async def test_a_call_voice_gets_the_greeting_first_and_the_rest_in_the_background() -> None:
    tts = VoicedTTS()
    phrases = await prepared(tts)
    configured = phrases.audio("goodbye", 8000)
    await phrases.in_voice(tts, SWARA)
    assert tts.spoken[0] == "Hi there." and tts.voices[0] == SWARA
    configured_texts = sorted(text for text in PROMPTS.model_dump().values() if text)
    await eventually(lambda: len(tts.spoken) == len(configured_texts))  # the others, in the background
    assert set(tts.voices) == {SWARA} and sorted(tts.spoken) == configured_texts
    assert phrases.audio("goodbye", 8000, SWARA) and phrases.audio("goodbye", 8000, SWARA) != configured
    await phrases.in_voice(tts, SWARA)  # once per voice
    assert len(tts.spoken) == len([text for text in PROMPTS.model_dump().values() if text])
    assert phrases.audio("filler", 8000, SWARA) == b""  # not configured stays not configured


async def test_the_configured_voice_needs_no_second_render() -> None:
    tts = VoicedTTS()
    phrases = await prepared(tts)
    await phrases.in_voice(tts, Voice("", "en-IN"))
    assert tts.spoken == []


async def test_a_phrase_that_cannot_be_rendered_in_the_voice_is_said_in_the_configured_one() -> None:
    tts = VoicedTTS(fail_on={"Bye"})
    phrases = PhraseCache()
    await phrases.prepare(VoicedTTS(), PROMPTS)
    await phrases.in_voice(tts, SWARA)
    await eventually(lambda: "Bye now." in tts.spoken and "Still there?" in tts.spoken)
    await eventually(lambda: phrases.audio("reprompt", 8000, SWARA) != phrases.audio("reprompt", 8000))
    assert phrases.audio("goodbye", 8000, SWARA) == phrases.audio("goodbye", 8000) != b""
    assert phrases.audio("reprompt", 8000, SWARA)


async def test_voices_beyond_the_kept_number_are_dropped_oldest_first() -> None:
    tts = VoicedTTS()
    phrases = await prepared(tts)
    voices = [Voice(f"voice-{index}", "en-IN") for index in range(VOICES_KEPT + 1)]
    for voice in voices:
        await phrases.in_voice(tts, voice)
    assert phrases.audio("greeting", 8000, voices[0]) == phrases.audio("greeting", 8000)  # dropped
    assert phrases.audio("greeting", 8000, voices[-1]) != phrases.audio("greeting", 8000)


async def test_close_stops_the_background_renders() -> None:
    tts = VoicedTTS(delay_s=0.2)  # each render takes a while: the others are still running at close
    phrases = await prepared(VoicedTTS())
    await phrases.in_voice(tts, SWARA)
    await phrases.close()
    rendered = len(tts.spoken)
    await asyncio.sleep(0.5)
    assert len(tts.spoken) == rendered < len([text for text in PROMPTS.model_dump().values() if text])
