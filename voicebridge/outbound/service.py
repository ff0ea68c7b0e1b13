"""The daemon's `Dialer`: validates a DialRequest, checks capacity, opens a pending dial with its stream
token, and asks the provider's REST API to place the call (telephony/exotel_rest.py, twilio_rest.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

from voicebridge.admission.registry import CallRegistry
from voicebridge.config.schema import Settings
from voicebridge.outbound.attempts import AttemptTracker
from voicebridge.outbound.dialer import DialFailed, DialRefused, DialRequest, DialResult
from voicebridge.outbound.numbers import checked_e164
from voicebridge.outbound.pending import PendingDial, PendingDials
from voicebridge.telephony import exotel_rest, twilio_rest
from voicebridge.telephony.events import ProviderName

logger = logging.getLogger("voicebridge.outbound")

# What places one call at one provider: (settings, dial, caller id, stream URL, status URL) -> call sid.
PlaceCall = Callable[[Settings, PendingDial, str, str, str], Awaitable[str]]


def public_base(settings: Settings) -> str:
    """Where the provider reaches us: server.public_url, else the listening address (local fakes only)."""
    public = settings.server.public_url.rstrip("/")
    return public or f"http://{settings.server.host}:{settings.server.port}"


def status_callback(settings: Settings, provider: ProviderName, base: str) -> str:
    """Our status webhook for `provider`, carrying the credentials its webhook auth asks for: Exotel signs
    nothing, so a token mode's token goes in the query and a basic mode's credentials in the URL, as they
    do in the webhook URLs configured at Exotel (the form is sent to Exotel only, never logged)."""
    url = f"{base}/webhooks/{provider}/status"
    exotel = settings.exotel
    if provider == "exotel" and exotel.webhook_auth == "token":
        return f"{url}?{urlencode({'token': exotel.webhook_token.get_secret_value()})}"
    if provider == "exotel" and exotel.webhook_auth == "basic":
        user = quote(exotel.webhook_username, safe="")
        password = quote(exotel.webhook_password.get_secret_value(), safe="")
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{user}:{password}@{rest}"
    return url


def ws_base(http_base: str) -> str:
    return http_base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)


async def place_exotel(
    settings: Settings, dial: PendingDial, caller_id: str, stream: str, status: str
) -> str:
    form = exotel_rest.connect_form(
        settings.exotel,
        settings.outbound,
        dial.request.to_number,
        caller_id,
        stream,
        status,
        dial.request.context,
    )
    return await exotel_rest.create_call(settings.exotel, form)


async def place_twilio(
    settings: Settings, dial: PendingDial, caller_id: str, stream: str, status: str
) -> str:
    # The context and the dial id as <Parameter>s: Twilio allows no query on a stream URL.
    parameters = {**dial.request.context, twilio_rest.DIAL_PARAMETER: dial.dial_id}
    form = twilio_rest.create_form(
        settings.twilio, settings.outbound, dial.request.to_number, caller_id, stream, status, parameters
    )
    return await twilio_rest.create_call(settings.twilio, form)


PLACERS: dict[ProviderName, PlaceCall] = {"exotel": place_exotel, "twilio": place_twilio}


class OutboundDialer:
    """Places outbound calls through the configured providers (the `Dialer` Protocol)."""

    def __init__(
        self,
        settings: Settings,
        registry: CallRegistry,
        pending: PendingDials,
        attempts: AttemptTracker | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self.pending = pending
        self.attempts = attempts if attempts is not None else AttemptTracker()

    def refusal(self) -> str:
        """Why one more dial would be refused now ("" when it may go): a dial holds a line from the
        request on, so the calls still ringing count against capacity with the live ones."""
        if refusal := self._registry.refusal():
            return "at_capacity" if refusal == "capacity" else refusal
        if self._registry.active_count + len(self.pending) >= self._registry.capacity:
            return "at_capacity"
        return ""

    async def dial(self, request: DialRequest) -> DialResult:
        settings = self._settings
        checked_e164(request.to_number)
        provider: ProviderName = request.provider or settings.outbound.default_provider
        if provider not in PLACERS or not settings.provider_enabled(provider):
            raise DialRefused("provider_disabled", f"{provider} is not enabled")
        section = settings.exotel if provider == "exotel" else settings.twilio
        caller_id = request.from_number or section.caller_id
        if not caller_id:
            raise DialRefused("no_caller_id", f"no --from and no {provider}.caller_id configured")
        if caller_id.startswith("+"):
            # Exotel also takes an ExoPhone in national form (080…): only a "+" number is held to E.164.
            checked_e164(caller_id, "from")
        if refusal := self.refusal():
            raise DialRefused(refusal)
        dial, token = self.pending.open(request, provider, caller_id=caller_id)
        base = public_base(settings)
        stream = f"{ws_base(base)}/ws/stream/{dial.dial_id}/{token}"
        status = status_callback(settings, provider, base)
        try:
            call_sid = await PLACERS[provider](settings, dial, caller_id, stream, status)
        except (DialFailed, ValueError) as exc:
            self.pending.cancel(dial.dial_id)
            if isinstance(exc, DialFailed):
                raise
            raise DialRefused("bad_request", str(exc)) from None
        self.pending.placed(dial.dial_id, call_sid)
        self.attempts.started(call_sid)
        logger.info("dialled %s via %s: %s (%s)", request.to_number, provider, call_sid, request.origin)
        return DialResult(call_sid=call_sid, provider=provider)
