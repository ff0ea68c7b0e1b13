"""#14.15: mark names are unique and unguessable; a wrong, stale or empty echo never ends a reply."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.engine.fakes import FakeBackend
from tests.engine.harness import Engine, until


async def test_every_mark_is_unique_and_unguessable(engine: Engine) -> None:
    for _ in range(2):
        await engine.say()
        await engine.listening()
    marks = engine.wire.marks()
    assert len(marks) == 3 and len(set(marks)) == 3
    assert all(re.fullmatch(r"[a-z]+-[0-9a-f]{32}", mark) for mark in marks), marks


@pytest.mark.parametrize("echo", ["", "reply-1", "reply-2", "greeting-1", "greeting"])
async def test_a_wrong_echo_does_not_end_a_running_reply(
    engine: Engine, backend: FakeBackend, echo: str
) -> None:
    held = asyncio.Event()
    backend.answer("Let me check that for you. ", " It takes a moment.", hold=held)
    await engine.say()
    await engine.until(lambda: engine.call.state == "speaking", "the reply playing")
    engine.call.on_mark(echo)
    engine.call.on_mark(engine.wire.marks()[0])  # the greeting's, echoed again
    assert engine.call.state == "speaking" and engine.call._reply is not None
    await engine.say()  # the caller talks over it: one reply replaces the other, never two at once
    held.set()
    await engine.listening()
    assert backend.most_open == 1 and len(backend.requests) == 2


@pytest.mark.parametrize("echo", ["", "reply-1", "greeting", "stale", None, 42])
async def test_a_wrong_echo_after_the_mark_was_sent_does_not_end_the_reply(
    engine: Engine, echo: object
) -> None:
    """The reply is all queued and its mark is out; the echo is held back, and a wrong one arrives first."""
    engine.wire.echo_marks = False
    await engine.say()
    await until(
        lambda: engine.call._reply is not None and engine.call._reply.mark in engine.wire.marks(),
        "the reply's mark sent",
    )
    reply = engine.call._reply
    assert reply is not None
    stale = engine.wire.marks()[0]  # the greeting's, already echoed once
    engine.call.on_mark(stale if echo == "stale" else echo)  # type: ignore[arg-type]
    assert engine.call._reply is reply and not reply.played.is_set()
    assert engine.call.state == "speaking"
    engine.call.on_mark(reply.mark)  # the right echo, late
    assert reply.played.is_set() and engine.call.state == "listening"
