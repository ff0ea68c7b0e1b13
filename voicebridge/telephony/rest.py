"""Provider-side call control that needs more than closing the stream: Twilio's REST hangup and transfer."""

from __future__ import annotations

import logging
import re
from xml.sax.saxutils import escape

import aiohttp

from voicebridge.config.schema import TwilioConfig
from voicebridge.telephony.events import Start
from voicebridge.telephony.sids import path_segment

logger = logging.getLogger("voicebridge.telephony")

REST_TIMEOUT = aiohttp.ClientTimeout(total=5)
# Twilio account sids: "AC" and 32 hex digits. The REST request carries our auth_token, so an account sid
# from the wire (the stream's `start`) must name an account, never a path of the caller's choosing.
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")


class TelephonyControl:
    """Ends or redirects calls at the provider. Exotel needs nothing: closing the stream moves its flow on."""

    def __init__(self, twilio: TwilioConfig) -> None:
        self._twilio = twilio

    async def hang_up(self, start: Start) -> bool:
        """Make sure the phone call itself ends, not only our stream; True when the provider confirmed."""
        if start.provider != "twilio":
            return True
        return await self._update_twilio_call(start, {"Status": "completed"})

    async def transfer(self, start: Start, number: str) -> bool:
        """Point the phone call at a human; Exotel's Connect applet asks our transfer webhook instead."""
        if start.provider != "twilio":
            return True
        twiml = f"<Response><Dial>{escape(number)}</Dial></Response>"
        return await self._update_twilio_call(start, {"Twiml": twiml})

    async def _update_twilio_call(self, start: Start, form: dict[str, str]) -> bool:
        token = self._twilio.auth_token.get_secret_value()
        account = self._twilio.account_sid or start.account_sid
        log = logging.LoggerAdapter(logger, {"call_sid": start.call_sid})
        if not (account and token):
            log.warning("twilio account_sid/auth_token not configured: closing the stream only")
            return False
        if not ACCOUNT_SID.fullmatch(account):
            log.warning(
                "twilio account sid is not AC + 32 hex digits: no REST request, closing the stream only"
            )
            return False
        url = (
            f"{self._twilio.api_base.rstrip('/')}/2010-04-01/Accounts/{path_segment(account)}"
            f"/Calls/{path_segment(start.call_sid)}.json"
        )
        try:
            async with (
                aiohttp.ClientSession(timeout=REST_TIMEOUT) as session,
                session.post(
                    url, data=form, headers={"Authorization": aiohttp.encode_basic_auth(account, token)}
                ) as response,
            ):
                if response.status == 404:
                    log.info("twilio says the call already ended")
                    return True
                if response.status >= 400:
                    log.warning("twilio call update failed: HTTP %d", response.status)
                    return False
                return True
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("twilio call update failed: %s", type(exc).__name__)
            return False
