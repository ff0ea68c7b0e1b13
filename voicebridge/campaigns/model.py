"""A campaign's options and the words its rows are kept in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from voicebridge.campaigns.hours import CallingHours

CampaignState = Literal["running", "paused", "cancelled", "finished"]
CAMPAIGN_STATES: tuple[CampaignState, ...] = ("running", "paused", "cancelled", "finished")
NumberState = Literal["pending", "dialling", "in_call", "done", "failed", "skipped"]
# A number in one of these still needs the runner; the others are settled for good.
OPEN_NUMBER_STATES = ("pending", "dialling", "in_call")
# Dial statuses worth another attempt (the callee may pick up later); "canceled" is ours and final.
RETRIED_STATUSES = frozenset({"busy", "no-answer", "failed"})
# Final outcomes: human | machine | unknown (answered), busy | no-answer | failed (attempts ran out),
# dnc, refused:<reason>, canceled, cancelled (the campaign was), interrupted (the daemon stopped mid-call
# on the last attempt).


@dataclass(frozen=True, slots=True)
class CampaignOptions:
    """How one campaign dials; bounds are checked where options come in (cli, control, management)."""

    concurrency: int = 2
    rate_per_minute: float = 30.0
    hours: CallingHours = field(default_factory=CallingHours)
    max_attempts: int = 3
    retry_base_s: float = 300.0
    retry_cap_s: float = 3600.0
    # The caller id shown; "" the dialler's configured one.
    from_number: str = ""

    def retry_delay(self, attempts: int) -> float:
        """Exponential backoff after the `attempts`-th failed attempt: base, 2·base, 4·base… up to the cap."""
        return float(min(self.retry_cap_s, self.retry_base_s * 2 ** max(0, attempts - 1)))
