"""A request body must arrive within `limits.request_body_timeout_s`; the handler's own work is not timed.

The body (at most the app's client_max_size, as every handler would read it) is read under the deadline
before the access checks or any handler run; they then find it whole in the request (`request.read()`
returns it again). The handler runs outside the deadline, so a slow backend or database, or a
TimeoutError of its own, is never mistaken for a slow client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from voicebridge.daemon.access import _surface as access_surface
from voicebridge.daemon.keys import METRICS, SETTINGS

logger = logging.getLogger("voicebridge.connections")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Receive a request's body in time (else 408, counted, the connection closed), then handle it."""
    if request.body_exists:
        await _receive_body(request)
    return await handler(request)


async def _receive_body(request: web.Request) -> None:
    limits = request.app[SETTINGS].limits
    refused = request.app[METRICS].connections_refused
    try:
        async with asyncio.timeout(limits.request_body_timeout_s):
            await request.read()
    except TimeoutError:
        refused.labels(reason="slow_request_body").inc()
        logger.warning(
            "cut a request from %s: body not received in %.0fs",
            request.remote or "?",
            limits.request_body_timeout_s,
        )
        raise _closing(web.HTTPRequestTimeout(text="request body too slow\n")) from None
    except web.HTTPRequestEntityTooLarge:
        # Refused here: the part already read is gone, so no later reader could see the body whole.
        # Counted as the body readers count it (bodies.py, access.py): a hostile input, not a slow one.
        surface = access_surface(request.path)
        request.app[METRICS].http_rejections.labels(surface=surface, reason="body_too_large").inc()
        logger.warning(
            "refused a request from %s: body over %d bytes", request.remote or "?", request.client_max_size
        )
        too_large = web.HTTPRequestEntityTooLarge(request.client_max_size, text="body too large\n")
        raise _closing(too_large) from None


def _closing(refusal: web.HTTPException) -> web.HTTPException:
    # The rest of the body is still on the wire: the connection cannot carry another request.
    refusal.force_close()
    return refusal
