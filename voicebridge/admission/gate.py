"""The gate before a call is answered: the per-caller rate limit and the backend's budget check."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, runtime_checkable

from aiohttp import web

from voicebridge.backends.base import BackendError
from voicebridge.backends.node import BudgetDecision
from voicebridge.server.keys import BACKEND, METRICS, REGISTRY, SETTINGS

logger = logging.getLogger("voicebridge.admission")

# Exotel's Passthru waits a few seconds for its answer; a hanging backend must not outlast it.
BUDGET_TIMEOUT_S = 3.0


@runtime_checkable
class BudgetChecker(Protocol):
    """A backend that decides, before a call is answered, whether it may go ahead (the node backend)."""

    async def budget_check(
        self, call_sid: str, from_number: str, to_number: str, provider: str
    ) -> BudgetDecision: ...


async def gate_call(
    app: web.Application, call_sid: str, from_number: str, to_number: str, provider: str
) -> str:
    """Decide whether a new call may go ahead; "" to allow, else the reason it was refused (logged)."""
    settings, registry = app[SETTINGS], app[REGISTRY]
    limits = settings.calls
    reason = ""
    if not registry.within_rate_limit(from_number, limits.rate_limit_calls, limits.rate_limit_window_s):
        reason, label = (
            f"more than {limits.rate_limit_calls} calls from this number in the window",
            "rate_limited",
        )
    elif isinstance(backend := app[BACKEND], BudgetChecker):
        try:
            async with asyncio.timeout(BUDGET_TIMEOUT_S):
                decision = await backend.budget_check(call_sid, from_number, to_number, provider)
        except (BackendError, TimeoutError) as exc:
            problem = str(exc) or f"no answer in {BUDGET_TIMEOUT_S:.0f}s"
            if not settings.backend.allow_when_unreachable:
                reason, label = f"budget check failed: {problem}", "budget_unavailable"
            else:
                # A dead backend should not turn every caller away; the call's apology path covers it.
                logger.warning(
                    "budget check failed, allowing the call: %s", problem, extra={"call_sid": call_sid}
                )
        else:
            if not decision.allow:
                reason, label = f"budget: {decision.reason or 'denied'}", "budget"
            elif decision.minutes_left is not None and decision.minutes_left <= 0:
                # Zero minutes left is an empty budget, never "no limit".
                reason, label = "budget: no minutes left", "budget"
            elif decision.minutes_left is not None:
                registry.allow_minutes(call_sid, decision.minutes_left)
    if reason:
        registry.deny(call_sid, reason)
        app[METRICS].calls_rejected.labels(reason=label).inc()
        logger.warning("call refused at the gate: %s", reason, extra={"call_sid": call_sid or "-"})
    return reason
