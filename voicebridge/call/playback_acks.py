"""Whether the provider is still taking our audio: every mark we send after audio must come back.

Kernel buffers hide a provider that stopped reading: at telephone bitrates they absorb minutes of audio
before a send blocks, so "the send did not complete" is no rule. A mark is echoed only once the provider
has read and played the audio before it, whatever the buffers hold. So: each mark is due a fixed grace
after the audio before it should have finished playing (the pacer sends at real time); one that is
overdue means the provider stopped reading (or playing), and the stream is cut.

A mark with no audio before it (a reply that produced none, one cut by a barge-in's `clear`) has no
time at which it should come back, and a provider may echo it at once, late or never: it is not waited
for. A timer on the oldest due mark, not a poll, notices an overdue one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from voicebridge.telephony.base import Translator
from voicebridge.telephony.events import InboundEvent, ProviderName, Start


class PlaybackAcks:
    """Wraps the stream's translator: notes every outbound media and mark as the call builds them."""

    def __init__(
        self, inner: Translator, grace_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._grace = grace_s
        self._clock = clock
        self._play_until = 0.0
        # Mark name → when its echo is due; insertion order is send order.
        self._due: dict[str, float] = {}
        # Audio was sent since the last mark or clear: the next mark has a time to be echoed by.
        self._audio_since_mark = False
        self._on_overdue: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None

    @property
    def provider(self) -> ProviderName:
        return self._inner.provider

    @property
    def sample_rate(self) -> int:
        return self._inner.sample_rate

    @property
    def outbound_chunk_ms(self) -> int:
        return self._inner.outbound_chunk_ms

    def parse(self, message: dict[str, Any]) -> InboundEvent:
        return self._inner.parse(message)

    def accept(self, start: Start) -> None:
        self._inner.accept(start)

    def media(self, pcm16: bytes) -> str:
        """The media message; its audio plays after everything sent before it."""
        self._play_until = max(self._play_until, self._clock()) + len(pcm16) / 2 / self.sample_rate
        self._audio_since_mark = True
        return self._inner.media(pcm16)

    def mark(self, name: str) -> str:
        """The mark message; its echo is due `grace_s` after the audio before it has played (a mark that
        follows no audio is not waited for)."""
        self._due.pop(name, None)
        # grace 0 is the rule turned off: nothing is waited for, so nothing is kept (a provider that never
        # echoes would otherwise grow this for the whole call).
        if self._audio_since_mark and self._grace > 0:
            self._due[name] = max(self._play_until, self._clock()) + self._grace
            self._audio_since_mark = False
            self._arm()
        return self._inner.mark(name)

    def clear(self) -> str:
        """The clear message: the provider drops its queue, and may drop the marks in it unechoed."""
        self._due.clear()
        self._play_until = self._clock()
        self._audio_since_mark = False
        self._arm()
        return self._inner.clear()

    def echoed(self, name: str) -> None:
        """A mark came back: it and every mark sent before it are settled (providers echo in order)."""
        if name not in self._due:
            return
        for pending in list(self._due):
            del self._due[pending]
            if pending == name:
                break
        self._arm()

    def overdue_s(self) -> float:
        """How long the oldest unechoed mark is past due; 0 when none is."""
        if not self._due:
            return 0.0
        return max(0.0, self._clock() - next(iter(self._due.values())))

    def watch(self, on_overdue: Callable[[], None]) -> None:
        """Call `on_overdue` (once) when the oldest unechoed mark becomes overdue; needs a running loop."""
        self._on_overdue = on_overdue
        self._arm()

    def stop_watching(self) -> None:
        self._on_overdue = None
        self._arm()

    def _arm(self) -> None:
        """Keep one timer, at the oldest due mark's due time (marks settle in send order)."""
        due = next(iter(self._due.values()), None) if self._on_overdue is not None else None
        if due == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_due = None, due
        if due is not None:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, due - self._clock()), self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_due = None, None
        on_overdue = self._on_overdue
        if on_overdue is not None and self.overdue_s() > 0:
            self._on_overdue = None
            on_overdue()
        else:
            self._arm()
