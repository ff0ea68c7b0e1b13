"""No dead air and false interruptions over the wire (issue 16, items 4 and 5), with a real daemon, real
Whisper and Piper, and the business API fake taking the records:
- a silent caller hears the re-prompt twice, then goodbye; the call ends `no_input` and its records arrive;
- a backend that takes 2 s to answer: the filler plays once, then the reply;
- a 400 ms burst of noise over a reply resumes it from the cut sentence, and the caller hears the rest;
  an interruption with words still cancels and clears."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.fakes.node_api import FakeNodeApi
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon

pytestmark = pytest.mark.e2e

RATE = 8000
Transcribe = Callable[[bytes, int], str]


@asynccontextmanager
async def node_daemon(
    tmp_path: Path, backend: FakeNodeApi, sections: dict[str, dict[str, Any]] | None = None
) -> AsyncIterator[DaemonProcess]:
    overrides: dict[str, dict[str, Any]] = {
        "prompts": {"greeting": "Hello."},
        "backend": {"kind": "node", "url": backend.url, "api_key": "k"},
        "outbox": {"retry_base_s": 0.2, "retry_cap_s": 1.0},
    }
    for name, keys in (sections or {}).items():
        overrides.setdefault(name, {}).update(keys)
    # start_daemon polls synchronously: in a thread, so this loop keeps serving the fake.
    daemon = await asyncio.to_thread(start_daemon, tmp_path, overrides)
    try:
        yield daemon
    finally:
        daemon.terminate()


async def metric(http: str, pattern: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as response:
        found = re.search(pattern + r" ([0-9.e+-]+)", await response.text())
    return float(found.group(1)) if found else 0.0


async def record(backend: FakeNodeApi, call_sid: str, kind: str, timeout: float = 30.0) -> dict[str, Any]:
    """The call's delivered record of one kind (keys are `<sid>:<call id>:<kind>`)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            body
            for key, body in backend.records.items()
            if key.startswith(f"{call_sid}:") and key.split(":", 2)[2] == kind
        ]
        if found:
            body: dict[str, Any] = found[0]
            return body
        assert time.monotonic() < deadline, sorted(backend.records)
        await asyncio.sleep(0.2)


def words(text: str) -> str:
    """Lower case, without punctuation; Whisper writes numbers as digits ("at 9")."""
    return re.sub(r"[^a-z0-9 ]", "", text.lower())


async def heard_until(
    caller: SimulatedCaller, since: float, transcribe: Transcribe, ending: str, timeout: float = 25
) -> str:
    """What the caller heard since `since`, once it ends with `ending` (polled: the reply plays in real
    time)."""
    deadline = time.monotonic() + timeout
    while not (heard := words(transcribe(caller.log.audio_between(since), RATE))).endswith(ending):
        assert time.monotonic() < deadline, heard
        await asyncio.sleep(0.5)
    return heard


async def test_a_silent_caller_is_reprompted_twice_then_the_call_ends_no_input(
    tmp_path: Path, transcribe: Transcribe
) -> None:
    async with (
        FakeNodeApi(api_key="k") as backend,
        node_daemon(tmp_path, backend, {"turn": {"reprompt_after_s": 1.5, "max_reprompts": 2}}) as daemon,
    ):
        async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-silent", call_sid="CA-silent") as caller:
            greeted = await caller.listen_until_mark(timeout=30)
            assert greeted is not None, daemon.log()
            silence = asyncio.create_task(caller.keep_silent(30))
            try:
                async with asyncio.timeout(30):
                    await caller.closed.wait()  # the daemon ends the call, not the caller
            finally:
                silence.cancel()
        heard = words(transcribe(caller.log.audio_between(greeted + 0.001), RATE))
        assert heard.count("still there") == 2, heard
        assert heard.rindex("goodbye") > heard.rindex("still there"), heard
        ended = await record(backend, "CA-silent", "event:ended")
        assert ended["outcome"] == "no_input"
        conversation = await record(backend, "CA-silent", "conversation")
        assert [turn["role"] for turn in conversation["turns"]] == ["bot"] * 4  # greeting, 2 re-prompts, bye
        assert not backend.seen("/messages")  # nothing was said, so nothing was asked
        assert await metric(daemon.http, r"voicebridge_reprompts_total") == 2


async def test_a_slow_backend_gets_the_filler_once_then_the_reply(
    tmp_path: Path, speak: Callable[[str, int], bytes], transcribe: Transcribe
) -> None:
    async with (
        FakeNodeApi(api_key="k", reply_delay=2.0) as backend,
        node_daemon(tmp_path, backend, {"backend": {"filler_after_ms": 1200}}) as daemon,
    ):
        async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-slow", call_sid="CA-slow") as caller:
            await caller.listen_until_mark(timeout=30)
            spoken_at = await caller.say(
                speak("What time do you open on Sunday?", RATE), trailing_silence_s=12
            )
            heard = await heard_until(caller, spoken_at, transcribe, "anything else")
            await caller.stop()
        assert heard.count("one moment") == 1, heard
        # By "open at": the caller-side Whisper writes "we"/"we'd" and "9"/"nine" either way.
        assert heard.index("one moment") < heard.index("open at"), heard
        assert await metric(daemon.http, r"voicebridge_fillers_total") == 1


# Three sentences of about three seconds each, so a burst lands inside the first and the rest is long.
SENTENCES = [
    "Our shop opens at nine in the morning on every weekday of the year.",
    "On Sunday we open a little later, at eleven, and close at five.",
    "Public holidays follow the Sunday hours unless we say otherwise.",
]


def noise_burst(seconds: float) -> bytes:
    """A cough-like burst: loud, voiced-sounding buzz with no words in it."""
    t = np.arange(int(RATE * seconds)) / RATE
    wave = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (wave * swell * 6000).astype("<i2").tobytes()


async def reply_playing(caller: SimulatedCaller, since: float, seconds: float) -> float:
    """Wait until `seconds` of the reply after `since` have been received; when that happened."""
    deadline = time.monotonic() + 20
    while len(caller.log.audio_between(since)) < seconds * RATE * 2:
        assert time.monotonic() < deadline, "the reply never played"
        await asyncio.sleep(0.05)
    return time.monotonic()


async def test_a_noise_burst_resumes_the_reply_and_words_still_cancel_it(
    tmp_path: Path, speak: Callable[[str, int], bytes], transcribe: Transcribe
) -> None:
    async with (
        FakeNodeApi(api_key="k", deltas=[" ".join(SENTENCES)]) as backend,
        node_daemon(tmp_path, backend) as daemon,
    ):
        async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-noise", call_sid="CA-noise") as caller:
            await caller.listen_until_mark(timeout=30)
            asked = await caller.say(speak("When are you open?", RATE), trailing_silence_s=20)
            # The caller's own clock: the reply plays in real time, so 1.5 s after its first audio the
            # first sentence is still playing.
            await reply_playing(caller, asked, 0.5)
            await asyncio.sleep(1.0)
            burst_started = time.monotonic()
            await caller.say(noise_burst(0.4), trailing_silence_s=12)
            # The burst's 300 ms of "speech" is a barge-in; its clear may come with its last chunk.
            deadline = time.monotonic() + 2
            while not caller.log.clears:
                assert time.monotonic() < deadline, daemon.log()
                await asyncio.sleep(0.02)
            assert caller.log.clears[-1] >= burst_started
            rest = await heard_until(caller, caller.log.clears[-1], transcribe, "say otherwise")
            # Resumed from the start of the cut sentence: the caller hears it and both that follow.
            # The third by "sunday hours": the caller-side Whisper once heard "holidays" as "callabays".
            assert rest.startswith("our shop opens at 9") and "at 11" in rest and "sunday hours" in rest, rest
            assert await metric(daemon.http, r"voicebridge_false_interruptions_total") == 1
            assert len(backend.seen("/messages")) == 1

            # Words over the reply: cancelled and cleared, and the backend is asked the new question.
            await caller.end_trailing_silence()
            asked = await caller.say(speak("And on Saturday?", RATE), trailing_silence_s=20)
            await reply_playing(caller, asked, 0.5)
            await asyncio.sleep(0.5)
            clears = len(caller.log.clears)
            await caller.say(speak("Wait, do you deliver to my area?", RATE), trailing_silence_s=12)
            deadline = time.monotonic() + 20
            while len(backend.seen("/messages")) < 3:
                assert time.monotonic() < deadline, daemon.log()
                await asyncio.sleep(0.2)
            assert len(caller.log.clears) > clears
            assert "deliver" in backend.seen("/messages")[-1].body["text"].lower()
            await caller.stop()
        assert await metric(daemon.http, r"voicebridge_false_interruptions_total") == 1
