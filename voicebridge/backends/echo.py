"""The built-in echo backend: repeats the caller, so the whole voice path can run with no AI at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

from voicebridge.backends.base import CallInfo, ConversationTurn


class EchoBackend:
    """Replies "You said: <text>"; stateless, so speculative replies are safe."""

    name = "echo"
    speculative_safe = True

    async def start(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Nothing to release."""

    async def reply(self, call: CallInfo, text: str, history: list[ConversationTurn]) -> AsyncIterator[str]:
        """Yield the echo reply as one delta."""
        yield f"You said: {text.strip()}"

    async def digits(
        self, call: CallInfo, digits: str, history: list[ConversationTurn]
    ) -> AsyncIterator[str]:
        """Read the keypad entry back digit by digit."""
        yield f"You pressed {', '.join(digits)}."
