"""What a stream may send: messages past the per-second limit are dropped, and bad messages are counted
until there are too many. Each rejection is one counted, bounded log line; the call goes on."""

from __future__ import annotations

import logging
import time

from voicebridge.config.schema import LimitsConfig
from voicebridge.server.metrics import Metrics
from voicebridge.telephony.events import ProtocolViolation, UnknownEvent


class InboundLimits:
    """One stream's message counts against limits.max_messages_per_second and max_bad_messages."""

    def __init__(self, limits: LimitsConfig, metrics: Metrics) -> None:
        self._limits = limits
        self._metrics = metrics
        self.bad_messages = 0
        # A one-second window of message counts: cheap, and enough to stop a flood.
        self._window_start = 0.0
        self._window_count = 0

    @property
    def too_many_bad(self) -> bool:
        return self.bad_messages >= self._limits.max_bad_messages

    def within_rate(self) -> bool:
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        return self._window_count <= self._limits.max_messages_per_second

    def reject(self, violation: ProtocolViolation, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self._metrics.protocol_rejections.labels(kind=violation.kind).inc()
        # Unknown events are a provider's new features, not garbage; they never close a call.
        if not isinstance(violation, UnknownEvent):
            self.bad_messages += 1
        level = logging.DEBUG if isinstance(violation, UnknownEvent) else logging.WARNING
        # Bounded: a rejected field is the caller's bytes, and could be a megabyte long.
        log.log(level, "rejected message: %.200s", violation)
