"""An in-process dialler implementing outbound/dialer.py's Dialer and AttemptEvents: each number is
scripted (a list of outcomes, one per attempt; the last repeats), rings for `ring_s` and, when answered,
stays in call for `talk_s` before its CallAttemptEnded is told. It records every dial and the most calls
it ever had at once, so tests can assert what a campaign really did."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from voicebridge.outbound.dialer import (
    AttemptListener,
    CallAttemptEnded,
    DialRefused,
    DialRequest,
    DialResult,
)

# One attempt's script: a dial status, or "human"/"machine" (completed, answered by that), or
# "refuse:<reason>" (DialRefused before anything rings), or "silent" (rings, and its end is never told).
Script = str


@dataclass
class FakeDialer:
    scripts: Mapping[str, list[Script]] = field(default_factory=dict)
    default: Script = "human"
    ring_s: float = 0.01
    talk_s: float = 0.02
    listeners: list[AttemptListener] = field(default_factory=list)
    dials: Counter[str] = field(default_factory=Counter)
    # Every dial asked for, refused ones too: where each number is in its script.
    asked: Counter[str] = field(default_factory=Counter)
    # The loop time of every dial placed.
    dial_times: list[float] = field(default_factory=list)
    requests: list[DialRequest] = field(default_factory=list)
    live: int = 0
    max_live: int = 0
    _sids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def subscribe(self, listener: AttemptListener) -> None:
        self.listeners.append(listener)

    def _script(self, number: str) -> Script:
        steps = self.scripts.get(number, [self.default])
        return steps[min(self.asked[number], len(steps) - 1)]

    async def dial(self, request: DialRequest) -> DialResult:
        step = self._script(request.to_number)
        self.asked[request.to_number] += 1
        if step.startswith("refuse:"):
            raise DialRefused(step.removeprefix("refuse:"))
        self.dials[request.to_number] += 1
        self.requests.append(request)
        self.dial_times.append(asyncio.get_running_loop().time())
        sid = f"CAfake{next(self._sids):06d}"
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        task = asyncio.create_task(self._play(sid, step))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return DialResult(sid, "exotel")

    async def _play(self, sid: str, step: Script) -> None:
        await asyncio.sleep(self.ring_s)
        if step == "silent":
            return
        if step in ("human", "machine"):
            await asyncio.sleep(self.talk_s)
            event = CallAttemptEnded(sid, "exotel", "completed", step, "completed")  # type: ignore[arg-type]
        else:
            event = CallAttemptEnded(sid, "exotel", step)  # type: ignore[arg-type]
        self.live -= 1
        for listener in self.listeners:
            listener(event)

    def kill(self) -> None:
        """The daemon died: its calls are gone and nobody hears how they ended."""
        for task in self._tasks:
            task.cancel()
        self.listeners.clear()
        self.live = 0


@dataclass
class FakeLoad:
    """The daemon's calls as the admission rule sees them: `inbound` live inbound calls, plus the fake
    dialler's live calls."""

    dialer: FakeDialer
    slots: int = 30
    inbound: int = 0

    def live_calls(self) -> int:
        return self.inbound + self.dialer.live

    def capacity(self) -> int:
        return self.slots


@dataclass
class FakeClock:
    """Unix seconds that run `speed` times faster than real time from `start`, and can be set."""

    start: float
    speed: float = 1.0
    _loop_t0: float | None = None

    def __call__(self) -> float:
        loop_now = asyncio.get_running_loop().time()
        if self._loop_t0 is None:
            self._loop_t0 = loop_now
        return self.start + (loop_now - self._loop_t0) * self.speed

    def set(self, when: float) -> None:
        self.start = when
        self._loop_t0 = asyncio.get_running_loop().time()
