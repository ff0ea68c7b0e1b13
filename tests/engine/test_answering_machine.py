"""Answering-machine handling on outbound calls: the bot listens before it greets; a person is greeted and
answered, a machine gets the voicemail message after its beep (or a hangup), and the outcome reaches the
records and /metrics. Inbound calls never run it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import FakeBackend, FakeSTT
from tests.engine.harness import RATE, Engine, ProviderCalls, quiet, voice

PROMPTS = {"outbound_greeting": "Hello, calling from the clinic.", "voicemail_message": "Please call back."}


def beep(seconds: float, hz: float = 1000.0) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


def bot_lines(engine: Engine) -> list[str]:
    return [text for role, text in engine.history if role == "bot"]


def media_sent(engine: Engine) -> int:
    return engine.wire.kinds().count("media")


async def outbound(open_engine: OpenEngine, **amd: object) -> Engine:
    return await open_engine({"prompts": PROMPTS, "amd": amd}, direction="outbound")


async def test_a_person_is_greeted_after_their_hello_and_the_call_goes_on(
    open_engine: OpenEngine, stt: FakeSTT, backend: FakeBackend
) -> None:
    engine = await outbound(open_engine)
    await engine.feed(quiet(0.3) + voice(0.6) + quiet(0.5))
    assert media_sent(engine) == 0 and bot_lines(engine) == []  # still listening: no greeting yet
    assert stt.calls == []  # and the "Hello?" is not a turn to answer
    await engine.feed(quiet(0.4))  # the pause for a reply has lasted amd.reply_pause_ms
    await engine.until(lambda: bot_lines(engine) == [PROMPTS["outbound_greeting"]], "the outbound greeting")
    await engine.listening()
    stt.hear("yes this is a good time")
    backend.answer("Great, ", "thank you.")
    await engine.say(0.4)
    await engine.listening()
    assert ("caller", "yes this is a good time") in engine.history
    assert engine.history[-1] == ("bot", "Great, thank you.")
    assert engine.metric("voicebridge_answering_machine_total", answered_by="human") == 1
    assert engine.metric("voicebridge_answering_machine_decision_seconds_count", answered_by="human") == 1
    await engine.call.finish("completed")
    records = await engine.records()
    assert records["event:answered"]["answered_by"] == "human"
    assert records["event:answered"]["reason"] == "short_greeting"
    assert records["event:ended"]["answered_by"] == "human"
    assert records["conversation"]["answered_by"] == "human"
    assert engine.services.registry.show(engine.call.call_sid)["answered_by"] == "human"


async def test_a_machine_gets_the_message_after_its_beep_ends_and_the_outcome_machine(
    open_engine: OpenEngine, stt: FakeSTT, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await outbound(open_engine)
    provider = ProviderCalls(engine, monkeypatch)
    # A 4 s greeting with sentence gaps shorter than a reply pause, then the beep.
    greeting = b"".join(voice(0.9) + quiet(0.3) for _ in range(4))
    await engine.feed(greeting + quiet(0.2) + beep(0.5))
    assert engine.call._amd is not None and engine.call._amd.verdict is not None
    assert engine.call._amd.verdict.answered_by == "machine"  # decided on the greeting's length
    assert media_sent(engine) == 0  # nothing said over the greeting nor the beep
    await engine.feed(quiet(0.04))  # the beep has ended
    await engine.until(lambda: provider.hang_ups == 1, "the call to end after the message")
    assert bot_lines(engine) == [PROMPTS["voicemail_message"]]
    assert media_sent(engine) > 0 and stt.calls == []
    assert engine.call.outcome == "machine" and provider.hang_ups == 1
    records = await engine.records()
    assert records["event:ended"]["outcome"] == "machine"
    assert records["event:ended"]["answered_by"] == "machine"
    assert engine.metric("voicebridge_answering_machine_total", answered_by="machine") == 1


async def test_on_machine_hangup_hangs_up_at_the_verdict_saying_nothing(
    open_engine: OpenEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await outbound(open_engine, on_machine="hangup")
    provider = ProviderCalls(engine, monkeypatch)
    await engine.feed(voice(3.2))
    await engine.until(lambda: provider.hang_ups == 1, "the hangup")
    assert media_sent(engine) == 0 and bot_lines(engine) == []
    assert engine.call.outcome == "machine" and provider.hang_ups == 1


async def test_no_verdict_by_the_timeout_is_unknown_and_the_callee_is_greeted(
    open_engine: OpenEngine,
) -> None:
    engine = await outbound(open_engine, decision_timeout_s=1.0)
    await engine.feed(quiet(0.9))
    assert bot_lines(engine) == []
    await engine.feed(quiet(0.2))
    await engine.until(lambda: bot_lines(engine) == [PROMPTS["outbound_greeting"]], "the greeting")
    assert engine.metric("voicebridge_answering_machine_total", answered_by="unknown") == 1
    await engine.call.finish("completed")
    assert (await engine.records())["event:ended"]["answered_by"] == "unknown"


async def test_a_stream_that_goes_quiet_is_greeted_by_the_watchdog(open_engine: OpenEngine) -> None:
    engine = await outbound(open_engine, decision_timeout_s=1.0)
    # No audio at all (silence suppression): the wall clock decides, timeout plus the grace.
    await engine.until(lambda: bot_lines(engine) == [PROMPTS["outbound_greeting"]], "the greeting")


async def test_the_providers_machine_verdict_overrides_ours(
    open_engine: OpenEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await outbound(open_engine)
    ProviderCalls(engine, monkeypatch)
    await engine.feed(voice(0.5))
    # Twilio's AnsweredBy, told by the dialler's webhook through the registry.
    assert engine.services.registry.provider_answered(engine.call.call_sid, "machine")
    assert not engine.services.registry.provider_answered("CA-nobody", "machine")
    await engine.feed(voice(0.5) + beep(0.4) + quiet(0.04))
    await engine.until(lambda: engine.call.ended, "the message and the end")
    assert bot_lines(engine) == [PROMPTS["voicemail_message"]]
    assert (await engine.records())["event:answered"]["reason"] == "provider"


async def test_inbound_calls_greet_at_once_and_run_no_detection(
    open_engine: OpenEngine, stt: FakeSTT
) -> None:
    engine = await open_engine({"prompts": PROMPTS})
    assert engine.call._amd is None
    await engine.until(lambda: bot_lines(engine) == ["Hi."], "the inbound greeting")
    await engine.listening()
    await engine.say(0.4)
    await engine.listening()
    assert stt.calls and engine.metric("voicebridge_answering_machine_total", answered_by="human") == 0
    await engine.call.finish("completed")
    records = await engine.records()
    assert "event:answered" not in records and "answered_by" not in records["event:ended"]


async def test_a_provider_verdict_that_is_none_of_ours_counts_as_unknown(open_engine: OpenEngine) -> None:
    engine = await outbound(open_engine)
    engine.call.provider_answered("robot")  # type: ignore[arg-type]  # from outside: untyped at run time
    await engine.feed(voice(0.6) + quiet(1.0))  # our detector goes on, and hears a person
    await engine.until(lambda: bot_lines(engine) == [PROMPTS["outbound_greeting"]], "the greeting")


async def test_a_provider_verdict_after_ours_is_recorded_as_a_correction(open_engine: OpenEngine) -> None:
    """Our detector judged a person and the call went on; Twilio's AnsweredBy then says machine: the
    first `answered` event stays as it was, a second one says what the provider said, and the `ended`
    records carry the final verdict."""
    engine = await outbound(open_engine)
    await engine.feed(quiet(0.3) + voice(0.6) + quiet(0.9))
    await engine.until(lambda: bot_lines(engine) == [PROMPTS["outbound_greeting"]], "the outbound greeting")
    assert engine.services.registry.provider_answered(engine.call.call_sid, "machine")
    await engine.call.finish("completed")
    records = await engine.records()
    assert (records["event:answered"]["answered_by"], records["event:answered"]["reason"]) == (
        "human",
        "short_greeting",
    )
    corrected = records["event:answered:corrected"]
    assert (corrected["answered_by"], corrected["reason"]) == ("machine", "provider")
    assert records["event:ended"]["answered_by"] == "machine"
