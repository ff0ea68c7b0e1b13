"""Shared fixtures: real speech engines (loaded once per session) and a real daemon process on loopback.

The suite runs under pytest-xdist (see addopts in pyproject.toml): session fixtures run once per worker,
every daemon takes a free port and a tmp path, and the hooks below keep each module-scoped daemon on one
worker and start the longest tests first.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from xdist.scheduler import LoadScopeScheduling

from voicebridge.config.schema import Settings
from voicebridge.sim.daemon import DaemonProcess, start_daemon
from voicebridge.speech.models import ModelCache

T = TypeVar("T")

# Single tests that run for minutes (a benchmark subprocess, a soak, waits the behaviour itself calls for):
# started first, so no worker is left with one of them after the others have finished everything else.
LONG_FIRST = (
    "tests/wire/test_bench_suite.py",
    "tests/wire/test_soak.py",
    "tests/wire/test_records_durability.py",
)
# Then the layers by how long their tests wait on real time: wire (real daemons), unit (real models), engine.
LAYER_ORDER = ("tests/wire/", "tests/unit/", "tests/engine/")


# Files whose tests share a module-scoped fixture (a daemon, a CLI run, a rendered utterance): each runs
# on one worker, so that fixture is set up once; every other test is a unit of its own and the wire tests
# spread over the workers. (xdist's own loadgroup cannot do this on pytest 9: it renames items through
# `item._nodeid`, which pytest 9 no longer reads, so every worker set up the module's daemons again.)
SHARED_FIXTURE_FILES = frozenset(
    {
        "tests/unit/test_call_parts.py",
        "tests/unit/test_doctor.py",
        "tests/unit/test_stt.py",
        "tests/wire/test_auth.py",
        "tests/wire/test_daemon_e2e.py",
        "tests/wire/test_fuzz.py",
        "tests/wire/test_hostile.py",
        "tests/wire/test_http_door.py",
        "tests/wire/test_limits_e2e.py",
        "tests/wire/test_operator_cli.py",
        "tests/wire/test_records_e2e.py",
        "tests/wire/test_report_e2e.py",
        "tests/wire/test_stream_hardening.py",
    }
)


class SharedFixtureScheduling(LoadScopeScheduling):
    """--dist loadscope, with a scope per shared-fixture file and one per test everywhere else."""

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return path if path in SHARED_FIXTURE_FILES else nodeid


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    return SharedFixtureScheduling(config, log) if config.getvalue("dist") == "loadscope" else None


def start_rank(item: pytest.Item) -> tuple[int, int]:
    path = item.nodeid.split("::", 1)[0]
    first = next((i for i, name in enumerate(LONG_FIRST) if path == name), len(LONG_FIRST))
    layer = next((i for i, name in enumerate(LAYER_ORDER) if path.startswith(name)), len(LAYER_ORDER))
    return first, layer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Longest first (with --no-loadscope-reorder xdist hands out work in this order). The sort is stable,
    # so tests keep their file order within a rank, and every worker collects the same order.
    items.sort(key=start_rank)


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


@pytest.fixture
def short_tmp_path() -> Iterator[Path]:
    """A fresh directory with a short path, for Unix sockets below it.

    A socket path must fit in 107 bytes; an xdist worker's tmp_path (/tmp/pytest-of-USER/pytest-N/
    popen-gwN/test_name0/) leaves too little room for the control socket's fallback layout under it.
    """
    path = Path(tempfile.mkdtemp(prefix="vb-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon on the embedded defaults (Whisper, Piper, echo) with a short greeting, shared by a module."""
    process = start_daemon(
        tmp_path_factory.mktemp("daemon"), {"prompts": {"greeting": "Hello, how can I help?"}}
    )
    yield process
    process.terminate()
