"""#14.16: teardown runs once and completely whatever raises or cancels; cancelled replies close their
backend stream themselves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import FakeBackend, FakeTTS
from tests.engine.harness import Engine, voice


async def assert_torn_down_once(engine: Engine, outcome: str) -> None:
    call, registry = engine.call, engine.services.registry
    await engine.until(lambda: registry.active_count == 0, "the registry slot to be freed")
    record = registry.finished(call.call_sid)
    assert record is not None and record.outcome == outcome
    assert engine.metric("voicebridge_calls_active") == 0
    assert {"event:ended", "cost", "conversation"} <= set(await engine.records())
    await call.finish("dropped")  # a second finish changes nothing
    assert engine.metric("voicebridge_calls_total", outcome=outcome, provider="exotel") == 1
    assert engine.metric("voicebridge_calls_total", outcome="dropped", provider="exotel") == 0
    assert registry.finished_total == 1


async def test_a_cancelled_finish_still_tears_the_call_down(
    open_engine: OpenEngine, backend: FakeBackend, tts: FakeTTS
) -> None:
    engine = await open_engine({"calls": {"record_locally": True}})
    await engine.listening()
    tts.holds["Second"] = asyncio.Event()
    tts.cancel_delay_s = 0.3  # the reply task is slow to die, like a TTS connection closing
    backend.answer("First words of a long answer. ", "Second part is held. ")
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    finishing = asyncio.create_task(engine.call.finish("hangup"))
    await engine.until(lambda: tts.cancelled == 1, "teardown to be cancelling the reply")
    finishing.cancel()  # e.g. the management request that asked for the hangup went away
    await asyncio.gather(finishing, return_exceptions=True)
    await assert_torn_down_once(engine, "hangup")
    record = engine.services.registry.finished(engine.call.call_sid)
    assert record is not None and record.local_recording
    assert await asyncio.to_thread(Path(record.local_recording).exists)


async def test_a_failing_step_does_not_stop_the_rest_of_teardown(
    open_engine: OpenEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await open_engine({"calls": {"record_locally": True}})
    await engine.listening()

    async def broken(*_args: object) -> Path:
        raise RuntimeError("injected: the recording writer is broken")

    assert engine.call._recording is not None
    monkeypatch.setattr(engine.call._recording, "save", broken)
    await engine.call.finish("completed")
    await assert_torn_down_once(engine, "completed")


async def test_a_cancelled_reply_closes_its_backend_stream_itself(
    engine: Engine, backend: FakeBackend, tts: FakeTTS
) -> None:
    """Cancelled while synthesising, the reply holds the backend's stream open at a yield: it must close it,
    not leave it to the garbage collector's finaliser some time later."""
    tts.holds["Second"] = asyncio.Event()
    backend.answer("First words of a long answer. ", "Second part is held. ", "Third.")
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    for offset in range(0, 3200, 320):  # a barge-in, without giving other tasks a turn meanwhile
        await engine.call.on_audio(voice(0.2)[offset : offset + 320])
    request = backend.requests[0]
    assert request.closed and not request.completed
    assert request.closed_by == f"{engine.call.call_sid}:reply"


async def test_a_hangup_closes_the_backend_stream_before_it_returns(
    engine: Engine, backend: FakeBackend, tts: FakeTTS
) -> None:
    tts.holds["Second"] = asyncio.Event()
    backend.answer("First words of a long answer. ", "Second part is held. ", "Third.")
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    await engine.call.hangup()
    assert backend.requests[0].closed and backend.open_streams == 0


async def test_a_failing_conversation_step_still_stops_the_call(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#14 review 2: each teardown step is guarded on its own; one raising leaves no call half-alive."""

    def broken() -> None:
        raise RuntimeError("injected: settling the conversation failed")

    monkeypatch.setattr(engine.call, "_settle_conversation", broken)
    await engine.call.finish("completed")
    assert engine.call.state == "ended" and not engine.call._tasks  # the pacer stopped
    assert engine.metric("voicebridge_errors_total", kind="teardown") == 1
    await assert_torn_down_once(engine, "completed")


async def test_the_shutdown_waits_for_a_teardown_nobody_waits_for_any_more(
    engine: Engine, backend: FakeBackend, tts: FakeTTS
) -> None:
    """#14 review 6: the teardown's only waiter was cancelled; the daemon's drain still waits for it, so the
    loop cannot be stopped with the call's records unkept."""
    tts.holds["Second"] = asyncio.Event()
    tts.cancel_delay_s = 0.3  # the reply task is slow to die, like a TTS connection closing
    backend.answer("First words of a long answer. ", "Second part is held. ")
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    finishing = asyncio.create_task(engine.call.finish("hangup"))
    await engine.until(lambda: tts.cancelled == 1, "teardown to be cancelling the reply")
    finishing.cancel()
    await asyncio.gather(finishing, return_exceptions=True)
    await engine.services.registry.drain(0)
    assert engine.services.registry.finished(engine.call.call_sid) is not None
    assert {"event:ended", "cost", "conversation"} <= set(await engine.records())


async def test_a_registry_that_fails_to_file_the_call_still_frees_its_count(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#14 review 6: calls_active is uncounted whatever the registry's finish raises."""

    def broken(*_args: object) -> None:
        raise RuntimeError("injected: the registry cannot file the call")

    monkeypatch.setattr(engine.services.registry, "finish", broken)
    await engine.call.finish("completed")
    assert engine.metric("voicebridge_calls_active") == 0
    assert engine.metric("voicebridge_calls_total", outcome="completed", provider="exotel") == 1
    assert engine.metric("voicebridge_errors_total", kind="teardown") == 1


async def test_a_call_task_that_raises_ends_the_call_once_as_an_error(
    engine: Engine, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a call's task (not an engine or backend failure it handles) must not leave the call
    half-alive: it ends as `error`, its stream closed, its teardown complete."""

    def broken(*_args: object) -> None:
        raise RuntimeError("injected: a bug on the reply path")

    monkeypatch.setattr(backend, "reply", broken)
    await engine.say()
    await engine.until(lambda: engine.wire.closed, "the stream closed")
    assert engine.call.outcome == "error"
    assert engine.metric("voicebridge_errors_total", kind="RuntimeError") == 1
    await assert_torn_down_once(engine, "error")


async def test_every_way_out_at_once_tears_the_call_down_once(
    engine: Engine, backend: FakeBackend, tts: FakeTTS
) -> None:
    """The caller hangs up while a management hangup, a transfer and the shutdown's goodbye arrive."""
    backend.answer("A long answer that takes a while to play. " * 6)
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    registry = engine.services.registry
    await asyncio.gather(
        engine.call.finish("completed"),
        registry.hangup(engine.call.call_sid),
        registry.transfer(engine.call.call_sid, "+919800000009"),
        engine.call.end_for_shutdown(),
    )
    assert engine.call.outcome == "completed" and not engine.call._tasks
    assert registry.facts.transfer_destination(engine.call.call_sid) is None  # no transfer went ahead
    await assert_torn_down_once(engine, "completed")
