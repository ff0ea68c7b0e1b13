"""The audio WebSocket: one connection = one call. Routes wire messages through the provider translator.

Every bad message is logged and counted and the call goes on; the daemon never dies of a caller's bytes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace

from aiohttp import WSMessage, WSMsgType, web

from voicebridge.call.call import Call
from voicebridge.call.context_drops import count_dropped_context
from voicebridge.call.inbound_limits import InboundLimits
from voicebridge.call.outbound_start import business_number, outbound_start
from voicebridge.call.pacer import OutboundPacer
from voicebridge.call.playback_acks import PlaybackAcks
from voicebridge.call.services import CallServices
from voicebridge.outbound.pending import PendingDial
from voicebridge.speech.base import OwnSpeechToText
from voicebridge.telephony.base import Translator
from voicebridge.telephony.context import context_for_log
from voicebridge.telephony.events import (
    Audio,
    Connected,
    Dtmf,
    MarkEcho,
    ProtocolViolation,
    Start,
    Stop,
)
from voicebridge.telephony.providers import provider_named, translator_for_start
from voicebridge.telephony.sids import MAX_NUMBER_CHARS, SID_RULE, is_valid_number, is_valid_sid
from voicebridge.telephony.wire import event_name, load_message

logger = logging.getLogger("voicebridge.stream")

# A send that cannot complete for this long means the provider stopped reading; the stream is cut.
SEND_TIMEOUT_S = 5.0


class StreamSession:
    """Reads one provider WebSocket, creates the Call on `start`, and feeds it events until the end."""

    def __init__(
        self,
        services: CallServices,
        ws: web.WebSocketResponse,
        path_sid: str | None,
        url_rate: int | None,
        token_bound: bool = False,
        abort: Callable[[], None] = lambda: None,
        send_timeout_s: float = SEND_TIMEOUT_S,
        url_parameters: Mapping[str, str] | None = None,
        dial: PendingDial | None = None,
    ) -> None:
        self._s = services
        self._ws = ws
        self._path_sid = path_sid
        # The URL's `sample-rate` (Exotel), None when it has none; its query, the call's context (Exotel).
        self._url_rate = url_rate
        self._url_parameters = url_parameters
        # The URL's token was issued for path_sid: the stream may only be that call.
        self._token_bound = token_bound
        # The dial this stream answers (outbound/pending.py), when its URL named one: its token was our dial
        # id's, so the stream is bound to the dial, not to a provider sid known in advance.
        self._dial = dial
        self._abort = abort
        self._send_timeout = send_timeout_s
        self._translator: PlaybackAcks | None = None
        self._call: Call | None = None
        self._minutes_left: float | None = None
        self._own_stt: OwnSpeechToText | None = None
        self._limits = services.settings.limits
        self._inbound = InboundLimits(self._limits, services.metrics)
        # Why we ended the stream ourselves (silence, unechoed marks): the call is then `dropped`.
        self._dropped_because = ""
        self._went_silent = False
        loop = asyncio.get_running_loop()
        self._start_deadline = loop.time() + self._limits.start_timeout_s
        self._last_inbound = loop.time()
        self.log = logging.LoggerAdapter(logger, {"call_sid": path_sid or "-"})

    async def run(self) -> None:
        """Serve the connection until it closes; the call is finalised whatever ended it."""
        try:
            while (message := await self._receive()) is not None:
                if not self._inbound.within_rate():
                    self._reject(ProtocolViolation("rate_limited", "over limits.max_messages_per_second"))
                elif message.type is WSMsgType.TEXT:
                    await self._on_text(message.data)
                elif message.type is WSMsgType.BINARY:
                    self._reject(ProtocolViolation("binary_frame", f"{len(message.data)} bytes"))
                elif message.type is WSMsgType.ERROR:
                    self.log.warning("websocket error: %s", self._ws.exception())
                    break
                if self._call is not None and self._call.ended:
                    break
                if self._inbound.too_many_bad:
                    self.log.warning("closing the stream: %d bad messages", self._inbound.bad_messages)
                    self._s.metrics.calls_rejected.labels(reason="bad_messages").inc()
                    await self._ws.close(code=1008, message=b"too many bad messages")
                    break
        finally:
            if self._translator is not None:
                self._translator.stop_watching()
            if self._call is not None and not self._call.ended:
                code = self._ws.close_code
                clean = code in (None, 1000, 1001) and not self._ws.exception()
                outcome = "completed" if clean and not self._dropped_because else "dropped"
                if outcome == "dropped":
                    self.log.warning(
                        "stream dropped (%s); finalising the call", self._dropped_because or f"close {code}"
                    )
                await asyncio.shield(self._call.finish(outcome))
            if self._went_silent:
                await self._close(code=1001)
            if self._own_stt is not None:  # built for this call (CallServices.stt_per_call): ours to close
                self._own_stt.close()

    @property
    def call_sid(self) -> str:
        """The call this stream carried ("" when none was admitted)."""
        return self._call.start.call_sid if self._call is not None else ""

    async def _on_text(self, text: str) -> None:
        try:
            message = load_message(text)
            if self._translator is None:
                await self._before_start(message)
                return
            event = self._translator.parse(message)
        except ProtocolViolation as violation:
            self._reject(violation)
            return
        call = self._call
        if call is None:
            return
        if isinstance(event, Audio):
            if len(event.pcm16) > self._limits.max_media_seconds * call.start.sample_rate * 2:
                self._reject(ProtocolViolation("media_too_large", f"{len(event.pcm16)} bytes of audio"))
                return
            await call.on_audio(event.pcm16)
        elif isinstance(event, MarkEcho):
            self._translator.echoed(event.name)
            call.on_mark(event.name)
        elif isinstance(event, Dtmf):
            await call.on_dtmf(event.digit)
        elif isinstance(event, Stop):
            call.log.info("provider stopped the stream (%s)", event.reason or "no reason")
            await call.finish("completed")
            await self._close()
        elif isinstance(event, Start):
            self._reject(ProtocolViolation("duplicate_start", "start after start"))

    async def _before_start(self, message: dict[str, object]) -> None:
        name = event_name(message)
        if name == "connected":
            return
        if name != "start":
            kind = "media_before_start" if name == "media" else "event_before_start"
            raise ProtocolViolation(kind, name or "no event name")
        translator = translator_for_start(message, self._url_rate, url_parameters=self._url_parameters)
        provider = provider_named(translator.provider)
        if provider is None or not provider.enabled(self._s.settings):
            # A disabled provider has no webhooks; a stream in its shape is refused too (1008, no call).
            self._s.metrics.calls_rejected.labels(reason="provider_disabled").inc()
            self.log.warning("refusing stream: provider %s is disabled", translator.provider)
            await self._ws.close(code=1008, message=b"provider disabled")
            return
        start = translator.parse(message)
        if isinstance(start, Connected) or not isinstance(start, Start):
            raise ProtocolViolation("bad_start", "start did not parse as a start event")
        completed = await self._complete_start(start)  # a bad start is refused before any call exists
        if completed.rate_note:
            self.log.warning("sample-rate mismatch: %s", completed.rate_note)
        count_dropped_context(completed.context_dropped, self._s.metrics, self.log)
        translator.accept(completed)
        self._translator = PlaybackAcks(translator, self._limits.mark_echo_timeout_s)
        if self._limits.mark_echo_timeout_s:
            self._translator.watch(self._unacknowledged)
        await self._begin(completed, self._translator)

    async def _complete_start(self, start: Start) -> Start:
        if not start.call_sid:
            # Every call needs its own key (registry, records): the URL's sid, else the stream's.
            start = replace(start, call_sid=self._path_sid or start.stream_sid or f"CA-{uuid.uuid4().hex}")
        # Sids key a call's records and backend URLs: the providers' shape only (no dots, slashes, ...).
        if not is_valid_sid(start.call_sid):
            raise ProtocolViolation("bad_call_sid", f"call sid {start.call_sid[:40]!r} is not {SID_RULE}")
        if start.stream_sid and not is_valid_sid(start.stream_sid):
            raise ProtocolViolation(
                "bad_stream_sid", f"stream sid {start.stream_sid[:40]!r} is not {SID_RULE}"
            )
        if not (is_valid_number(start.from_number) and is_valid_number(start.to_number)):
            raise ProtocolViolation("bad_number", f"from/to longer than {MAX_NUMBER_CHARS} characters")
        if self._path_sid and start.call_sid and self._path_sid != start.call_sid:
            self.log.warning(
                "stream URL names %s but start says %s; using start's", self._path_sid, start.call_sid
            )
        if self._dial is not None:
            return outbound_start(start, self._dial)
        if self._token_bound and start.call_sid != self._path_sid:
            # Refused in _begin: it must not consume that other call's webhook record (its budget).
            return start
        pending = await self._s.gate.take_pending(start.call_sid or self._path_sid or "")
        if pending is None:
            return start
        self._minutes_left = pending.minutes_left
        # The webhook's numbers are Exotel's call record; the stream's copies may be stripped or absent.
        # replace(), not a new Start: the encoding, rate and rate note must survive (a μ-law stream).
        return replace(
            start,
            call_sid=start.call_sid or pending.call_sid,
            from_number=pending.from_number or start.from_number,
            to_number=pending.to_number or start.to_number,
        )

    async def _begin(self, start: Start, translator: Translator) -> None:
        self.log = logging.LoggerAdapter(logger, {"call_sid": start.call_sid})
        if self._token_bound and self._dial is None and start.call_sid != self._path_sid:
            self._s.metrics.auth_failures.labels(surface="stream", reason="token for another call").inc()
            self.log.warning("refusing stream: its token was issued for %s", self._path_sid)
            await self._ws.close(code=1008, message=b"token for another call")
            return
        if (reason := await self._s.gate.denied(start.call_sid)) is not None:
            # Refused at the gate (budget, rate limit): no audio of this call is processed.
            self._s.metrics.calls_rejected.labels(reason="denied").inc()
            self.log.warning("refusing stream of a call denied at the gate: %s", reason)
            await self._ws.close(code=1008, message=b"call denied")
            return
        services = self._s
        if services.stt_per_call is not None and services.registry.has_capacity():
            # The original design's model per call, for bench/'s comparison: loaded off the loop.
            self._own_stt = await asyncio.to_thread(services.stt_per_call)
            services = replace(services, stt=self._own_stt)
        call = Call(start, services, translator, self._send, self._close, max_minutes=self._minutes_left)
        if not call.admit():
            reason = self._s.registry.refusal() or "duplicate"
            self._s.metrics.calls_rejected.labels(reason=reason).inc()
            self.log.warning("refusing call: %s", reason)
            await self._play_busy(start, translator)
            await self._close()
            return
        self._call = call
        greeting = await self._greeting_for(call, start)
        if call.ended:  # a management hangup or the drain while the greeting was rendered: not restarted
            call.log.info("the call ended while its greeting was being prepared")
            return
        call.log.info(
            "call started: provider=%s from=%s to=%s rate=%d context=%s",
            start.provider,
            start.from_number or "?",
            start.to_number or "?",
            start.sample_rate,
            context_for_log(start.context),
        )
        await call.begin(greeting)

    async def _greeting_for(self, call: Call, start: Start) -> str:
        """The called business's settings applied, and the name of the greeting phrase to play."""
        try:
            business = await self._s.business.settings_for(business_number(start))
            call.apply_business(business)
            # The call's own voice says the fixed phrases too (rendered once per voice, greeting first).
            await self._s.phrases.in_voice(self._s.tts, call.profile.voice)
            if business is not None and business.greeting:
                return await self._s.phrases.custom(self._s.tts, business.greeting, call.profile.voice)
        except Exception as exc:  # e.g. the TTS is down with no fallback: the call must still go on
            self._s.metrics.errors.labels(kind="greeting").inc()
            call.log.warning(
                "the business greeting is unavailable (%s: %.200s); playing the configured one",
                type(exc).__name__,
                exc,
            )
        return "greeting"

    async def _play_busy(self, start: Start, translator: Translator) -> None:
        if pcm := self._s.phrases.audio("busy", start.sample_rate):
            pacer = OutboundPacer(translator, self._send, start.sample_rate, self._s.metrics)
            await pacer.play_alone(pcm, "busy")

    def _reject(self, violation: ProtocolViolation) -> None:
        self._inbound.reject(violation, self.log)

    async def _send(self, text: str) -> None:
        if self._ws.closed:
            return
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the call's cancellation when the
            # send completes at the same moment, leaving a task that teardown then waits on forever.
            async with asyncio.timeout(self._send_timeout):
                await self._ws.send_str(text)
        except (ConnectionResetError, RuntimeError) as exc:
            # The caller went away mid-send; the read loop sees the close and finalises the call.
            self.log.debug("send after close ignored: %s", exc)
        except TimeoutError:
            # Buffers are full: the other end is not reading. Cutting the connection ends the read loop,
            # which finalises the call as dropped, instead of the pacer waiting forever.
            self._s.metrics.errors.labels(kind="send_timeout").inc()
            self.log.warning("the provider stopped reading for %.0fs; cutting the stream", self._send_timeout)
            self._abort()

    async def _close(self, code: int = 1000) -> None:
        if not self._ws.closed:
            await self._ws.close(code=code)

    async def _receive(self) -> WSMessage | None:
        """The next message, or None once the stream is over: closed, or silent past its deadline (no
        `start` within limits.start_timeout_s; then no message within limits.inbound_idle_s, since
        providers send media continuously and silence means a half-open stream)."""
        loop = asyncio.get_running_loop()
        started = self._translator is not None
        deadline = self._last_inbound + self._limits.inbound_idle_s if started else self._start_deadline
        try:
            # Our own deadline, not receive(timeout=): aiohttp restarts that one on every ping and pong.
            async with asyncio.timeout_at(deadline):
                message = await anext(self._ws)  # ends (StopAsyncIteration) on close
        except StopAsyncIteration:
            return None
        except TimeoutError:
            if not started:
                self._s.metrics.calls_rejected.labels(reason="no_start").inc()
                self.log.warning("closing a stream that sent no start in %.0fs", self._limits.start_timeout_s)
                await self._close(code=1008)
            elif self._call is not None and not self._call.ended:
                self._s.metrics.errors.labels(kind="inbound_idle").inc()
                self._dropped_because = f"nothing received for {self._limits.inbound_idle_s:.0f}s"
                self._went_silent = True
            return None
        self._last_inbound = loop.time()
        return message

    def _unacknowledged(self) -> None:
        """A mark is overdue: the provider stopped reading (playback_acks.py). Cutting the connection ends
        the read loop, which finalises the call as dropped."""
        if self._call is None or self._call.ended:
            return
        self._s.metrics.errors.labels(kind="unacknowledged_audio").inc()
        self._dropped_because = (
            f"no mark echo {self._limits.mark_echo_timeout_s:g}s after its audio should have played"
        )
        self.log.warning("the provider stopped taking audio: %s; cutting it", self._dropped_because)
        self._abort()
