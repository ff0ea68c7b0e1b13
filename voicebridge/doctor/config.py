"""Doctor checks of the configuration itself: it loads, the public URL is usable, and who may get in."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from voicebridge.config.load import ConfigError, load_config, resolve_config_path
from voicebridge.config.schema import Settings
from voicebridge.doctor.report import Check


def check_config(config_path: Path | None) -> tuple[Check, Settings | None]:
    """Load and validate the configuration; the settings are None when it failed. Retired keys still set
    make it a warning naming each (never its value)."""
    try:
        settings, retired = load_config(config_path)
    except ConfigError as exc:
        fix = "correct the key named (see config.example.toml); `voicebridge config init` writes a valid one"
        return Check("config", "fail", str(exc), fix), None
    source = resolve_config_path(config_path)
    detail = f"loaded {source}" if source else "no config file: built-in defaults"
    detail = f"{detail} (environment overrides applied)"
    if retired:
        names = ", ".join(key.name for key in retired)
        reasons = "; ".join(dict.fromkeys(key.why for key in retired))
        detail = f"{detail}; no longer used: {names} ({reasons})"
        fix = f"remove {names} from the config file and the environment (VOICEBRIDGE_<SECTION>__<KEY>)"
        return Check("config", "warn", detail, fix), settings
    return Check("config", "pass", detail), settings


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_public_url(settings: Settings) -> Check:
    """server.public_url: https for production, http only on loopback, empty only for local tests."""
    name = "public url"
    url = settings.server.public_url
    fix = "set server.public_url to the https:// URL the provider reaches, e.g. https://voice.example.com"
    if not url:
        return Check(name, "warn", "server.public_url is empty (derived from each request's Host)", fix)
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
    except ValueError:  # e.g. an unclosed IPv6 bracket
        scheme, host = "", ""
    if scheme not in ("http", "https") or not host:
        return Check(name, "fail", f"server.public_url {url!r} is not an http(s) URL", fix)
    if scheme == "http" and not _is_loopback(host):
        return Check(name, "warn", f"{url} is plain http: use https for production", fix)
    if scheme == "http":
        return Check(name, "pass", f"{url} (loopback: local simulation only)")
    return Check(name, "pass", url)


def check_authentication(settings: Settings) -> Check:
    """Who may call the webhooks and open streams: open on loopback, authenticated, or insecure (warn)."""
    name = "authentication"
    where = f"{settings.server.host}:{settings.server.port}"
    enabled = settings.enabled_provider_sections()
    modes = ", ".join(f"{provider} {section.webhook_auth}" for provider, section in enabled.items())
    if settings.server.insecure:
        providers = "/".join(settings.provider_sections())
        return Check(
            name,
            "warn",
            f"server.insecure = true: providers on webhook_auth none are open on {where} ({modes})",
            f"set {providers} webhook_auth and server.insecure = false",
        )
    if settings.open_mode:
        return Check(
            name,
            "pass",
            f"no webhook auth, so loopback only ({where}); streams need no token",
            "",
        )
    if settings.management_api_needs_token and not settings.management.token.get_secret_value():
        return Check(
            name,
            "warn",
            f"webhooks need: {modes}; /api/* (and /metrics, /health unless public) is refused until "
            "management.token is set (required with webhook auth, server.trusted_proxies or a non-loopback "
            "host)",
            "set management.token",
        )
    return Check(name, "pass", f"webhooks need: {modes}; streams need a per-call token", "")
