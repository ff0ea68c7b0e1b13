"""#14.10: nothing the provider sends after the call ended starts work."""

from __future__ import annotations

from tests.engine.fakes import FakeBackend, FakeSTT
from tests.engine.harness import Engine, quiet, voice


async def test_audio_dtmf_and_marks_after_the_end_are_ignored(
    engine: Engine, stt: FakeSTT, backend: FakeBackend
) -> None:
    await engine.call.hangup()
    transcript = list(engine.call.conversation.entries)
    frames = len(engine.wire.frames)
    for _ in range(2):
        for offset in range(0, 16000, 320):
            await engine.call.on_audio((voice(0.5) + quiet(0.5))[offset : offset + 320])
        await engine.call.on_dtmf("5")
        await engine.call.on_dtmf("#")
        engine.call.on_mark("")
    assert not engine.call._tasks and stt.calls == [] and backend.requests == []
    assert engine.call.conversation.entries == transcript and len(engine.wire.frames) == frames
    assert engine.call.state == "ended"


async def test_a_transfer_after_the_end_says_nothing_and_moves_nothing(engine: Engine) -> None:
    await engine.call.hangup()
    frames = len(engine.wire.frames)
    await engine.call.transfer("+919800000009")
    assert len(engine.wire.frames) == frames and engine.call.outcome == "hangup"
    assert engine.history[-1] != ("bot", "Transferring.")
