"""One call in-process: the real Call, registry, metrics, phrase cache and outbox, with fake engines.

Caller audio is synthetic: a harmonic tone the real turn detector (webrtcvad above the energy floor) takes
as voice, and zeros it takes as silence. Turn timings are shortened so a turn takes a fraction of a second.
Time is real and short; tests wait for states with `until`, never assert durations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from tests.engine.fakes import FakeBackend, FakeSTT, FakeTranslator, FakeTTS, Wire
from voicebridge.admission.gate import CallGate
from voicebridge.admission.load_guard import OverloadGuard
from voicebridge.admission.registry import CallRegistry
from voicebridge.backends.base import BudgetCheck, BusinessLookup, BusinessSettings
from voicebridge.backends.business import BusinessDirectory, ConfigNumbers
from voicebridge.call.call import Call
from voicebridge.call.phrases import PhraseCache
from voicebridge.call.services import CallServices
from voicebridge.config.schema import Settings
from voicebridge.records.outbox import Outbox
from voicebridge.server.metrics import Metrics
from voicebridge.telephony.events import Start
from voicebridge.telephony.providers import TelephonyControl

RATE = 8000
FRAME_BYTES = RATE // 50 * 2  # 20 ms, as Exotel and Twilio send it
# Long enough for any state change the engine makes in a few milliseconds, even on a loaded machine.
WAIT_S = 10.0

TURN = {
    # The fake STT's words would otherwise decide each pause's length; tests of that set it themselves
    # (test_end_of_turn.py), the rest count silence as a fixed end of turn does.
    "end_of_turn": "fixed",
    "end_of_turn_silence_ms": 200,
    "speculative_ms": 100,
    "min_speech_ms": 100,
    "barge_in_min_ms": 100,
    "max_utterance_s": 1.0,
    # Off unless a test is about them (test_dead_air.py): a slow machine must not re-prompt other tests.
    "reprompt_after_s": 0,
}
PROMPTS = {
    "greeting": "Hi.",
    "busy": "Busy.",
    "goodbye": "Bye now.",
    "transfer": "Transferring.",
    "apology": "Sorry?",
}


async def until(condition: Callable[[], bool], what: str = "the condition") -> None:
    """Wait for `condition` and nothing else (Engine.until also feeds the call silence meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def voice(seconds: float) -> bytes:
    """A voiced-sounding tone (140 Hz with harmonics, syllable-rate swell) at the call's rate."""
    t = np.arange(int(RATE * seconds)) / RATE
    wave = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (wave * swell * 6000).astype("<i2").tobytes()


def quiet(seconds: float) -> bytes:
    return bytes(int(RATE * seconds) * 2)


def engine_settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """Settings for an engine test: short turns and prompts, state under tmp_path, no load refusals."""
    config: dict[str, dict[str, Any]] = {
        "server": {"state_dir": str(tmp_path)},
        "turn": dict(TURN),
        "prompts": dict(PROMPTS),
        "calls": {"overload_stt_wait_ms": 0, "overload_loop_lag_ms": 0, "overload_stt_utilisation": 0},
        "backend": {"filler_after_ms": 0},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return Settings(**config)


async def build_services(
    settings: Settings, stt: FakeSTT, tts: FakeTTS, backend: FakeBackend, outbox_path: Path
) -> CallServices:
    """The services the daemon builds once, built the same way around the fakes."""
    metrics = Metrics()
    load = OverloadGuard(0.0, 0.0, 0.0)
    registry = CallRegistry(settings.server.max_concurrent_calls, load.refusal)
    load.count_calls(lambda: registry.active_count)
    phrases = PhraseCache()
    await phrases.prepare(tts, settings.prompts)
    tts.spoken.clear()
    tts.voices.clear()
    outbox = Outbox(outbox_path, None)
    await outbox.open()
    return CallServices(
        settings,
        stt,
        tts,
        backend,
        phrases,
        metrics,
        registry,
        CallGate(settings, metrics, backend if isinstance(backend, BudgetCheck) else None),
        TelephonyControl(settings),
        outbox,
        BusinessDirectory(
            backend if isinstance(backend, BusinessLookup) else None, local=ConfigNumbers(settings.numbers)
        ),
        load,
    )


@dataclass
class Engine:
    """A live call and the fakes around it."""

    services: CallServices
    call: Call
    wire: Wire
    stt: FakeSTT
    tts: FakeTTS
    backend: FakeBackend
    fed: list[str] = field(default_factory=list)

    @property
    def history(self) -> list[tuple[str, str]]:
        return [(turn.role, turn.text) for turn in self.call.conversation.history()]

    def heard_seconds(self) -> float:
        """How much of the reply being played the caller has heard by now, by the pacer's clock."""
        return self.call._pacer.progress.heard_seconds(asyncio.get_running_loop().time())

    def metric(self, name: str, **labels: str) -> float:
        return self.services.metrics.registry.get_sample_value(name, labels) or 0.0

    async def feed(self, pcm16: bytes) -> None:
        """Caller audio in 20 ms messages, letting the call's tasks run between them."""
        for offset in range(0, len(pcm16), FRAME_BYTES):
            await self.call.on_audio(pcm16[offset : offset + FRAME_BYTES])
            await asyncio.sleep(0)

    async def say(self, seconds: float = 0.3) -> None:
        """A whole caller turn: speech, then silence past the end of turn."""
        await self.feed(voice(seconds) + quiet(0.3))

    async def until(self, condition: Callable[[], bool], what: str = "the condition") -> None:
        """Wait for `condition`, keeping the line alive with silence like a provider does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not condition():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            if self.call.ended:
                await asyncio.sleep(0.02)
            else:
                await self.feed(quiet(0.02))
                await asyncio.sleep(0.005)

    async def listening(self) -> None:
        """Wait until the call is listening with no reply in flight (the last reply was played)."""
        await self.until(lambda: self.call.state == "listening" and self.call._reply is None, "listening")

    async def records(self) -> dict[str, Any]:
        """The call's outbox records by key suffix (after `{call_sid}:{session}:`)."""
        stored = await self.services.outbox.records(self.call.call_sid)
        return {record.key.split(":", 2)[2]: record.payload for record in stored}


def start_event(call_sid: str = "CA-engine", direction: Literal["inbound", "outbound"] = "inbound") -> Start:
    return Start(
        direction=direction,
        provider="exotel",
        stream_sid="SS-engine",
        call_sid=call_sid,
        from_number="+919800000001",
        to_number="+918047491899",
        sample_rate=RATE,
    )


async def open_call(
    services: CallServices,
    stt: FakeSTT,
    tts: FakeTTS,
    backend: FakeBackend,
    call_sid: str = "CA-engine",
    max_minutes: float | None = None,
    greeting: str = "greeting",
    business: BusinessSettings | None = None,
    direction: Literal["inbound", "outbound"] = "inbound",
) -> Engine:
    """Admit and begin a call the way the stream handler does."""
    wire = Wire()
    call = Call(
        start_event(call_sid, direction),
        services,
        FakeTranslator(),  # type: ignore[arg-type]
        wire.send_text,
        wire.close_socket,
        max_minutes=max_minutes,
    )
    wire.on_mark = call.on_mark
    call.apply_business(business)
    assert call.admit()
    await call.begin(greeting)
    return Engine(services, call, wire, stt, tts, backend)


class ProviderCalls:
    """What the call asked the provider to do over REST (the real control does nothing for Exotel)."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hang_ups = 0
        self.transfers: list[str] = []
        monkeypatch.setattr(engine.services.telephony, "hang_up", self._hang_up)
        monkeypatch.setattr(engine.services.telephony, "transfer", self._transfer)

    async def _hang_up(self, start: Start) -> bool:
        self.hang_ups += 1
        return True

    async def _transfer(self, start: Start, number: str) -> bool:
        self.transfers.append(number)
        return True
