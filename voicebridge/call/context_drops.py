"""Counting and logging what a call's start left out of its context (telephony/context.py): one counted
drop per parameter, one bounded log line per call, keys escaped and values never shown."""

from __future__ import annotations

import logging
from collections import Counter

from voicebridge.server.metrics import Metrics
from voicebridge.telephony.context import Dropped

# Keys named in the log line; the count covers the rest.
SHOWN_KEYS = 5


def count_dropped_context(
    dropped: tuple[Dropped, ...], metrics: Metrics, log: logging.LoggerAdapter[logging.Logger]
) -> None:
    """Count each drop by reason; say once which keys (escaped, the first few) and why."""
    if not dropped:
        return
    reasons = Counter(reason for reason, _ in dropped)
    for reason, count in reasons.items():
        metrics.context_dropped.labels(reason=reason).inc(count)
    shown = ", ".join(f"{key} ({reason})" for reason, key in dropped[:SHOWN_KEYS])
    more = f" and {len(dropped) - SHOWN_KEYS} more" if len(dropped) > SHOWN_KEYS else ""
    log.warning("call context: left out %d custom parameter(s): %s%s", len(dropped), shown, more)
