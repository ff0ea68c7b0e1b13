"""What every config section shares: unknown keys are errors, and IP network lists are checked on load."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


def check_cidrs(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network (like 203.0.113.0/24)") from None
    return values


# A list of IP networks (CIDRs), each checked when the config loads.
Cidrs = Annotated[list[str], AfterValidator(check_cidrs)]


def ip_auth_needs_cidrs(webhook_auth: str, allowed_cidrs: list[str]) -> None:
    if webhook_auth == "ip" and not allowed_cidrs:
        raise ValueError("webhook_auth 'ip' needs allowed_cidrs")


class Section(BaseModel):
    """A config section: unknown keys are errors so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
