"""What every part of one call shares: who is calling, what was said, what it costs, and its log."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from voicebridge.backends.base import CallInfo
from voicebridge.call.conversation import Conversation
from voicebridge.call.profile import CallProfile
from voicebridge.records.costs import CallUsage
from voicebridge.telephony.events import Start


@dataclass(frozen=True, slots=True)
class CallBasics:
    """One call's identity and running accounts, built once by the call and handed to its parts."""

    start: Start
    conversation: Conversation
    usage: CallUsage
    log: logging.LoggerAdapter[logging.Logger]
    # Its language, voice and system prompt (the config's until the business settings are in).
    profile: CallProfile

    @property
    def info(self) -> CallInfo:
        """Who is calling whom, and the call's context, as the backend is told (read per request: the
        profile is set after the call is built)."""
        start = self.start
        return CallInfo(
            start.call_sid,
            start.provider,
            start.from_number,
            start.to_number,
            start.context,
            system_prompt=self.profile.system_prompt,
            direction=start.direction,
        )
