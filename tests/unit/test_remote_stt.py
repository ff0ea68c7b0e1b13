"""Remote speech recognition (issue 19, item 3): the Wyoming and OpenAI-compatible clients against fakes
that speak each wire format, the scheduler semantics they share with local Whisper, hostile answers, and
the fallback to the local model."""

from __future__ import annotations

import asyncio
import logging

import pytest
from wyoming.event import Event, async_write_event

from tests.fakes.transcription_server import FakeTranscriptions, FakeWyoming
from voicebridge.config.schema import Settings, SttConfig
from voicebridge.speech.base import SpeechEngineError, Transcript
from voicebridge.speech.factory import build_stt
from voicebridge.speech.models import ModelCache
from voicebridge.speech.openai_stt import OpenAiSTT
from voicebridge.speech.remote_stt import RemoteSTT, whisper_language
from voicebridge.speech.scheduler import always_confirmed
from voicebridge.speech.stt_fallback import FallbackSTT
from voicebridge.speech.wyoming_stt import WyomingSTT

RATE = 16_000
AUDIO = bytes(range(256)) * 25  # 0.2 s of 16 kHz PCM16, not all zeros


def openai_config(url: str, **extra: object) -> SttConfig:
    return SttConfig.model_validate({"engine": "openai", "url": url, "api_key": "sk-stt-fake", **extra})


def wyoming_config(url: str, **extra: object) -> SttConfig:
    return SttConfig.model_validate({"engine": "wyoming", "url": url, **extra})


# --- the OpenAI-compatible client ------------------------------------------------------------------


async def test_openai_sends_the_documented_form_and_reads_the_text() -> None:
    async with FakeTranscriptions(text="  What time   do you open? ") as server:
        engine = OpenAiSTT(openai_config(server.url, model="Systran/faster-whisper-small"))
        try:
            heard = await engine.transcribe(AUDIO, RATE, language="en-IN")
        finally:
            await engine.aclose()
    assert heard.text == "What time do you open?" and heard.engine == "openai"
    assert heard.audio_seconds == pytest.approx(len(AUDIO) / 2 / RATE)
    (request,) = server.heard
    assert request.audio == AUDIO and request.rate == RATE  # a WAV of the turn, at its own rate
    assert request.fields == {
        "model": "Systran/faster-whisper-small",
        "response_format": "json",
        "temperature": "0",
        "language": "en",  # BCP-47 cut to Whisper's code
    }


async def test_openai_auto_language_sends_none() -> None:
    async with FakeTranscriptions() as server:
        engine = OpenAiSTT(openai_config(server.url, language="auto"))
        try:
            await engine.transcribe(AUDIO, RATE)
        finally:
            await engine.aclose()
    assert "language" not in server.heard[0].fields


async def test_a_401_is_an_engine_error_that_never_quotes_the_key() -> None:
    async with FakeTranscriptions(api_key="sk-the-right-one") as server:
        engine = OpenAiSTT(openai_config(server.url))
        try:
            with pytest.raises(SpeechEngineError) as caught:
                await engine.transcribe(AUDIO, RATE)
        finally:
            await engine.aclose()
    assert str(caught.value) == "openai STT answered HTTP 401"
    assert "sk-stt" not in str(caught.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>bad gateway</html>", "not JSON"),
        (b'{"transcript": "hello"}', 'without a "text" string'),
        (b'{"text": ["a", "list"]}', 'without a "text" string'),
        (b'["text"]', 'without a "text" string'),
        (b'{"text": "' + b"a" * 70_000 + b'"}', "more than 65536 bytes"),
        (b"[" * 50_000, "not JSON"),  # nested past the parser's recursion limit
    ],
)
async def test_a_broken_answer_is_an_engine_error(body: bytes, message: str) -> None:
    async with FakeTranscriptions(raw_body=body) as server:
        engine = OpenAiSTT(openai_config(server.url))
        try:
            with pytest.raises(SpeechEngineError, match=message):
                await engine.transcribe(AUDIO, RATE)
        finally:
            await engine.aclose()


async def test_control_characters_from_the_server_never_reach_the_call() -> None:
    async with FakeTranscriptions(text="hello\x1b[2J\x00 there\u202e\r\nCALL ENDED") as server:
        engine = OpenAiSTT(openai_config(server.url))
        try:
            heard = await engine.transcribe(AUDIO, RATE)
        finally:
            await engine.aclose()
    assert heard.text == "hello [2J there CALL ENDED"


async def test_a_server_slower_than_the_timeout_is_an_engine_error() -> None:
    async with FakeTranscriptions(delay_s=2.0) as server:
        engine = OpenAiSTT(openai_config(server.url, remote_timeout_s=0.2))
        try:
            with pytest.raises(SpeechEngineError, match=r"^openai STT: no transcript within 0\.2s$"):
                await engine.transcribe(AUDIO, RATE)
        finally:
            await engine.aclose()


async def test_a_refused_connection_is_an_engine_error() -> None:
    async with FakeTranscriptions() as server:
        url = server.url
    engine = OpenAiSTT(openai_config(url))
    try:
        with pytest.raises(SpeechEngineError, match="connection refused"):
            await engine.transcribe(AUDIO, RATE)
    finally:
        await engine.aclose()


# --- scheduling, shared by both remote engines -----------------------------------------------------


async def test_at_most_remote_concurrency_utterances_are_at_the_server() -> None:
    async with FakeTranscriptions(delay_s=0.1) as server:
        engine = OpenAiSTT(openai_config(server.url, remote_concurrency=2))
        try:
            await asyncio.gather(*(engine.transcribe(AUDIO, RATE) for _ in range(6)))
        finally:
            await engine.aclose()
    assert len(server.heard) == 6 and server.most_in_flight == 2


async def test_confirmed_turns_go_before_speculative_guesses_and_cancelled_ones_are_never_sent() -> None:
    async with FakeWyoming(delay_s=0.15) as server:
        engine = WyomingSTT(wyoming_config(server.url, remote_concurrency=1))

        def audio(marker: int) -> bytes:
            return bytes([marker]) * 3200

        first = asyncio.create_task(engine.transcribe(audio(1), RATE))
        await asyncio.sleep(0.05)  # the first is at the server; the rest queue
        guess = asyncio.create_task(engine.transcribe(audio(2), RATE, confirmed=lambda: False))
        cancelled = asyncio.create_task(engine.transcribe(audio(3), RATE, confirmed=lambda: False))
        confirmed = asyncio.create_task(engine.transcribe(audio(4), RATE, confirmed=always_confirmed))
        await asyncio.sleep(0.01)
        assert engine.queue_depth == 3
        cancelled.cancel()
        await asyncio.gather(first, guess, confirmed)
        assert cancelled.cancelled()
    assert [request.audio[0] for request in server.heard] == [1, 4, 2]


# --- the Wyoming client --------------------------------------------------------------------------------


async def test_wyoming_sends_the_turn_and_its_language_and_reads_the_transcript() -> None:
    async with FakeWyoming(text="I need to change my booking.") as server:
        engine = WyomingSTT(wyoming_config(server.url))
        heard = await engine.transcribe(AUDIO, RATE, language="hi-IN")
    assert heard.text == "I need to change my booking." and heard.engine == "wyoming"
    (request,) = server.heard
    assert request.audio == AUDIO and request.rate == RATE and request.language == "hi"


async def test_wyoming_skips_streaming_events_before_the_transcript() -> None:
    async def streaming(writer: asyncio.StreamWriter) -> None:
        await async_write_event(Event("transcript-start", {}), writer)
        await async_write_event(Event("transcript-chunk", {"text": "I need"}), writer)
        await async_write_event(Event("transcript-stop", {}), writer)
        await async_write_event(Event("transcript", {"text": "I need help", "language": "en"}), writer)

    async with FakeWyoming(answer=streaming) as server:
        heard = await WyomingSTT(wyoming_config(server.url)).transcribe(AUDIO, RATE)
    assert heard.text == "I need help" and heard.language == "en"


async def _garbage(writer: asyncio.StreamWriter) -> None:
    writer.write(b"this is not json\n")
    await writer.drain()


async def _no_text(writer: asyncio.StreamWriter) -> None:
    await async_write_event(Event("transcript", {"words": 3}), writer)


async def _text_not_a_string(writer: asyncio.StreamWriter) -> None:
    await async_write_event(Event("transcript", {"text": {"nested": 1}}), writer)


async def _long_line(writer: asyncio.StreamWriter) -> None:
    writer.write(b"{" + b" " * 200_000 + b"\n")
    await writer.drain()


async def _error_event(writer: asyncio.StreamWriter) -> None:
    await async_write_event(Event("error", {"text": "model \x1b[31mexploded", "code": "boom"}), writer)


async def _hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (_garbage, "not a Wyoming event"),
        (_no_text, "not a Wyoming answer"),
        (_text_not_a_string, "a transcript without text"),
        (_long_line, "not a Wyoming event"),
        (_error_event, "the server reported an error$"),
        (_hang_up, "no transcript"),
    ],
)
async def test_a_broken_wyoming_server_is_an_engine_error(answer: object, message: str) -> None:
    async with FakeWyoming(answer=answer) as server:  # type: ignore[arg-type]
        with pytest.raises(SpeechEngineError, match=message) as caught:
            await WyomingSTT(wyoming_config(server.url)).transcribe(AUDIO, RATE)
    assert "json" not in str(caught.value).lower() and "nested" not in str(caught.value)


async def test_a_wyoming_server_that_is_down_is_an_engine_error() -> None:
    async with FakeWyoming() as server:
        url = server.url
    with pytest.raises(SpeechEngineError, match="connection refused"):
        await WyomingSTT(wyoming_config(url)).transcribe(AUDIO, RATE)


def test_languages_are_cut_to_whispers_codes() -> None:
    assert whisper_language("en-IN", "hi") == "en"
    assert whisper_language("", "ta_IN") == "ta"
    assert whisper_language("auto", "en") is None
    assert whisper_language("", "auto") is None


# --- the fallback -------------------------------------------------------------------------------------


class FakeRemote(RemoteSTT):
    name = "fake-remote"

    def __init__(self, fail: bool) -> None:
        super().__init__(SttConfig())
        self.fail = fail
        self.calls = 0

    async def _request(self, pcm16: bytes, sample_rate: int, language: str | None) -> tuple[str, str]:
        self.calls += 1
        if self.fail:
            raise SpeechEngineError("fake-remote STT at 10.9.9.9:1: connection refused")
        return "from the server", ""


class FakeLocal:
    name = "whisper"

    def __init__(self) -> None:
        self.calls = 0

    async def transcribe(
        self, pcm16: bytes, sample_rate: int, confirmed: object = always_confirmed, language: str = ""
    ) -> Transcript:
        self.calls += 1
        return Transcript("from the local model", len(pcm16) / 2 / sample_rate, 0.01, "whisper")


async def test_a_failed_remote_turn_is_transcribed_locally_then_the_server_rests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    remote, local, reasons = FakeRemote(fail=True), FakeLocal(), []
    engine = FallbackSTT(remote, local, reasons.append, cool_down_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="voicebridge.stt"):
        first = await engine.transcribe(AUDIO, RATE)
        second = await engine.transcribe(AUDIO, RATE)  # cooling down: the server is not asked
        assert first.text == second.text == "from the local model"
        assert (remote.calls, local.calls, reasons) == (1, 2, ["error", "cooling_down"])
        now[0] += 10.0
        third = await engine.transcribe(AUDIO, RATE)  # the probe fails: one more cool-down, not logged again
        assert third.text == "from the local model" and remote.calls == 2
        now[0] += 10.0
        remote.fail = False
        back = await engine.transcribe(AUDIO, RATE)
    assert back.text == "from the server" and reasons == ["error", "cooling_down", "error"]
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "fake-remote STT at 10.9.9.9:1: connection refused; transcribing locally, trying the server "
        "again every 10s",
        "fake-remote STT answering again",
    ]


async def test_cancelling_a_turn_does_not_fall_back() -> None:
    async with FakeWyoming(delay_s=5.0) as server:
        remote, local = WyomingSTT(wyoming_config(server.url)), FakeLocal()
        engine = FallbackSTT(remote, local, lambda _reason: None, cool_down_s=10.0)
        task = asyncio.create_task(engine.transcribe(AUDIO, RATE))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert local.calls == 0


def test_the_config_builds_the_engine_it_names(model_cache: ModelCache) -> None:
    wyoming = Settings.model_validate({"stt": {"engine": "wyoming", "url": "tcp://127.0.0.1:10300"}})
    assert isinstance(build_stt(wyoming, model_cache), FallbackSTT)
    alone = Settings.model_validate(
        {"stt": {"engine": "wyoming", "url": "tcp://127.0.0.1:10300", "fallback": ""}}
    )
    assert isinstance(build_stt(alone, model_cache), WyomingSTT)
    openai = Settings.model_validate({"stt": {"engine": "openai", "url": "https://stt.example.com/v1"}})
    engine = build_stt(openai, model_cache)
    assert isinstance(engine, FallbackSTT) and engine.name == "openai" and engine.workers == 4


@pytest.mark.parametrize(
    ("stt", "message"),
    [
        ({"engine": "wyoming"}, "tcp://host:port"),
        ({"engine": "wyoming", "url": "http://gpu-1:10300"}, "tcp://host:port"),
        ({"engine": "wyoming", "url": "tcp://gpu-1"}, "tcp://host:port"),
        ({"engine": "wyoming", "url": "tcp://gpu-1:99999"}, "tcp://host:port"),
        ({"engine": "openai"}, "http(s) API base"),
        ({"engine": "openai", "url": "ftp://stt.example.com"}, "http(s) API base"),
        ({"engine": "openai", "url": "https://user:pw@stt.example.com/v1"}, "credentials"),
    ],
)
def test_a_remote_engine_needs_a_url_of_its_kind(stt: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.model_validate({"stt": stt})
