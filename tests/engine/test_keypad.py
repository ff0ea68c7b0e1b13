"""DTMF: a keypress interrupts the bot; an entry completes on '#', a digit count or its quiet timeout."""

from __future__ import annotations

import asyncio

from tests.engine.fakes import FakeBackend
from tests.engine.harness import Engine


async def test_a_keypress_while_the_bot_speaks_interrupts_it(engine: Engine, backend: FakeBackend) -> None:
    backend.answer("A long answer that takes a while to play. " * 6)
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    await engine.call.on_dtmf("5")
    assert engine.call.state == "listening" and engine.wire.kinds()[-1] == "clear"
    assert engine.metric("voicebridge_barge_ins_total") == 1
    await engine.call.on_dtmf("#")
    await engine.listening()
    assert [(r.kind, r.text) for r in backend.requests] == [("reply", "hello there"), ("digits", "5")]
    assert engine.history[-1] == ("bot", "You said 5.")


async def test_an_entry_ends_at_its_quiet_timeout(engine: Engine, backend: FakeBackend) -> None:
    engine.call._keypad.collector.timeout_s = 0.1
    for digit in "78":
        await engine.call.on_dtmf(digit)
    assert backend.requests == []
    await engine.until(lambda: len(backend.requests) == 1, "the entry's timeout")
    await engine.listening()
    assert (backend.requests[0].kind, backend.requests[0].text) == ("digits", "78")
    assert engine.history[-2:] == [("caller", "[keypad] 78"), ("bot", "You said 78.")]


async def test_a_terminator_with_nothing_entered_is_no_entry(engine: Engine, backend: FakeBackend) -> None:
    await engine.call.on_dtmf("#")
    await engine.say()
    await engine.listening()
    assert [request.kind for request in backend.requests] == ["reply"]
    assert [entry["dtmf"] for entry in engine.call.conversation.entries if "dtmf" in entry] == ["#"]


async def test_each_keypress_restarts_the_quiet_timeout(engine: Engine, backend: FakeBackend) -> None:
    engine.call._keypad.collector.timeout_s = 0.5
    await engine.call.on_dtmf("7")
    await asyncio.sleep(0.3)
    await engine.call.on_dtmf("8")
    await asyncio.sleep(0.3)  # past the first key's timeout, within the second's: the entry is still open
    assert backend.requests == []
    await engine.until(lambda: len(backend.requests) == 1, "the entry's timeout")
    assert (backend.requests[0].kind, backend.requests[0].text) == ("digits", "78")


async def test_an_entry_replaced_before_its_reply_ran_is_still_counted(engine: Engine) -> None:
    # Counted (and its history taken) when the entry is made, as before the split: the second entry
    # cancels the first's reply before that reply's task ever ran.
    engine.call._keypad.collector.max_digits = 1
    await engine.call.on_dtmf("1")
    await engine.call.on_dtmf("2")
    await engine.listening()
    await engine.call.finish("completed")
    assert engine.call.usage.ai_requests == 2
