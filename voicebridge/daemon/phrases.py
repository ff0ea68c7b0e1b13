"""Fixed phrases (greeting, busy, goodbye, transfer) synthesised once at start-up for every call rate."""

from __future__ import annotations

from voicebridge.audio.resample import resample_once
from voicebridge.config import PromptsConfig
from voicebridge.speech.base import TextToSpeech

CALL_RATES = (8000, 16000, 24000)
# Render once at the highest call rate and derive the others: one synthesis per phrase.
RENDER_RATE = 24000


class PhraseCache:
    """Pre-rendered PCM16 for each fixed phrase at each call rate, so the first frame leaves at once."""

    def __init__(self) -> None:
        self._audio: dict[tuple[str, int], bytes] = {}
        self._text: dict[str, str] = {}

    async def prepare(self, tts: TextToSpeech, prompts: PromptsConfig) -> None:
        """Synthesise every configured phrase; called once while the daemon starts."""
        for name, text in prompts.model_dump().items():
            if not text.strip():
                continue
            pcm = b"".join([piece async for piece in tts.synthesize(text, RENDER_RATE)])
            self._text[name] = text
            for rate in CALL_RATES:
                self._audio[(name, rate)] = (
                    pcm if rate == RENDER_RATE else resample_once(pcm, RENDER_RATE, rate)
                )

    def audio(self, name: str, sample_rate: int) -> bytes:
        """The phrase at a call rate, or b"" when that phrase is not configured."""
        return self._audio.get((name, sample_rate), b"")

    def text(self, name: str) -> str:
        """What the phrase says (for the transcript)."""
        return self._text.get(name, "")

    def __len__(self) -> int:
        return len(self._text)
