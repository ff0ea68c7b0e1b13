"""The `[amd]` section: answering-machine detection on outbound calls (audio/answering_machine.py).

Bounded on both sides: a timeout of hours would leave a person answering in silence, a threshold of zero
would call every greeting a machine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from voicebridge.config.section import Section


class AmdConfig(Section):
    # Outbound calls only: while it listens the bot does not greet; inbound calls never run it. (Not
    # `enabled`: that key marks a provider section, see Settings.provider_sections.)
    detect: bool = True
    # No verdict by then (audio seconds from the answer): "unknown", and the callee is greeted as a person.
    decision_timeout_s: float = Field(4.0, ge=1.0, le=30.0)
    # A greeting that ends within this, followed by a reply pause, is a person's "Hello?".
    human_max_greeting_ms: int = Field(1800, ge=300, le=10_000)
    # A greeting that goes on this long without a reply pause is a machine's.
    machine_min_greeting_ms: int = Field(3000, ge=1000, le=20_000)
    # Silence this long after speech is a pause for a reply (a machine's sentence gaps are shorter).
    reply_pause_ms: int = Field(800, ge=200, le=5000)
    # The beep: a steady tone this long, in this band, with this share of its energy in one peak. A low
    # voice's vowel can hold one harmonic for 120-140 ms at 300-400 Hz (bench/amd.py found it): hence 180.
    beep_min_ms: int = Field(180, ge=40, le=2000)
    beep_max_ms: int = Field(2000, ge=100, le=10_000)
    beep_min_hz: float = Field(350.0, ge=100.0, le=4000.0)
    beep_max_hz: float = Field(2500.0, ge=100.0, le=4000.0)
    beep_purity: float = Field(0.8, gt=0.3, lt=1.0)
    # No beep: the message starts after the machine's greeting and this much silence, or the cap below.
    message_after_silence_ms: int = Field(1500, ge=200, le=10_000)
    max_wait_for_beep_s: float = Field(20.0, ge=0, le=120.0)
    # The frame classifier, as the turn detector's (webrtcvad above an energy floor).
    vad_aggressiveness: int = Field(2, ge=0, le=3)
    energy_floor_dbfs: float = Field(-50.0, ge=-90.0, le=-10.0)
    # "voicemail": say prompts.voicemail_message after the beep, then hang up; "hangup": hang up at once.
    on_machine: Literal["voicemail", "hangup"] = "voicemail"

    @model_validator(mode="after")
    def _ordered(self) -> AmdConfig:
        if self.human_max_greeting_ms >= self.machine_min_greeting_ms:
            raise ValueError("amd.human_max_greeting_ms must be below amd.machine_min_greeting_ms")
        if self.beep_min_hz >= self.beep_max_hz:
            raise ValueError("amd.beep_min_hz must be below amd.beep_max_hz")
        if self.beep_min_ms >= self.beep_max_ms:
            raise ValueError("amd.beep_min_ms must be below amd.beep_max_ms")
        return self
