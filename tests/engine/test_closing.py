"""#14 review 3 and 4: once a transfer or goodbye is under way no new reply starts, and nothing is sent to the
provider for a call the caller already hung up; when we end the call, the provider is told."""

from __future__ import annotations

import asyncio

import pytest

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import FakeBackend, FakeSTT, FakeTTS
from tests.engine.harness import Engine, ProviderCalls, quiet, until, voice

# A closing line long enough (about 1 s) to talk over, or to hang up during.
LONG = "Please hold while I put you through to a colleague of mine, it will only take a moment."


async def closing_call(open_engine: OpenEngine) -> Engine:
    """A listening call whose transfer and goodbye lines are long, and whose marks are not echoed: each line
    lasts until its audio ran out plus the mark grace."""
    engine = await open_engine({"prompts": {"transfer": LONG, "goodbye": LONG}})
    await engine.listening()
    engine.wire.echo_marks = False
    return engine


def line_sent(engine: Engine, kind: str) -> bool:
    return any(mark.startswith(f"{kind}-") for mark in engine.wire.marks())


async def test_the_caller_talking_during_the_transfer_line_starts_no_reply(
    open_engine: OpenEngine, stt: FakeSTT, backend: FakeBackend
) -> None:
    engine = await closing_call(open_engine)
    transferring = asyncio.create_task(
        engine.services.registry.transfer(engine.call.call_sid, "+919800000009")
    )
    await until(lambda: line_sent(engine, "transfer"), "the transfer line")
    await engine.feed(voice(0.4) + quiet(0.3))  # a whole turn, talking over the line
    transfer_mark = next(mark for mark in engine.wire.marks() if mark.startswith("transfer-"))
    engine.call.on_mark(transfer_mark)  # the provider played the line to its end
    await transferring
    assert backend.requests == [] and stt.calls == []
    assert not any(mark.startswith("reply-") for mark in engine.wire.marks())
    assert engine.call.outcome == "transferred" and engine.history[-1] == ("bot", LONG)
    assert engine.metric("voicebridge_barge_ins_total") == 0  # the line played to its end


async def test_a_keypad_entry_during_the_goodbye_is_logged_but_neither_cuts_nor_answered(
    open_engine: OpenEngine, backend: FakeBackend
) -> None:
    engine = await closing_call(open_engine)
    ending = asyncio.create_task(engine.call.end_for_shutdown())
    await until(lambda: line_sent(engine, "goodbye"), "the goodbye line")
    for digit in "42#":
        await engine.call.on_dtmf(digit)
    goodbye_mark = next(mark for mark in engine.wire.marks() if mark.startswith("goodbye-"))
    engine.call.on_mark(goodbye_mark)
    await ending
    assert backend.requests == [] and engine.metric("voicebridge_barge_ins_total") == 0
    assert engine.history[-1] == ("bot", LONG) and engine.call.outcome == "shutdown"
    assert [entry["dtmf"] for entry in engine.call.conversation.entries if "dtmf" in entry] == ["4", "2", "#"]


async def test_a_digit_timeout_answer_never_runs_alongside_a_speech_reply(
    engine: Engine, stt: FakeSTT, backend: FakeBackend, tts: FakeTTS
) -> None:
    """The keypad entry's quiet timeout fires while a reply plays; while that reply is slow to stop, the
    caller speaks a turn and a new reply starts. The entry's answer must take its place, not run beside it."""
    tts.holds["Held"] = asyncio.Event()  # every reply here plays its first half, then waits for good
    tts.cancel_hold = letting_go = asyncio.Event()
    backend.answer("Held first answer, a long one.")
    backend.answer("Held second answer, a long one.")
    stt.hear("first question")
    stt.hear("second question")
    await engine.call.on_dtmf("4")  # an entry begins: it completes on '#', a count or the quiet timeout
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the first reply playing")
    engine.call._keypad.expire()  # the entry's quiet timeout fires
    await until(lambda: tts.cancelled == 1, "the first reply being stopped")
    await engine.say()  # meanwhile the caller speaks, and a second reply starts
    await engine.until(lambda: len(tts.spoken) == 2, "the second reply playing")
    letting_go.set()
    await engine.listening()
    assert [request.kind for request in backend.requests] == ["reply", "reply", "digits"]
    assert tts.cancelled == 2  # the second reply was stopped too, not left running beside the entry's
    assert [task.get_name() for task in engine.call._tasks] == ["CA-engine:pacer"]
    assert engine.history[-1] == ("bot", "You said 4.")


@pytest.mark.parametrize("way", ["transfer", "goodbye"])
async def test_nothing_goes_to_the_provider_when_the_caller_hangs_up_during_the_line(
    open_engine: OpenEngine, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    engine = await closing_call(open_engine)
    provider = ProviderCalls(engine, monkeypatch)
    if way == "transfer":
        closing = engine.services.registry.transfer(engine.call.call_sid, "+919800000009")
    else:
        closing = engine.call.end_for_shutdown()
    ending = asyncio.create_task(closing)
    await until(lambda: line_sent(engine, way), f"the {way} line")
    await engine.call.finish("completed")  # the caller hung up: the stream ended
    await ending
    assert provider.transfers == [] and provider.hang_ups == 0
    assert engine.call.outcome == "completed"


@pytest.mark.parametrize("way", ["transfer", "goodbye", "hangup"])
async def test_the_provider_is_told_when_we_end_the_call(
    open_engine: OpenEngine, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    engine = await open_engine()
    await engine.listening()
    provider = ProviderCalls(engine, monkeypatch)
    if way == "transfer":
        await engine.services.registry.transfer(engine.call.call_sid, "+919800000009")
        assert provider.transfers == ["+919800000009"] and provider.hang_ups == 0
    else:
        await (engine.call.end_for_shutdown() if way == "goodbye" else engine.call.hangup())
        assert provider.hang_ups == 1 and provider.transfers == []
    assert engine.wire.closed


async def test_a_transfer_asked_during_the_goodbye_names_no_destination(open_engine: OpenEngine) -> None:
    """Exotel's Connect applet asks where to dial once the stream closes: a transfer that does not go ahead
    must not leave a destination behind."""
    engine = await closing_call(open_engine)
    ending = asyncio.create_task(engine.call.end_for_shutdown())
    await until(lambda: line_sent(engine, "goodbye"), "the goodbye line")
    transferring = asyncio.create_task(
        engine.services.registry.transfer(engine.call.call_sid, "+919800000009")
    )
    engine.call.on_mark(next(mark for mark in engine.wire.marks() if mark.startswith("goodbye-")))
    await asyncio.gather(ending, transferring)
    assert engine.call.outcome == "shutdown"
    assert engine.services.registry.facts.transfer_destination(engine.call.call_sid) is None


async def test_a_transfer_whose_requester_went_away_still_completes(
    open_engine: OpenEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The management request that asked for the transfer is cancelled mid-line (its client went away):
    the call must not be left half-closed, saying nothing and answering nothing."""
    engine = await closing_call(open_engine)
    provider = ProviderCalls(engine, monkeypatch)
    transferring = asyncio.create_task(
        engine.services.registry.transfer(engine.call.call_sid, "+919800000009")
    )
    await until(lambda: line_sent(engine, "transfer"), "the transfer line")
    transferring.cancel()
    await asyncio.gather(transferring, return_exceptions=True)
    engine.call.on_mark(next(mark for mark in engine.wire.marks() if mark.startswith("transfer-")))
    await until(lambda: engine.wire.closed, "the stream closed")
    assert engine.call.outcome == "transferred" and provider.transfers == ["+919800000009"]


async def test_the_drain_waits_for_a_transfer_under_way(open_engine: OpenEngine) -> None:
    engine = await closing_call(open_engine)
    registry = engine.services.registry
    transferring = asyncio.create_task(registry.transfer(engine.call.call_sid, "+919800000009"))
    await until(lambda: line_sent(engine, "transfer"), "the transfer line")
    draining = asyncio.create_task(registry.drain(0))
    await until(lambda: registry.draining, "the drain")
    engine.call.on_mark(next(mark for mark in engine.wire.marks() if mark.startswith("transfer-")))
    await draining
    record = registry.finished(engine.call.call_sid)
    assert record is not None and record.outcome == "transferred"
    await transferring
