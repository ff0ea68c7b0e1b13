"""The ways a call is ended from our side, each said to the caller and told to the provider: hangup,
transfer, goodbye (the time limit, the shutdown, a backend that keeps failing), and the actions a backend
asks for after its reply.

Only one way out runs per call (the first asked for): from the moment it is under way no new reply starts,
and whoever asks for another waits for the call's end instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from voicebridge.backends.base import BusinessSettings, ReplyAction
from voicebridge.call.basics import CallBasics
from voicebridge.call.digits import DigitCollector
from voicebridge.call.reply import Reply, ReplyPipeline
from voicebridge.call.services import CallServices


@dataclass(frozen=True, slots=True)
class EndingCall:
    """What a way out has of its call. The state changes and the teardown stay the call's: a way out asks
    for them through these callables, and nothing else of the call is within its reach."""

    basics: CallBasics
    ended: Callable[[], bool]
    finish: Callable[[str], Awaitable[bool]]
    torn_down: Callable[[], Awaitable[None]]
    # Stop the reply: its line keeps what was heard (interrupt), or the turn waits for the next (cancel).
    interrupt_reply: Callable[[], Awaitable[float]]
    cancel_reply: Callable[[], Awaitable[None]]
    play_phrase: Callable[[str, bytes], Reply]
    spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any] | None]


class CallActions:
    """The ways out of one call; the call's public hangup/transfer/end_for_shutdown land here."""

    def __init__(
        self,
        call: EndingCall,
        services: CallServices,
        replies: ReplyPipeline,
        digits: DigitCollector,
        close_socket: Callable[[], Awaitable[None]],
        max_minutes: float | None = None,
    ) -> None:
        self._close_socket = close_socket
        self._call = call
        self._s = services
        self._start = call.basics.start
        self._profile = call.basics.profile
        self._replies = replies
        self._conversation = call.basics.conversation
        self._digits = digits
        self._log = call.basics.log
        # Where a call goes when the backend keeps failing: the config's, or the called business's.
        self.fallback_number = services.settings.calls.fallback_number
        # The config's 0 means "no limit"; a budget's 0 (or less) means no minutes left: goodbye at once.
        self.minute_limits = [m for m in (services.settings.calls.max_call_minutes,) if m > 0]
        if max_minutes is not None:
            self.minute_limits.append(max(0.0, max_minutes))
        self.time_limit: asyncio.TimerHandle | None = None
        # The one way out under way (a transfer, goodbye or hangup), set before its first await: from then on
        # no new reply starts. A task of its own, like the teardown: whoever asked for it may go away.
        self._closing: asyncio.Future[None] | None = None

    def apply_business(self, business: BusinessSettings | None) -> None:
        """The called number's settings from the backend: its transfer number and call length limit."""
        if business is None:
            return
        if business.transfer_number:
            self.fallback_number = business.transfer_number
        # A business's max_call_minutes is a cap on each call's length, not a budget: 0 or less is no
        # meaningful cap (it would end every call at its greeting), so it means "not set", like the config's.
        if business.max_call_minutes is not None and business.max_call_minutes > 0:
            self.minute_limits.append(business.max_call_minutes)

    def start_time_limit(self) -> None:
        """From the greeting on, the shortest of the call's length limits ends it with a goodbye."""
        if self.minute_limits:
            self.time_limit = asyncio.get_running_loop().call_later(
                min(self.minute_limits) * 60,
                lambda: self._call.spawn(self.goodbye("time_limit"), "limit"),
            )

    def stop_time_limit(self) -> None:
        if self.time_limit is not None:
            self.time_limit.cancel()

    @property
    def closing(self) -> bool:
        """A transfer, goodbye or hangup is under way."""
        return self._closing is not None

    async def hangup(self, outcome: str = "hangup") -> None:
        """End the call now: Exotel's flow moves on when the stream closes; Twilio is told over REST."""
        await self._close(self._end_now(outcome))

    async def transfer(self, number: str) -> None:
        """Say the transfer line, then close the stream so the flow's Connect applet dials `number`."""
        await self._close(self._transfer(number))

    async def goodbye(self, outcome: str) -> None:
        """Say goodbye, then end the call (or wait for the transfer or goodbye already under way)."""
        await self._close(self._say_goodbye_and_end(outcome))

    async def leave_voicemail(self) -> None:
        """An answering machine's beep has ended: say prompts.voicemail_message, then end with `machine`."""
        await self._close(self._say_and_end("voicemail_message", "machine"))

    async def act(self, action: ReplyAction) -> None:
        """Carry out what the backend asked for once its reply has been heard."""
        self._log.info("backend action: %s", action.kind)
        if action.kind == "hangup":
            # The reply was the goodbye; end the call as the provider's hangup would.
            await self.hangup("completed")
        elif action.kind == "transfer" and action.number:
            await self.transfer(action.number)
        elif action.kind == "collect_digits" and action.max_digits > 0:
            self._digits.max_digits = action.max_digits

    async def give_up_on_backend(self) -> None:
        """Repeated backend failures: hand the caller to a human if there is one, else say goodbye."""
        await self._call.cancel_reply()
        self._conversation.record_unanswered()  # the turn that failed, before the goodbye or transfer line
        if self.fallback_number:
            await self.transfer(self.fallback_number)
        else:
            await self.goodbye("backend_failed")

    async def _close(self, way_out: Coroutine[Any, Any, None]) -> None:
        """Run `way_out` unless one is under way already or the call ended; wait for the call's end either
        way. Shielded: a management request that goes away mid-line must not leave the call half-closed,
        saying nothing and answering nothing."""
        if self._closing is None and not self._call.ended():
            self._closing = asyncio.ensure_future(way_out)
        else:
            way_out.close()  # too late for this one: the call is over, or already on its way out
        if self._closing is not None:
            await asyncio.shield(self._closing)
        await self._call.torn_down()

    async def _end_now(self, outcome: str) -> None:
        if await self._call.finish(outcome):  # else the caller hung up first: nothing to tell the provider
            await self._s.telephony.hang_up(self._start)
        await self._close_socket()

    async def _transfer(self, number: str) -> None:
        # Exotel's Connect applet asks us where to dial once the stream closes: only a transfer that goes
        # ahead names a destination.
        self._s.registry.facts.set_transfer(self._start.call_sid, number)
        self._log.info("transferring to %s", number)
        # Each await below can see the caller hang up: then there is no one left to transfer.
        await self._say("transfer")
        if await self._call.finish("transferred"):
            await self._s.telephony.transfer(self._start, number)
        await self._close_socket()

    async def _say_goodbye_and_end(self, outcome: str) -> None:
        self._log.info("ending the call politely: %s", outcome)
        await self._say_and_end("goodbye", outcome)

    async def _say_and_end(self, phrase: str, outcome: str) -> None:
        await self._say(phrase)
        if await self._call.finish(outcome):  # else the caller hung up during the goodbye
            await self._s.telephony.hang_up(self._start)
        await self._close_socket()

    async def _say(self, phrase: str) -> None:
        """Stop the reply (its line keeps what was heard) and play the closing line to its end."""
        await self._call.interrupt_reply()
        pcm = self._s.phrases.audio(phrase, self._start.sample_rate, self._profile.voice)
        if pcm and not self._call.ended():
            await self._replies.wait_played(self._call.play_phrase(phrase, pcm))
