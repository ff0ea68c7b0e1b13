"""Per-number overrides (`[numbers."+918047491899"]`): a called number's business settings for deployments
without a node backend, and the language keys the speech sections share.

Precedence, field by field: the node backend's `GET /v1/business` answer, then the number's table here,
then the global keys (prompts.greeting, tts.voice / tts.azure_voice, stt.language, backend.system_prompt,
calls.fallback_number, calls.max_call_minutes).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from voicebridge.config.section import Section
from voicebridge.speech.languages import AUTO, check_language

# A called number as providers send it: digits, optionally after a '+' (E.164 or a national form).
_NUMBER = re.compile(r"\+?[0-9]{3,20}")


def check_number(value: str) -> str:
    if not _NUMBER.fullmatch(value):
        raise ValueError(
            f"{value[:40]!r} is not a phone number (digits, optionally after '+', like +918047491899)"
        )
    return value


def check_call_language(value: str) -> str:
    """A number's language: a BCP-47 tag; "auto" belongs to stt.language alone (detection is per engine)."""
    check_language(value)
    if value == AUTO:
        raise ValueError("a number's language is a BCP-47 tag; 'auto' is for stt.language")
    return value


PhoneNumber = Annotated[str, AfterValidator(check_number)]
Language = Annotated[str, AfterValidator(check_language)]
CallLanguage = Annotated[str, AfterValidator(check_call_language)]


class NumberConfig(Section):
    greeting: str | None = Field(None, max_length=2000)
    # An Azure voice name (hi-IN-SwaraNeural) or a Piper model path (/opt/voices/hi_IN-pratham-medium.onnx).
    voice: str | None = Field(None, max_length=1000)
    language: CallLanguage | None = None
    system_prompt: str | None = Field(None, max_length=20_000)
    transfer_number: str | None = Field(None, max_length=64)
    max_call_minutes: float | None = Field(None, gt=0)


Numbers = dict[PhoneNumber, NumberConfig]
