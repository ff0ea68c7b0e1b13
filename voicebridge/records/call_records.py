"""A call's records: the durable ones (events, cost, conversation log) put into the outbox under stable keys,
and the record of a finished call kept in memory."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from voicebridge.backends.base import CallInfo
from voicebridge.config.schema import Settings
from voicebridge.records.costs import CallUsage, call_cost
from voicebridge.records.outbox import Outbox
from voicebridge.records.outbox_rows import RecordNotStored
from voicebridge.records.report import REPORT_KIND, call_report
from voicebridge.telephony.sids import path_segment

logger = logging.getLogger("voicebridge.records")


@dataclass(slots=True)
class CallRecord:
    """What is kept of a call after it ended (in memory, for `calls show`; the outbox has the durable
    records)."""

    call_sid: str
    provider: str
    from_number: str
    to_number: str
    started_at: float
    ended_at: float
    duration_s: float
    turns: int
    outcome: str
    transcript: list[dict[str, Any]]
    status_callbacks: list[dict[str, str]] = field(default_factory=list)
    recording_url: str = ""
    transfer_to: str = ""
    local_recording: str = ""
    context: dict[str, str] = field(default_factory=dict)
    # "outbound" for a call the daemon placed.
    direction: str = "inbound"
    # Outbound calls: who answered (human, machine, unknown); "" for an inbound call.
    answered_by: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    """Writes one stream session's records; a record that cannot be stored is one counted ERROR line with
    its key (never its payload: transcripts and phone numbers stay out of logs), never dropped quietly.

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
                "context": dict(self._info.context),
                "direction": self._info.direction,
            },
        )

    async def answered(
        self, answered_by: str, decision_s: float, reason: str, correction: bool = False
    ) -> None:
        """The `answered` event of an outbound call: who answered, after how many seconds of its audio, and
        why (short_greeting, long_greeting, beep, timeout, pause, provider). A `correction` (the provider's
        verdict after ours) is a second event under a key of its own."""
        await self._put(
            "event",
            "event:answered:corrected" if correction else "event:answered",
            "events",
            {
                "event": "answered",
                "at": time.time(),
                "answered_by": answered_by,
                "decision_s": round(decision_s, 3),
                "reason": reason,
                "context": dict(self._info.context),
            },
        )

    async def ended(
        self,
        outcome: str,
        usage: CallUsage,
        transcript: list[dict[str, Any]],
        *,
        started_at: float | None = None,
        recording_path: str = "",
        answered_by: str = "",
    ) -> None:
        """The `ended` event, the cost record and the conversation log; and the post-call report when
        `[report] url` is set (for every backend kind: the outbox routes it to the report's own sink).
        `answered_by` (outbound calls only) goes into the `ended` event, the conversation and the report."""
        # Only on outbound calls: an inbound call's records stay exactly as they were.
        answered = {"answered_by": answered_by} if answered_by else {}
        await self._put(
            "event",
            "event:ended",
            "events",
            {
                "event": "ended",
                "outcome": outcome,
                "duration_s": round(usage.duration_s, 3),
                "at": time.time(),
                "context": dict(self._info.context),
                "direction": self._info.direction,
                **answered,
            },
        )
        # Outbound minutes are billed at their own rate by the providers: the record says which it was.
        cost = {**call_cost(usage, self._settings.costs), "direction": self._info.direction}
        turns = conversation_turns(transcript)
        await self._put("cost", "cost", "cost", cost)
        await self._put(
            "conversation",
            "conversation",
            "conversation",
            {
                "turns": turns,
                "outcome": outcome,
                "context": dict(self._info.context),
                "direction": self._info.direction,
                **answered,
            },
        )
        if self._settings.report.url:
            report = call_report(
                self._info,
                report_id=self._key(REPORT_KIND),
                session=self.session,
                outcome=outcome,
                started_at=started_at if started_at is not None else time.time() - usage.duration_s,
                duration_s=usage.duration_s,
                turns=turns,
                cost=cost,
                recording_path=recording_path,
            )
            report.update(answered)
            await self._put(REPORT_KIND, REPORT_KIND, REPORT_KIND, report, path=REPORT_KIND)

    def _key(self, suffix: str) -> str:
        return f"{self._info.call_sid}:{self.session}:{suffix}"

    async def _put(
        self, kind: str, suffix: str, endpoint: str, payload: dict[str, Any], path: str | None = None
    ) -> None:
        """Store one record under its key; `path` when it is not the backend's `endpoint` of this call."""
        key = self._key(suffix)
        body = {**payload, "session": self.session}
        where = path if path is not None else f"{self._base}/{endpoint}"
        try:
            stored = await self._outbox.add(key, self._info.call_sid, kind, where, body)
        except RecordNotStored as exc:  # retried already: the disk is full or the file is gone
            self._outbox.report_unstored(key, exc.reason)
            return
        except Exception as exc:  # a bug: still one counted line, and the call's teardown goes on
            self._outbox.report_unstored(key, f"{type(exc).__name__}: {exc}")
            return
        if not stored:  # cannot happen with a fresh session id; if it does, this copy is lost
            self._outbox.report_unstored(key, "the outbox already held this key")
