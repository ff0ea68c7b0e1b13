"""Preflight checks behind `voicebridge doctor`: each one passes, warns or fails with a one-line fix.

Every check is a plain function returning a `Check`; `run_checks` runs them in order and turns any
unexpected exception into a FAIL row, so the command never prints a traceback. Speech libraries are
imported inside the checks that need them.
"""

from __future__ import annotations

import asyncio
import errno
import http.client
import ipaddress
import os
import resource
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from voicebridge.config.load import ConfigError, load_settings, resolve_config_path
from voicebridge.config.paths import private_dir_problem, private_runtime_fallback
from voicebridge.config.schema import Settings

Status = Literal["pass", "warn", "fail"]

# "one two three" spoken by the shipped Piper voice: 0.9 s, 8 kHz mono PCM16, like a phone turn.
SAMPLE_WAV = Path(__file__).resolve().parents[1] / "data" / "doctor_sample.wav"
SAMPLE_TEXT = "one two three"
# A caller waits for STT before any reply can start; a short clip taking longer than this means the
# host is too slow (or too busy) for conversation, whatever else is tuned.
STT_BOUND_S = 3.0
# Piper's first sentence normally lands in ~0.1 s; a second of silence before the bot speaks is noticed.
TTS_FIRST_AUDIO_BOUND_S = 1.0
# A remote engine gets longer: it includes DNS, TLS and the service's own queueing.
AZURE_TIMEOUT_S = 10.0
# A health probe, not a conversation turn: room for a TLS handshake over a slow link, and quick to fail.
BACKEND_TIMEOUT_S = 5.0
# File descriptors: stdio, listening and control sockets, epoll and self-pipes, thread-pool wakeups,
# model files and metrics scrapes fit in 64 with room; each call holds its media WebSocket, a backend
# connection, a provider REST connection, an Azure TTS socket when Azure speaks, an outbox/recording
# file, and slack for connections being replaced: 8.
FDS_BASE = 64
FDS_PER_CALL = 8
# Capacity model: one caller turn per call every ~8 s (a few seconds of speech, then the bot's reply
# being played). STT is the shared, CPU-bound stage, so it is the one sized against the call limit;
# Piper shares the same CPUs, which is why the figure is reported rather than trusted to the last call.
SECONDS_BETWEEN_TURNS = 8.0
# Unix socket paths are limited by sun_path (108 bytes on Linux, including the terminating NUL).
UNIX_PATH_MAX = 107
# Secrets shorter than this are not masked in the output: replacing one or two characters everywhere
# would garble every row, and no real key is that short.
MIN_MASKED_SECRET = 4


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one preflight check; `fix` says what to change when it is not a pass."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error_text(exc: BaseException) -> str:
    return _one_line(str(exc)) or type(exc).__name__


def check_config(config_path: Path | None) -> tuple[Check, Settings | None]:
    """Load and validate the configuration; the settings are None when it failed."""
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        fix = "correct the key named (see config.example.toml); `voicebridge config init` writes a valid one"
        return Check("config", "fail", str(exc), fix), None
    source = resolve_config_path(config_path)
    detail = f"loaded {source}" if source else "no config file: built-in defaults"
    return Check("config", "pass", f"{detail} (environment overrides applied)"), settings


def _voicebridge_answers(control_socket: Path) -> bool:
    """True when something accepts connections on the control socket, i.e. a daemon is running."""
    if not control_socket.is_socket():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(control_socket))
        except OSError:
            return False
    return True


def check_port(settings: Settings) -> Check:
    """Bind server.host:server.port the way aiohttp will (SO_REUSEADDR, v6-only IPv6 sockets)."""
    name = "listen port"
    host, port = settings.server.host, settings.server.port
    where = f"port {port} on {host or 'all interfaces'}"
    if port == 0:
        return Check(name, "warn", "server.port = 0: a new random port at every start", "set server.port")
    try:
        # asyncio treats an empty host as every interface, so do the same.
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return Check(
            name, "fail", f"server.host {host!r} does not resolve: {exc.strerror}", "set server.host"
        )
    for family, kind, proto, _, address in dict.fromkeys(infos):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:
            continue  # asyncio skips address families the host lacks (IPv6 off); so do we
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                return _bind_failure(settings, where, exc)
    return Check(name, "pass", f"{where} is free")


def _bind_failure(settings: Settings, where: str, exc: OSError) -> Check:
    if exc.errno != errno.EADDRINUSE:
        low = " (ports below 1024 need CAP_NET_BIND_SERVICE)" if exc.errno == errno.EACCES else ""
        detail = f"cannot listen on {where}: {exc.strerror or exc}"
        return Check("listen port", "fail", detail, f"check server.host and server.port{low}")
    control = settings.control_socket_path()
    if _voicebridge_answers(control):
        # WARN, not FAIL: doctor is also run on a live host to check its config, where the port is held
        # by the very daemon being checked. Not a pass either: a second daemon could not start.
        detail = f"{where} is in use, probably by the voicebridge daemon answering on {control}"
        return Check("listen port", "warn", detail, "stop that daemon before starting another one here")
    return Check("listen port", "fail", f"{where} is in use", "stop whatever holds it or set server.port")


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
    modes = ", ".join(
        f"{provider} {auth}"
        for provider, enabled, auth in (
            ("exotel", settings.exotel.enabled, settings.exotel.webhook_auth),
            ("twilio", settings.twilio.enabled, settings.twilio.webhook_auth),
        )
        if enabled
    )
    if settings.server.insecure:
        return Check(
            name,
            "warn",
            f"server.insecure = true: providers on webhook_auth none are open on {where} ({modes})",
            "set exotel/twilio webhook_auth and server.insecure = false",
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


def check_stt(settings: Settings) -> tuple[Check, float | None]:
    """Load the Whisper model and transcribe the sample; also return the warm seconds per utterance."""
    from voicebridge.audio.wav import read_wav
    from voicebridge.speech.base import SpeechEngineError
    from voicebridge.speech.factory import build_stt
    from voicebridge.speech.models import ModelCache, default_whisper_path
    from voicebridge.speech.wer import word_error_rate

    name = "stt"
    path = settings.stt.model_path or default_whisper_path()
    if not (Path(path) / "model.bin").is_file():
        fix = "set stt.model_path to a CTranslate2 Whisper model directory"
        return Check(name, "fail", f"no Whisper model at {path} (model.bin missing)", fix), None
    pcm, rate = read_wav(SAMPLE_WAV)

    async def twice() -> tuple[float, float, str]:
        # The first pass pays one-off allocations; the second is what callers see in steady state, so
        # it is the figure held to the bound and used for throughput.
        cold = await engine.transcribe(pcm, rate)
        warm = await engine.transcribe(pcm, rate)
        return cold.processing_seconds, warm.processing_seconds, warm.text

    started = time.perf_counter()
    try:
        engine = build_stt(settings, ModelCache())
        loaded = time.perf_counter() - started
        cold, warm, text = asyncio.run(twice())
    except SpeechEngineError as exc:
        fix = "check stt.model_path points at a CTranslate2 Whisper model"
        return Check(name, "fail", _error_text(exc), fix), None
    detail = (
        f"loaded in {loaded:.1f} s; {len(pcm) / 2 / rate:.1f} s sample heard as {text.strip()!r} "
        f"in {warm:.2f} s ({cold:.2f} s cold); model {path}"
    )
    if word_error_rate(SAMPLE_TEXT, text) > 0.34:  # one misheard word of the three is tolerated
        fix = f"the sample says {SAMPLE_TEXT!r}: check stt.model_path and stt.language"
        return Check(name, "warn", detail, fix), warm
    if warm > STT_BOUND_S:
        fix = f"over {STT_BOUND_S:.0f} s: use a faster host, fewer busy processes, or stt.beam_size = 1"
        return Check(name, "warn", detail, fix), warm
    return Check(name, "pass", detail), warm


def check_tts(settings: Settings) -> Check:
    """Synthesise a short phrase with the configured engine and time its first audio."""
    from voicebridge.speech.base import Closable, SpeechEngineError
    from voicebridge.speech.factory import build_tts
    from voicebridge.speech.models import ModelCache

    name = "tts"
    engine_name = settings.tts.engine
    if engine_name == "azure" and not settings.tts.azure_key.get_secret_value():
        fix = "set VOICEBRIDGE_TTS__AZURE_KEY or tts.azure_key"
        return Check(name, "fail", "tts.azure_key is not set", fix)
    try:
        engine = build_tts(settings, ModelCache())
    except SpeechEngineError as exc:
        fix = "set tts.voice to a Piper .onnx voice with its .onnx.json beside it"
        return Check(name, "fail", _error_text(exc), fix)
    timeout = AZURE_TIMEOUT_S if engine_name == "azure" else None
    endpoint = getattr(engine, "endpoint", "")

    async def first_audio() -> tuple[float, int]:
        started = time.perf_counter()
        first, size = 0.0, 0
        async for piece in engine.synthesize("Hello, thanks for calling.", 8000):
            first = first or time.perf_counter() - started
            size += len(piece)
        return first, size

    try:
        first, size = asyncio.run(asyncio.wait_for(first_audio(), timeout))
    except TimeoutError:
        fix = f"check network access to {endpoint} and tts.azure_region"
        return Check(name, "fail", f"Azure TTS ({endpoint}) sent no audio within {timeout:.0f} s", fix)
    except SpeechEngineError as exc:
        fix = "check tts.azure_key, tts.azure_region (or tts.azure_host) and network access"
        return Check(name, "fail", _error_text(exc), fix if engine_name == "azure" else "check tts.voice")
    finally:
        if isinstance(engine, Closable):  # an optional capability, declared in speech/base.py
            engine.close()
    if not size:
        return Check(name, "fail", f"{engine_name} produced no audio", "check tts.voice / tts.azure_voice")
    detail = f"{engine_name}{f' ({endpoint})' if endpoint else ''}: first audio in {first * 1000:.0f} ms"
    if first > TTS_FIRST_AUDIO_BOUND_S:
        return Check(name, "warn", detail, "callers hear a pause before each reply: use a faster host")
    return Check(name, "pass", detail)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would resend the Authorization header to wherever a redirect points; report it instead.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {BACKEND_TIMEOUT_S:.0f} s"
    if isinstance(exc, socket.gaierror):
        return f"name lookup failed ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return _error_text(exc)


def check_backend(settings: Settings) -> Check:
    """Reach the AI backend (node: /v1/health, openai: /models) with its API key; echo is built in."""
    name = "backend"
    backend = settings.backend
    if backend.kind == "echo":
        return Check(name, "pass", "echo: built in")
    fix = "set backend.url to the backend's http(s) base URL"
    if not backend.url:
        return Check(name, "fail", f"backend.kind is {backend.kind} but backend.url is empty", fix)
    try:
        parts = urlsplit(backend.url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:  # not quoted: a malformed URL may carry credentials
        return Check(name, "fail", "backend.url is not an http(s) URL", fix)
    if "@" in parts.netloc:  # never printed, and the key belongs in backend.api_key anyway
        return Check(name, "fail", "backend.url contains credentials (user:password@)", fix)
    key = backend.api_key.get_secret_value()
    # The node contract (docs/backend-api.md) sends X-Api-Key; OpenAI-compatible servers want a bearer token.
    if backend.kind == "node":
        probe = backend.url.rstrip("/") + "/v1/health"
        headers = {"X-Api-Key": key, "X-Voicebridge-Version": "1"} if key else {"X-Voicebridge-Version": "1"}
    else:
        probe = backend.url.rstrip("/") + "/models"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(probe, headers=headers)
    # No proxy from the environment: the daemon's aiohttp client does not use one either.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    started = time.perf_counter()
    try:
        with opener.open(request, timeout=BACKEND_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # any non-2xx, redirects included (see _NoRedirect)
        status = exc.code
        exc.close()
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, BaseException) else OSError(0, str(exc.reason))
        detail = f"backend {probe} unreachable: {_reason(reason)}"
        return Check(name, "fail", detail, "start the backend or correct backend.url")
    except OSError as exc:  # a timeout while reading the answer
        return Check(name, "fail", f"backend {probe} unreachable: {_reason(exc)}", "check the backend")
    except (ValueError, http.client.HTTPException) as exc:
        return Check(name, "fail", f"backend {probe}: request failed ({type(exc).__name__})", fix)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if status in (401, 403):
        if not key:
            fix = "set backend.api_key (or VOICEBRIDGE_BACKEND__API_KEY)"
            return Check(name, "fail", f"backend {probe} wants an API key (HTTP {status})", fix)
        fix = "check backend.api_key (or VOICEBRIDGE_BACKEND__API_KEY)"
        return Check(name, "fail", f"backend {probe} rejected the API key (HTTP {status})", fix)
    if 200 <= status < 300:
        return Check(name, "pass", f"{backend.kind} backend {probe}: HTTP {status} in {elapsed_ms:.0f} ms")
    return Check(
        name, "warn", f"backend {probe} answered HTTP {status}", "check backend.url and the backend's logs"
    )


def _writable(name: str, directory: Path, fix: str, subject: str = "") -> Check:
    """`directory` is writable, or does not exist yet and its nearest existing ancestor is."""
    subject = subject or str(directory)
    probe = directory
    # lexists: a dangling symlink stops the walk, since nothing could be created through it.
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return Check(name, "fail", f"{probe} is not a directory", fix)
    if not os.access(probe, os.W_OK | os.X_OK):
        what = f"{directory} is" if probe == directory else f"{directory} does not exist and {probe} is"
        return Check(name, "fail", f"{what} not writable by uid {os.getuid()}", fix)
    if probe == directory:
        return Check(name, "pass", f"{subject}: {directory} is writable")
    return Check(name, "pass", f"{subject}: {directory} will be created ({probe} is writable)")


def check_control_socket(settings: Settings) -> Check:
    """The control socket's directory can hold it, and its path fits a Unix socket address."""
    path = settings.control_socket_path()
    fix = "set control.socket_path to a writable place (systemd: RuntimeDirectory=)"
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        detail = f"{path} is {len(os.fsencode(path))} bytes; Unix sockets allow {UNIX_PATH_MAX}"
        return Check("control socket", "fail", detail, "set control.socket_path to a shorter path")
    fallback = private_runtime_fallback()
    if path.is_relative_to(fallback) and (problem := private_dir_problem(fallback)):
        # The daemon refuses this directory (another user could control the socket): so does doctor.
        return Check("control socket", "fail", f"{fallback} {problem}", f"remove {fallback}, or {fix}")
    return _writable("control socket", path.parent, fix, subject=str(path))


def check_state_dir(settings: Settings) -> Check:
    """The state directory (outbox, recordings) is writable or can be created."""
    fix = "set server.state_dir to a writable place (systemd: StateDirectory=)"
    return _writable("state dir", settings.state_path(), fix, subject="outbox and recordings")


def check_open_files(settings: Settings) -> Check:
    """The soft RLIMIT_NOFILE covers FDS_BASE + FDS_PER_CALL × server.max_concurrent_calls."""
    calls = settings.server.max_concurrent_calls
    needed = FDS_BASE + FDS_PER_CALL * calls
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    shown = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
    detail = f"soft limit {shown} here; {calls} calls need ~{needed} ({FDS_BASE} + {FDS_PER_CALL} per call)"
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return Check("open files", "pass", detail)
    fix = f"raise LimitNOFILE= in the systemd unit or `ulimit -n` (hard limit {hard})"
    return Check("open files", "warn", detail, fix)


def check_cpu(settings: Settings, stt_seconds: float | None) -> Check:
    """Measured STT throughput against one turn per call every SECONDS_BETWEEN_TURNS seconds."""
    name = "cpu"
    # The affinity mask, where the OS has one: taskset/cpusets restrict what the daemon may use.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    stt = settings.stt
    calls = settings.server.max_concurrent_calls
    if stt_seconds is None:
        return Check(name, "warn", f"{cpus} CPUs; no STT measurement to size against", "fix the stt check")
    from voicebridge.speech.stt import worker_count

    # The daemon never runs more workers than the cores can run at stt.threads each.
    parallel = worker_count(stt, cpus)
    throughput = parallel / max(stt_seconds, 1e-3)
    needed = calls / SECONDS_BETWEEN_TURNS
    detail = (
        f"{cpus} CPUs; STT ~{throughput:.1f} utterances/s ({parallel} workers, stt.threads "
        f"{stt.threads}, {stt_seconds:.2f} s each) vs {needed:.1f}/s needed for {calls} calls "
        f"(a turn per call every {SECONDS_BETWEEN_TURNS:.0f} s)"
    )
    if throughput >= needed:
        return Check(name, "pass", detail)
    fix = "lower server.max_concurrent_calls, or add CPUs (stt.workers = 0 uses them all)"
    return Check(name, "warn", detail, fix)


def _guard(name: str, run: Callable[[], Check]) -> Check:
    try:
        return run()
    except Exception as exc:  # any surprise is one FAIL row, never a traceback
        detail = f"unexpected error: {type(exc).__name__}: {_error_text(exc)}"
        return Check(name, "fail", detail, "report this with the detail above")


def _secrets(settings: Settings) -> list[str]:
    values = {
        value.get_secret_value() for _, part in settings for _, value in part if isinstance(value, SecretStr)
    }
    return sorted((value for value in values if len(value) >= MIN_MASKED_SECRET), key=len, reverse=True)


def _masked(check: Check, secrets: list[str]) -> Check:
    # Engines already mask keys in their errors; this is the net under every row, including surprises.
    detail, fix = _one_line(check.detail), _one_line(check.fix)
    for secret in secrets:
        detail, fix = detail.replace(secret, "********"), fix.replace(secret, "********")
    return replace(check, detail=detail, fix=fix)


def run_checks(config_path: Path | None, progress: Callable[[str], None] | None = None) -> list[Check]:
    """Run every check in order (only the config check when the config is invalid)."""
    report = progress or (lambda _name: None)
    report("config")
    config, settings = check_config(config_path)
    if settings is None:
        return [_masked(config, [])]
    stt_seconds: float | None = None

    def stt() -> Check:
        nonlocal stt_seconds
        check, stt_seconds = check_stt(settings)
        return check

    steps: list[tuple[str, Callable[[], Check]]] = [
        ("listen port", lambda: check_port(settings)),
        ("public url", lambda: check_public_url(settings)),
        ("authentication", lambda: check_authentication(settings)),
        ("stt", stt),
        ("tts", lambda: check_tts(settings)),
        ("backend", lambda: check_backend(settings)),
        ("control socket", lambda: check_control_socket(settings)),
        ("state dir", lambda: check_state_dir(settings)),
        ("open files", lambda: check_open_files(settings)),
        ("cpu", lambda: check_cpu(settings, stt_seconds)),
    ]
    checks = [config]
    for name, run in steps:
        report(name)
        checks.append(_guard(name, run))
    secrets = _secrets(settings)
    return [_masked(check, secrets) for check in checks]


def all_ok(checks: list[Check]) -> bool:
    """True when no check failed (warnings are allowed)."""
    return all(check.status != "fail" for check in checks)
