"""Who gets in: the gate before a call is answered (the per-caller rate limit and the backend's budget
check), the calls it refused, and the calls it let through whose audio stream has not connected yet.

Capacity, draining and load are not decided here: they are the registry's (`CallRegistry.refusal`), which
the webhooks ask first and the stream asks again when the call is admitted.
"""

from __future__ import annotations

import asyncio
import logging

from voicebridge.backends.base import BackendError, BudgetCheck
from voicebridge.cluster.facts import CallFacts, LocalCallFacts, PendingCall
from voicebridge.cluster.rates import CallerRates, LocalCallerRates
from voicebridge.config.schema import Settings
from voicebridge.server.metrics import Metrics

logger = logging.getLogger("voicebridge.admission")

# Exotel's Passthru waits a few seconds for its answer; a hanging backend must not outlast it.
BUDGET_TIMEOUT_S = 3.0

__all__ = ["CallGate", "PendingCall"]


class CallGate:
    """Decides whether a new call may go ahead, and remembers what it decided until the stream comes."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        budget: BudgetCheck | None = None,
        rates: CallerRates | None = None,
        facts: CallFacts | None = None,
    ) -> None:
        """`budget` is the backend's budget check, None when the backend has none (every call may go);
        `rates` counts calls per caller and `facts` holds what was decided until the stream comes: both in
        this process unless the cluster's shared ones are given."""
        self._limits = settings.calls
        self._allow_when_unreachable = settings.backend.allow_when_unreachable
        self._metrics = metrics
        self._budget = budget
        self._rates: CallerRates = rates or LocalCallerRates()
        self._facts: CallFacts = facts or LocalCallFacts()

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
            await self.deny(call_sid, reason)
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
            await self.allow_minutes(call_sid, decision.minutes_left)
        return "", ""

    async def within_rate_limit(self, from_number: str) -> bool:
        """Count a call from `from_number`; False when it is over `calls.rate_limit_calls` calls in the last
        `calls.rate_limit_window_s` (on any node, with `[cluster] redis_url`)."""
        limit, window_s = self._limits.rate_limit_calls, self._limits.rate_limit_window_s
        if limit <= 0 or not from_number:
            return True
        return await self._rates.admit(from_number, limit, window_s)

    async def register_pending(self, pending: PendingCall) -> None:
        """Remember a call a webhook announced, so its stream can be matched to From/To."""
        await self._facts.remember_pending(pending)

    async def take_pending(self, call_sid: str) -> PendingCall | None:
        """The webhook's view of a call whose stream just started, if there was one."""
        return await self._facts.take_pending(call_sid)

    async def allow_minutes(self, call_sid: str, minutes: float) -> None:
        """The budget's cap for a call that has not connected its stream yet."""
        await self._facts.allow_minutes(call_sid, minutes)

    async def deny(self, call_sid: str, reason: str) -> None:
        """Remember that a call was refused at the gate, so its stream is refused too."""
        await self._facts.deny(call_sid, reason)

    async def denied(self, call_sid: str) -> str | None:
        """Why this call was refused at the gate, or None."""
        return await self._facts.denied(call_sid)
