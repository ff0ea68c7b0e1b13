"""#14.11: custom greetings can never kill a call, and calls_active stays balanced."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.engine.fakes import BudgetBackend, FakeSocket, FakeSTT, FakeTTS
from tests.engine.harness import build_services, engine_settings, until, voice
from voicebridge.backends.base import BusinessSettings
from voicebridge.call.phrases import CUSTOM_KEPT, PhraseCache
from voicebridge.call.session import StreamSession
from voicebridge.sim.providers import ExotelCaller


async def test_two_calls_rendering_one_greeting_render_it_once() -> None:
    tts, phrases = FakeTTS(delay_s=0.05), PhraseCache()
    names = await asyncio.gather(*(phrases.custom(tts, "Welcome to Acme.") for _ in range(3)))
    assert len(set(names)) == 1 and tts.spoken == ["Welcome to Acme."]
    assert phrases.audio(names[0], 8000) and phrases.text(names[0]) == "Welcome to Acme."


async def test_evicting_old_greetings_never_fails() -> None:
    tts, phrases = FakeTTS(delay_s=0.01), PhraseCache()
    await asyncio.gather(phrases.custom(tts, "Welcome to Acme."), phrases.custom(tts, "Welcome to Acme."))
    tts.delay_s = 0.0
    for n in range(CUSTOM_KEPT + 5):
        await phrases.custom(tts, f"Welcome to shop {n}.")
    assert phrases.text("custom:Welcome to Acme.") == ""  # evicted, the newest kept
    assert phrases.text(f"custom:Welcome to shop {CUSTOM_KEPT + 4}.")


async def test_a_greeting_that_cannot_be_rendered_leaves_the_call_with_the_default(tmp_path: Path) -> None:
    caller = ExotelCaller("CA-greet", "SS-greet")
    backend = BudgetBackend(businesses={caller.to_number: BusinessSettings(greeting="Welcome to Acme.")})
    tts = FakeTTS(fail_on={"Acme"})  # the TTS is down for anything new; no fallback
    services = await build_services(engine_settings(tmp_path), FakeSTT(), tts, backend, tmp_path / "o.db")
    socket = FakeSocket()
    session = StreamSession(services, socket, "CA-greet", 8000)  # type: ignore[arg-type]
    for text in (caller.connected(), caller.start(), caller.media(voice(0.1))):
        socket.incoming.put_nowait(text)
    running = asyncio.create_task(session.run())
    await until(lambda: services.registry.active_count == 1 or running.done(), "the call admitted")
    assert services.registry.active_count == 1 and not running.done()  # the call goes on
    assert services.metrics.registry.get_sample_value("voicebridge_calls_active") == 1
    socket.incoming.put_nowait(caller.stop())
    await running  # nothing escapes the session
    record = services.registry.finished("CA-greet")
    assert record is not None and record.outcome == "completed"
    assert record.transcript[0]["text"] == "Hi."  # the configured greeting instead
    sample = services.metrics.registry.get_sample_value
    assert sample("voicebridge_calls_active") == 0
    assert sample("voicebridge_errors_total", {"kind": "greeting"}) == 1
    await services.outbox.close()


async def test_a_call_ended_while_its_greeting_renders_is_never_started(tmp_path: Path) -> None:
    """#14 review 1: a management hangup while the business greeting is being synthesised ends the call;
    the render finishing afterwards must not start it again (pacer, greeting, `started` after `ended`)."""
    caller = ExotelCaller("CA-late", "SS-late")
    backend = BudgetBackend(businesses={caller.to_number: BusinessSettings(greeting="Welcome to Acme.")})
    tts = FakeTTS()
    services = await build_services(engine_settings(tmp_path), FakeSTT(), tts, backend, tmp_path / "o.db")
    tts.holds["Acme"] = rendering = asyncio.Event()
    socket = FakeSocket()
    session = StreamSession(services, socket, "CA-late", 8000)  # type: ignore[arg-type]
    for text in (caller.connected(), caller.start()):
        socket.incoming.put_nowait(text)
    running = asyncio.create_task(session.run())
    await until(lambda: tts.spoken == ["Welcome to Acme."], "the greeting's render")
    await services.registry.hangup("CA-late")
    rendering.set()
    await running
    call = session._call
    assert call is not None
    try:
        assert call.state == "ended" and call.outcome == "hangup"
        assert not call._tasks and call._actions.time_limit is None  # no pacer, greeting or time limit
        assert not any('"media"' in text for text in socket.sent)
        events = {
            record.payload["event"]: record.payload["at"]
            for record in await services.outbox.records("CA-late")
            if record.kind == "event"
        }
        assert events["started"] <= events["ended"]
    finally:
        for task in list(call._tasks):  # the unfixed code left the pacer running
            task.cancel()
        await services.outbox.close()
