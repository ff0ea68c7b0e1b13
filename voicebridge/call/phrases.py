"""Fixed phrases (greeting, busy, goodbye, transfer) synthesised once at start-up for every call rate."""

from __future__ import annotations

import asyncio
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


class PhraseCache:
    """Pre-rendered PCM16 for each fixed phrase at each call rate, so the first frame leaves at once."""

    def __init__(self) -> None:
        self._audio: dict[tuple[str, int], bytes] = {}
        self._text: dict[str, str] = {}
        # Custom phrase names, least recently used first.
        self._custom: OrderedDict[str, None] = OrderedDict()
        # One render per phrase at a time: calls arriving for a greeting being rendered wait for it.
        self._rendering: dict[str, asyncio.Task[None]] = {}

    async def prepare(self, tts: TextToSpeech, prompts: PromptsConfig) -> None:
        """Synthesise every configured phrase; called once while the daemon starts."""
        for name, text in prompts.model_dump().items():
            if text.strip():
                await self._render(tts, name, text)

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

    def audio(self, name: str, sample_rate: int) -> bytes:
        """The phrase at a call rate, or b"" when that phrase is not configured."""
        return self._audio.get((name, sample_rate), b"")

    def text(self, name: str) -> str:
        """What the phrase says (for the transcript)."""
        return self._text.get(name, "")

    def __len__(self) -> int:
        return len(self._text)
