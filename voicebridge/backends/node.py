"""The business's own API as the backend (`backend.kind = "node"`), per docs/backend-api.md.

Besides replies it answers the budget check before a call, the business settings for a called number,
and takes every call record from the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

from voicebridge.backends.base import (
    BackendError,
    BudgetDecision,
    BusinessSettings,
    CallInfo,
    ConversationTurn,
    DeliveryResult,
    ReplyAction,
)
from voicebridge.backends.http import HttpBackend

logger = logging.getLogger("voicebridge.backend.node")

# Answers that no retry can change: the record itself is malformed. Anything else (401/403 from a wrong
# key, 404 during a deploy, 408, 413 until the backend's body limit is raised, 429, 5xx, no connection)
# is retried.
PERMANENT_STATUSES = frozenset({400, 422})


def _number(value: Any) -> float | None:
    """A JSON number (bool is not one, though Python thinks so), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    # An empty string means "not set" just like a missing key: fall back to the daemon's config.
    return value if isinstance(value, str) and value else None


def parse_action(value: Any) -> ReplyAction | None:
    """The reply's `action`, validated; a malformed or unknown one is logged and ignored."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "hangup":
        return ReplyAction("hangup")
    if kind == "transfer":
        number = value.get("number")
        if isinstance(number, str) and number.strip():
            return ReplyAction("transfer", number=number.strip())
        logger.warning("backend asked for a transfer without a number; ignored")
        return None
    if kind == "collect_digits":
        count = value.get("max_digits")
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            return ReplyAction("collect_digits", max_digits=count)
        logger.warning("backend asked to collect digits without a positive max_digits; ignored")
        return None
    # Ignoring rather than failing keeps an older daemon working with a newer backend.
    logger.warning("backend sent an unknown action %.40r; ignored", kind)
    return None


class NodeBackend(HttpBackend):
    """Replies, budget checks, business settings and record delivery over the backend contract."""

    name = "node"
    # A caller message may change the backend's state (bookings, counters): never send one speculatively.
    speculative_safe = False

    def reply(
        self, call: CallInfo, text: str, history: list[ConversationTurn]
    ) -> AsyncGenerator[str | ReplyAction, None]:
        """Stream the backend's reply to a caller message; sent once, never repeated."""
        turn = sum(line.role == "caller" for line in history) + 1
        return self._answer(call, "messages", {"turn": turn, "text": text}, history)

    def digits(
        self, call: CallInfo, digits: str, history: list[ConversationTurn]
    ) -> AsyncGenerator[str | ReplyAction, None]:
        """Stream the backend's reply to a completed keypad entry."""
        return self._answer(call, "dtmf", {"digits": digits}, history)

    async def _answer(
        self, call: CallInfo, endpoint: str, message: dict[str, Any], history: list[ConversationTurn]
    ) -> AsyncGenerator[str | ReplyAction, None]:
        """POST `message` (with the call's numbers, context and history) to the call's `endpoint`; yield
        deltas then the action, from either answer shape (one JSON object or NDJSON lines)."""
        path = f"/v1/calls/{quote(call.call_sid, safe='')}/{endpoint}"
        body = {
            **message,
            "from": call.from_number,
            "to": call.to_number,
            # The call's context (contract version 1, an optional field): {} when the call has none.
            "context": dict(call.context),
            # "outbound" when the daemon placed the call (contract version 1, optional; "inbound" else).
            "direction": call.direction,
            "history": [{"role": turn.role, "text": turn.text} for turn in history],
        }
        async with aclosing(self._http.stream_ndjson(path, body)) as items:
            async for item in items:
                if "reply" in item:  # the single-object answer
                    reply = item["reply"]
                    if not isinstance(reply, str | None):
                        raise BackendError(f"backend POST {path}: reply is not a string")
                    if reply:
                        yield reply
                    done = item
                else:
                    delta = item.get("delta")
                    if not isinstance(delta, str | None):
                        raise BackendError(f"backend POST {path}: delta is not a string")
                    if delta:
                        yield delta
                    if item.get("done") is not True:
                        continue
                    done = item
                if action := parse_action(done.get("action")):
                    yield action
                return
        # Whatever was said so far stands; the caller hears the apology for the rest.
        raise BackendError(f"backend POST {path}: stream ended before its done line")

    async def business(self, to_number: str) -> BusinessSettings | None:
        """Settings for the called number; None when there are none or they cannot be fetched (logged)."""
        path = f"/v1/business?to={quote(to_number, safe='')}"
        try:
            status, data = await self._http.request_json("GET", path, idempotent=True)
        except BackendError as exc:
            logger.warning("business settings unavailable, using the config's: %s", exc)
            return None
        if status == 404:
            return None
        if not 200 <= status < 300 or not isinstance(data, dict):
            logger.warning("business settings unusable (HTTP %d), using the config's", status)
            return None
        minutes = _number(data.get("max_call_minutes"))
        return BusinessSettings(
            greeting=_text(data.get("greeting")),
            voice=_text(data.get("voice")),
            language=_text(data.get("language")),
            system_prompt=_text(data.get("system_prompt")),
            transfer_number=_text(data.get("transfer_number")),
            max_call_minutes=minutes if minutes and minutes > 0 else None,
        )

    async def budget_check(
        self, call_sid: str, from_number: str, to_number: str, provider: str
    ) -> BudgetDecision:
        """Ask whether a call may go ahead; BackendError when the backend gives no usable answer."""
        path = "/v1/budget/check"
        body = {"call_sid": call_sid, "from": from_number, "to": to_number, "provider": provider}
        # Only reads the budget, so the contract lets it be repeated on connection errors.
        status, data = await self._http.request_json("POST", path, body, idempotent=True)
        if not 200 <= status < 300:
            raise BackendError(f"backend POST {path}: HTTP {status}")
        if not isinstance(data, dict) or not isinstance(data.get("allow"), bool):
            raise BackendError(f"backend POST {path}: answer has no boolean 'allow'")
        reason = data.get("reason")
        minutes = _number(data.get("minutes_left"))
        if data["allow"] and minutes is not None and minutes <= 0:
            # An allowance of zero (or fewer) minutes is an empty budget, not an absent limit.
            return BudgetDecision(allow=False, reason="no minutes left", minutes_left=0.0)
        return BudgetDecision(
            allow=data["allow"],
            reason=reason if isinstance(reason, str) else "",
            minutes_left=max(0.0, minutes) if minutes is not None else None,
        )

    async def deliver(
        self, path: str, payload: dict[str, Any], idempotency_key: str
    ) -> tuple[DeliveryResult, str]:
        """Deliver one outbox record once; the outbox owns retrying and parking (see PERMANENT_STATUSES)."""
        try:
            status, _ = await self._http.request_json(
                "POST", path, payload, idempotent=False, idempotency_key=idempotency_key
            )
        except BackendError as exc:  # unreachable, timed out, or the breaker is open
            logger.debug("delivery of %s failed: %s", idempotency_key, exc)
            return "retry", str(exc)[:200]
        except (ValueError, TypeError) as exc:
            # Not the network: aiohttp refuses this request itself (a control character in the key, a
            # payload it cannot encode). Sending it again fails the same way, so it is parked with why.
            return "parked", f"cannot be sent: {type(exc).__name__}: {exc}"[:200]
        if 200 <= status < 300:
            return "delivered", ""
        return ("parked" if status in PERMANENT_STATUSES else "retry"), f"HTTP {status}"
