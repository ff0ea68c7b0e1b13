"""One phone call: the listening → thinking → speaking state machine, its tasks, and its single teardown.

Caller audio arrives as internal events (the provider translators did the wire work), goes through the
per-call turn detector, and each finished turn runs one reply task: STT on the shared engine → backend →
TTS sentence by sentence → the outbound pacer. The reply task may start speculatively when the caller
pauses; it is committed when the pause becomes the end of the turn, and discarded if speech resumes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any

from voicebridge.admission.gate import CallGate
from voicebridge.admission.load_guard import OverloadGuard
from voicebridge.admission.registry import CallRegistry
from voicebridge.audio.turn import (
    DETECTOR_RATE,
    PauseStarted,
    SpeechResumed,
    SpeechSustained,
    TurnDetector,
    TurnEnded,
    detector_ingress,
)
from voicebridge.backends.base import (
    Backend,
    BackendError,
    BusinessSettings,
    CallInfo,
    ConversationTurn,
    ReplyAction,
)
from voicebridge.backends.business import BusinessDirectory
from voicebridge.call.digits import DigitCollector
from voicebridge.call.pacer import OutboundPacer
from voicebridge.call.phrases import PhraseCache
from voicebridge.call.sentences import SentenceSplitter, heard_text
from voicebridge.config.schema import Settings
from voicebridge.records.call_records import CallRecord, CallRecorder
from voicebridge.records.costs import CallUsage
from voicebridge.records.outbox import Outbox
from voicebridge.records.recording import StereoCallRecording
from voicebridge.server.metrics import Metrics
from voicebridge.speech.base import SpeechEngineError, SpeechToText, TextToSpeech, Transcript
from voicebridge.telephony.base import CallControl, Translator
from voicebridge.telephony.events import Start

logger = logging.getLogger("voicebridge.call")

# What the conversation log says the caller said when speech recognition failed on their turn.
UNRECOGNISED = "[speech not recognised]"
# If a provider never echoes a mark, treat the reply as played this long after its audio ran out.
MARK_GRACE_S = 1.5
# Teardown waits this long for the call's cancelled tasks to stop before it keeps the record regardless.
TEARDOWN_WAIT_S = 5.0
# Teardown waits this long for the caller's last words still being transcribed. Short: a transcription of one
# turn takes well under a second when the engine is not overloaded, and when it is, the record (and the slot)
# must not wait on it; past this the log says the words were not transcribed instead of losing them quietly.
TRANSCRIPTION_WAIT_S = 2.0
# What the conversation log says the caller said when the call ended before their words were transcribed.
NOT_TRANSCRIBED = "[not transcribed: call ended]"


def _mark_name(kind: str) -> str:
    """A mark name no one can guess: only the provider's echo of the mark we sent can match it."""
    return f"{kind}-{secrets.token_hex(16)}"


class CallState(StrEnum):
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class CallServices:
    """The shared, long-lived things a call uses; built once per daemon and injected."""

    settings: Settings
    stt: SpeechToText
    tts: TextToSpeech
    backend: Backend
    phrases: PhraseCache
    metrics: Metrics
    registry: CallRegistry
    gate: CallGate
    telephony: CallControl
    outbox: Outbox
    business: BusinessDirectory
    load: OverloadGuard
    # Set only for `stt.model_per_call` (benchmarks): builds a call's own STT engine, model and all.
    stt_per_call: Callable[[], SpeechToText] | None = None


@dataclass(slots=True)
class _Reply:
    """The reply task of one turn and what is known of what it said."""

    # Set by _start_reply/_play_phrase right after the reply is built; None only until then.
    task: asyncio.Task[None] | None
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    played: asyncio.Event = field(default_factory=asyncio.Event)
    sentences: list[tuple[str, float]] = field(default_factory=list)
    mark: str = ""
    caller_text: str = ""
    action: ReplyAction | None = None
    # Where this reply's bot line is, in history (index) and transcript (the entry), once it plays.
    line: int = -1
    entry: dict[str, Any] | None = None
    transcription: asyncio.Future[Transcript] | None = None


class Call:
    """A live call; the stream handler feeds it events and the registry operates on it."""

    def __init__(
        self,
        start: Start,
        services: CallServices,
        translator: Translator,
        send_text: Callable[[str], Awaitable[None]],
        close_socket: Callable[[], Awaitable[None]],
        max_minutes: float | None = None,
    ) -> None:
        self.call_sid = start.call_sid
        self.start = start
        self.info = CallInfo(start.call_sid, start.provider, start.from_number, start.to_number)
        self._s = services
        self._rate = start.sample_rate
        self._close_socket = close_socket
        self.log = logging.LoggerAdapter(logger, {"call_sid": start.call_sid})
        self.state = CallState.LISTENING
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._ingress = detector_ingress(self._rate)
        self._detector = TurnDetector(services.settings.turn)
        self._loop = asyncio.get_running_loop()
        self._recording = (
            StereoCallRecording(self._rate, self._loop.time())
            if services.settings.calls.record_locally
            else None
        )
        self._pacer = OutboundPacer(
            translator,
            send_text,
            self._rate,
            services.metrics,
            self._on_first_frame,
            on_chunk=self._recording.bot if self._recording is not None else None,
        )
        self._digits = DigitCollector()
        self._digit_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reply: _Reply | None = None
        self._unanswered = ""
        # Transcriptions of committed turns the caller talked over before they were done, oldest first.
        self._carried: list[asyncio.Future[Transcript]] = []
        self._turn_ended_at = 0.0
        self.turns = 0
        self.history: list[ConversationTurn] = []
        self.transcript: list[dict[str, Any]] = []
        self.last_caller_text = ""
        self.outcome = ""
        self._ended = asyncio.Event()
        self.usage = CallUsage()
        self._backend_failures = 0
        self._recorder = CallRecorder(services.outbox, services.settings, self.info)
        # The config's 0 means "no limit"; a budget's 0 (or less) means no minutes left: goodbye at once.
        self._minute_limits = [m for m in (services.settings.calls.max_call_minutes,) if m > 0]
        if max_minutes is not None:
            self._minute_limits.append(max(0.0, max_minutes))
        self._fallback_number = services.settings.calls.fallback_number
        self._time_limit: asyncio.TimerHandle | None = None
        self._admitted = False
        self._teardown: asyncio.Future[None] | None = None
        self._started_record: asyncio.Future[None] | None = None
        # The one way out under way (a transfer, goodbye or hangup), set before its first await: from then on
        # no new reply starts. A task of its own, like the teardown: whoever asked for it may go away.
        self._closing: asyncio.Future[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def apply_business(self, business: BusinessSettings | None) -> None:
        """The called number's settings from the backend: its transfer number and call length limit."""
        if business is None:
            return
        if business.transfer_number:
            self._fallback_number = business.transfer_number
        # A business's max_call_minutes is a cap on each call's length, not a budget: 0 or less is no
        # meaningful cap (it would end every call at its greeting), so it means "not set", like the config's.
        if business.max_call_minutes is not None and business.max_call_minutes > 0:
            self._minute_limits.append(business.max_call_minutes)

    def admit(self) -> bool:
        """Take a slot in the registry; False means refuse the call. The one place a call counts as active:
        teardown uncounts it once, so the gauge stays balanced whatever happens in between."""
        if not self._s.registry.admit(self):
            return False
        self._admitted = True
        self._s.metrics.calls_active.inc()
        # Written from the moment the call is live, without holding up its greeting; teardown waits for it,
        # so `started` always precedes `ended` even when the call ends while its greeting is being rendered.
        self._started_record = asyncio.ensure_future(self._recorder.started())
        return True

    def begin(self, greeting: str = "greeting") -> None:
        """Start the pacer and play the (pre-rendered) greeting phrase at once; nothing once the call ended
        (a hangup, transfer or shutdown while the greeting was being rendered)."""
        if self.ended or self.closing:
            self.log.info("the call ended before its greeting; not starting it")
            return
        self._spawn(self._pacer.run(), "pacer")
        audio = self._s.phrases.audio(greeting, self._rate)
        if audio:
            self._play_phrase(greeting, audio)
        if self._minute_limits:
            self._time_limit = asyncio.get_running_loop().call_later(
                min(self._minute_limits) * 60,
                lambda: self._spawn(self._close(self._say_goodbye_and_end("time_limit")), "limit"),
            )

    async def record_started(self) -> None:
        """Wait for the call's `started` event (written from admission) to be durably in the outbox."""
        if self._started_record is not None:
            await asyncio.shield(self._started_record)

    async def finish(self, outcome: str) -> bool:
        """Tear the call down exactly once and completely, whatever ended it: stop its tasks, keep its
        record, free its slot. The teardown is a task of its own that every caller waits for: a caller
        cancelled meanwhile (a management request whose client went away) cannot stop it half-way, and the
        registry keeps it so that the daemon's shutdown waits for it too.

        True when this call ended it: only then does the caller go on to tell the provider (hang up,
        transfer); a call that had already ended (the caller hung up) is not the provider's to act on."""
        ours = self._teardown is None
        if ours:
            self._ended.set()
            self.outcome = outcome
            self._teardown = asyncio.ensure_future(self._tear_down(outcome, asyncio.current_task()))
            self._s.registry.track_teardown(self._teardown)
        assert self._teardown is not None
        await asyncio.shield(self._teardown)
        return ours

    async def _tear_down(self, outcome: str, requester: asyncio.Task[Any] | None) -> None:
        # Each step in a guarded block of its own: one that raises must not leave the call listening with
        # its pacer still sending, nor its record unkept.
        try:
            self._settle_conversation()
        except Exception as exc:
            self._teardown_failed("settling the conversation", exc)
        self.state = CallState.ENDED
        for timer in (self._digit_timer, self._time_limit):
            if timer is not None:
                timer.cancel()
        try:
            await self._stop_tasks(requester)
        except Exception as exc:
            self._teardown_failed("stopping the call's tasks", exc)
        finally:
            try:
                await self._settle_unanswered()
            except Exception as exc:
                self._teardown_failed("keeping the caller's last words", exc)
            finally:
                await self._keep_records(outcome)

    async def _stop_tasks(self, requester: asyncio.Task[Any] | None) -> None:
        # The task that asked for the end goes on to hang up or close the socket; the rest stop.
        doomed = [task for task in self._tasks if task is not requester]
        for task in doomed:
            task.cancel()
        if doomed:
            _, stuck = await asyncio.wait(doomed, timeout=TEARDOWN_WAIT_S)
            if stuck:
                self.log.warning("%d call task(s) still running after teardown's wait", len(stuck))

    def _settle_conversation(self) -> None:
        """What was said stays said: the line being played keeps what was heard; the words of a turn not
        yet answered (even a guess, since the call's end ends the turn) stay, transcribed or still being."""
        reply = self._reply
        if reply is not None:
            if self.state is CallState.SPEAKING:
                heard = self._pacer.progress.heard_seconds(self._loop.time())
                self._keep_heard(reply, heard, barge_in=False)
            reply.gate.set()  # no one speaks on after the end: a speculative turn is the caller's last
            self._shelve(reply)
            # Whoever waits for this reply to be heard (a transfer or goodbye line) stops waiting now.
            reply.played.set()

    async def _settle_unanswered(self) -> None:
        """The caller's words that never got an answer go into the log. Turns still being transcribed are
        waited for, within TRANSCRIPTION_WAIT_S; past that their line says so, counted, never dropped."""
        pending = [transcription for transcription in self._carried if not transcription.done()]
        if pending:
            await asyncio.wait(pending, timeout=TRANSCRIPTION_WAIT_S)
        words = [self._unanswered]
        for transcription in self._carried:
            if not transcription.done():
                transcription.cancel()
                self._s.metrics.errors.labels(kind="not_transcribed").inc()
                self.log.warning("the call ended before the caller's last words were transcribed")
                words.append(NOT_TRANSCRIBED)
            elif transcription.cancelled() or transcription.exception() is not None:
                words.append(UNRECOGNISED)
            else:
                words.append(transcription.result().text)
        self._carried.clear()
        self._unanswered = ""
        self._log_caller_words(words)

    async def _keep_records(self, outcome: str) -> None:
        """Each step runs even if the one before it raised or the teardown was cancelled meanwhile."""
        duration = time.monotonic() - self._started_mono
        self.usage.duration_s = duration
        try:
            if self._started_record is not None:
                await asyncio.shield(self._started_record)  # `ended` never goes in before `started`
        except Exception as exc:
            self._teardown_failed("storing the call's start", exc)
        finally:
            await self._keep_end_records(outcome, duration)

    async def _keep_end_records(self, outcome: str, duration: float) -> None:
        local_recording = ""
        try:
            local_recording = await self._save_recording()
        except Exception as exc:
            self._teardown_failed("saving the recording", exc)
        finally:
            try:
                # Stored before the call leaves the live list: whoever sees it gone can rely on its records.
                await self._recorder.ended(outcome, self.usage, self.transcript)
            except Exception as exc:
                self._teardown_failed("storing the call's records", exc)
            finally:
                self._release(outcome, duration, local_recording)

    def _release(self, outcome: str, duration: float, local_recording: str) -> None:
        # Uncounted first: whatever fails below, the gauge stays balanced.
        if self._admitted:
            self._s.metrics.calls_active.dec()
        self._s.metrics.calls_total.labels(outcome=outcome, provider=self.start.provider).inc()
        record = CallRecord(
            call_sid=self.call_sid,
            provider=self.start.provider,
            from_number=self.start.from_number,
            to_number=self.start.to_number,
            started_at=self.started_at,
            ended_at=time.time(),
            duration_s=round(duration, 3),
            turns=self.turns,
            outcome=outcome,
            transcript=list(self.transcript),
            local_recording=local_recording,
        )
        try:
            self._s.registry.finish(self, record)
        except Exception as exc:
            self._teardown_failed("moving the call to the finished list", exc)
        self.log.info(
            "call ended: outcome=%s duration=%.1fs turns=%d frames_out=%d late=%d",
            outcome,
            duration,
            self.turns,
            self._pacer.frames_sent,
            self._pacer.late_frames,
        )

    def _teardown_failed(self, step: str, exc: Exception) -> None:
        self._s.metrics.errors.labels(kind="teardown").inc()
        self.log.error("call teardown: %s failed: %s: %.200s", step, type(exc).__name__, exc)

    async def _save_recording(self) -> str:
        if self._recording is None:
            return ""
        directory = self._s.settings.state_path() / "recordings"
        try:
            path = await self._recording.save(directory, self.call_sid)
        except OSError as exc:
            self.log.error("could not write the call recording to %s: %s", directory, exc)
            return ""
        self.log.info("recording saved to %s", path)
        return str(path)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def closing(self) -> bool:
        """A transfer, goodbye or hangup is under way."""
        return self._closing is not None

    async def hangup(self) -> None:
        """End the call now: Exotel's flow moves on when the stream closes; Twilio is told over REST."""
        await self._close(self._end_now("hangup"))

    async def transfer(self, number: str) -> None:
        """Say the transfer line, then close the stream so the flow's Connect applet dials `number`."""
        await self._close(self._transfer(number))

    async def end_for_shutdown(self) -> None:
        """The daemon is stopping and the drain time ran out: say goodbye, then close (or wait for the
        transfer or goodbye already under way)."""
        await self._close(self._say_goodbye_and_end("shutdown"))

    async def _close(self, way_out: Coroutine[Any, Any, None]) -> None:
        """Run `way_out` unless one is under way already or the call ended; wait for the call's end either
        way. Shielded: a management request that goes away mid-line must not leave the call half-closed,
        saying nothing and answering nothing."""
        if self._closing is None and not self.ended:
            self._closing = asyncio.ensure_future(way_out)
        else:
            way_out.close()  # too late for this one: the call is over, or already on its way out
        if self._closing is not None:
            await asyncio.shield(self._closing)
        if self._teardown is not None:
            await asyncio.shield(self._teardown)

    async def _end_now(self, outcome: str) -> None:
        if await self.finish(outcome):  # else the caller hung up first: nothing to tell the provider
            await self._s.telephony.hang_up(self.start)
        await self._close_socket()

    async def _transfer(self, number: str) -> None:
        # Exotel's Connect applet asks us where to dial once the stream closes: only a transfer that goes
        # ahead names a destination.
        self._s.registry.facts.set_transfer(self.call_sid, number)
        self.log.info("transferring to %s", number)
        # Each await below can see the caller hang up: then there is no one left to transfer.
        await self._interrupt_reply()
        pcm = self._s.phrases.audio("transfer", self._rate)
        if pcm and not self.ended:
            await self._wait_reply_played(self._play_phrase("transfer", pcm))
        if await self.finish("transferred"):
            await self._s.telephony.transfer(self.start, number)
        await self._close_socket()

    async def _say_goodbye_and_end(self, outcome: str) -> None:
        self.log.info("ending the call politely: %s", outcome)
        await self._interrupt_reply()
        pcm = self._s.phrases.audio("goodbye", self._rate)
        if pcm and not self.ended:
            await self._wait_reply_played(self._play_phrase("goodbye", pcm))
        if await self.finish(outcome):  # else the caller hung up during the goodbye
            await self._s.telephony.hang_up(self.start)
        await self._close_socket()

    def snapshot(self) -> dict[str, Any]:
        """What `calls list` shows of this call."""
        return {
            "call_sid": self.call_sid,
            "provider": self.start.provider,
            "from": self.start.from_number,
            "to": self.start.to_number,
            "state": str(self.state),
            "duration_s": round(time.monotonic() - self._started_mono, 1),
            "turns": self.turns,
            "last_caller_text": self.last_caller_text,
            "sample_rate": self._rate,
        }

    # --- inbound events ------------------------------------------------------------------------

    async def on_audio(self, pcm16: bytes) -> None:
        """Caller audio at the stream's rate: run turn detection and act on what it says."""
        self._s.metrics.frames_in.inc()
        if self.ended:
            return  # a message already in flight when the call ended: it must not start a reply
        if self._recording is not None:
            self._recording.caller(pcm16, self._loop.time())
        if self.closing:
            return  # the transfer or goodbye line plays to its end; nothing the caller says is answered now
        for event in self._detector.feed(self._ingress.process(pcm16)):
            if isinstance(event, SpeechSustained):
                if self.state is not CallState.LISTENING:
                    await self._barge_in()
            elif isinstance(event, PauseStarted):
                if self._reply is None:
                    self._start_reply(
                        partial(self._transcribe_and_answer, pcm16=event.pcm16), committed=False
                    )
            elif isinstance(event, SpeechResumed):
                if self._reply is not None and not self._reply.gate.is_set():
                    self._s.metrics.speculation.labels(fate="discarded").inc()
                    await self._cancel_reply()
            elif isinstance(event, TurnEnded):
                self._on_turn_ended(event)

    def _on_turn_ended(self, event: TurnEnded) -> None:
        self._turn_ended_at = time.monotonic()
        if self._reply is not None and not self._reply.gate.is_set():
            self._s.metrics.speculation.labels(fate="used").inc()
            self._commit()
        elif self._reply is None:
            self._start_reply(partial(self._transcribe_and_answer, pcm16=event.pcm16), committed=True)
        # Otherwise the bot is talking and this short turn never reached barge-in length: a backchannel.

    async def on_dtmf(self, digit: str) -> None:
        """A keypad press: interrupts the bot, and completes an entry on '#', a count or a timeout."""
        if self.ended:
            return
        self.transcript.append({"role": "caller", "dtmf": digit, "at": time.time()})
        if self.closing:
            return  # logged, but the transfer or goodbye line is not interrupted nor answered
        if self.state is CallState.SPEAKING:
            await self._barge_in()
        if self._digit_timer is not None:
            self._digit_timer.cancel()
        entry = self._digits.press(digit)
        if entry is not None:
            await self._answer_digits(entry)
        elif self._digits.collecting:
            loop = asyncio.get_running_loop()
            self._digit_timer = loop.call_later(self._digits.timeout_s, self._digits_timed_out)

    def _digits_timed_out(self) -> None:
        entry = self._digits.expire()
        if entry is not None and not self.ended and not self.closing:
            self._spawn(self._answer_digits(entry), "digits")

    async def _answer_digits(self, entry: str) -> None:
        # The entry takes the place of any reply, also one the caller's speech started while we waited;
        # never of a transfer or goodbye line.
        while self._reply is not None and not self.closing:
            await self._cancel_reply()
        self._record_unanswered()

        def answer(reply: _Reply) -> Coroutine[Any, Any, None]:
            self.usage.ai_requests += 1
            digits = self._s.backend.digits(self.info, entry, list(self.history))
            return self._answer(reply, f"[keypad] {entry}", digits)

        self._start_reply(answer, committed=True)

    def on_mark(self, name: str) -> None:
        """The provider finished playing up to our mark."""
        reply = self._reply
        # A reply has a mark only once all of it is queued; before that no echo, even an empty one, is it.
        if not self.ended and reply is not None and reply.mark and reply.mark == name:
            self._reply_played(reply)

    # --- replies -------------------------------------------------------------------------------------

    def _start_reply(self, work: Callable[[_Reply], Coroutine[Any, Any, None]], committed: bool) -> None:
        """Run `work` as the call's one reply; refused once the call is ending or while another runs."""
        if self.ended or self.closing:
            return
        if self._reply is not None:
            self.log.warning("a reply is still running; not starting another alongside it")
            return
        reply = _Reply(task=None)
        # The reply is handed to its task: a task never reads self._reply, which may be another's by then.
        task = self._spawn(work(reply), "reply")
        if task is None:
            return
        self._reply, reply.task = reply, task
        if committed:
            self._commit()

    def _commit(self) -> None:
        assert self._reply is not None
        self._reply.gate.set()
        self.state = CallState.THINKING

    async def _transcribe_and_answer(self, reply: _Reply, pcm16: bytes) -> None:
        started = time.monotonic()
        # A future of its own, so that a turn cut off while being transcribed can still be heard (_shelve).
        # Until the turn is confirmed over, this is a guess: other callers' confirmed turns go first.
        transcription = reply.transcription = asyncio.ensure_future(
            self._s.stt.transcribe(pcm16, DETECTOR_RATE, reply.gate.is_set)
        )
        # Counted once, whoever reads it: the reply, the next turn (carried) or the teardown.
        transcription.add_done_callback(self._count_transcription)
        try:
            transcript = await asyncio.shield(transcription)
        except asyncio.CancelledError:
            if transcription not in self._carried:
                transcription.cancel()
            raise
        except SpeechEngineError as exc:
            self._s.metrics.errors.labels(kind="stt").inc()
            self.log.warning("speech recognition failed: %s", exc)
            await reply.gate.wait()
            await self._take_carried()  # earlier words the caller talked over still go into the log
            await self._apologise(reply, f"{self._unanswered} {UNRECOGNISED}".strip())
            await self._finish_reply(reply)
            return
        done = time.monotonic()
        self._s.metrics.stage_latency.labels(stage="stt").observe(done - started)
        self._s.metrics.stage_latency.labels(stage="stt_queue").observe(transcript.queued_seconds)
        self._s.load.observe_stt_wait(transcript.queued_seconds)
        self._s.load.observe_stt_work(max(0.0, transcript.processing_seconds - transcript.queued_seconds))
        if not self._s.backend.speculative_safe or not transcript.text:
            await reply.gate.wait()
        if reply.gate.is_set():
            self._s.metrics.stage_latency.labels(stage="eot_to_stt_done").observe(
                max(0.0, done - self._turn_ended_at)
            )
        await self._take_carried()
        text = f"{self._unanswered} {transcript.text}".strip()
        if not text:
            self.log.info("turn had no words (%.1fs of audio)", transcript.audio_seconds)
            self._turn_ended_at = 0.0
            self._reply_played(reply)
            return
        # Not yet "unanswered": a speculative reply dropped because speech resumed is re-transcribed from
        # the same utterance audio, so carrying its text too would say it twice.
        reply.caller_text = text
        backend_started = time.monotonic()
        self.usage.ai_requests += 1
        deltas = self._s.backend.reply(self.info, text, list(self.history))
        await self._answer(reply, text, deltas, backend_started)

    def _count_transcription(self, transcription: asyncio.Future[Transcript]) -> None:
        if not transcription.cancelled() and transcription.exception() is None:
            self.usage.stt_seconds += transcription.result().audio_seconds

    async def _take_carried(self) -> None:
        """The words of earlier turns the caller talked over join the unanswered text, in order."""
        while self._carried:
            transcription = self._carried[0]
            try:
                # Shielded: a speculative reply dropped meanwhile must not cancel an earlier turn's words.
                transcript = await asyncio.shield(transcription)
            except SpeechEngineError as exc:
                self._s.metrics.errors.labels(kind="stt").inc()
                self.log.warning("speech recognition failed on an interrupted turn: %s", exc)
                words = ""
            else:
                words = transcript.text
            if transcription in self._carried:
                self._carried.remove(transcription)
            self._unanswered = f"{self._unanswered} {words}".strip()

    async def _answer(
        self,
        reply: _Reply,
        caller_text: str,
        deltas: AsyncGenerator[str | ReplyAction, None],
        started: float | None = None,
    ) -> None:
        """Speak the backend's reply sentence by sentence; only after the gate opens does anything go out."""
        try:
            # Closed here, by this task, when the reply ends or is cancelled (barge-in, hangup): the
            # backend's response stream is released at once, not whenever the garbage collector gets to it.
            async with aclosing(deltas):
                await self._speak_reply(reply, caller_text, deltas, started or time.monotonic())
            self._backend_failures = 0
        except BackendError as exc:
            self._backend_failures += 1
            self._s.metrics.errors.labels(kind="backend").inc()
            self.log.warning("backend failed (%d in a row): %s", self._backend_failures, exc)
            if self._backend_failures >= self._s.settings.calls.max_backend_failures:
                await reply.gate.wait()
                self._spawn(self._give_up_on_backend(), "fallback")
                return
            await self._apologise(reply, caller_text)
        except SpeechEngineError as exc:
            # The apology is pre-rendered, so it plays even when the TTS engine is what failed.
            self._s.metrics.errors.labels(kind="tts").inc()
            self.log.warning("speech synthesis failed: %s", exc)
            await self._apologise(reply, caller_text)
        await self._finish_reply(reply)

    async def _apologise(self, reply: _Reply, caller_text: str) -> None:
        """Say prompts.apology as (the rest of) this reply; the call goes on listening afterwards."""
        apology = self._s.phrases.audio("apology", self._rate)
        await reply.gate.wait()
        if self.state is not CallState.SPEAKING:
            self._begin_speaking(reply, caller_text)
        if apology:
            self._pacer.play(apology)
            text = self._s.phrases.text("apology")
            reply.sentences.append((text, len(apology) / 2 / self._rate))
            self._extend_line(reply)
            self.usage.tts_seconds += len(apology) / 2 / self._rate

    async def _give_up_on_backend(self) -> None:
        """Repeated backend failures: hand the caller to a human if there is one, else say goodbye."""
        await self._cancel_reply()
        self._record_unanswered()  # the turn that failed, before the goodbye or transfer line
        number = self._fallback_number
        if number:
            await self.transfer(number)
        else:
            await self._close(self._say_goodbye_and_end("backend_failed"))

    async def _speak_reply(
        self, reply: _Reply, caller_text: str, deltas: AsyncIterator[str | ReplyAction], started: float
    ) -> None:
        first_sentence = first_audio = True
        async with aclosing(self._sentences(deltas, SentenceSplitter(), reply)) as batches:
            async for sentences in batches:
                if first_sentence:
                    self._s.metrics.stage_latency.labels(stage="backend").observe(time.monotonic() - started)
                    first_sentence = False
                for sentence in sentences:
                    first_audio = await self._speak_sentence(reply, caller_text, sentence, first_audio)
        await reply.gate.wait()
        if first_audio:  # the backend said nothing
            self._begin_speaking(reply, caller_text)

    async def _speak_sentence(
        self, reply: _Reply, caller_text: str, sentence: str, first_audio: bool
    ) -> bool:
        """Synthesise one sentence into the pacer; returns whether the reply is still to start speaking."""
        tts_started = time.monotonic()
        sentence_seconds = 0.0
        async with aclosing(self._s.tts.synthesize(sentence, self._rate)) as audio:
            async for pcm in audio:
                if first_audio:
                    self._s.metrics.stage_latency.labels(stage="tts_first_audio").observe(
                        time.monotonic() - tts_started
                    )
                    # Everything up to here may have run speculatively; nothing goes out before this.
                    await reply.gate.wait()
                    self._begin_speaking(reply, caller_text)
                    first_audio = False
                await self._pacer.wait_below(self._s.settings.limits.max_pending_audio_s)
                self._pacer.play(pcm)
                if not sentence_seconds:
                    reply.sentences.append((sentence, 0.0))
                sentence_seconds += len(pcm) / 2 / self._rate
                # The line grows as audio is queued, so an interruption knows what was heard.
                reply.sentences[-1] = (sentence, sentence_seconds)
                self._extend_line(reply)
        self.usage.tts_seconds += sentence_seconds
        return first_audio

    async def _finish_reply(self, reply: _Reply) -> None:
        reply.mark = _mark_name("reply")
        self._pacer.end_reply(reply.mark)
        await self._wait_reply_played(reply)
        if reply.action is not None and not self.ended:
            await self._act(reply.action)

    async def _act(self, action: ReplyAction) -> None:
        """Carry out what the backend asked for once its reply has been heard."""
        self.log.info("backend action: %s", action.kind)
        if action.kind == "hangup":
            # The reply was the goodbye; end the call as the provider's hangup would.
            await self._close(self._end_now("completed"))
        elif action.kind == "transfer" and action.number:
            await self.transfer(action.number)
        elif action.kind == "collect_digits" and action.max_digits > 0:
            self._digits.max_digits = action.max_digits

    async def _sentences(
        self, deltas: AsyncIterator[str | ReplyAction], splitter: SentenceSplitter, reply: _Reply
    ) -> AsyncIterator[list[str]]:
        async for delta in deltas:
            if isinstance(delta, ReplyAction):
                reply.action = delta
                continue
            if done := splitter.feed(delta):
                yield done
        if rest := splitter.flush():
            yield rest

    def _begin_speaking(self, reply: _Reply, caller_text: str) -> None:
        self.turns += 1
        self._s.metrics.turns_total.inc()
        self.last_caller_text = caller_text
        self._unanswered = ""
        self.history.append(ConversationTurn("caller", caller_text))
        self.transcript.append({"role": "caller", "text": caller_text, "at": time.time()})
        self._open_line(reply, "")
        self._pacer.new_reply()
        self.state = CallState.SPEAKING

    def _open_line(self, reply: _Reply, text: str) -> None:
        """The reply's bot line enters history and transcript as it starts playing, not when it is done:
        whatever cuts it short, the next backend request and the record still have it."""
        reply.line = len(self.history)
        self.history.append(ConversationTurn("bot", text))
        reply.entry = {"role": "bot", "text": text, "at": time.time()}
        self.transcript.append(reply.entry)

    def _extend_line(self, reply: _Reply) -> None:
        """The line grows with each sentence queued, not once at the end: a barge-in, stop or hangup during
        synthesis leaves history and the record with what had been said so far."""
        if reply.entry is not None:
            text = " ".join(sentence for sentence, _ in reply.sentences)
            self.history[reply.line] = ConversationTurn("bot", text)
            reply.entry["text"] = text

    def _keep_heard(self, reply: _Reply, heard_seconds: float, barge_in: bool) -> None:
        """An interrupted line: history keeps what the caller heard; the transcript both."""
        if reply.entry is None:
            return
        said = heard_text(reply.sentences, heard_seconds)
        self.history[reply.line] = ConversationTurn("bot", said)
        reply.entry["heard"] = said
        # A separate entry, not a flag on the line: the record keeps when the caller cut in, and
        # conversation_turns() folds it into the line it follows as heard + barge_in.
        if barge_in:
            self.transcript.append({"role": "bot", "heard": said, "at": time.time(), "barge_in": True})

    def _on_first_frame(self) -> None:
        if self._turn_ended_at and self.state is CallState.SPEAKING and self._reply is not None:
            eot = self._s.settings.turn.end_of_turn_silence_ms / 1000
            self._s.metrics.stage_latency.labels(stage="voice_to_voice").observe(
                time.monotonic() - self._turn_ended_at + eot
            )
            self._turn_ended_at = 0.0

    def _play_phrase(self, name: str, pcm: bytes) -> _Reply:
        """Play a cached phrase as a reply of its own; barge-in works on it like on any reply."""
        if self._reply is not None:
            # Callers interrupt the running reply first, and the closing flag keeps a new one from starting
            # meanwhile; should one be here anyway, it stops rather than play under the phrase.
            self.log.warning("a reply was still running when the %s phrase started; stopping it", name)
            orphan, self._reply = self._reply, None
            self._shelve(orphan)
            if orphan.task is not None and orphan.task is not asyncio.current_task():
                orphan.task.cancel()
        text = self._s.phrases.text(name)
        # Custom phrases are named by their text, which has no place on the wire.
        reply = _Reply(
            task=None, sentences=[(text, len(pcm) / 2 / self._rate)], mark=_mark_name(name.split(":")[0])
        )
        reply.gate.set()
        self._reply = reply
        self._pacer.new_reply()
        self._pacer.play(pcm)
        self.usage.tts_seconds += len(pcm) / 2 / self._rate
        self._pacer.end_reply(reply.mark)
        self._open_line(reply, text)
        self.state = CallState.SPEAKING
        reply.task = self._spawn(self._wait_reply_played(reply), name)
        return reply

    async def _wait_reply_played(self, reply: _Reply) -> None:
        """Wait for the mark echo, or for the audio to have run out plus a grace period."""
        while not reply.played.is_set() and not self.ended:
            progress = self._pacer.progress
            unplayed = progress.sent_seconds - progress.heard_seconds(self._loop.time())
            try:
                async with asyncio.timeout(self._pacer.queued_seconds + max(0.0, unplayed) + MARK_GRACE_S):
                    await reply.played.wait()
            except TimeoutError:
                if self._pacer.queued_seconds == 0:
                    self.log.debug("no echo for mark %s; treating the reply as played", reply.mark)
                    self._reply_played(reply)

    def _reply_played(self, reply: _Reply) -> None:
        reply.played.set()
        if self._reply is reply:
            self._reply = None
            if not self.ended:
                self.state = CallState.LISTENING

    async def _barge_in(self) -> None:
        """The caller talked over the bot: stop the reply, drop queued audio, keep only what was heard."""
        reply = self._reply
        if reply is None:
            return
        self._s.metrics.barge_ins.inc()
        heard = await self._interrupt_reply(barge_in=True)
        self.log.info("barge-in after %.2fs of the reply", heard)

    async def _interrupt_reply(self, barge_in: bool = False) -> float:
        """Stop the reply (a barge-in, a transfer, a goodbye): its line keeps what had been heard."""
        reply, speaking = self._reply, self.state is CallState.SPEAKING
        heard = await self._pacer.clear() if speaking else 0.0
        if self._recording is not None and heard:
            self._recording.cleared(self._loop.time())
        if speaking and reply is not None:
            self._keep_heard(reply, heard, barge_in)
        await self._cancel_reply()
        return heard

    async def _cancel_reply(self) -> None:
        reply, self._reply = self._reply, None
        if not self.ended:
            self.state = CallState.LISTENING
        if reply is None:
            return
        self._shelve(reply)
        if reply.task is not None and reply.task is not asyncio.current_task():
            reply.task.cancel()
            await asyncio.gather(reply.task, return_exceptions=True)

    def _record_unanswered(self) -> None:
        """The caller's words that never got an answer go into the log when a keypad entry or the backend
        fallback is answered in their place (at the end of the call: _settle_unanswered)."""
        words = [self._unanswered]
        self._unanswered = ""
        self._log_caller_words(words)

    def _log_caller_words(self, words: list[str]) -> None:
        if text := " ".join(word for word in words if word):
            self.history.append(ConversationTurn("caller", text))
            self.transcript.append({"role": "caller", "text": text, "at": time.time()})

    def _shelve(self, reply: _Reply) -> None:
        """A finished turn cut off before its answer started playing is not lost: its words (or, while
        still being transcribed, their transcription) prefix the caller's next turn."""
        if not reply.gate.is_set() or reply.entry is not None:
            return  # a guess the caller spoke on from (re-transcribed whole), or a reply already heard
        if reply.caller_text:
            self._unanswered = reply.caller_text
        elif reply.transcription is not None and reply.transcription not in self._carried:
            self._carried.append(reply.transcription)

    # --- tasks ---------------------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        """Run `work` as one of the call's tasks; None (and `work` never run) once the call ended."""
        if self.ended:
            work.close()
            return None
        task = asyncio.ensure_future(work)
        task.set_name(f"{self.call_sid}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            self._s.metrics.errors.labels(kind=type(exc).__name__).inc()
            self.log.error("call task %s failed: %s", task.get_name(), exc, exc_info=exc)
            if not self.ended:
                # A broken call must not linger half-alive: end it and close its stream.
                self._spawn(self._fail(), "fail")

    async def _fail(self) -> None:
        await self.finish("error")
        await self._close_socket()
