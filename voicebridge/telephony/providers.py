"""The built-in providers, and the provider-neutral ways the daemon uses them: routes for the enabled
ones, the translator for a stream's `start`, call control for a call's provider.

Adding a provider is one module under telephony/ implementing `base.Provider`, and its entry in
`PROVIDERS` (docs/adding-a-provider.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from voicebridge.config.schema import Settings
from voicebridge.server.keys import SETTINGS
from voicebridge.telephony.base import Provider, Translator
from voicebridge.telephony.events import Start
from voicebridge.telephony.exotel import EXOTEL
from voicebridge.telephony.twilio import TWILIO

# In the order a `start` is offered to them: Exotel claims any start no other provider claims, so it is last.
PROVIDERS: tuple[Provider, ...] = (TWILIO, EXOTEL)


def enabled_providers(settings: Settings, providers: Sequence[Provider] = PROVIDERS) -> list[Provider]:
    """The providers whose config section enables them."""
    return [provider for provider in providers if provider.enabled(settings)]


def provider_named(name: str, providers: Sequence[Provider] = PROVIDERS) -> Provider | None:
    """The provider called `name`, None for a name no provider has."""
    return next((provider for provider in providers if provider.name == name), None)


def translator_for_start(
    message: dict[str, Any],
    url_rate: int | None = None,
    providers: Sequence[Provider] = PROVIDERS,
    url_parameters: Mapping[str, str] | None = None,
) -> Translator:
    """A translator for the stream that this `start` message opens, from the first provider claiming its
    shape (enabled or not: the stream refuses a disabled provider's start itself); `url_rate` is the
    stream URL's `sample-rate`, None when the URL has none, and `url_parameters` its query."""
    for provider in providers:
        if provider.claims_start(message):
            return provider.translator(url_rate, url_parameters)
    # Unreachable with the built-in list (Exotel claims every start); a list without a catch-all still
    # gets a translator, whose parse then refuses the start in its own words.
    return providers[-1].translator(url_rate, url_parameters)


def add_routes(app: web.Application, providers: Sequence[Provider] = PROVIDERS) -> None:
    """Register the webhook routes of the enabled providers; a disabled provider has none."""
    for provider in enabled_providers(app[SETTINGS], providers):
        provider.add_routes(app)


class TelephonyControl:
    """Ends or redirects calls at their provider, which knows whether that needs more than closing the
    stream (Twilio's REST API) or not (Exotel)."""

    def __init__(self, settings: Settings, providers: Sequence[Provider] = PROVIDERS) -> None:
        self._settings = settings
        self._providers = providers

    async def hang_up(self, start: Start) -> bool:
        """Make sure the phone call itself ends, not only our stream; True when the provider confirmed."""
        provider = provider_named(start.provider, self._providers)
        return True if provider is None else await provider.hang_up(start, self._settings)

    async def transfer(self, start: Start, number: str) -> bool:
        """Point the phone call at a human."""
        provider = provider_named(start.provider, self._providers)
        return True if provider is None else await provider.transfer(start, number, self._settings)
