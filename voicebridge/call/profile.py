"""One call's language, voice and system prompt: the config's defaults, then the called number's settings.

Built with the call from the config, set once when the business settings are in (`apply`), and read by the
reply pipeline for every transcription, sentence and backend request, so a call's settings never leave it.
With `stt.language = "auto"` the first turn with words sets the language (`heard`) and the rest of the call
keeps it, its voice chosen again for it from `tts.voices`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from voicebridge.backends.base import BusinessSettings
from voicebridge.config.schema import Settings
from voicebridge.speech.base import Voice
from voicebridge.speech.languages import AUTO, is_azure_voice, is_language, is_piper_voice, voice_for

# A business's system prompt is sent with every turn: bounded, like every value from outside.
MAX_SYSTEM_PROMPT_CHARS = 20_000


@dataclass(slots=True)
class CallProfile:
    """What this call speaks and hears in, and the system prompt its backend is given ("": the config's)."""

    language: str
    voices: Mapping[str, str] = field(default_factory=dict)
    # The business's or number's own voice; "" picks one by language from tts.voices, else the engine's.
    voice_name: str = ""
    system_prompt: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> CallProfile:
        return cls(settings.stt.language, settings.tts.voices)

    def apply(self, business: BusinessSettings | None, log: logging.LoggerAdapter[logging.Logger]) -> None:
        """The called number's settings (the backend's answer over the number's table, see business.py);
        a value that cannot be a language or a voice is logged and the config's is kept."""
        if business is None:
            return
        if business.language:
            if is_language(business.language):
                self.language = business.language
            else:
                log.warning(
                    "business language %r is not a BCP-47 tag; keeping %s",
                    business.language[:40],
                    self.language,
                )
        if business.voice:
            if _usable_voice(business.voice):
                self.voice_name = business.voice
            else:
                log.warning(
                    "business voice %r is not an Azure voice name nor a Piper .onnx file; ignored",
                    business.voice[:80],
                )
        if business.system_prompt:
            self.system_prompt = business.system_prompt[:MAX_SYSTEM_PROMPT_CHARS]

    def heard(self, language: str) -> None:
        """A transcript's language: with "auto", the first one detected is the call's from then on."""
        if self.language == AUTO and language and is_language(language):
            self.language = language

    @property
    def voice(self) -> Voice:
        """The voice each sentence is synthesised with (the language "" while "auto" has not detected one)."""
        name = self.voice_name or voice_for(self.voices, self.language)
        return Voice(name, "" if self.language == AUTO else self.language)


def _usable_voice(voice: str) -> bool:
    if is_piper_voice(voice):
        return len(voice) <= 1000 and Path(voice).is_file()
    return is_azure_voice(voice)
