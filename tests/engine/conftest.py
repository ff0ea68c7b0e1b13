"""Fixtures for the in-process call engine tests: fakes, services and a live call, torn down after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.engine.fakes import FakeBackend, FakeSTT, FakeTTS
from tests.engine.harness import Engine, build_services, engine_settings, open_call
from voicebridge.call.services import CallServices

OpenEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture
def stt() -> FakeSTT:
    return FakeSTT()


@pytest.fixture
def tts() -> FakeTTS:
    return FakeTTS()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def open_engine(
    tmp_path: Path, stt: FakeSTT, tts: FakeTTS, backend: FakeBackend
) -> AsyncIterator[OpenEngine]:
    """Opens calls on services built around the fixtures' fakes; every call is finished at the end."""
    opened: list[Engine] = []
    services: list[CallServices] = []

    async def open_one(settings: dict[str, dict[str, Any]] | None = None, **options: Any) -> Engine:
        outbox_path = tmp_path / f"outbox-{len(services)}.sqlite3"
        built = await build_services(
            engine_settings(tmp_path, **(settings or {})), stt, tts, backend, outbox_path
        )
        services.append(built)
        engine = await open_call(built, stt, tts, backend, **options)
        opened.append(engine)
        return engine

    yield open_one
    for engine in opened:
        await engine.call.finish("completed")
    for built in services:
        await built.outbox.close()


@pytest.fixture
async def engine(open_engine: OpenEngine) -> Engine:
    """A call past its greeting, listening."""
    opened = await open_engine()
    await opened.listening()
    return opened
