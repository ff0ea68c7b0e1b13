"""A call's durable records (events, cost, conversation log) put into the outbox under stable keys."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from voicebridge.backends.base import CallInfo
from voicebridge.config import Settings
from voicebridge.daemon.costs import CallUsage, call_cost
from voicebridge.daemon.outbox import Outbox
from voicebridge.daemon.sids import path_segment

logger = logging.getLogger("voicebridge.records")


def conversation_turns(transcript: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The transcript as the contract's turns: each bot line with `heard`, cut short after a barge-in."""
    turns: list[dict[str, Any]] = []
    for entry in transcript:
        if entry.get("barge_in"):
            spoken = next((t for t in reversed(turns) if t["role"] == "bot"), None)
            if spoken is not None:
                spoken["heard"] = entry.get("heard", "")
                spoken["barge_in"] = True
            continue
        turn = dict(entry)
        if turn["role"] == "bot":
            turn.setdefault("heard", turn.get("text", ""))
        turns.append(turn)
    return turns


class CallRecorder:
    """Writes one stream session's records; a failed write is logged with the record, never dropped quietly.

    A CallSid can have more than one stream session (a reconnect, a second Voicebot applet in the flow),
    each with its own events, cost and conversation: every record's key and payload carry the session's
    id, so a second session is never mistaken for a repeat of the first.
    """

    def __init__(self, outbox: Outbox, settings: Settings, info: CallInfo) -> None:
        self._outbox = outbox
        self._settings = settings
        self._info = info
        self.session = secrets.token_hex(8)
        self._base = f"/v1/calls/{path_segment(info.call_sid)}"

    async def started(self) -> None:
        """The `started` call event."""
        await self._put(
            "event",
            "event:started",
            "events",
            {
                "event": "started",
                "at": time.time(),
                "from": self._info.from_number,
                "to": self._info.to_number,
                "provider": self._info.provider,
            },
        )

    async def ended(self, outcome: str, usage: CallUsage, transcript: list[dict[str, Any]]) -> None:
        """The `ended` event, the cost record and the conversation log."""
        await self._put(
            "event",
            "event:ended",
            "events",
            {
                "event": "ended",
                "outcome": outcome,
                "duration_s": round(usage.duration_s, 3),
                "at": time.time(),
            },
        )
        await self._put("cost", "cost", "cost", call_cost(usage, self._settings.costs))
        await self._put(
            "conversation",
            "conversation",
            "conversation",
            {"turns": conversation_turns(transcript), "outcome": outcome},
        )

    async def _put(self, kind: str, suffix: str, path: str, payload: dict[str, Any]) -> None:
        key = f"{self._info.call_sid}:{self.session}:{suffix}"
        body = {**payload, "session": self.session}
        try:
            stored = await self._outbox.add(key, self._info.call_sid, kind, f"{self._base}/{path}", body)
            if not stored:  # cannot happen with a fresh session id; if it does, say so with the record
                logger.error("outbox already held %s; this copy was not stored: %s", key, body)
        except Exception as exc:  # the disk is full or the file is gone: say so loudly, with the record
            logger.error(
                "could not store %s in the outbox (%s): %s",
                key,
                exc,
                body,
                extra={"call_sid": self._info.call_sid},
            )
