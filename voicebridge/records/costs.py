"""What one call cost: telephony minutes, TTS audio, STT audio and AI requests, at the configured rates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from voicebridge.config.schema import CostsConfig


@dataclass(slots=True)
class CallUsage:
    """What a call used, counted as it happens."""

    duration_s: float = 0.0
    tts_seconds: float = 0.0
    stt_seconds: float = 0.0
    ai_requests: int = 0


def call_cost(usage: CallUsage, rates: CostsConfig) -> dict[str, Any]:
    """The cost record for one call (see docs/backend-api.md)."""
    # Providers bill by the started minute (Exotel and Twilio both round up), so we do too.
    minutes = math.ceil(usage.duration_s / 60) if usage.duration_s > 0 else 0
    items = {
        "telephony": minutes * rates.telephony_per_minute,
        "tts": usage.tts_seconds / 60 * rates.tts_per_minute,
        "stt": usage.stt_seconds / 60 * rates.stt_per_minute,
        "ai": usage.ai_requests * rates.ai_per_request,
    }
    return {
        "currency": rates.currency,
        "total": round(sum(items.values()), 6),
        "items": {name: round(value, 6) for name, value in items.items()},
        "minutes": minutes,
        "duration_s": round(usage.duration_s, 3),
        "tts_seconds": round(usage.tts_seconds, 3),
        "stt_seconds": round(usage.stt_seconds, 3),
        "ai_requests": usage.ai_requests,
    }
