"""Shared fixtures: real speech engines (loaded once per session) and a real daemon process on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from voicebridge.config.schema import Settings
from voicebridge.sim.daemon import DaemonProcess, start_daemon
from voicebridge.speech.models import ModelCache

T = TypeVar("T")


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync or async test code (in its own thread and loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


@pytest.fixture(scope="session")
def model_cache() -> ModelCache:
    """One model cache for the whole test session: each model loads once."""
    return ModelCache()


@pytest.fixture(scope="session")
def speak(model_cache: ModelCache) -> Callable[[str, int], bytes]:
    """Synthesise test speech with the shipped Piper voice at a given rate (PCM16 mono)."""
    from voicebridge.speech.tts.piper import PiperTTS

    engine = PiperTTS(Settings().tts, model_cache)
    rendered: dict[tuple[str, int], bytes] = {}

    def render(text: str, sample_rate: int = 8000) -> bytes:
        if (text, sample_rate) not in rendered:

            async def collect() -> bytes:
                return b"".join([piece async for piece in engine.synthesize(text, sample_rate)])

            rendered[(text, sample_rate)] = run_sync(collect)
        return rendered[(text, sample_rate)]

    return render


@pytest.fixture(scope="session")
def transcribe(model_cache: ModelCache) -> Callable[[bytes, int], str]:
    """Transcribe PCM16 with the shipped Whisper model (the same engine the daemon uses)."""
    from voicebridge.speech.stt import WhisperSTT

    engine = WhisperSTT(Settings().stt, model_cache)

    def run(pcm16: bytes, sample_rate: int) -> str:
        return run_sync(lambda: engine.transcribe(pcm16, sample_rate)).text

    return run


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon on the embedded defaults (Whisper, Piper, echo) with a short greeting, shared by a module."""
    process = start_daemon(
        tmp_path_factory.mktemp("daemon"), {"prompts": {"greeting": "Hello, how can I help?"}}
    )
    yield process
    process.terminate()
