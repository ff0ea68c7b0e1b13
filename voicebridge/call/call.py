"""One phone call: the listening → thinking → speaking state machine, its tasks, and its single teardown.

Caller audio arrives as internal events (the provider translators did the wire work), goes through the
per-call turn detector, and each finished turn runs one reply task (reply.py: STT on the shared engine →
backend → TTS sentence by sentence → the outbound pacer). The reply task may start speculatively when the
caller pauses; it is committed when the pause becomes the end of the turn, and discarded if speech resumes.
What was said is kept in conversation.py, the ways out in actions.py, what the call leaves in record.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from enum import StrEnum
from functools import partial
from typing import Any

from voicebridge.audio.turn import (
    PauseStarted,
    SpeechResumed,
    SpeechSustained,
    TurnDetector,
    TurnEnded,
    detector_ingress,
)
from voicebridge.backends.base import BusinessSettings
from voicebridge.call.actions import CallActions, EndingCall
from voicebridge.call.answering import AnsweringMachineStep, outbound_greeting
from voicebridge.call.basics import CallBasics
from voicebridge.call.conversation import Conversation
from voicebridge.call.digits import Keypad
from voicebridge.call.endpointing import judge_pause, pause_limit_ms
from voicebridge.call.overlap import WordsBeforeBargeIn
from voicebridge.call.pacer import OutboundPacer
from voicebridge.call.profile import CallProfile
from voicebridge.call.record import CallRecords, TeardownStep
from voicebridge.call.reply import Reply, ReplyHost, ReplyPipeline
from voicebridge.call.reprompt import Reprompter
from voicebridge.call.services import CallServices
from voicebridge.call.tasks import CallTasks
from voicebridge.outbound.dialer import AnsweredBy
from voicebridge.records.costs import CallUsage
from voicebridge.telephony.base import Translator
from voicebridge.telephony.events import Start

logger = logging.getLogger("voicebridge.call")


class CallState(StrEnum):
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ENDED = "ended"


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
        self._s = services
        self._rate = start.sample_rate
        self._close_socket = close_socket
        self.log = logging.LoggerAdapter(logger, {"call_sid": start.call_sid})
        self.state = CallState.LISTENING
        self._teardown: asyncio.Future[None] | None = None
        self._ingress = detector_ingress(self._rate)
        self._detector = TurnDetector(services.settings.turn)
        self._loop = asyncio.get_running_loop()
        self.usage = CallUsage()
        self.conversation = Conversation(services.metrics, self.log)
        self.profile = CallProfile.from_settings(services.settings)
        basics = CallBasics(start, self.conversation, self.usage, self.log, self.profile)
        self._records = CallRecords(services, basics)
        self._recording = self._records.recording
        self._pacer = OutboundPacer(
            translator,
            send_text,
            self._rate,
            services.metrics,
            self._on_first_frame,
            on_chunk=self._recording.bot if self._recording is not None else None,
        )
        self._keypad = Keypad(self._digits_timed_out)
        self._tasks = CallTasks(self.call_sid, services.metrics, self.log, self._task_failed)
        self._reply: Reply | None = None
        self.outcome = ""
        # The reply pipeline and the ways out change the call only through what they are handed here: the
        # state and the teardown stay in this module, out of reach of whoever holds the call (the registry).
        reply_host = ReplyHost(
            basics,
            lambda: self.ended,
            self._begin_speaking,
            self._reply_played,
            act=lambda action: self._actions.act(action),
            give_up=lambda: self._tasks.spawn(self._actions.give_up_on_backend(), "fallback"),
            guessed=self._guessed,
        )
        self._replies = ReplyPipeline(services, self._pacer, reply_host)
        ending = EndingCall(
            basics,
            lambda: self.ended,
            self.finish,
            self._torn_down,
            self._interrupt_reply,
            self._cancel_reply,
            self._play_phrase,
            self._tasks.spawn,
        )
        self._actions = CallActions(
            ending, services, self._replies, self._keypad.collector, close_socket, max_minutes
        )
        self._reprompt = Reprompter(
            services,
            basics,
            self._idle,
            self._play_phrase,
            lambda: self._tasks.spawn(self._actions.goodbye("no_input"), "no_input"),
        )
        self._overlap = WordsBeforeBargeIn(
            services,
            basics,
            self._detector.open_utterance_audio,
            partial(self._barge_in, by_speech=True),
            self._tasks.spawn,
        )
        self._admitted = False
        # Outbound calls only: who answered decides whether the bot greets or leaves a message.
        self._amd = AnsweringMachineStep.for_call(
            services, start, self.log, self._actions, self._records, self._tasks.spawn
        )

    # --- lifecycle ---------------------------------------------------------------------------------

    def apply_business(self, business: BusinessSettings | None) -> None:
        """The called number's settings: transfer number and call length limit; language, voice, prompt."""
        self._actions.apply_business(business)
        self.profile.apply(business, self.log)

    def admit(self) -> bool:
        """Take a slot in the registry; False means refuse the call. The one place a call counts as active:
        teardown uncounts it once, so the gauge stays balanced whatever happens in between."""
        if not self._s.registry.admit(self):
            return False
        self._admitted = True
        self._s.metrics.calls_active.inc()
        self._records.open()
        return True

    async def begin(self, greeting: str = "greeting") -> None:
        """Start the pacer and play the (pre-rendered) greeting phrase at once; nothing once the call ended
        (a hangup, transfer or shutdown while the greeting was being rendered). Then wait for the call's
        `started` event (written from admission) to be durably in the outbox."""
        if self.ended or self.closing:
            self.log.info("the call ended before its greeting; not starting it")
        else:
            self._tasks.spawn(self._pacer.run(), "pacer")
            greeting = outbound_greeting(self.start, self._s.phrases, greeting)
            if self._amd is not None:
                self._amd.start(partial(self._greet, greeting))  # greets once a person is heard
            else:
                self._greet(greeting)
            self._actions.start_time_limit()
        await self._records.started()

    def _greet(self, greeting: str) -> None:
        if self.ended or self.closing:
            return
        if audio := self._s.phrases.audio(greeting, self._rate, self.profile.voice):
            self._play_phrase(greeting, audio)
        if self._reprompt.enabled:
            self._tasks.spawn(self._reprompt.run(), "reprompt")

    def provider_answered(self, answered_by: AnsweredBy) -> None:
        """The provider's AMD verdict (Twilio's AnsweredBy), told by the dialler: it overrides ours."""
        if self._amd is not None and not self.ended:
            self._amd.provider_answered(answered_by)

    @property
    def ended(self) -> bool:
        return self._teardown is not None

    @property
    def closing(self) -> bool:
        """A transfer, goodbye or hangup is under way."""
        return self._actions.closing

    async def hangup(self) -> None:
        await self._actions.hangup()

    async def transfer(self, number: str) -> None:
        await self._actions.transfer(number)

    async def end_for_shutdown(self) -> None:
        """The daemon is stopping and the drain time ran out: say goodbye, then close (or wait for the
        transfer or goodbye already under way)."""
        await self._actions.goodbye("shutdown")

    def snapshot(self) -> dict[str, Any]:
        """What `calls list` shows of this call."""
        return self._records.snapshot(str(self.state))

    # --- teardown, exactly once ------------------------------------------------------------------

    async def finish(self, outcome: str) -> bool:
        """Tear the call down exactly once and completely, whatever ended it: stop its tasks, keep its
        record, free its slot. The teardown is a task of its own that every caller waits for: a caller
        cancelled meanwhile (a management request whose client went away) cannot stop it half-way, and the
        registry keeps it so that the daemon's shutdown waits for it too.

        True when this call ended it: only then does the caller go on to tell the provider (hang up,
        transfer); a call that had already ended (the caller hung up) is not the provider's to act on."""
        ours = self._teardown is None
        if ours:
            self._tasks.closed = True
            self.outcome = outcome
            self._teardown = asyncio.ensure_future(self._tear_down(outcome, asyncio.current_task()))
            self._s.registry.track_teardown(self._teardown)
        assert self._teardown is not None
        await asyncio.shield(self._teardown)
        return ours

    async def _torn_down(self) -> None:
        """Wait for the teardown, if one has begun."""
        if self._teardown is not None:
            await asyncio.shield(self._teardown)

    async def _tear_down(self, outcome: str, requester: asyncio.Task[Any] | None) -> None:
        # Each step in a guarded block of its own: one that raises must not leave the call listening with
        # its pacer still sending, nor its record unkept.
        try:
            self._settle_conversation()
        except Exception as exc:
            self._records.teardown_failed("settling the conversation", exc)
        self.state = CallState.ENDED
        self._keypad.stop()
        self._actions.stop_time_limit()
        if self._amd is not None:
            self._amd.stop()
        steps: list[TeardownStep] = [
            ("stopping the call's tasks", partial(self._tasks.stop, requester)),
            ("keeping the caller's last words", self.conversation.settle_unanswered),
        ]
        await self._records.keep(steps, outcome, self, self._admitted, self._pacer)

    def _settle_conversation(self) -> None:
        """What was said stays said: the line being played keeps what was heard; the words of a turn not
        yet answered (even a guess, since the call's end ends the turn) stay, transcribed or still being."""
        if (reply := self._reply) is not None:
            speaking = self.state is CallState.SPEAKING
            heard = self._pacer.progress.heard_seconds(self._loop.time()) if speaking else None
            reply.settle(self.conversation, heard)

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
        audio = self._ingress.process(pcm16)
        if self._amd is not None and self._amd.listening:
            self._amd.feed(audio)  # no turns while it listens: a machine's greeting is not one to answer
            return
        for event in self._detector.feed(audio):
            match event:
                case SpeechSustained() if self.state is CallState.SPEAKING and self._overlap.enabled:
                    self._overlap.watch()  # its words decide (call/overlap.py)
                case SpeechSustained() if self.state is not CallState.LISTENING:
                    await self._barge_in(by_speech=True)
                case PauseStarted() if self._reply is None:
                    self._answer_turn(event.pcm16, committed=False)
                case SpeechResumed() if self._reply is not None and not self._reply.gate.is_set():
                    self._s.metrics.speculation.labels(fate="discarded").inc()
                    await self._cancel_reply()
                case TurnEnded():
                    self._on_turn_ended(event)

    def _guessed(self, reply: Reply, text: str) -> None:
        """The words of the caller's pause are in, and the caller still pauses: with adaptive end of turn
        they decide how long the pause may last, which may be over already (call/endpointing.py)."""
        turn = self._s.settings.turn
        if turn.end_of_turn != "adaptive" or reply is not self._reply or reply.gate.is_set():
            return
        kind = judge_pause(text, bot_asked=self.conversation.bot_asked())
        limit = pause_limit_ms(kind, turn)
        self.log.debug(
            "pause judged %s at %d ms (%r): it may last %d ms", kind, self._detector.silence_ms, text, limit
        )
        if (ended := self._detector.end_pause_after(limit)) is not None:
            self._on_turn_ended(ended)

    def _on_turn_ended(self, event: TurnEnded) -> None:
        self._reprompt.answered()
        self._replies.turn_ended_at = time.monotonic()
        self._replies.turn_silence_s = event.silence_ms / 1000
        if self._reply is not None and not self._reply.gate.is_set():
            self._s.metrics.speculation.labels(fate="used").inc()
            self._commit()
        elif self._reply is None:
            self._answer_turn(event.pcm16, committed=True)
        elif self._overlap.watching:
            self._overlap.turn_ended(event.pcm16, partial(self._answer_turn, event.pcm16, committed=True))
        # Otherwise the bot is talking and this short turn never reached barge-in length: a backchannel.

    async def on_dtmf(self, digit: str) -> None:
        """A keypad press: interrupts the bot, and completes an entry on '#', a count or a timeout."""
        if self.ended:
            return
        self.conversation.keypress(digit)
        self._reprompt.answered()
        self._replies.resume.forget()  # a keypress is never a false interruption
        if self.closing:
            return  # logged, but the transfer or goodbye line is not interrupted nor answered
        if self.state is CallState.SPEAKING:
            await self._barge_in()
        if (entry := self._keypad.press(digit)) is not None:
            await self._answer_digits(entry)

    def _digits_timed_out(self, entry: str) -> None:
        if not self.ended and not self.closing:
            self._tasks.spawn(self._answer_digits(entry), "digits")

    async def _answer_digits(self, entry: str) -> None:
        # The entry takes the place of any reply, also one the caller's speech started while we waited;
        # never of a transfer or goodbye line.
        while self._reply is not None and not self.closing:
            await self._cancel_reply()
        self.conversation.record_unanswered()
        self._start_reply(partial(self._replies.answer_digits, entry=entry), committed=True)

    def on_mark(self, name: str) -> None:
        """The provider finished playing up to our mark."""
        reply = self._reply
        # A reply has a mark only once all of it is queued; before that no echo, even an empty one, is it.
        if not self.ended and reply is not None and reply.mark and reply.mark == name:
            self._reply_played(reply)

    # --- the reply in flight: the state transitions -----------------------------------------------

    def _start_reply(self, work: Callable[[Reply], Coroutine[Any, Any, None]], committed: bool) -> None:
        """Run `work` as the call's one reply; refused once the call is ending or while another runs."""
        if self.ended or self.closing:
            return
        if self._reply is not None:
            self.log.warning("a reply is still running; not starting another alongside it")
            return
        reply = Reply(task=None)
        # The reply is handed to its task: a task never reads self._reply, which may be another's by then.
        task = self._tasks.spawn(work(reply), "reply")
        if task is None:
            return
        self._reply, reply.task = reply, task
        if committed:
            self._commit()

    def _answer_turn(self, pcm16: bytes, committed: bool) -> None:
        self._start_reply(partial(self._replies.transcribe_and_answer, pcm16=pcm16), committed)

    def _commit(self) -> None:
        assert self._reply is not None
        self._reply.gate.set()
        self.state = CallState.THINKING

    def _begin_speaking(self, reply: Reply, caller_text: str) -> None:
        """The reply's first audio goes out: the caller's turn is answered, the bot's line opens."""
        if reply.line is None:  # else a reply resumed after a false interruption, in the line it was cut in
            self._s.metrics.turns_total.inc()
            reply.line = self.conversation.answering(caller_text)
        self._pacer.new_reply()
        self.state = CallState.SPEAKING

    def _play_phrase(self, name: str, pcm: bytes) -> Reply:
        """Play a cached phrase as a reply of its own; barge-in works on it like on any reply."""
        if self._reply is not None:
            # Callers interrupt the running reply first, and the closing flag keeps a new one from starting
            # meanwhile; should one be here anyway, it stops rather than play under the phrase.
            self.log.warning("a reply was still running when the %s phrase started; stopping it", name)
            orphan, self._reply = self._reply, None
            orphan.shelve(self.conversation)
            if orphan.task is not None and orphan.task is not asyncio.current_task():
                orphan.task.cancel()
        reply = self._reply = self._replies.queue_phrase(name, pcm)
        reply.line = self.conversation.open_line(reply.sentences[0][0])
        self.state = CallState.SPEAKING
        reply.task = self._tasks.spawn(self._replies.wait_played(reply), name)
        return reply

    def _reply_played(self, reply: Reply) -> None:
        reply.played.set()
        if self._reply is reply:
            self._reply = None
            if not self.ended:
                self.state = CallState.LISTENING

    async def _barge_in(self, by_speech: bool = False) -> None:
        """The caller talked over the bot: stop the reply, drop queued audio, keep only what was heard.
        Speech that turns out to say nothing resumes it (call/resume.py)."""
        if (reply := self._reply) is None:
            return
        self._s.metrics.barge_ins.inc()
        speaking = self.state is CallState.SPEAKING
        heard = await self._interrupt_reply(barge_in=True)
        if by_speech and speaking:
            self._replies.resume.interrupted(reply, heard)
        self.log.info("barge-in after %.2fs of the reply", heard)

    async def _interrupt_reply(self, barge_in: bool = False) -> float:
        """Stop the reply (a barge-in, a transfer, a goodbye): its line keeps what had been heard."""
        reply, speaking = self._reply, self.state is CallState.SPEAKING
        heard = await self._pacer.clear() if speaking else 0.0
        if self._recording is not None and heard:
            self._recording.cleared(self._loop.time())
        if speaking and reply is not None:
            reply.keep_heard(self.conversation, heard, barge_in)
        await self._cancel_reply()
        return heard

    async def _cancel_reply(self) -> None:
        reply, self._reply = self._reply, None
        if not self.ended:
            self.state = CallState.LISTENING
        if reply is None:
            return
        reply.shelve(self.conversation)
        if reply.task is not None and reply.task is not asyncio.current_task():
            reply.task.cancel()
            await asyncio.gather(reply.task, return_exceptions=True)

    def _idle(self) -> bool:
        """Listening with nothing under way: no reply, no caller speech, no way out (call/reprompt.py)."""
        listening = self.state is CallState.LISTENING and self._reply is None
        return listening and not self._detector.in_utterance and not self.closing

    def _on_first_frame(self) -> None:
        if self.state is CallState.SPEAKING and self._reply is not None:
            self._replies.first_frame_sent()

    # --- tasks: the call's, cancelled together -------------------------------------------------------

    def _task_failed(self) -> None:
        if not self.ended:
            # A broken call must not linger half-alive: end it and close its stream.
            self._tasks.spawn(self._fail(), "fail")

    async def _fail(self) -> None:
        await self.finish("error")
        await self._close_socket()
