"""The AI backend interface: caller text in, reply text out (streamed as deltas so speech starts early).

Besides `Backend`, the optional capabilities a backend may offer are declared here as Protocols: the budget
check before a call, the business settings of a called number, and taking call records. The daemon checks
once, when it wires the services, which of them the backend has, and hands each user the capability or None.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ConversationTurn:
    """One line of the conversation as the backend should see it (bot lines trimmed to what was heard)."""

    role: Literal["caller", "bot"]
    text: str


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a backend may know about the call it is answering."""

    call_sid: str
    provider: str
    from_number: str
    to_number: str
    # The provider's custom parameters, validated (telephony/context.py); immutable, empty by default.
    context: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # The called business's system prompt for this call ("": the backend's configured one; openai only).
    system_prompt: str = ""
    # "outbound" for a call the daemon placed (voicebridge/outbound/), answered by the person called.
    direction: Literal["inbound", "outbound"] = "inbound"


@dataclass(frozen=True, slots=True)
class ReplyAction:
    """What the backend wants done after its reply has been spoken (see docs/backend-api.md)."""

    kind: Literal["hangup", "transfer", "collect_digits"]
    number: str = ""
    max_digits: int = 0


@dataclass(frozen=True, slots=True)
class BusinessSettings:
    """Per-number settings from `GET /v1/business`; None means "use the daemon's config"."""

    greeting: str | None = None
    voice: str | None = None
    language: str | None = None
    system_prompt: str | None = None
    transfer_number: str | None = None
    max_call_minutes: float | None = None


class BackendError(Exception):
    """The backend failed or timed out for this turn."""


class Backend(Protocol):
    """Produces the bot's reply to what the caller said."""

    name: str
    # True when a reply can be computed speculatively and thrown away without side effects.
    speculative_safe: bool

    async def start(self) -> None:
        """Open connections (called once, before the daemon listens)."""
        ...

    async def close(self) -> None:
        """Release connections (called once, at shutdown)."""
        ...

    # Async generators, so that whoever stops reading early can close them (and their HTTP response) at once.
    def reply(
        self, call: CallInfo, text: str, history: list[ConversationTurn]
    ) -> AsyncGenerator[str | ReplyAction, None]:
        """Yield the reply as text deltas (and at most one action, last); raise BackendError on failure."""
        ...

    def digits(
        self, call: CallInfo, digits: str, history: list[ConversationTurn]
    ) -> AsyncGenerator[str | ReplyAction, None]:
        """Yield the reply to a completed keypad entry (the call collects digits deterministically)."""
        ...


# --- optional capabilities: a backend offers each or not; whoever needs one is handed it (or None) ------

DeliveryResult = Literal["delivered", "parked", "retry"]


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """The backend's answer to `POST /v1/budget/check`."""

    allow: bool
    reason: str = ""
    minutes_left: float | None = None


@runtime_checkable
class BudgetCheck(Protocol):
    """A backend that decides, before a call is answered, whether it may go ahead (the node backend)."""

    async def budget_check(
        self, call_sid: str, from_number: str, to_number: str, provider: str
    ) -> BudgetDecision:
        """The decision; BackendError when the backend gives no usable answer."""
        ...


@runtime_checkable
class BusinessLookup(Protocol):
    """A backend that knows per-number settings of the business being called (the node backend)."""

    async def business(self, to_number: str) -> BusinessSettings | None:
        """The settings for a called number; None when there are none or they cannot be fetched."""
        ...


@runtime_checkable
class RecordSink(Protocol):
    """A backend that takes the call records from the outbox (the node backend, docs/backend-api.md)."""

    async def deliver(
        self, path: str, payload: dict[str, Any], idempotency_key: str
    ) -> tuple[DeliveryResult, str]:
        """Deliver once: ("delivered", ""), ("retry", why) or ("parked", why) for a refusal for good."""
        ...
