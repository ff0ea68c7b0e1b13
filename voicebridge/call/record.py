"""What a call leaves behind: its records in the outbox (`started` from admission; `ended`, cost and the
conversation at its end), its local recording, and the entry the registry keeps of it once finished."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from voicebridge.admission.registry import LiveCall
from voicebridge.call.basics import CallBasics
from voicebridge.call.conversation import Entry
from voicebridge.call.pacer import OutboundPacer
from voicebridge.call.services import CallServices
from voicebridge.records.call_records import CallRecord, CallRecorder
from voicebridge.records.recording import StereoCallRecording

# One step of the teardown: what it does (for the log line when it fails), and the step.
TeardownStep = tuple[str, Callable[[], Awaitable[None]]]


async def each_step(
    steps: list[TeardownStep], last: Callable[[], None], failed: Callable[[str, Exception], None]
) -> None:
    """Each step runs even if the one before it raised or the teardown was cancelled meanwhile; `last`
    runs whatever happened. A step that raises is reported to `failed` with what it was doing."""
    if not steps:
        last()
        return
    (what, step), rest = steps[0], steps[1:]
    try:
        await step()
    except Exception as exc:
        failed(what, exc)
    finally:
        await each_step(rest, last, failed)


class CallRecords:
    """One call's records; the teardown runs their steps, each guarded on its own."""

    def __init__(self, services: CallServices, call: CallBasics) -> None:
        self._s = services
        start = self._start = call.start
        self._usage = call.usage
        self._conversation = call.conversation
        self._log = call.log
        self._recorder = CallRecorder(services.outbox, services.settings, call.info)
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        loop = asyncio.get_running_loop()
        self.recording = (
            StereoCallRecording(start.sample_rate, loop.time())
            if services.settings.calls.record_locally
            else None
        )
        self._started: asyncio.Future[None] | None = None
        self._local_recording = ""
        # Outbound calls: who answered, set by the answering-machine step (call/answering.py).
        self.answered_by = ""
        self._answered: asyncio.Future[None] | None = None

    def seconds(self) -> float:
        """How long the call has lasted so far."""
        return time.monotonic() - self._started_mono

    def snapshot(self, state: str) -> dict[str, Any]:
        """What `calls list` shows of the live call."""
        return {
            "call_sid": self._start.call_sid,
            "provider": self._start.provider,
            "from": self._start.from_number,
            "to": self._start.to_number,
            "state": state,
            "duration_s": round(self.seconds(), 1),
            "turns": self._conversation.turns,
            "last_caller_text": self._conversation.last_caller_text,
            "sample_rate": self._start.sample_rate,
            "context": dict(self._start.context),
            "direction": self._start.direction,
        }

    def open(self) -> None:
        """Written from the moment the call is live, without holding up its greeting; teardown waits for it,
        so `started` always precedes `ended` even when the call ends while its greeting is being rendered."""
        self._started = asyncio.ensure_future(self._recorder.started())

    def answered(self, answered_by: str, decision_s: float, reason: str) -> None:
        """The verdict is in: kept for the `ended` records, and its `answered` event written after `started`
        (teardown waits for it, so it always precedes `ended`). A later verdict (the provider's, correcting
        ours) is an `answered` event of its own, after the first: the events say what the call believed
        when, and the `ended` records the final verdict."""
        self.answered_by = answered_by
        earlier, correction = self._answered, self._answered is not None

        async def write() -> None:
            await (earlier if earlier is not None else self.started())
            await self._recorder.answered(answered_by, decision_s, reason, correction)

        self._answered = asyncio.ensure_future(write())

    async def started(self) -> None:
        """Wait for the call's `started` event (written from admission) to be durably in the outbox."""
        if self._started is not None:
            await asyncio.shield(self._started)

    async def keep(
        self, first: list[TeardownStep], outcome: str, call: LiveCall, admitted: bool, pacer: OutboundPacer
    ) -> None:
        """The teardown's steps: the call's `first`, then those that keep the records, then the release from
        the live list, each guarded on its own (a failure is counted and logged, and the next step runs)."""
        steps: list[TeardownStep] = [
            *first,
            ("storing the call's start", self._timed_start),
            ("saving the recording", self._save_recording),
            # Stored before the call leaves the live list: whoever sees it gone can rely on its records.
            (
                "storing the call's records",
                lambda: self._recorder.ended(
                    outcome,
                    self._usage,
                    self._entries(),
                    started_at=self.started_at,
                    recording_path=self._local_recording,
                    answered_by=self.answered_by,
                ),
            ),
        ]
        await each_step(steps, partial(self._release, call, outcome, admitted, pacer), self.teardown_failed)

    def teardown_failed(self, step: str, exc: Exception) -> None:
        self._s.metrics.errors.labels(kind="teardown").inc()
        self._log.error("call teardown: %s failed: %s: %.200s", step, type(exc).__name__, exc)

    def _release(self, call: LiveCall, outcome: str, admitted: bool, pacer: OutboundPacer) -> None:
        try:
            self._move_to_finished(call, outcome, admitted, pacer)
        except Exception as exc:
            self.teardown_failed("moving the call to the finished list", exc)

    def _move_to_finished(self, call: LiveCall, outcome: str, admitted: bool, pacer: OutboundPacer) -> None:
        """The call leaves the live list for the finished one; raises what the registry raised."""
        # Uncounted first: whatever fails below, the gauge stays balanced.
        if admitted:
            self._s.metrics.calls_active.dec()
        self._s.metrics.calls_total.labels(outcome=outcome, provider=self._start.provider).inc()
        self._log.info(
            "call ended: outcome=%s duration=%.1fs turns=%d frames_out=%d late=%d",
            outcome,
            self._usage.duration_s,
            self._conversation.turns,
            pacer.frames_sent,
            pacer.late_frames,
        )
        record = CallRecord(
            call_sid=self._start.call_sid,
            provider=self._start.provider,
            from_number=self._start.from_number,
            to_number=self._start.to_number,
            context=dict(self._start.context),
            direction=self._start.direction,
            started_at=self.started_at,
            ended_at=time.time(),
            duration_s=round(self._usage.duration_s, 3),
            turns=self._conversation.turns,
            outcome=outcome,
            transcript=self._entries(),
            local_recording=self._local_recording,
            answered_by=self.answered_by,
        )
        self._s.registry.finish(call, record)

    def _entries(self) -> list[Entry]:
        return list(self._conversation.entries)

    async def _timed_start(self) -> None:
        self._usage.duration_s = self.seconds()
        await self.started()  # `ended` never goes in before `started`
        if self._answered is not None:  # nor before `answered`
            await asyncio.shield(self._answered)

    async def _save_recording(self) -> None:
        if self.recording is None:
            return
        directory = self._s.settings.state_path() / "recordings"
        try:
            path = await self.recording.save(directory, self._start.call_sid)
        except OSError as exc:
            self._log.error("could not write the call recording to %s: %s", directory, exc)
            return
        self._log.info("recording saved to %s", path)
        self._local_recording = str(path)
