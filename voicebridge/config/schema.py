"""The configuration's shape: one pydantic-settings model, a section per concern, each key with its default,
bounds and the reason for them. No I/O here: `voicebridge.config.load` finds and reads the file, and
`voicebridge.config.paths` resolves the runtime directories a section leaves empty.

Any key can be overridden from the environment as `VOICEBRIDGE_<SECTION>__<KEY>`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voicebridge.campaigns.hours import check_zone, parse_hours
from voicebridge.config import paths
from voicebridge.config.amd import AmdConfig
from voicebridge.config.cluster import ClusterConfig
from voicebridge.config.limits import LimitsConfig
from voicebridge.config.numbers import Language, Numbers
from voicebridge.config.section import (
    Cidrs,
    ProviderSection,
    Section,
    http_url_fault,
    ip_auth_needs_cidrs,
    stream_base_fault,
    wyoming_uri_fault,
)

ENV_PREFIX = "VOICEBRIDGE_"
# What a caller says over the bot to show they listen, in English and the Hindi heard on Indian lines.
DEFAULT_BACKCHANNEL_WORDS = tuple("hmm hm mm mhm uh huh um haan ok okay yeah right".split())


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
    trusted_proxies: Cidrs = Field(default_factory=list)
    # Key for the per-call stream tokens; empty: a random one per process (tokens live 5 minutes). Several
    # nodes placing calls on each other share one, so a token one node issues opens another's socket.
    stream_secret: SecretStr = SecretStr("")
    # With [cluster]: this node's own public address for audio streams (ws:// or wss://host[:port]). The
    # incoming webhook, on whichever node the balancer chose, hands out a stream URL on the least loaded
    # node that has one; "": this node takes calls only from its own webhooks.
    node_url: str = ""

    @field_validator("node_url")
    @classmethod
    def _node_url(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and (fault := stream_base_fault(value)):
            raise ValueError(f"server.node_url must be ws://host[:port] or wss://host[:port] ({fault})")
        return value

    def is_loopback(self) -> bool:
        """True when the daemon listens on the local host only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class ExotelConfig(ProviderSection):
    # REST credentials, used only to place outbound calls (inbound calls need none: closing the stream
    # moves Exotel's flow on). Basic auth is api_key:api_token (docs/outbound.md).
    account_sid: str = ""
    api_key: str = ""
    api_token: SecretStr = SecretStr("")
    # "api.exotel.com" (Singapore) or "api.in.exotel.com" (Mumbai): the cluster the account lives in.
    subdomain: str = "api.exotel.com"
    # Where REST requests go; "": https://<subdomain>. Tests point it at a local fake.
    api_base: str = ""
    # The ExoPhone shown to the person called, unless the dial request names another.
    caller_id: str = ""
    # "stream": Connect Voice AI (StreamUrl straight to us); "flow": dial into outbound_flow_url, an ExoML
    # app whose Voicebot applet streams to us.
    outbound_mode: Literal["stream", "flow"] = "stream"
    outbound_flow_url: str = ""
    webhook_auth: Literal["none", "basic", "token", "ip"] = "none"
    webhook_username: str = ""
    webhook_password: SecretStr = SecretStr("")
    webhook_token: SecretStr = SecretStr("")
    allowed_cidrs: Cidrs = Field(default_factory=list)

    @model_validator(mode="after")
    def _auth_has_its_secret(self) -> ExotelConfig:
        if self.webhook_auth == "basic" and not (
            self.webhook_username and self.webhook_password.get_secret_value()
        ):
            raise ValueError("webhook_auth 'basic' needs webhook_username and webhook_password")
        if self.webhook_auth == "token" and len(self.webhook_token.get_secret_value()) < 16:
            raise ValueError("webhook_auth 'token' needs a webhook_token of at least 16 characters")
        ip_auth_needs_cidrs(self.webhook_auth, self.allowed_cidrs)
        if self.outbound_mode == "flow" and http_url_fault(self.outbound_flow_url):
            raise ValueError('exotel.outbound_mode "flow" needs outbound_flow_url, an http(s) ExoML app URL')
        return self

    @property
    def rest_base(self) -> str:
        """Where Exotel's REST API is reached: api_base when set, else https://<subdomain>."""
        return (self.api_base or f"https://{self.subdomain}").rstrip("/")


class TwilioConfig(ProviderSection):
    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    api_base: str = "https://api.twilio.com"
    # The number of the account outbound calls show, unless the dial request names another.
    caller_id: str = ""
    # Twilio's answering-machine detection on outbound calls: "" (off), "Enable" or "DetectMessageEnd";
    # async_amd: the call connects at once and AnsweredBy arrives by callback.
    machine_detection: Literal["", "Enable", "DetectMessageEnd"] = ""
    async_amd: bool = True
    webhook_auth: Literal["none", "signature", "ip"] = "none"
    allowed_cidrs: Cidrs = Field(default_factory=list)

    @model_validator(mode="after")
    def _auth_has_its_secret(self) -> TwilioConfig:
        if self.webhook_auth == "signature" and not self.auth_token.get_secret_value():
            raise ValueError("webhook_auth 'signature' needs auth_token (X-Twilio-Signature is keyed by it)")
        ip_auth_needs_cidrs(self.webhook_auth, self.allowed_cidrs)
        return self


class SttConfig(Section):
    # "whisper": local faster-whisper. "wyoming": a Wyoming ASR server (e.g. wyoming-faster-whisper on a
    # GPU box) at `url` = tcp://host:port. "openai": an OpenAI-compatible /audio/transcriptions server
    # at `url` = its API base (https://host/v1). A remote engine falls back to local Whisper (`fallback`).
    engine: Literal["whisper", "wyoming", "openai"] = "whisper"
    url: str = ""
    api_key: SecretStr = SecretStr("")
    # The model the openai server is asked for (its own name for it); the Wyoming server uses its own.
    model: str = "whisper-1"
    # Utterances sent to the remote server at once; more wait, confirmed turns before speculative ones.
    remote_concurrency: int = Field(4, ge=1, le=256)
    # A caller is waiting on every transcription: a server slower than this is treated as down.
    remote_timeout_s: float = Field(2.0, gt=0, le=30)
    # After a remote failure the server is left alone this long (one probe per cool-down, not per turn).
    remote_cool_down_s: float = Field(10.0, gt=0, le=600)
    # "whisper": a failed or cooling-down remote is stood in for by the local model (loaded at start,
    # counted in voicebridge_stt_fallbacks_total); "": the turn fails to the apology instead.
    fallback: Literal["", "whisper"] = "whisper"
    model_path: str = ""
    beam_size: int = Field(1, ge=1, le=10)
    threads: int = Field(1, ge=1, le=64)
    # Utterances decoded at once; 0 = as many as the cores allow (cores // threads).
    workers: int = Field(0, ge=0, le=64)
    # A BCP-47 tag (Whisper uses its primary subtag), or "auto": detected on each call's first turn and kept.
    language: Language = "en"
    window_seconds: float = Field(10.0, ge=5.0, le=30.0)
    no_speech_threshold: float = Field(0.6, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _url_fits_engine(self) -> SttConfig:
        if self.engine == "wyoming" and (fault := wyoming_uri_fault(self.url)) is not None:
            raise ValueError(f"stt.url for the wyoming engine must be tcp://host:port ({fault})")
        if self.engine == "openai" and (fault := http_url_fault(self.url)) is not None:
            raise ValueError(f"stt.url for the openai engine must be an http(s) API base ({fault})")
        return self


class TtsConfig(Section):
    engine: Literal["piper", "azure"] = "piper"
    voice: str = ""
    rate: float = Field(1.0, gt=0.25, le=4.0)
    azure_key: SecretStr = SecretStr("")
    azure_region: str = "centralindia"
    azure_voice: str = "en-IN-NeerjaNeural"
    azure_style: str = ""
    azure_host: str = ""
    # Language (BCP-47, or its primary subtag) -> voice for calls in it: an Azure voice name or a Piper
    # model path. A language missing here is spoken by azure_voice / voice.
    voices: dict[Language, str] = Field(default_factory=dict)
    # When Azure fails before speaking, say it with this local engine instead ("": no fallback).
    fallback_engine: Literal["", "piper"] = ""

    @property
    def azure_endpoint(self) -> str:
        """The Azure speech host synthesis goes to: azure_host when set, else the region's."""
        return self.azure_host or f"{self.azure_region}.tts.speech.microsoft.com"


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
    # No dead air while the backend thinks: a turn whose backend has yielded no text this long after the
    # turn ended (or after the request, for a turn answered only once it ended) hears prompts.filler once,
    # then the reply. 0 turns it off.
    filler_after_ms: int = Field(1200, ge=0, le=60_000)

    @model_validator(mode="after")
    def _url_fits_kind(self) -> BackendConfig:
        if self.kind == "echo":
            return self
        fault = http_url_fault(self.url)
        # The URL is not quoted back: a malformed one may carry credentials.
        if fault == "not http(s)":
            raise ValueError(
                f"backend.url must be an http(s) URL such as https://api.example.com when backend.kind "
                f"is {self.kind!r}"
            )
        if fault == "credentials":
            raise ValueError("backend.url must not contain credentials; put the key in backend.api_key")
        return self


class TurnConfig(Section):
    vad_aggressiveness: int = Field(2, ge=0, le=3)
    energy_floor_dbfs: float = Field(-55.0, ge=-90.0, le=-10.0)
    end_of_turn_silence_ms: int = Field(500, ge=100, le=5000)
    min_speech_ms: int = Field(200, ge=0, le=5000)
    barge_in_min_ms: int = Field(300, ge=0, le=5000)
    max_utterance_s: float = Field(15.0, ge=1.0, le=60.0)
    # The pause is transcribed this far in, before anyone knows it ends the turn. 100 ms: the words are
    # in ~220 ms into the pause (Whisper ~120 ms on 2 cores), so a finished sentence is answered ~280 ms
    # after it (bench/turn_taking.py); 60 ms was no faster and threw away three times the transcriptions.
    speculative_ms: int = Field(100, ge=0, le=5000)
    # "adaptive": the speculative transcript of each pause decides how long it may last (call/endpointing.py):
    # complete_turn_ms after a complete thought, incomplete_turn_ms after a filler, a conjunction, a verb
    # waiting for its object or a number read in part, unsure_turn_ms when the words say neither (and
    # end_of_turn_silence_ms while they are not in yet). "fixed": always end_of_turn_silence_ms (the
    # figures for both are in the README).
    end_of_turn: Literal["fixed", "adaptive"] = "adaptive"
    complete_turn_ms: int = Field(200, ge=100, le=5000)
    incomplete_turn_ms: int = Field(1000, ge=100, le=5000)
    # Longer than the fixed 500 ms: words that say neither are often a list's first item ("I need milk")
    # or a thought not yet finished, and at 500 ms they were cut off mid-turn (bench/turn_taking.py).
    unsure_turn_ms: int = Field(800, ge=100, le=5000)
    # No dead air: after this many seconds of the caller's silence while the call listens (nothing
    # playing, no reply pending, no speech in progress) the bot says prompts.reprompt; after max_reprompts
    # of them unanswered it says goodbye and the call ends `no_input`. 0 turns it off.
    reprompt_after_s: float = Field(7.0, ge=0, le=600)
    max_reprompts: int = Field(2, ge=0, le=20)
    # A barge-in whose words are none, or only these (case and punctuation aside), was no interruption:
    # the cut reply resumes from the sentence it was cut in (call/resume.py).
    backchannel_words: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BACKCHANNEL_WORDS), max_length=200
    )

    # Words (back-channel ones aside) that speech over the bot must say before it cancels the reply,
    # transcribed while it goes on (call/overlap.py); 0: barge_in_min_ms of speech is enough.
    barge_in_min_words: int = Field(0, ge=0, le=10)

    @field_validator("backchannel_words")
    @classmethod
    def _words_are_words(cls, words: list[str]) -> list[str]:
        kept = [word.strip().lower() for word in words]
        if any(not word or len(word) > 40 or len(word.split()) != 1 for word in kept):
            raise ValueError("turn.backchannel_words must be single words of 1-40 characters")
        return kept

    @model_validator(mode="after")
    def _adaptive_needs_a_guess(self) -> TurnConfig:
        # The words that decide come from the speculative transcription, and before the fixed silence ends
        # there must be time to take it. Asked for, "adaptive" without one is an error; as the default, a
        # config that turns speculation off (as one could before adaptive was the default) gets "fixed".
        if self.end_of_turn == "adaptive" and not 0 < self.speculative_ms < self.end_of_turn_silence_ms:
            if "end_of_turn" in self.model_fields_set:
                needs = "0 < turn.speculative_ms < turn.end_of_turn_silence_ms"
                raise ValueError(f'turn.end_of_turn = "adaptive" needs {needs}')
            self.end_of_turn = "fixed"
        return self


class PromptsConfig(Section):
    greeting: str = "Hello! Thanks for calling. How can I help you today?"
    busy: str = "Sorry, all our lines are busy right now. Please call again in a few minutes."
    goodbye: str = "Thank you for calling. Goodbye."
    transfer: str = "Please hold while I transfer your call."
    apology: str = "Sorry, I could not get an answer just now. Could you say that again?"
    # Said after turn.reprompt_after_s of the caller's silence.
    reprompt: str = "Are you still there?"
    # Said once in a turn whose backend has not answered after backend.filler_after_ms.
    filler: str = "One moment, please."
    # The first line of an outbound call, once the callee is judged a person (or unknown); "": `greeting`.
    outbound_greeting: str = "Hello! This is an automated call. Is this a good time to talk?"
    # Left on an answering machine after its beep (amd.on_machine = "voicemail").
    voicemail_message: str = "Hello, this is an automated call. Please call us back when you can. Thank you."


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


class OutboundConfig(Section):
    # Which provider places a dial that names none.
    default_provider: Literal["exotel", "twilio"] = "exotel"
    # How long the called number may ring before the provider gives up (no-answer).
    ring_timeout_s: int = Field(30, ge=5, le=120)
    # A dialled call's limit (Exotel's TimeLimit; Twilio's TimeLimit), in seconds.
    time_limit_s: int = Field(3600, ge=60, le=14_400)
    # Ask the provider to record outbound calls.
    record: bool = False
    # How long a placed call may take to open its stream before its dial token and entry expire.
    # At most the stream tokens' own lifetime (telephony/stream_tokens.py), which would refuse it anyway.
    answer_within_s: float = Field(180.0, ge=10, le=300)


class CostsConfig(Section):
    # Bounded: an infinite rate would make every cost record invalid JSON for the backend.
    telephony_per_minute: float = Field(0.02, ge=0, le=1000)
    tts_per_minute: float = Field(0.01, ge=0, le=1000)
    stt_per_minute: float = Field(0.0, ge=0, le=1000)
    ai_per_request: float = Field(0.001, ge=0, le=1000)
    currency: str = "USD"


class OutboxConfig(Section):
    # Delivery retries back off from retry_base_s, doubling, to at most retry_cap_s (with full jitter).
    retry_base_s: float = Field(1.0, gt=0)
    retry_cap_s: float = Field(60.0, gt=0)


class ReportConfig(Section):
    # Where the post-call report of every call is POSTed (docs/post-call-report.md); empty: none is sent.
    url: str = ""
    # Key of the report's HMAC-SHA256 signature; the receiver holds the same one to verify it.
    secret: SecretStr = SecretStr("")
    # One delivery attempt's bound (the outbox retries after it, with its own backoff).
    timeout_s: float = Field(10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _url_and_secret(self) -> ReportConfig:
        if not self.url:
            return self
        fault = http_url_fault(self.url)
        # The URL is not quoted back: a malformed one may carry credentials.
        if fault == "not http(s)":
            raise ValueError("report.url must be an http(s) URL such as https://crm.example.com/voicebridge")
        if fault == "credentials":
            raise ValueError("report.url must not contain credentials; the signature is the report's proof")
        # An unsigned report would be believed from anyone who finds the receiver's URL.
        if len(self.secret.get_secret_value()) < 16:
            raise ValueError("report.secret must be set (16 characters or more) when report.url is")
        return self


class CampaignsConfig(Section):
    """Outbound campaigns (voicebridge/campaigns/): the defaults `campaign run` options override."""

    # The share of server.max_concurrent_calls campaigns never take: kept for inbound callers.
    inbound_reserve: float = Field(0.2, ge=0, le=0.9)
    # One E.164 number a line; re-read when it changes and checked before every dial. Empty: none.
    dnc_file: str = ""
    concurrency: int = Field(2, ge=1, le=1000)
    rate_per_minute: float = Field(30.0, gt=0, le=6000)
    hours: str = "09:00-21:00"
    time_zone: str = "Asia/Kolkata"
    max_attempts: int = Field(3, ge=1, le=10)
    # Busy, no-answer and failed attempts are retried after retry_base_s, doubling, up to retry_cap_s.
    retry_base_s: float = Field(300.0, ge=1, le=86_400)
    retry_cap_s: float = Field(3600.0, ge=1, le=7 * 86_400)
    # A dialled call whose end the dialler never reports is settled (outcome unknown, not retried) after
    # this long, so a lost status callback cannot hold a campaign's slot forever.
    attempt_timeout_s: float = Field(7200.0, ge=60, le=86_400)
    # Bounds on a list (rows beyond max_rows, or a file beyond max_list_bytes, refuse the list).
    max_rows: int = Field(100_000, ge=1, le=1_000_000)
    max_list_bytes: int = Field(20 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        parse_hours(value)
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_zone(value)


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
    outbound: OutboundConfig = Field(default_factory=OutboundConfig)
    calls: CallsConfig = Field(default_factory=CallsConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    amd: AmdConfig = Field(default_factory=AmdConfig)
    campaigns: CampaignsConfig = Field(default_factory=CampaignsConfig)
    management: ManagementConfig = Field(default_factory=ManagementConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    # Per called number: greeting, voice, language, system_prompt, transfer_number, max_call_minutes.
    numbers: Numbers = Field(default_factory=dict)

    def provider_sections(self) -> dict[str, ProviderSection]:
        """Every telephony provider's section by provider name, found by type: a provider joins the rules
        below by its section being a field here (named as the provider is)."""
        return {name: section for name, section in self if isinstance(section, ProviderSection)}

    def enabled_provider_sections(self) -> dict[str, ProviderSection]:
        """The enabled providers' sections. A disabled provider has no routes, so it counts for nothing in
        the rules below."""
        return {name: section for name, section in self.provider_sections().items() if section.enabled}

    @model_validator(mode="after")
    def _exposed_means_authenticated(self) -> Settings:
        if self.server.is_loopback() or self.server.insecure:
            return self
        enabled = self.enabled_provider_sections()
        open_doors = [name for name, section in enabled.items() if not section.is_authenticated()]
        if open_doors:
            raise ValueError(
                f"server.host {self.server.host!r} is reachable from the network but "
                f"{' and '.join(d + '.webhook_auth' for d in open_doors)} "
                f"{'is' if len(open_doors) == 1 else 'are'} 'none'; configure webhook auth, "
                "disable the provider, or set server.insecure = true"
            )
        return self

    @model_validator(mode="after")
    def _placement_has_shared_state(self) -> Settings:
        if not self.server.node_url:
            return self
        if not self.cluster.enabled:
            raise ValueError("server.node_url places calls through the shared state: set cluster.redis_url")
        if not self.server.stream_secret.get_secret_value():
            # A token issued by the node that took the webhook must open the socket of the node it names.
            raise ValueError("server.node_url needs server.stream_secret, the same on every node")
        return self

    def any_webhook_auth(self) -> bool:
        """Whether any enabled provider has webhook auth configured."""
        return any(section.is_authenticated() for section in self.enabled_provider_sections().values())

    @property
    def open_mode(self) -> bool:
        """No authentication anywhere: no enabled provider has webhook auth configured, and the daemon
        listens on loopback or is explicitly insecure. `insecure` only waives the start-up refusal: auth
        that is configured is always checked (it once switched every check off, so one provider's `none`
        left another's `basic` unenforced)."""
        loopback_or_insecure = self.server.is_loopback() or self.server.insecure
        return loopback_or_insecure and not self.any_webhook_auth()

    def provider_enabled(self, provider: str) -> bool:
        """Whether `provider` ("exotel", "twilio") is enabled; a name with no provider section is not."""
        section = self.provider_sections().get(provider)
        return section is not None and section.enabled

    @property
    def management_api_needs_token(self) -> bool:
        """Management (/api/*, and /metrics and /health unless public) takes only the bearer token unless
        this is the local quick start (loopback, no enabled provider's webhook auth, no trusted proxies): a
        same-host reverse proxy makes every request look like loopback. `server.insecure` changes nothing
        here: it turns webhook auth off, not the reason a proxy may be in front."""
        return self.any_webhook_auth() or bool(self.server.trusted_proxies) or not self.server.is_loopback()

    def control_socket_path(self) -> Path:
        """The control socket: configured, else systemd's RuntimeDirectory, else $XDG_RUNTIME_DIR, else a
        private directory of our own under the temp dir (checked by the control server before use)."""
        return paths.control_socket_path(self.control.socket_path)

    def state_path(self) -> Path:
        """Where durable state lives: configured, else systemd's StateDirectory, else $XDG_STATE_HOME,
        else ~/.local/state (the XDG base-directory spec's default)."""
        return paths.state_path(self.server.state_dir)
