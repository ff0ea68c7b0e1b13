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

from voicebridge.server.access import refuse_bad_input
from voicebridge.server.bodies import BadInput, body_text
from voicebridge.server.keys import METRICS, SETTINGS

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
            # bodies.body_text reads it as every handler does, so a body that cannot be read (a bogus
            # Content-Encoding, a broken chunked body, a client gone mid-body) is the same counted 4xx here.
            await body_text(request)
    except TimeoutError:
        refused.labels(reason="slow_request_body").inc()
        logger.warning(
            "cut a request from %s: body not received in %.0fs",
            request.remote or "?",
            limits.request_body_timeout_s,
        )
        raise _closing(web.HTTPRequestTimeout(text="request body too slow\n")) from None
    except BadInput as bad:
        if bad.reason in ("unknown_charset", "bad_encoding"):
            return  # the bytes arrived whole; the handler's own parse refuses them as it always has
        refuse_bad_input(request, bad)  # counted and logged on one line, as the access check does
        if bad.status == 413:
            # Refused here: the part already read is gone, so no later reader could see the body whole.
            too_large = web.HTTPRequestEntityTooLarge(request.client_max_size, text="body too large\n")
            raise _closing(too_large) from None
        raise _closing(web.HTTPBadRequest(text=bad.reason)) from None


def _closing(refusal: web.HTTPException) -> web.HTTPException:
    # The rest of the body is still on the wire: the connection cannot carry another request.
    refusal.force_close()
    return refusal
