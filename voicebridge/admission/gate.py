"""Who gets in: the gate before a call is answered (the per-caller rate limit and the backend's budget
check), the calls it refused, and the calls it let through whose audio stream has not connected yet.

Capacity, draining and load are not decided here: they are the registry's (`CallRegistry.refusal`), which
the webhooks ask first and the stream asks again when the call is admitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TypeVar

from voicebridge.backends.base import BackendError, BudgetCheck
from voicebridge.cluster.rates import CallerRates, LocalCallerRates
from voicebridge.config.schema import Settings
from voicebridge.server.metrics import Metrics

logger = logging.getLogger("voicebridge.admission")

# Exotel's Passthru waits a few seconds for its answer; a hanging backend must not outlast it.
BUDGET_TIMEOUT_S = 3.0
PENDING_TTL_S = 300.0
# Denials and budget caps are kept for this many recent calls: a stream arrives seconds after its webhook.
DECISIONS_KEPT = 1000
V = TypeVar("V")


@dataclass(slots=True)
class PendingCall:
    """A call announced by a webhook whose audio stream has not connected yet."""

    call_sid: str
    from_number: str = ""
    to_number: str = ""
    provider: str = "exotel"
    created: float = field(default_factory=time.monotonic)
    # From the budget check: the call is ended politely when these run out.
    minutes_left: float | None = None


class CallGate:
    """Decides whether a new call may go ahead, and remembers what it decided until the stream comes."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        budget: BudgetCheck | None = None,
        rates: CallerRates | None = None,
    ) -> None:
        """`budget` is the backend's budget check, None when the backend has none (every call may go);
        `rates` counts calls per caller: in this process unless the cluster's shared count is given."""
        self._limits = settings.calls
        self._allow_when_unreachable = settings.backend.allow_when_unreachable
        self._metrics = metrics
        self._budget = budget
        self._pending: dict[str, PendingCall] = {}
        self._denied: OrderedDict[str, str] = OrderedDict()
        self._allowed_minutes: OrderedDict[str, float] = OrderedDict()
        self._rates: CallerRates = rates or LocalCallerRates()

    async def check(self, call_sid: str, from_number: str, to_number: str, provider: str) -> str:
        """Decide whether a new call may go ahead; "" to allow, else the reason it was refused (logged)."""
        limits = self._limits
        reason = label = ""
        if not await self.within_rate_limit(from_number):
            reason, label = (
                f"more than {limits.rate_limit_calls} calls from this number in the window",
                "rate_limited",
            )
        elif self._budget is not None:
            reason, label = await self._check_budget(call_sid, from_number, to_number, provider)
        if reason:
            self.deny(call_sid, reason)
            self._metrics.calls_rejected.labels(reason=label).inc()
            logger.warning("call refused at the gate: %s", reason, extra={"call_sid": call_sid or "-"})
        return reason

    async def _check_budget(
        self, call_sid: str, from_number: str, to_number: str, provider: str
    ) -> tuple[str, str]:
        """The budget's (reason, metric label), ("", "") to allow; a cap is remembered for the stream."""
        assert self._budget is not None
        try:
            async with asyncio.timeout(BUDGET_TIMEOUT_S):
                decision = await self._budget.budget_check(call_sid, from_number, to_number, provider)
        except (BackendError, TimeoutError) as exc:
            problem = str(exc) or f"no answer in {BUDGET_TIMEOUT_S:.0f}s"
            if not self._allow_when_unreachable:
                return f"budget check failed: {problem}", "budget_unavailable"
            # A dead backend should not turn every caller away; the call's apology path covers it.
            logger.warning(
                "budget check failed, allowing the call: %s", problem, extra={"call_sid": call_sid}
            )
            return "", ""
        if not decision.allow:
            return f"budget: {decision.reason or 'denied'}", "budget"
        if decision.minutes_left is not None and decision.minutes_left <= 0:
            # Zero minutes left is an empty budget, never "no limit".
            return "budget: no minutes left", "budget"
        if decision.minutes_left is not None:
            self.allow_minutes(call_sid, decision.minutes_left)
        return "", ""

    async def within_rate_limit(self, from_number: str) -> bool:
        """Count a call from `from_number`; False when it is over `calls.rate_limit_calls` calls in the last
        `calls.rate_limit_window_s` (on any node, with `[cluster] redis_url`)."""
        limit, window_s = self._limits.rate_limit_calls, self._limits.rate_limit_window_s
        if limit <= 0 or not from_number:
            return True
        return await self._rates.admit(from_number, limit, window_s)

    def register_pending(self, pending: PendingCall) -> None:
        """Remember a call a webhook announced, so its stream can be matched to From/To."""
        now = time.monotonic()
        for sid in [sid for sid, p in self._pending.items() if now - p.created > PENDING_TTL_S]:
            del self._pending[sid]
        self._pending[pending.call_sid] = pending

    def take_pending(self, call_sid: str) -> PendingCall | None:
        """The webhook's view of a call whose stream just started, if there was one."""
        pending = self._pending.pop(call_sid, None)
        minutes = self._allowed_minutes.pop(call_sid, None)
        if pending is None and minutes is not None:
            pending = PendingCall(call_sid)
        if pending is not None and minutes is not None:
            pending.minutes_left = minutes
        return pending

    def allow_minutes(self, call_sid: str, minutes: float) -> None:
        """The budget's cap for a call that has not connected its stream yet."""
        _keep(self._allowed_minutes, call_sid, minutes)

    def deny(self, call_sid: str, reason: str) -> None:
        """Remember that a call was refused at the gate, so its stream is refused too."""
        _keep(self._denied, call_sid, reason)

    def denied(self, call_sid: str) -> str | None:
        """Why this call was refused at the gate, or None."""
        return self._denied.get(call_sid)


def _keep(table: OrderedDict[str, V], key: str, value: V) -> None:
    """table[key] = value; the oldest beyond DECISIONS_KEPT go."""
    table[key] = value
    while len(table) > DECISIONS_KEPT:
        table.popitem(last=False)
