"""Call languages: BCP-47 tags from the config and the business, Whisper's codes, voices by language.

A call's language is one BCP-47 tag ("hi-IN", "en", or "auto" until detected). Whisper wants the primary
subtag ("hi"); Azure's SSML takes the whole tag as `xml:lang`; `tts.voices` maps a tag (or its primary
subtag) to the voice that speaks it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

AUTO = "auto"
# BCP-47 as used here: a 2-3 letter language, then up to three subtags (script, region, variant). Bounded, so
# a business's answer cannot put anything else in a log line, a label or an SSML attribute.
_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}")
# An Azure voice name: locale and name, e.g. hi-IN-SwaraNeural, zh-CN-henan-YundengNeural.
_AZURE_VOICE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,40}){2,3}")
MAX_VOICE_CHARS = 200


def is_language(value: str) -> bool:
    """True for a BCP-47 tag of the bounded shape above, or "auto"."""
    return value == AUTO or _TAG.fullmatch(value) is not None


def check_language(value: str) -> str:
    """A config validator: the tag, or ValueError naming the expected shape."""
    if not is_language(value):
        raise ValueError(f"{value[:40]!r} is not a BCP-47 language tag (like 'en', 'hi-IN') or 'auto'")
    return value


def whisper_code(language: str) -> str:
    """Whisper's language code for a tag: its primary subtag, lower-case ("hi-IN" -> "hi")."""
    return language.split("-", 1)[0].lower()


def is_piper_voice(voice: str) -> bool:
    """A Piper voice is named by the path of its .onnx model; anything else is an Azure voice name."""
    return voice.endswith(".onnx")


def is_azure_voice(voice: str) -> bool:
    return len(voice) <= MAX_VOICE_CHARS and _AZURE_VOICE.fullmatch(voice) is not None


def voice_locale(voice: str) -> str:
    """The locale an Azure voice name starts with ("hi-IN-SwaraNeural" -> "hi-IN"), "" when none."""
    parts = voice.split("-")
    return "-".join(parts[:2]) if len(parts) >= 3 else ""


def voice_for(voices: Mapping[str, str], language: str) -> str:
    """The voice `tts.voices` names for a language: the whole tag first, then its primary subtag; "" if
    neither (the engine's configured voice speaks)."""
    if not language or language == AUTO:
        return ""
    found = voices.get(language) or voices.get(whisper_code(language))
    if found:
        return found
    lowered = {key.lower(): value for key, value in voices.items()}
    return lowered.get(language.lower()) or lowered.get(whisper_code(language), "")


def ssml_language(language: str, voice: str) -> str:
    """The SSML `xml:lang`: the call's language when it is known, else the voice's locale, else en-US."""
    if language and language != AUTO:
        return language
    return voice_locale(voice) or "en-US"
