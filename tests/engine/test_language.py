"""Issue 16, items 2 and 3: a called number's language, voice and system prompt reach the STT engine, the
TTS engine and the backend of that call (and of no other), from the backend's answer or the config's
[numbers] table; "auto" keeps the first language detected."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import BudgetBackend, FakeBackend, FakeSocket, FakeSTT, FakeTTS
from tests.engine.harness import build_services, engine_settings, open_call, until, voice
from voicebridge.backends.base import BusinessSettings
from voicebridge.call.session import StreamSession
from voicebridge.sim.providers import ExotelCaller
from voicebridge.speech.base import Voice

HINDI = BusinessSettings(
    voice="hi-IN-SwaraNeural", language="hi-IN", system_prompt="You are the clinic's Hindi receptionist."
)


async def test_a_business_language_voice_and_prompt_reach_the_engines_and_backend(
    open_engine: OpenEngine, stt: FakeSTT, tts: FakeTTS, backend: FakeBackend
) -> None:
    engine = await open_engine(business=HINDI)
    await engine.listening()
    await engine.say()
    await engine.until(lambda: backend.requests and tts.spoken, "the reply")
    await engine.listening()
    assert stt.languages == ["hi-IN"]
    assert tts.voices == [Voice("hi-IN-SwaraNeural", "hi-IN")]
    assert backend.requests[0].call is not None
    assert backend.requests[0].call.system_prompt == HINDI.system_prompt


async def test_without_business_settings_the_config_defaults_apply(
    open_engine: OpenEngine, stt: FakeSTT, tts: FakeTTS, backend: FakeBackend
) -> None:
    engine = await open_engine(
        {"stt": {"language": "en-IN"}, "tts": {"voices": {"en": "en-IN-NeerjaNeural"}}}
    )
    await engine.listening()
    await engine.say()
    await engine.until(lambda: bool(tts.spoken), "the reply")
    await engine.listening()
    assert stt.languages == ["en-IN"]
    assert tts.voices == [Voice("en-IN-NeerjaNeural", "en-IN")]  # by language, from tts.voices
    assert backend.requests[0].call is not None and backend.requests[0].call.system_prompt == ""


async def test_auto_detects_on_the_first_turn_and_keeps_it(
    open_engine: OpenEngine, stt: FakeSTT, tts: FakeTTS
) -> None:
    stt.hear("namaste", language="hi")
    stt.hear("theek hai", language="en")  # a later turn's own guess does not change the call's language
    engine = await open_engine({"stt": {"language": "auto"}, "tts": {"voices": {"hi": "hi-IN-SwaraNeural"}}})
    await engine.listening()
    for _ in range(2):
        await engine.say()
        await engine.until(lambda: len(tts.spoken) == len(stt.finished), "the reply")
        await engine.listening()
    assert stt.languages == ["auto", "hi"]
    assert tts.voices == [Voice("hi-IN-SwaraNeural", "hi")] * 2


async def test_a_malformed_business_language_or_voice_is_ignored(
    open_engine: OpenEngine, stt: FakeSTT, tts: FakeTTS
) -> None:
    engine = await open_engine(business=BusinessSettings(language="hi IN<script>", voice="/etc/passwd"))
    await engine.listening()
    await engine.say()
    await engine.until(lambda: bool(tts.spoken), "the reply")
    await engine.listening()
    assert stt.languages == ["en"] and tts.voices == [Voice("", "en")]


async def test_per_number_tables_apply_without_a_node_backend(tmp_path: Path) -> None:
    """The stream session looks the called number up in [numbers]; another number gets the defaults."""
    numbers = {
        "+918047491899": {
            "language": "hi-IN",
            "voice": "hi-IN-SwaraNeural",
            "system_prompt": "Speak Hindi.",
            "greeting": "Namaste.",
        }
    }
    stt, tts, backend = FakeSTT(), FakeTTS(), FakeBackend()  # no BusinessLookup: no node backend
    settings = engine_settings(tmp_path, numbers=numbers)
    services = await build_services(settings, stt, tts, backend, tmp_path / "o.db")
    caller = ExotelCaller("CA-num", "SS-num")
    assert caller.to_number == "+918047491899"
    socket = FakeSocket()
    session = StreamSession(services, socket, "CA-num", 8000)  # type: ignore[arg-type]
    for text in (caller.connected(), caller.start()):
        socket.incoming.put_nowait(text)
    running = asyncio.create_task(session.run())
    try:
        await until(lambda: session._call is not None and "Namaste." in tts.spoken, "the number's greeting")
        assert tts.voices[tts.spoken.index("Namaste.")] == Voice("hi-IN-SwaraNeural", "hi-IN")
        for _ in range(40):
            socket.incoming.put_nowait(caller.media(voice(0.02)))
        for _ in range(30):
            socket.incoming.put_nowait(caller.media(b"\x00\x00" * 160))
        await until(lambda: bool(backend.requests), "the caller's turn answered")
        assert stt.languages == ["hi-IN"]
        assert (
            backend.requests[0].call is not None and backend.requests[0].call.system_prompt == "Speak Hindi."
        )
    finally:
        socket.incoming.put_nowait(caller.stop())
        await running
        await services.outbox.close()


async def test_the_backend_answer_wins_over_the_number_table_field_by_field(tmp_path: Path) -> None:
    numbers = {
        "+918047491899": {"language": "hi-IN", "voice": "hi-IN-SwaraNeural", "transfer_number": "+911"}
    }
    backend = BudgetBackend(businesses={"+918047491899": BusinessSettings(voice="hi-IN-MadhurNeural")})
    stt, tts = FakeSTT(), FakeTTS()
    services = await build_services(
        engine_settings(tmp_path, numbers=numbers), stt, tts, backend, tmp_path / "o"
    )
    found = await services.business.settings_for("+918047491899")
    assert found == BusinessSettings(voice="hi-IN-MadhurNeural", language="hi-IN", transfer_number="+911")
    assert await services.business.settings_for("+910000000000") is None
    engine = await open_call(services, stt, tts, backend, business=found)
    try:
        assert engine.call.profile.voice == Voice("hi-IN-MadhurNeural", "hi-IN")
    finally:
        await engine.call.finish("completed")
        await services.outbox.close()
