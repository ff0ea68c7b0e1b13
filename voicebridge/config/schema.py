"""Configuration: one pydantic-settings model read from TOML, overridden by `VOICEBRIDGE_<SECTION>__<KEY>`.

Precedence, lowest first: built-in defaults < the TOML file < environment < explicit overrides (CLI flags).
The file is `--config PATH`, else `$VOICEBRIDGE_CONFIG`, else `./voicebridge.toml`, else
`/etc/voicebridge/config.toml`, else none (defaults run everything locally).
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "VOICEBRIDGE_"
ENV_CONFIG_PATH = "VOICEBRIDGE_CONFIG"
SYSTEM_CONFIG_PATH = Path("/etc/voicebridge/config.toml")
LOCAL_CONFIG_NAME = "voicebridge.toml"


class ConfigError(Exception):
    """A configuration problem, phrased as one line for the operator."""


class Section(BaseModel):
    """A config section: unknown keys are errors so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str = ""
    max_concurrent_calls: int = Field(30, ge=1, le=10_000)
    drain_timeout: float = Field(30.0, ge=0)
    state_dir: str = ""
    # Listening beyond loopback needs webhook auth for every enabled provider, unless this says otherwise
    # (e.g. a trusted private network); `doctor` warns while it is set.
    insecure: bool = False
    # Proxies whose X-Forwarded-For is believed (CIDRs); everyone else's is ignored.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Key for the per-call stream tokens; empty: a random one per process (tokens live 5 minutes).
    stream_secret: SecretStr = SecretStr("")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        return _check_cidrs(value)

    def is_loopback(self) -> bool:
        """True when the daemon listens on the local host only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class ExotelConfig(Section):
    enabled: bool = True
    account_sid: str = ""
    api_key: SecretStr = SecretStr("")
    api_token: SecretStr = SecretStr("")
    subdomain: str = "api.exotel.com"
    webhook_auth: Literal["none", "basic", "token", "ip"] = "none"
    webhook_username: str = ""
    webhook_password: SecretStr = SecretStr("")
    webhook_token: SecretStr = SecretStr("")
    allowed_cidrs: list[str] = Field(default_factory=list)

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return _check_cidrs(value)

    @model_validator(mode="after")
    def _auth_has_its_secret(self) -> ExotelConfig:
        if self.webhook_auth == "basic" and not (
            self.webhook_username and self.webhook_password.get_secret_value()
        ):
            raise ValueError("webhook_auth 'basic' needs webhook_username and webhook_password")
        if self.webhook_auth == "token" and len(self.webhook_token.get_secret_value()) < 16:
            raise ValueError("webhook_auth 'token' needs a webhook_token of at least 16 characters")
        if self.webhook_auth == "ip" and not self.allowed_cidrs:
            raise ValueError("webhook_auth 'ip' needs allowed_cidrs")
        return self


class TwilioConfig(Section):
    enabled: bool = True
    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    api_base: str = "https://api.twilio.com"
    webhook_auth: Literal["none", "signature", "ip"] = "none"
    allowed_cidrs: list[str] = Field(default_factory=list)

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return _check_cidrs(value)

    @model_validator(mode="after")
    def _auth_has_its_secret(self) -> TwilioConfig:
        if self.webhook_auth == "signature" and not self.auth_token.get_secret_value():
            raise ValueError("webhook_auth 'signature' needs auth_token (X-Twilio-Signature is keyed by it)")
        if self.webhook_auth == "ip" and not self.allowed_cidrs:
            raise ValueError("webhook_auth 'ip' needs allowed_cidrs")
        return self


def _check_cidrs(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network (like 203.0.113.0/24)") from None
    return values


class SttConfig(Section):
    engine: Literal["whisper"] = "whisper"
    model_path: str = ""
    beam_size: int = Field(1, ge=1, le=10)
    threads: int = Field(1, ge=1, le=64)
    # Utterances decoded at once; 0 = as many as the cores allow (cores // threads).
    workers: int = Field(0, ge=0, le=64)
    language: str = "en"
    window_seconds: float = Field(10.0, ge=5.0, le=30.0)
    no_speech_threshold: float = Field(0.6, ge=0.0, le=1.0)


class TtsConfig(Section):
    engine: Literal["piper", "azure"] = "piper"
    voice: str = ""
    rate: float = Field(1.0, gt=0.25, le=4.0)
    azure_key: SecretStr = SecretStr("")
    azure_region: str = "centralindia"
    azure_voice: str = "en-IN-NeerjaNeural"
    azure_style: str = ""
    azure_host: str = ""
    # When Azure fails before speaking, say it with this local engine instead ("": no fallback).
    fallback_engine: Literal["", "piper"] = ""


class BackendConfig(Section):
    kind: Literal["echo", "node", "openai"] = "echo"
    url: str = ""
    api_key: SecretStr = SecretStr("")
    model: str = ""
    system_prompt: str = "You are a helpful, brief phone receptionist."
    connect_timeout: float = Field(2.0, gt=0)
    request_timeout: float = Field(8.0, gt=0)
    # A dead backend should not turn every caller away: allow calls when the budget check cannot be made.
    allow_when_unreachable: bool = True
    # After this many failed requests in a row the backend is left alone for breaker_reset_s seconds, so
    # turns fail fast to the apology instead of each waiting out a timeout.
    breaker_failures: int = Field(5, ge=1, le=1000)
    breaker_reset_s: float = Field(30.0, gt=0)
    # Attempts, the first included, for requests safe to repeat (reads, the budget check); a caller
    # message is sent once.
    retries: int = Field(3, ge=1, le=10)

    @model_validator(mode="after")
    def _url_fits_kind(self) -> BackendConfig:
        if self.kind == "echo":
            return self
        try:
            parts = urlsplit(self.url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        # The URL is not quoted back: a malformed one may carry credentials.
        if not valid:
            raise ValueError(
                f"backend.url must be an http(s) URL such as https://api.example.com when backend.kind "
                f"is {self.kind!r}"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError("backend.url must not contain credentials; put the key in backend.api_key")
        return self


class TurnConfig(Section):
    vad_aggressiveness: int = Field(2, ge=0, le=3)
    energy_floor_dbfs: float = Field(-55.0, ge=-90.0, le=-10.0)
    end_of_turn_silence_ms: int = Field(500, ge=100, le=5000)
    min_speech_ms: int = Field(200, ge=0, le=5000)
    barge_in_min_ms: int = Field(300, ge=0, le=5000)
    max_utterance_s: float = Field(15.0, ge=1.0, le=60.0)
    speculative_ms: int = Field(200, ge=0, le=5000)


class PromptsConfig(Section):
    greeting: str = "Hello! Thanks for calling. How can I help you today?"
    busy: str = "Sorry, all our lines are busy right now. Please call again in a few minutes."
    goodbye: str = "Thank you for calling. Goodbye."
    transfer: str = "Please hold while I transfer your call."
    apology: str = "Sorry, I could not get an answer just now. Could you say that again?"


class CallsConfig(Section):
    # Longest call (Exotel ends a stream at 60 minutes anyway); 0 means no limit. The backend's business
    # config or budget may set a lower one per call.
    max_call_minutes: float = Field(60.0, ge=0)
    # Where a call goes after `max_backend_failures` failed turns in a row; empty: say goodbye instead.
    fallback_number: str = ""
    max_backend_failures: int = Field(2, ge=1, le=100)
    # Calls allowed per From number per window; 0 turns the limit off.
    rate_limit_calls: int = Field(0, ge=0)
    rate_limit_window_s: float = Field(3600.0, gt=0)
    # Keep both sides of every call as a stereo WAV in <state_dir>/recordings (caller left, bot right).
    record_locally: bool = False
    # New calls are refused (busy message, or the passthru's 302) while recent turns wait longer than this
    # for speech recognition (90th percentile), or the event loop runs later than overload_loop_lag_ms:
    # past that point one more call makes every call slower. 0 turns a check off.
    overload_stt_wait_ms: float = Field(400.0, ge=0)
    overload_loop_lag_ms: float = Field(150.0, ge=0)
    # Refuse a call that would push the STT workers past this share of their time, judged by what the
    # last minute's calls cost; it stops a burst of arrivals before their turns queue. 0 turns it off.
    overload_stt_utilisation: float = Field(0.85, ge=0, le=1)


class CostsConfig(Section):
    # Bounded: an infinite rate would make every cost record invalid JSON for the backend.
    telephony_per_minute: float = Field(0.02, ge=0, le=1000)
    tts_per_minute: float = Field(0.01, ge=0, le=1000)
    stt_per_minute: float = Field(0.0, ge=0, le=1000)
    ai_per_request: float = Field(0.001, ge=0, le=1000)
    currency: str = "USD"


class LimitsConfig(Section):
    # A provider message is a JSON line of at most one chunk of audio; far beyond is not a provider.
    max_message_bytes: int = Field(1 << 20, ge=4096, le=16 << 20)
    # Caller audio in one media message (Exotel sends 20-100 ms; 2 s at 24 kHz is 96 kB).
    max_media_seconds: float = Field(2.0, gt=0, le=10)
    # Messages per second one stream may send (Exotel's 20 ms chunks are 50/s); the excess is dropped.
    max_messages_per_second: int = Field(200, ge=10)
    # Bad or dropped messages after which the stream is closed (1008), other calls unaffected.
    max_bad_messages: int = Field(100, ge=1)
    # Bot audio queued ahead of the line; a longer reply waits for the caller to hear the start.
    max_pending_audio_s: float = Field(20.0, ge=1)
    # Exotel documents media about every 100 ms, and Twilio streams have been seen to send it all through
    # a call: a stream silent this long is half-open, the call dropped. Raise it for a provider whose
    # silence suppression is on (it then sends nothing while the caller is quiet).
    inbound_idle_s: float = Field(10.0, ge=1, le=600)
    # A WebSocket that has not sent `start` this long after the upgrade is closed.
    start_timeout_s: float = Field(5.0, ge=1, le=120)
    # WebSocket ping after this long without a message; a peer that does not answer within half of it is
    # cut (1006). Keep 1.5 x this below inbound_idle_s, or the silence rule always cuts first and the ping
    # never fires. 0 turns pings off.
    ws_heartbeat_s: float = Field(5.0, ge=0, le=600)
    # Each mark we send must be echoed this long after the audio before it should have finished playing;
    # otherwise the provider stopped reading (or playing) and the connection is cut. 0 turns this off.
    mark_echo_timeout_s: float = Field(5.0, ge=0, le=120)
    # An HTTP connection must deliver a request's head, and then its body, within these many seconds.
    request_head_timeout_s: float = Field(10.0, ge=0.5, le=300)
    request_body_timeout_s: float = Field(10.0, ge=0.5, le=300)
    # Open connections from one client address (0: 2 x server.max_concurrent_calls + 16); addresses in
    # server.trusted_proxies are exempt, since everything behind a proxy arrives from its address, and so
    # are loopback peers (a TLS proxy on the same host, a local tool) unless cap_loopback_per_address.
    max_connections_per_address: int = Field(0, ge=0, le=100_000)
    cap_loopback_per_address: bool = False
    # Open connections in all, from every address (0: 4 x server.max_concurrent_calls + 256): keeps the
    # process's file descriptors for its calls when many addresses connect at once.
    max_connections: int = Field(0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _watchdogs_that_can_fire(self) -> LimitsConfig:
        # Tiny non-zero values would ping in a tight loop or cut every stream at once.
        if 0 < self.ws_heartbeat_s < 1:
            raise ValueError("ws_heartbeat_s must be 0 (off) or at least 1")
        if 0 < self.mark_echo_timeout_s < 0.25:
            raise ValueError("mark_echo_timeout_s must be 0 (off) or at least 0.25")
        if self.ws_heartbeat_s and self.ws_heartbeat_s * 1.5 >= self.inbound_idle_s:
            raise ValueError(
                "ws_heartbeat_s x 1.5 must stay below inbound_idle_s, or the silence rule always cuts first"
            )
        return self


class OutboxConfig(Section):
    # Delivery retries back off from retry_base_s, doubling, to at most retry_cap_s (with full jitter).
    retry_base_s: float = Field(1.0, gt=0)
    retry_cap_s: float = Field(60.0, gt=0)


class ManagementConfig(Section):
    # Bearer token for management. /api/*, /metrics and /health need it whenever an enabled provider has
    # webhook auth, trusted_proxies is set or the daemon listens beyond loopback (without it they are
    # refused); otherwise (the local quick start) a direct loopback connection with no X-Forwarded-For,
    # Forwarded or X-Real-IP header is enough.
    token: SecretStr = SecretStr("")
    # Serve /metrics or /health to anyone who can reach the port (e.g. a scraper on the network).
    public_metrics: bool = False
    public_health: bool = False


class ControlConfig(Section):
    socket_path: str = ""
    group: str = ""


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(BaseSettings):
    """The whole effective configuration of one voicebridge process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    exotel: ExotelConfig = Field(default_factory=ExotelConfig)
    twilio: TwilioConfig = Field(default_factory=TwilioConfig)
    stt: SttConfig = Field(default_factory=SttConfig)
    tts: TtsConfig = Field(default_factory=TtsConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    costs: CostsConfig = Field(default_factory=CostsConfig)
    calls: CallsConfig = Field(default_factory=CallsConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    management: ManagementConfig = Field(default_factory=ManagementConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _exposed_means_authenticated(self) -> Settings:
        if self.server.is_loopback() or self.server.insecure:
            return self
        open_doors = [
            name
            for name, enabled, auth in (
                ("exotel", self.exotel.enabled, self.exotel.webhook_auth),
                ("twilio", self.twilio.enabled, self.twilio.webhook_auth),
            )
            if enabled and auth == "none"
        ]
        if open_doors:
            raise ValueError(
                f"server.host {self.server.host!r} is reachable from the network but "
                f"{' and '.join(d + '.webhook_auth' for d in open_doors)} "
                f"{'is' if len(open_doors) == 1 else 'are'} 'none'; configure webhook auth, "
                "disable the provider, or set server.insecure = true"
            )
        return self

    @property
    def open_mode(self) -> bool:
        """No authentication anywhere: no enabled provider has webhook auth configured, and the daemon
        listens on loopback or is explicitly insecure. `insecure` only waives the start-up refusal: auth
        that is configured is always checked (it once switched every check off, so one provider's `none`
        left another's `basic` unenforced). A disabled provider has no routes, so it counts for nothing."""
        return (self.server.is_loopback() or self.server.insecure) and all(
            auth == "none"
            for enabled, auth in (
                (self.exotel.enabled, self.exotel.webhook_auth),
                (self.twilio.enabled, self.twilio.webhook_auth),
            )
            if enabled
        )

    def provider_enabled(self, provider: str) -> bool:
        """Whether `provider` ("exotel", "twilio") is enabled; unknown names are not."""
        return {"exotel": self.exotel.enabled, "twilio": self.twilio.enabled}.get(provider, False)

    @property
    def management_api_needs_token(self) -> bool:
        """Management (/api/*, and /metrics and /health unless public) takes only the bearer token unless
        this is the local quick start (loopback, no enabled provider's webhook auth, no trusted proxies): a
        same-host reverse proxy makes every request look like loopback. `server.insecure` changes nothing
        here: it turns webhook auth off, not the reason a proxy may be in front."""
        webhook_auth = any(
            enabled and auth != "none"
            for enabled, auth in (
                (self.exotel.enabled, self.exotel.webhook_auth),
                (self.twilio.enabled, self.twilio.webhook_auth),
            )
        )
        return webhook_auth or bool(self.server.trusted_proxies) or not self.server.is_loopback()

    def control_socket_path(self) -> Path:
        """The control socket: configured, else systemd's RuntimeDirectory, else $XDG_RUNTIME_DIR, else a
        private directory of our own under the temp dir (checked by the control server before use)."""
        if self.control.socket_path:
            return Path(self.control.socket_path)
        if runtime := os.environ.get("RUNTIME_DIRECTORY"):
            return Path(runtime.split(":")[0]) / "control.sock"
        base = xdg_base_dir("XDG_RUNTIME_DIR") or private_runtime_fallback()
        return base / "voicebridge" / "control.sock"

    def state_path(self) -> Path:
        """Where durable state lives: configured, else systemd's StateDirectory, else $XDG_STATE_HOME,
        else ~/.local/state (the XDG base-directory spec's default)."""
        if self.server.state_dir:
            return Path(self.server.state_dir)
        if state := os.environ.get("STATE_DIRECTORY"):
            return Path(state.split(":")[0])
        base = xdg_base_dir("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        return base / "voicebridge"


def xdg_base_dir(variable: str) -> Path | None:
    """An XDG base directory from the environment; unset, empty or relative means none (the spec says a
    relative path is invalid and must be ignored)."""
    value = os.environ.get(variable, "")
    return Path(value) if value and os.path.isabs(value) else None


def private_runtime_fallback() -> Path:
    """The per-user directory for the control socket when there is no runtime dir. It lives in a shared,
    world-writable place, so the control server refuses it unless it is ours alone."""
    return Path(tempfile.gettempdir()) / f"voicebridge-{os.getuid()}"


def private_dir_problem(path: Path) -> str:
    """Why an existing `path` is not ours alone ("is a symlink", …), or "" when it is (or is absent)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return ""
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != os.geteuid():
        return f"belongs to uid {info.st_uid}, not to us (uid {os.geteuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    return ""


class _DictSource(PydanticBaseSettingsSource):
    """A settings source that hands pydantic an already-parsed TOML document."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


def resolve_config_path(explicit: Path | None) -> Path | None:
    """Pick the config file by precedence; None means built-in defaults."""
    if explicit is not None:
        return explicit
    if env_path := os.environ.get(ENV_CONFIG_PATH):
        return Path(env_path)
    for candidate in (Path.cwd() / LOCAL_CONFIG_NAME, SYSTEM_CONFIG_PATH):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config error: {path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config error: {path}: is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"config error: {path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error: {path}: invalid TOML: {exc}") from None


def _describe(error: dict[str, Any], path: Path | None) -> str:
    """One line naming where the bad value came from, the key, and what is wrong with it."""
    location = [str(part) for part in error["loc"]]
    key = ".".join(location)
    env_name = ENV_PREFIX + "__".join(part.upper() for part in location)
    if env_name in os.environ:
        origin = f"environment {env_name}"
    elif len(location) > 2 and ENV_PREFIX + "__".join(p.upper() for p in location[:2]) in os.environ:
        origin = f"environment {ENV_PREFIX}{'__'.join(p.upper() for p in location[:2])}"
    else:
        origin = str(path) if path else "built-in defaults"
    message = str(error["msg"]).removeprefix("Value error, ")
    secret = location and location[-1].endswith(("_key", "_token", "_password", "_secret", "token"))
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif (
        "input" in error
        and error["type"] != "missing"
        and not isinstance(error["input"], dict)
        and not secret  # a mistyped secret is still a secret
    ):
        message = f"{message} (got {error['input']!r})"
    return f"config error: {origin}: {key + ': ' if key else ''}{message}"


def load_settings(explicit: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load the effective settings; raise ConfigError with a one-line message when anything is wrong."""
    path = resolve_config_path(explicit)
    file_data = _read_toml(path) if path else {}

    class SettingsFromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _DictSource(settings_cls, file_data))

    try:
        loaded = SettingsFromFile(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], path)) from None
    # Hand back the plain model so callers never see the per-load subclass.
    return Settings.model_construct(**{name: getattr(loaded, name) for name in Settings.model_fields})


def apply_overrides(settings: Settings, section: str, **values: Any) -> Settings:
    """Return a copy with some keys of one section replaced (None values are ignored)."""
    present = {key: value for key, value in values.items() if value is not None}
    if not present:
        return settings
    updated = getattr(settings, section).model_copy(update=present)
    return settings.model_copy(update={section: updated})


def redacted_document(settings: Settings) -> dict[str, Any]:
    """The effective config as a TOML-ready dict with every secret masked."""
    document = settings.model_dump(mode="json")
    for section_name, section in settings:
        for key, value in section:
            if isinstance(value, SecretStr):
                document[section_name][key] = "********" if value.get_secret_value() else ""
    return document


def render_toml(settings: Settings) -> str:
    """Effective config as TOML text, secrets redacted."""
    return tomli_w.dumps(redacted_document(settings))


def write_starter(path: Path, force: bool = False) -> None:
    """Write a starter config of the defaults; refuse to overwrite an existing file without force."""
    if path.exists() and not force:
        raise ConfigError(f"config error: {path} already exists (use --force to overwrite)")
    document = Settings.model_construct().model_dump(mode="json")
    for section in document.values():
        for key, value in section.items():
            if value == "**********":
                section[key] = ""
    header = "# voicebridge configuration — see config.example.toml for what every key means.\n\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + tomli_w.dumps(document))
    except OSError as exc:
        raise ConfigError(f"config error: cannot write {path}: {exc.strerror}") from None
