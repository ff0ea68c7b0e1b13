"""The one HTTP request both providers' create-call APIs take (Exotel's Calls/connect, Twilio's
Calls.json): a Basic-authenticated form POST whose answer names the new call. What differs between them,
the URL, the form and where the sid is in the answer, stays in each provider's module."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from voicebridge.outbound.dialer import DialFailed

logger = logging.getLogger("voicebridge.outbound")

# A create request is answered at once by both providers; ringing happens after it.
REST_TIMEOUT = aiohttp.ClientTimeout(total=10)


async def post_create_call(provider: str, url: str, form: Mapping[str, str], login: str, secret: str) -> Any:
    """POST the form; the decoded JSON answer. DialFailed on any refusal: retryable for 429, 5xx and the
    network, not for the other 4xx (a bad number or credentials stay bad)."""
    headers = {"Authorization": aiohttp.encode_basic_auth(login, secret)}
    try:
        async with (
            aiohttp.ClientSession(timeout=REST_TIMEOUT) as session,
            session.post(url, data=dict(form), headers=headers) as response,
        ):
            if response.status >= 400:
                # The body may echo our request (numbers, context): only the status is logged.
                logger.warning("%s refused the call: HTTP %d", provider, response.status)
                raise DialFailed(
                    f"{provider} answered HTTP {response.status}",
                    retryable=response.status == 429 or response.status >= 500,
                )
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        logger.warning("%s call request failed: %s", provider, type(exc).__name__)
        raise DialFailed(f"{provider} unreachable: {type(exc).__name__}", retryable=True) from None
