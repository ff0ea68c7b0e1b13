"""Fixed phrases (greeting, busy, goodbye, transfer, re-prompt, filler, apology) synthesised once at start-up
for every call rate, in the configured voice; and once more in each other voice a call speaks in (a
business's `voice`, a language's `tts.voices`), when the first such call starts."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from contextlib import aclosing

from voicebridge.audio.resample import resample_once
from voicebridge.config.schema import PromptsConfig
from voicebridge.speech.base import DEFAULT_VOICE, TextToSpeech, Voice

CALL_RATES = (8000, 16000, 24000)
# Per-business phrases (greetings from the backend) kept at most this many, oldest dropped first.
CUSTOM_KEPT = 100
# Render once at the highest call rate and derive the others: one synthesis per phrase.
RENDER_RATE = 24000
# Voices other than the configured one whose phrases are kept, least recently used dropped first.
VOICES_KEPT = 16

logger = logging.getLogger("voicebridge.phrases")


def _in_voice(name: str, voice: Voice) -> str:
    return f"{name}@{voice.name}|{voice.language}"


class PhraseCache:
    """Pre-rendered PCM16 for each fixed phrase at each call rate, so the first frame leaves at once."""

    def __init__(self) -> None:
        self._audio: dict[tuple[str, int], bytes] = {}
        self._text: dict[str, str] = {}
        # Custom phrase names, least recently used first.
        self._custom: OrderedDict[str, None] = OrderedDict()
        # One render per phrase at a time: calls arriving for a greeting being rendered wait for it.
        self._rendering: dict[str, asyncio.Task[None]] = {}
        self._prompts: dict[str, str] = {}
        # Other voices with their phrases rendered (or being), least recently used first.
        # Each with its first phrase's render and the others'.
        self._voices: OrderedDict[Voice, tuple[asyncio.Future[None], asyncio.Future[None]]] = OrderedDict()

    async def prepare(self, tts: TextToSpeech, prompts: PromptsConfig) -> None:
        """Synthesise every configured phrase; called once while the daemon starts."""
        self._prompts = {name: text for name, text in prompts.model_dump().items() if text.strip()}
        for name, text in self._prompts.items():
            await self._render(tts, name, text)

    async def in_voice(self, tts: TextToSpeech, voice: Voice, first: str = "greeting") -> None:
        """Render the configured phrases in `voice` too, once per voice: `first` (the greeting, which the
        call is about to say) before this returns, the others in the background. A phrase that cannot be
        rendered in it is said in the configured voice, as before."""
        if not voice.name:  # the configured voice: its phrases are the ones rendered at start-up
            return
        if voice in self._voices:
            self._voices.move_to_end(voice)
            first_render, _ = self._voices[voice]
        else:
            first_render = asyncio.ensure_future(self._render_in(tts, first, voice))
            rest = asyncio.ensure_future(self._render_rest(tts, voice, first, first_render))
            self._voices[voice] = (first_render, rest)
            while len(self._voices) > VOICES_KEPT:
                old, tasks = self._voices.popitem(last=False)
                for task in tasks:
                    task.cancel()
                self._drop_voice(old)
        # Shielded: this call going away must not stop the render other calls in this voice wait for.
        await asyncio.shield(first_render)

    async def _render_in(self, tts: TextToSpeech, name: str, voice: Voice) -> None:
        if name not in self._prompts:
            return
        try:
            await self._render(tts, _in_voice(name, voice), self._prompts[name], voice)
        except Exception as exc:  # the configured voice's render stands in
            logger.warning("phrase %s not rendered in voice %s: %.200s", name, voice.name, exc)

    async def _render_rest(
        self, tts: TextToSpeech, voice: Voice, first: str, first_render: asyncio.Future[None]
    ) -> None:
        await asyncio.shield(first_render)
        for name in self._prompts:
            if name != first:
                await self._render_in(tts, name, voice)

    def _drop_voice(self, voice: Voice) -> None:
        for name in self._prompts:
            self._text.pop(_in_voice(name, voice), None)
            for rate in CALL_RATES:
                self._audio.pop((_in_voice(name, voice), rate), None)

    async def custom(self, tts: TextToSpeech, text: str, voice: Voice = DEFAULT_VOICE) -> str:
        """The name of a phrase saying `text` (a business's greeting) in `voice`, rendered on first use.

        Raises what the TTS raised when it cannot be rendered; a later call tries again.
        """
        # The voice is part of the name: two businesses with one greeting text may speak it differently.
        name = f"custom:{text}" if voice == DEFAULT_VOICE else f"custom:{voice.name}|{voice.language}:{text}"
        if name in self._custom:
            self._custom.move_to_end(name)
            return name
        rendering = self._rendering.get(name)
        if rendering is None:
            rendering = asyncio.ensure_future(self._render_custom(tts, name, text, voice))
            self._rendering[name] = rendering
            rendering.add_done_callback(lambda task: self._rendered(name, task))
        # Shielded: one waiting call going away must not cancel the render the others wait for.
        await asyncio.shield(rendering)
        return name

    async def _render_custom(self, tts: TextToSpeech, name: str, text: str, voice: Voice) -> None:
        await self._render(tts, name, text, voice)
        self._custom[name] = None
        while len(self._custom) > CUSTOM_KEPT:
            old, _ = self._custom.popitem(last=False)
            self._text.pop(old, None)
            for rate in CALL_RATES:
                self._audio.pop((old, rate), None)

    def _rendered(self, name: str, task: asyncio.Task[None]) -> None:
        if self._rendering.get(name) is task:
            del self._rendering[name]
        if not task.cancelled():
            task.exception()  # each waiter got it; this only marks it seen when every waiter went away

    async def _render(self, tts: TextToSpeech, name: str, text: str, voice: Voice = DEFAULT_VOICE) -> None:
        async with aclosing(tts.synthesize(text, RENDER_RATE, voice)) as pieces:
            pcm = b"".join([piece async for piece in pieces])
        self._text[name] = text
        for rate in CALL_RATES:
            self._audio[(name, rate)] = pcm if rate == RENDER_RATE else resample_once(pcm, RENDER_RATE, rate)

    async def close(self) -> None:
        """Stop the renders still running in the background (other voices' phrases), before the TTS engine
        they use is closed: at shutdown nobody waits for them."""
        pending = [task for tasks in self._voices.values() for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def audio(self, name: str, sample_rate: int, voice: Voice = DEFAULT_VOICE) -> bytes:
        """The phrase at a call rate in `voice` (in the configured one until, or unless, it is rendered in
        that one), or b"" when that phrase is not configured."""
        if voice != DEFAULT_VOICE and (pcm := self._audio.get((_in_voice(name, voice), sample_rate))):
            return pcm
        return self._audio.get((name, sample_rate), b"")

    def text(self, name: str) -> str:
        """What the phrase says (for the transcript)."""
        return self._text.get(name, "")

    def __len__(self) -> int:
        return len(self._text)
