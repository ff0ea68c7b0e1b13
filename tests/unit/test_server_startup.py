"""The daemon's resources each start in a cleanup context of their own and close in reverse order: when
the outbox cannot open, everything started before it is closed and the daemon says why on one line.

In-process, with engines that hold real worker threads and a backend that holds a real HTTP session, so
"closed" means their threads are gone and their session is closed, not just that close() was called.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from voicebridge.backends.echo import EchoBackend
from voicebridge.config.schema import BackendConfig, Settings
from voicebridge.server import app as app_module
from voicebridge.server.keys import CALL_SERVICES, LOAD, METRICS, MODELS
from voicebridge.server.logs import MalformedRequestLog
from voicebridge.server.serve import serve
from voicebridge.server.systemd import SystemdNotifier
from voicebridge.speech.base import DEFAULT_VOICE, Transcript, Voice
from voicebridge.speech.factory import Engines
from voicebridge.speech.models import ModelCache
from voicebridge.speech.scheduler import always_confirmed

THREAD_PREFIX = "startup-test"


class PooledSTT:
    """An STT engine with worker threads of its own and a declared capacity (speech.base.SttCapacity)."""

    name = "pooled-stt"
    workers = 3

    def __init__(self, closed: list[str]) -> None:
        self._closed = closed
        self._pool = ThreadPool(f"{THREAD_PREFIX}-stt")
        self.queue_depth = 2

    async def transcribe(
        self,
        pcm16: bytes,
        sample_rate: int,
        confirmed: Callable[[], bool] = always_confirmed,
        language: str = "",
    ) -> Transcript:
        return Transcript("", len(pcm16) / 2 / sample_rate, 0.0, self.name)

    def close(self) -> None:
        self._pool.shutdown()
        self._closed.append("stt")


class PooledTTS:
    """A TTS engine with worker threads of its own; a little silence for every phrase."""

    name = "pooled-tts"

    def __init__(self, closed: list[str]) -> None:
        self._closed = closed
        self._pool = ThreadPool(f"{THREAD_PREFIX}-tts")

    async def synthesize(
        self, text: str, sample_rate: int, voice: Voice = DEFAULT_VOICE
    ) -> AsyncIterator[bytes]:
        yield bytes(sample_rate // 5)

    def close(self) -> None:
        self._pool.shutdown()
        self._closed.append("tts")


class ThreadPool:
    """A running worker thread that close() must stop (what a real engine's executor holds)."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._stop.wait, name=name, daemon=True)
        self.thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        self.thread.join(5)


class SessionBackend(EchoBackend):
    """The echo backend, holding an HTTP session from start() to close() as node and openai do."""

    def __init__(self, closed: list[str]) -> None:
        self._closed = closed
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        assert self.session is not None
        await self.session.close()
        self._closed.append("backend")


@pytest.fixture
def closed() -> list[str]:
    """Which resources were closed, in order."""
    return []


@pytest.fixture
def backends(monkeypatch: pytest.MonkeyPatch, closed: list[str]) -> list[SessionBackend]:
    """Every backend the app builds, in order (the app builds it from the config; this swaps the kind)."""
    built: list[SessionBackend] = []

    def build(config: BackendConfig) -> SessionBackend:
        built.append(SessionBackend(closed))
        return built[-1]

    monkeypatch.setattr(app_module, "build_backend", build)
    return built


def settings_in(tmp_path: Path) -> Settings:
    return Settings(
        server={"host": "127.0.0.1", "port": 0, "state_dir": str(tmp_path / "state")},
        control={"socket_path": str(tmp_path / "control.sock")},
    )


def live_test_threads() -> list[str]:
    """Our engines' threads and the outbox's, still running."""
    return [t.name for t in threading.enumerate() if t.name.startswith((THREAD_PREFIX, "outbox"))]


def log_filters_left() -> int:
    return sum(isinstance(f, MalformedRequestLog) for f in logging.getLogger("aiohttp.server").filters)


async def test_an_outbox_that_cannot_open_closes_everything_started_before_it(
    tmp_path: Path, closed: list[str], backends: list[SessionBackend], caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_in(tmp_path)
    # The outbox's database file is a directory: SQLite cannot open it.
    (settings.state_path() / "outbox.sqlite3").mkdir(parents=True)
    engines = Engines(stt=PooledSTT(closed), tts=PooledTTS(closed))
    filters_before = log_filters_left()

    with caplog.at_level(logging.INFO, logger="voicebridge"):
        code = await asyncio.wait_for(serve(settings, SystemdNotifier({}), engines), timeout=30)

    assert code == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None, errors
    message = errors[0].getMessage()
    assert message.startswith("cannot start: outbox ") and "outbox.sqlite3" in message, message
    assert "\n" not in message
    # Every resource started before the outbox was closed, the last started first.
    assert closed == ["backend", "tts", "stt"]
    assert len(backends) == 1 and backends[0].session is not None and backends[0].session.closed
    assert live_test_threads() == []  # the engines' threads and the outbox's own worker
    assert log_filters_left() == filters_before
    # Nothing after the outbox started: no control socket was made, no port taken.
    assert not (tmp_path / "control.sock").exists()
    assert "listening" not in caplog.text


async def test_resources_start_in_order_and_close_in_reverse(
    tmp_path: Path, closed: list[str], backends: list[SessionBackend]
) -> None:
    per_call_caches: list[ModelCache] = []

    def own_stt(shared: ModelCache) -> PooledSTT:
        per_call_caches.append(shared)
        return PooledSTT([])

    engines = Engines(stt=PooledSTT(closed), tts=PooledTTS(closed), stt_per_call=own_stt)
    app = app_module.create_app(settings_in(tmp_path), engines)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        # The STT engine's declared capacity sizes the overload guard and feeds the queue gauge.
        assert app[LOAD].stt_workers == PooledSTT.workers
        assert b"voicebridge_stt_queue_depth 2.0" in app[METRICS].render()
        # The per-call factory reaches each call with the daemon's model cache, so /health counts its loads.
        per_call = app[CALL_SERVICES].stt_per_call
        assert per_call is not None
        per_call().close()
        assert per_call_caches == [app[MODELS]]
        assert closed == []
    finally:
        await runner.cleanup()
    assert closed == ["backend", "tts", "stt"]
    assert backends[0].session is not None and backends[0].session.closed
    assert live_test_threads() == []
