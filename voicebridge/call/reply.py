"""The reply pipeline of one call: a turn's audio → STT on the shared engine → backend → sentences → TTS →
the outbound pacer, then the wait until the caller has heard it.

A reply may start as a guess when the caller pauses: everything up to its first audio runs meanwhile, and
its gate opens only when the pause becomes the end of the turn (nothing goes out before). What the reply
does to the call's state (speaking, heard, the way out a backend asks for) is the call's: ReplyHost.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from voicebridge.audio.turn import DETECTOR_RATE
from voicebridge.backends.base import BackendError, ReplyAction
from voicebridge.call.basics import CallBasics
from voicebridge.call.conversation import UNRECOGNISED
from voicebridge.call.filler import Filler
from voicebridge.call.pacer import OutboundPacer
from voicebridge.call.reply_state import Reply
from voicebridge.call.resume import FalseInterruptions, Interrupted, remainder
from voicebridge.call.sentences import SentenceSplitter
from voicebridge.call.services import CallServices
from voicebridge.speech.base import SpeechEngineError, Transcript

# If a provider never echoes a mark, treat the reply as played this long after its audio ran out.
MARK_GRACE_S = 1.5


def mark_name(kind: str) -> str:
    """A mark name no one can guess: only the provider's echo of the mark we sent can match it."""
    return f"{kind}-{secrets.token_hex(16)}"


@dataclass(frozen=True, slots=True)
class ReplyHost:
    """What a reply has of its call. The state changes and the ways out stay the call's: a reply reports
    them through these callables, and nothing else of the call is within its reach."""

    basics: CallBasics
    ended: Callable[[], bool]
    # The reply's first audio goes out: the call is speaking.
    begin_speaking: Callable[[Reply, str], None]
    # All of it was heard: the call listens again.
    played: Callable[[Reply], None]
    # Once the reply was heard: what the backend asked for (hang up, transfer, collect digits).
    act: Callable[[ReplyAction], Awaitable[None]]
    # The backend failed too often in a row: the call hands the caller on or says goodbye (in a task of
    # its own, which the failed reply does not wait for).
    give_up: Callable[[], object]
    # A guess's words are in while the caller still pauses: the call may end the turn sooner or later.
    guessed: Callable[[Reply, str], None] = lambda _reply, _text: None


class ReplyPipeline:
    """Runs each reply of one call, one at a time (the call keeps which one is current)."""

    def __init__(self, services: CallServices, pacer: OutboundPacer, host: ReplyHost) -> None:
        self._host = host
        self._s = services
        self._pacer = pacer
        self._conversation = host.basics.conversation
        self._profile = host.basics.profile
        self._rate = host.basics.start.sample_rate
        self._usage = host.basics.usage
        self._log = host.basics.log
        self._loop = asyncio.get_running_loop()
        self._backend_failures = 0
        self._filler = Filler(services, host.basics, pacer, self.start_speaking, host.ended)
        # The reply the caller's speech last cut, until the turn that cut it says something or nothing.
        self.resume = FalseInterruptions(services.settings.turn)
        # When the last turn ended (monotonic), for the latency stages measured from it; 0 once measured.
        self.turn_ended_at = 0.0
        # The pause that ended it: the caller waited through it too.
        self.turn_silence_s = 0.0

    async def transcribe_and_answer(self, reply: Reply, pcm16: bytes) -> None:
        started = time.monotonic()
        # A future of its own, so that a turn cut off while being transcribed can still be heard (shelve).
        # Until the turn is confirmed over, this is a guess: other callers' confirmed turns go first.
        transcription = reply.transcription = asyncio.ensure_future(
            self._s.stt.transcribe(pcm16, DETECTOR_RATE, reply.gate.is_set, self._profile.language)
        )
        # Counted once, whoever reads it: the reply, the next turn (carried) or the teardown.
        transcription.add_done_callback(self._count_transcription)
        try:
            transcript = await asyncio.shield(transcription)
        except asyncio.CancelledError:
            if not self._conversation.carries(transcription):
                transcription.cancel()
            raise
        except SpeechEngineError as exc:
            self._s.metrics.errors.labels(kind="stt").inc()
            self._log.warning("speech recognition failed: %s", exc)
            await reply.gate.wait()
            await self._conversation.take_carried()  # earlier words the caller talked over still go in
            await self._apologise(reply, f"{self._conversation.unanswered} {UNRECOGNISED}".strip())
            await self._finish_reply(reply)
            return
        done = time.monotonic()
        if transcript.text:
            self._profile.heard(transcript.language)  # "auto": the first language detected is kept
        self._s.metrics.stage_latency.labels(stage="stt").observe(done - started)
        self._s.metrics.stage_latency.labels(stage="stt_queue").observe(transcript.queued_seconds)
        self._s.load.observe_stt_wait(transcript.queued_seconds)
        self._s.load.observe_stt_work(max(0.0, transcript.processing_seconds - transcript.queued_seconds))
        if not reply.gate.is_set():
            self._host.guessed(reply, transcript.text)
        # Words that may be a false interruption are judged only once the turn is known to be over.
        maybe_false = self.resume.pending and self.resume.says_nothing(transcript.text)
        if not self._s.backend.speculative_safe or not transcript.text or maybe_false:
            await reply.gate.wait()
        if reply.gate.is_set():
            self._s.metrics.stage_latency.labels(stage="eot_to_stt_done").observe(
                max(0.0, done - self.turn_ended_at)
            )
        await self._conversation.take_carried()
        text = f"{self._conversation.unanswered} {transcript.text}".strip()
        # Taken here, gate open or real words: the turn after a barge-in resumes or drops the cut reply.
        cut = self.resume.take()
        if cut is not None and not self._conversation.unanswered and self.resume.says_nothing(text):
            await self._resume(reply, cut, transcript.text)
            return
        if not text:
            self._log.info("turn had no words (%.1fs of audio)", transcript.audio_seconds)
            self.turn_ended_at = 0.0
            self._host.played(reply)
            return
        # Not yet "unanswered": a speculative reply dropped because speech resumed is re-transcribed from
        # the same utterance audio, so carrying its text too would say it twice.
        reply.caller_text = text
        backend_started = time.monotonic()
        self._usage.ai_requests += 1
        deltas = self._s.backend.reply(self._host.basics.info, text, self._conversation.history())
        await self._answer(reply, text, deltas, backend_started)

    def answer_digits(self, reply: Reply, entry: str) -> Coroutine[Any, Any, None]:
        """A keypad entry goes to the backend in place of a spoken turn. Counted, and the history it goes
        with taken, here as the call starts its reply, not when the reply's task first runs: a next entry
        may cancel that task before it does, and the cost record has always counted the entry."""
        self._usage.ai_requests += 1
        digits = self._s.backend.digits(self._host.basics.info, entry, self._conversation.history())
        return self._answer(reply, f"[keypad] {entry}", digits, time.monotonic())

    async def _resume(self, reply: Reply, cut: Interrupted, words: str) -> None:
        """The barge-in said nothing: the cut reply goes on in its line, from the sentence it was cut in."""
        self._s.metrics.false_interruptions.inc()
        self.turn_ended_at = 0.0  # no caller turn is answered: no voice-to-voice sample
        before, rest = remainder(cut)
        self._log.info("false interruption (%r): resuming %d sentence(s)", words, len(rest))
        if not rest or cut.reply.line is None:  # it had all been heard
            self._host.played(reply)
            return
        reply.line, reply.before, reply.action = cut.reply.line, before, cut.reply.action
        self._conversation.resumed(reply.line, words)
        await self._answer(reply, "", _say_again(rest), None)

    def start_speaking(self, reply: Reply, caller_text: str) -> None:
        """The reply's first audio (or its filler) goes out; once per reply."""
        if not reply.started:
            reply.started = True
            self._host.begin_speaking(reply, caller_text)

    def _count_transcription(self, transcription: asyncio.Future[Transcript]) -> None:
        if not transcription.cancelled() and transcription.exception() is None:
            self._usage.stt_seconds += transcription.result().audio_seconds

    async def _answer(
        self,
        reply: Reply,
        caller_text: str,
        deltas: AsyncGenerator[str | ReplyAction, None],
        started: float | None,
    ) -> None:
        """Speak the backend's reply sentence by sentence; only after the gate opens does anything go out.
        `started`: when the backend was asked (None: no backend, a resumed reply)."""
        filler = self._filler.arm(reply, caller_text)
        try:
            # Closed here, by this task, when the reply ends or is cancelled (barge-in, hangup): the
            # backend's response stream is released at once, not whenever the garbage collector gets to it.
            async with aclosing(deltas):
                await self._speak_reply(reply, caller_text, deltas, started)
            self._backend_failures = 0
        except BackendError as exc:
            self._backend_failures += 1
            self._s.metrics.errors.labels(kind="backend").inc()
            self._log.warning("backend failed (%d in a row): %s", self._backend_failures, exc)
            if self._backend_failures >= self._s.settings.calls.max_backend_failures:
                await reply.gate.wait()
                self._host.give_up()
                return
            await self._apologise(reply, caller_text)
        except SpeechEngineError as exc:
            # The apology is pre-rendered, so it plays even when the TTS engine is what failed.
            self._s.metrics.errors.labels(kind="tts").inc()
            self._log.warning("speech synthesis failed: %s", exc)
            await self._apologise(reply, caller_text)
        finally:
            if filler is not None:
                filler.cancel()
        await self._finish_reply(reply)

    async def _apologise(self, reply: Reply, caller_text: str) -> None:
        """Say prompts.apology as (the rest of) this reply; the call goes on listening afterwards."""
        apology = self._s.phrases.audio("apology", self._rate, self._profile.voice)
        await reply.gate.wait()
        self.start_speaking(reply, caller_text)
        reply.unspoken.clear()  # the apology stands in for them: a resumed reply does not say them
        if apology:
            self._pacer.play(apology)
            text = self._s.phrases.text("apology")
            reply.sentences.append((text, len(apology) / 2 / self._rate))
            self._extend_line(reply)
            self._usage.tts_seconds += len(apology) / 2 / self._rate

    async def _speak_reply(
        self, reply: Reply, caller_text: str, deltas: AsyncIterator[str | ReplyAction], started: float | None
    ) -> None:
        first_sentence = first_audio = True
        async with aclosing(self._sentences(deltas, SentenceSplitter(), reply)) as batches:
            async for sentences in batches:
                if first_sentence and started is not None:
                    self._s.metrics.stage_latency.labels(stage="backend").observe(time.monotonic() - started)
                    first_sentence = False
                reply.unspoken.extend(sentences)
                for sentence in sentences:
                    first_audio = await self._speak_sentence(reply, caller_text, sentence, first_audio)
        await reply.gate.wait()
        self.start_speaking(reply, caller_text)  # when the backend said nothing

    async def _speak_sentence(self, reply: Reply, caller_text: str, sentence: str, first_audio: bool) -> bool:
        """Synthesise one sentence into the pacer; returns whether the reply is still to start speaking."""
        tts_started = time.monotonic()
        sentence_seconds = 0.0
        async with aclosing(self._s.tts.synthesize(sentence, self._rate, self._profile.voice)) as audio:
            async for pcm in audio:
                if first_audio:
                    self._s.metrics.stage_latency.labels(stage="tts_first_audio").observe(
                        time.monotonic() - tts_started
                    )
                    # Everything up to here may have run speculatively; nothing goes out before this.
                    await reply.gate.wait()
                    self.start_speaking(reply, caller_text)
                    first_audio = False
                await self._pacer.wait_below(self._s.settings.limits.max_pending_audio_s)
                self._pacer.play(pcm)
                if not sentence_seconds:
                    reply.sentences.append((sentence, 0.0))
                    _said(reply, sentence)
                sentence_seconds += len(pcm) / 2 / self._rate
                # The line grows as audio is queued, so an interruption knows what was heard.
                reply.sentences[-1] = (sentence, sentence_seconds)
                self._extend_line(reply)
        self._usage.tts_seconds += sentence_seconds
        if not sentence_seconds:
            _said(reply, sentence)  # no audio for it: nothing to say again either
        return first_audio

    async def _sentences(
        self, deltas: AsyncIterator[str | ReplyAction], splitter: SentenceSplitter, reply: Reply
    ) -> AsyncIterator[list[str]]:
        async for delta in deltas:
            if isinstance(delta, ReplyAction):
                reply.action = delta
                continue
            reply.first_text = reply.first_text or bool(delta.strip())
            done = splitter.feed(delta)
            reply.unsplit = splitter.pending
            if done:
                yield done
        reply.unsplit = ""
        if rest := splitter.flush():
            yield rest

    def _extend_line(self, reply: Reply) -> None:
        if reply.line is not None:
            self._conversation.extend_line(reply.line, reply.spoken())

    async def _finish_reply(self, reply: Reply) -> None:
        reply.mark = mark_name("reply")
        self._pacer.end_reply(reply.mark)
        await self.wait_played(reply)
        if reply.action is not None and not self._host.ended():
            await self._host.act(reply.action)

    def queue_phrase(self, name: str, pcm: bytes) -> Reply:
        """A cached phrase queued whole as a reply of its own, its gate open: barge-in works on it too."""
        text = self._s.phrases.text(name)
        # Custom phrases are named by their text, which has no place on the wire.
        reply = Reply(
            task=None, sentences=[(text, len(pcm) / 2 / self._rate)], mark=mark_name(name.split(":")[0])
        )
        reply.gate.set()
        reply.started = True
        self.resume.forget()  # the phrase is said instead: a cut reply is not resumed after it
        self._pacer.new_reply()
        self._pacer.play(pcm)
        self._usage.tts_seconds += len(pcm) / 2 / self._rate
        self._pacer.end_reply(reply.mark)
        return reply

    async def wait_played(self, reply: Reply) -> None:
        """Wait for the mark echo, or for the audio to have run out plus a grace period."""
        while not reply.played.is_set() and not self._host.ended():
            progress = self._pacer.progress
            unplayed = progress.sent_seconds - progress.heard_seconds(self._loop.time())
            try:
                async with asyncio.timeout(self._pacer.queued_seconds + max(0.0, unplayed) + MARK_GRACE_S):
                    await reply.played.wait()
            except TimeoutError:
                if self._pacer.queued_seconds == 0:
                    self._log.debug("no echo for mark %s; treating the reply as played", reply.mark)
                    self._host.played(reply)

    def first_frame_sent(self) -> None:
        """The first audio of an answer left: the caller's voice-to-voice wait ends here."""
        if self.turn_ended_at:
            self._s.metrics.stage_latency.labels(stage="voice_to_voice").observe(
                time.monotonic() - self.turn_ended_at + self.turn_silence_s
            )
            self.turn_ended_at = 0.0


def _said(reply: Reply, sentence: str) -> None:
    """`sentence` is queued as audio (or has none): it is no longer unspoken."""
    if reply.unspoken and reply.unspoken[0] == sentence:
        reply.unspoken.pop(0)


async def _say_again(sentences: list[str]) -> AsyncGenerator[str | ReplyAction, None]:
    """A cut reply's remaining text, as a backend's reply stream (re-split into sentences as it was)."""
    yield " ".join(sentences)
