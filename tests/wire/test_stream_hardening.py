"""The stream and the wire against a real daemon: μ-law both ways, refused starts that change nothing,
bounded identifiers, half-open and idle connections, slow HTTP clients, and a provider that stops reading.

One daemon serves the module, with every timer short so each case ends in seconds; the waits below are
upper bounds for a loaded machine, never timing assertions."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator

import aiohttp
import numpy as np
import pytest

from tests.support.raw_websocket import OP_CLOSE, OP_PING, OP_TEXT, RawWebSocket
from voicebridge.audio.codecs import b64decode_payload, b64encode_payload, pcm16_to_ulaw, ulaw_to_pcm16
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon

pytestmark = pytest.mark.e2e

Transcribe = Callable[[bytes, int], str]
CAP = 24


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = start_daemon(
        tmp_path_factory.mktemp("stream-hardening"),
        {
            "prompts": {"greeting": "Hello, how can I help?"},
            "limits": {
                # A peer that answers no ping is cut 2 + 1 s after its last message, before the 4 s of
                # inbound silence that would otherwise end its call: the two cuts stay distinguishable.
                "inbound_idle_s": 4.0,
                "start_timeout_s": 2.0,
                "ws_heartbeat_s": 2.0,
                "mark_echo_timeout_s": 3.0,
                "request_head_timeout_s": 2.0,
                "request_body_timeout_s": 2.0,
                "max_connections_per_address": CAP,
                # The client below is on loopback, which is otherwise exempt (a same-host proxy).
                "cap_loopback_per_address": True,
            },
        },
    )
    yield process
    process.terminate()
    # Every refusal above is one counted line, never a traceback.
    assert "Traceback" not in process.log()


async def metrics(daemon: DaemonProcess) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.http}/metrics") as response:
        return await response.text()


async def counter(daemon: DaemonProcess, name: str, **labels: str) -> float:
    """One sample of a counter, summed over the label sets that contain `labels`."""
    total = 0.0
    for line in (await metrics(daemon)).splitlines():
        found = re.fullmatch(rf"{name}\{{(.*)\}} ([0-9.e+-]+)", line)
        if found and all(f'{key}="{value}"' in found.group(1) for key, value in labels.items()):
            total += float(found.group(2))
    return total


async def open_fds(daemon: DaemonProcess) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.http}/health") as response:
        health = await response.json()
    return int(health["process"]["open_fds"])


async def wait_until(check: Callable[[], object], timeout: float, every: float = 0.25) -> bool:
    """Poll an (async) check until it is true or `timeout` passes; returns the last answer."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result or asyncio.get_running_loop().time() > deadline:
            return bool(result)
        await asyncio.sleep(every)


def exotel_start(call_sid: str, stream_sid: str, encoding: str = "audio/x-raw", rate: str = "8000") -> str:
    return json.dumps(
        {
            "event": "start",
            "sequence_number": "1",
            "stream_sid": stream_sid,
            "start": {
                "stream_sid": stream_sid,
                "call_sid": call_sid,
                "account_sid": "ACtest",
                "from": "+919876543210",
                "to": "+918047491899",
                "custom_parameters": {},
                "media_format": {"encoding": encoding, "sample_rate": rate, "bit_rate": "16"},
            },
        }
    )


def exotel_media(stream_sid: str, payload: bytes) -> str:
    return json.dumps(
        {"event": "media", "stream_sid": stream_sid, "media": {"payload": b64encode_payload(payload)}}
    )


def exotel_mark(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "stream_sid": stream_sid, "mark": {"name": name}})


async def greeting_frames(ws: RawWebSocket, stream_sid: str, timeout: float = 60) -> list[dict[str, object]]:
    """Outbound messages up to the greeting's mark, echoing it (a well-behaved provider)."""
    messages: list[dict[str, object]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.recv()
            if frame.opcode == OP_CLOSE:
                return messages
            if frame.opcode != OP_TEXT:
                continue
            message = json.loads(frame.payload)
            messages.append(message)
            if message["event"] == "mark":
                await ws.send_text_drained(exotel_mark(stream_sid, message["mark"]["name"]))
                return messages


# --- 12: Exotel μ-law -----------------------------------------------------------------------------------


async def test_a_mulaw_exotel_stream_is_mulaw_both_ways(
    wire: DaemonProcess, speak: Callable[[str, int], bytes], transcribe: Transcribe
) -> None:
    ws = await RawWebSocket.connect(wire.port, "/ws/stream/CA-ulaw")
    try:
        ws.send_text(exotel_start("CA-ulaw", "MZulaw", encoding="audio/x-mulaw"))
        greeting = mulaw_audio(await greeting_frames(ws, "MZulaw"))
        assert len(greeting) > 8000  # a second of 8 kHz audio at least
        # PCM16 misread as μ-law is loud broadband noise; the greeting read correctly is speech.
        assert "help" in transcribe(ulaw_to_pcm16(greeting), 8000).lower()
        # The caller's turn goes in as μ-law too; the echo backend's answer comes back in μ-law.
        speech = speak("Please book a table for two.", 8000) + bytes(2 * 8000 * 2)
        for offset in range(0, len(speech), 3200):
            ws.send_text(exotel_media("MZulaw", pcm16_to_ulaw(speech[offset : offset + 3200])))
            await ws.writer.drain()
            await asyncio.sleep(0.2)
        reply = mulaw_audio(await greeting_frames(ws, "MZulaw"))
        assert "table" in transcribe(ulaw_to_pcm16(reply), 8000).lower()
        ws.send_text(json.dumps({"event": "stop", "stream_sid": "MZulaw", "stop": {"reason": "callended"}}))
    finally:
        ws.close()


def mulaw_audio(messages: list[dict[str, object]]) -> bytes:
    return b"".join(
        b64decode_payload(str(m["media"]["payload"]))  # type: ignore[index]
        for m in messages
        if m["event"] == "media"
    )


async def test_the_url_sample_rate_wins_over_start_and_a_mismatch_is_logged(wire: DaemonProcess) -> None:
    ws = await RawWebSocket.connect(wire.port, "/ws/stream/CA-rate?sample-rate=16000")
    try:
        ws.send_text(exotel_start("CA-rate", "MZrate", rate="8000"))
        frames = await greeting_frames(ws, "MZrate")
        media = [b64decode_payload(str(m["media"]["payload"])) for m in frames if m["event"] == "media"]
        # The daemon chunks outbound audio in 200 ms pieces: 6,400 bytes at 16 kHz, 3,200 at 8 kHz.
        assert media and len(media[0]) == 6400
    finally:
        ws.close()
    assert await wait_until(lambda: "sample-rate=16000" in wire.log() and "says 8000" in wire.log(), 10)
    lines = [line for line in wire.log().splitlines() if "CA-rate" in line and "says 8000" in line]
    assert len(lines) == 1, lines


# --- 20 and 21: refused starts change nothing; identifiers are bounded ------------------------------------


async def test_a_refused_second_start_does_not_change_the_stream(wire: DaemonProcess) -> None:
    before = await counter(wire, "voicebridge_protocol_rejections_total", kind="duplicate_start")
    ws = await RawWebSocket.connect(wire.port, "/ws/stream/CA-dup")
    try:
        ws.send_text(exotel_start("CA-dup", "MZfirst"))
        ws.send_text(exotel_start("CA-dup", "MZsecond", encoding="audio/x-mulaw"))
        frames = await greeting_frames(ws, "MZfirst")
    finally:
        ws.close()
    assert await counter(wire, "voicebridge_protocol_rejections_total", kind="duplicate_start") == before + 1
    media = [m for m in frames if m["event"] == "media"]
    assert media and {m["stream_sid"] for m in frames} == {"MZfirst"}
    payloads = [b64decode_payload(str(m["media"]["payload"])) for m in media]  # type: ignore[index]
    assert {len(payload) for payload in payloads} == {3200}
    # Still PCM16: the greeting's last chunk is padded with PCM16 zeros (μ-law would pad with 0xFF).
    assert payloads[-1].endswith(b"\x00\x00\x00\x00")


async def test_a_huge_stream_sid_is_refused_and_never_echoed(wire: DaemonProcess) -> None:
    before = await counter(wire, "voicebridge_protocol_rejections_total", kind="field_too_long")
    ws = await RawWebSocket.connect(wire.port, "/ws/stream/CA-bigsid")
    try:
        ws.send_text(exotel_start("CA-bigsid", "M" * 300_000))
        async with asyncio.timeout(60):
            frames = await ws.recv_until_closed()
    finally:
        ws.close()
    assert all(len(frame.payload) < 10_000 for frame in frames)
    assert not [frame for frame in frames if frame.opcode == OP_TEXT]
    assert await counter(wire, "voicebridge_protocol_rejections_total", kind="field_too_long") == before + 1


@pytest.mark.parametrize("path_sid", ["C" * 5000, "CA%0Aforged", "CA%2F..%2Fadmin"])
async def test_a_stream_url_with_an_unusable_call_sid_is_refused(wire: DaemonProcess, path_sid: str) -> None:
    before = await sid_refusals(wire)
    with pytest.raises(ConnectionError, match="400"):
        await RawWebSocket.connect(wire.port, f"/ws/stream/{path_sid}")
    assert await sid_refusals(wire) == before + 1


async def sid_refusals(wire: DaemonProcess) -> float:
    """Refusals of a bad path sid, by the stream endpoint or (where it checks first) the HTTP door."""
    return await counter(wire, "voicebridge_calls_rejected_total", reason="bad_call_sid") + await counter(
        wire, "voicebridge_http_rejections_total", reason="bad_call_sid"
    )


# --- 13: a silent or half-open stream ------------------------------------------------------------------


async def test_a_stream_that_goes_silent_is_ended_as_dropped(wire: DaemonProcess) -> None:
    dropped = await counter(wire, "voicebridge_calls_total", outcome="dropped")
    async with aiohttp.ClientSession() as session:
        # aiohttp answers pings: the connection is alive, only the provider's media stopped.
        async with session.ws_connect(f"{wire.ws}/ws/stream/CA-silent") as ws:
            await ws.send_str(exotel_start("CA-silent", "MZsilent"))
            async with asyncio.timeout(60):
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.TEXT and '"mark"' in message.data:
                        name = json.loads(message.data)["mark"]["name"]
                        await ws.send_str(exotel_mark("MZsilent", name))
            assert ws.closed
    assert await wait_until(lambda: _dropped_more(wire, dropped), 10), (
        "the silent call was not recorded as dropped"
    )
    assert await counter(wire, "voicebridge_errors_total", kind="inbound_idle") >= 1


async def _dropped_more(wire: DaemonProcess, before: float) -> bool:
    return await counter(wire, "voicebridge_calls_total", outcome="dropped") > before


async def test_the_daemon_pings_and_cuts_a_peer_that_never_answers(wire: DaemonProcess) -> None:
    ws = await RawWebSocket.connect(wire.port, "/ws/stream/CA-noping")
    try:
        ws.send_text(exotel_start("CA-noping", "MZnoping"))
        async with asyncio.timeout(60):
            frames = await ws.recv_until_closed()
    finally:
        ws.close()
    assert any(frame.opcode == OP_PING for frame in frames)
    # The missing pong made the cut: aiohttp drops the connection without a close frame (1006), where
    # the inbound-silence rule would have closed it with 1001.
    assert not [frame for frame in frames if frame.opcode == OP_CLOSE]
    assert await wait_until(lambda: "close 1006" in _lines_of(wire, "CA-noping"), 10), _lines_of(
        wire, "CA-noping"
    )


def _lines_of(wire: DaemonProcess, call_sid: str) -> str:
    return "\n".join(line for line in wire.log().splitlines() if call_sid in line)


def test_with_the_defaults_the_heartbeat_cuts_before_inbound_silence_does() -> None:
    """#14 review 8: a ping every ws_heartbeat_s, and a pong due within half of it, must be able to cut a
    dead peer before inbound_idle_s does, or the heartbeat never fires."""
    from voicebridge.config.schema import LimitsConfig

    limits = LimitsConfig()
    assert 0 < limits.ws_heartbeat_s * 1.5 < limits.inbound_idle_s


# --- 23: idle connections ------------------------------------------------------------------------------


async def test_a_websocket_that_never_starts_is_closed(wire: DaemonProcess) -> None:
    before = await counter(wire, "voicebridge_calls_rejected_total", reason="no_start")
    ws = await RawWebSocket.connect(wire.port, "/ws/stream/CA-nostart")
    try:
        ws.send_text(json.dumps({"event": "connected"}))
        async with asyncio.timeout(60):
            frames = await ws.recv_until_closed()
    finally:
        ws.close()
    assert frames and frames[-1].opcode == OP_CLOSE
    assert await counter(wire, "voicebridge_calls_rejected_total", reason="no_start") == before + 1


async def test_a_websocket_key_that_is_not_base64_is_a_counted_400(wire: DaemonProcess) -> None:
    # aiohttp base64-decodes Sec-WebSocket-Key in ws.prepare(): a non-ASCII key raised UnicodeEncodeError
    # there, an unauthenticated 500 with aiohttp's full traceback in the log (issue 14, item 19's class).
    before = await counter(
        wire, "voicebridge_http_rejections_total", surface="stream", reason="bad_websocket_key"
    )
    for key in (b"\xff", b"not base64 at all", b"AAAA"):
        reader, writer = await asyncio.open_connection("127.0.0.1", wire.port)
        writer.write(
            b"GET /ws/stream/CA-badkey HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        async with asyncio.timeout(10):
            status = await reader.readline()
        writer.close()
        assert status.startswith(b"HTTP/1.1 400"), (key, status)
    after = await counter(
        wire, "voicebridge_http_rejections_total", surface="stream", reason="bad_websocket_key"
    )
    assert after == before + 3
    assert "Traceback" not in wire.log()


async def _trickle(port: int, request: bytes, pause: float, at_once: bytes = b"") -> bytes:
    """Send `at_once`, then `request` a byte at a time until the server answers or closes; return what it
    answered. Reading as we go: a reset caused by writing after its close would discard the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = bytearray()

    async def read_all() -> None:
        try:
            while chunk := await reader.read(4096):
                answer.extend(chunk)
        except ConnectionError:
            pass

    reading = asyncio.create_task(read_all())
    try:
        writer.write(at_once)
        for byte in request:
            if answer or reading.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(pause)
    except ConnectionError:
        pass
    try:
        await reading
        return bytes(answer)
    finally:
        writer.transport.abort()


async def test_slow_request_heads_and_bodies_are_cut_and_fds_come_back(wire: DaemonProcess) -> None:
    baseline = await open_fds(wire)
    head = b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 400 + b"\r\n\r\n"
    body = b"CallSid=CAslow&From=%2B15550001111&To=%2B15550002222" * 20
    post = (
        b"POST /webhooks/twilio/incoming HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    async with asyncio.timeout(120):
        answers = await asyncio.gather(
            *[_trickle(wire.port, head, 0.2) for _ in range(10)],
            *[_trickle(wire.port, body, 0.2, at_once=post) for _ in range(4)],
        )
    for answer in answers[:10]:
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:80]
    for answer in answers[10:]:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert await counter(wire, "voicebridge_connections_refused_total", reason="slow_request_head") >= 10
    assert await counter(wire, "voicebridge_connections_refused_total", reason="slow_request_body") >= 4
    assert await wait_until(lambda: _fds_at_most(wire, baseline + 4), 20)
    # A body that arrives in time still reaches the handler whole (the deadline only waited for it).
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{wire.http}/webhooks/twilio/incoming", data={"CallSid": "CAfast", "From": "+1555"}
        ) as answer,
    ):
        assert answer.status == 200 and "<Stream" in await answer.text()
    async with SimulatedCaller(f"{wire.ws}/ws/stream/CA-after-slow", call_sid="CA-after-slow") as caller:
        assert await caller.listen_until_mark(timeout=60) is not None


async def _fds_at_most(wire: DaemonProcess, limit: int) -> bool:
    return await open_fds(wire) <= limit


async def test_connections_per_address_are_capped(wire: DaemonProcess) -> None:
    before = await counter(wire, "voicebridge_connections_refused_total", reason="per_address")
    held = [await asyncio.open_connection("127.0.0.1", wire.port) for _ in range(CAP + 6)]
    try:
        # The ones over the cap are closed at once, without a byte; the others wait for a request.
        async with asyncio.timeout(30):
            closed = await asyncio.gather(*[reader.read() for reader, _ in held[CAP:]])
        assert closed == [b""] * 6
    finally:
        for _, writer in held:
            writer.transport.abort()
    # Asked only now: while the cap is full, this request's own connection would be refused too.
    refused = await counter(wire, "voicebridge_connections_refused_total", reason="per_address")
    assert refused >= before + 6
    assert len([line for line in wire.log().splitlines() if "connections from 127.0.0.1" in line]) >= 1
    async with SimulatedCaller(f"{wire.ws}/ws/stream/CA-after-cap", call_sid="CA-after-cap") as caller:
        assert await caller.listen_until_mark(timeout=60) is not None


# --- 25: a provider that stops reading ----------------------------------------------------------------


async def test_a_provider_that_stops_reading_is_cut_and_the_call_dropped(wire: DaemonProcess) -> None:
    cut = await counter(wire, "voicebridge_errors_total", kind="unacknowledged_audio")
    dropped = await counter(wire, "voicebridge_calls_total", outcome="dropped")
    # Never recv(): the greeting lands in kernel buffers (far more than its size), and its mark is never
    # echoed. The client keeps sending caller audio, so only the missing echo can tell.
    ws = await RawWebSocket.connect(wire.port, "/ws/stream/CA-deaf")
    silence = np.zeros(1600, dtype="<i2").tobytes()
    try:
        ws.send_text(exotel_start("CA-deaf", "MZdeaf"))
        async with asyncio.timeout(90):
            while await counter(wire, "voicebridge_errors_total", kind="unacknowledged_audio") == cut:
                for _ in range(5):
                    ws.send_text(exotel_media("MZdeaf", silence))
                    try:
                        await ws.writer.drain()
                    except ConnectionError:
                        break
                    await asyncio.sleep(0.1)
    finally:
        ws.close()
    assert await wait_until(lambda: _dropped_more(wire, dropped), 10)


def test_a_mark_is_due_its_grace_after_its_audio_has_played() -> None:
    from voicebridge.call.playback_acks import PlaybackAcks
    from voicebridge.telephony.exotel import ExotelTranslator

    now = [100.0]
    acks = PlaybackAcks(ExotelTranslator(), grace_s=5.0, clock=lambda: now[0])
    for _ in range(10):  # 2 s of 8 kHz audio, built at once: it plays until 102.0
        acks.media(bytes(3200))
    acks.mark("reply-1")
    now[0] = 106.9
    assert acks.overdue_s() == 0.0
    now[0] = 107.5
    assert acks.overdue_s() == pytest.approx(0.5)
    acks.echoed("someone-elses-mark")
    assert acks.overdue_s() > 0
    acks.echoed("reply-1")
    assert acks.overdue_s() == 0.0
    # A clear drops the queued audio, and the provider may drop the marks after it unechoed.
    acks.media(bytes(3200))
    acks.mark("reply-2")
    acks.clear()
    now[0] = 200.0
    assert acks.overdue_s() == 0.0


class _ClosingSocket:
    """Just enough of a WebSocket for a start that is refused: it records the close."""

    closed = False
    close_code: int | None = None

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        self.closed, self.close_code = True, code


async def test_a_start_refused_for_another_calls_token_leaves_that_call_alone() -> None:
    from voicebridge.admission.gate import CallGate, PendingCall
    from voicebridge.admission.registry import CallRegistry
    from voicebridge.call.session import StreamSession
    from voicebridge.config.schema import Settings
    from voicebridge.server.metrics import Metrics

    class Services:  # what a start refused at the token check touches
        settings = Settings()
        metrics = Metrics()
        registry = CallRegistry(4)
        gate = CallGate(settings, metrics)

    services = Services()
    await services.gate.register_pending(PendingCall("CAother", "+15550001111", "+15550002222"))
    await services.gate.allow_minutes("CAother", 3.0)
    ws = _ClosingSocket()
    session = StreamSession(services, ws, "CAmine", None, token_bound=True)  # type: ignore[arg-type]
    await session._on_text(exotel_start("CAother", "MZother"))
    assert ws.close_code == 1008
    pending = await services.gate.take_pending("CAother")  # still there for CAother's own stream
    assert pending is not None and pending.minutes_left == 3.0


async def test_a_start_completed_from_the_webhook_keeps_its_encoding_and_rate_note() -> None:
    """#14 review 4: the webhook's numbers fill in the start; its μ-law encoding must survive that."""
    from voicebridge.admission.gate import CallGate, PendingCall
    from voicebridge.admission.registry import CallRegistry
    from voicebridge.call.session import StreamSession
    from voicebridge.config.schema import Settings
    from voicebridge.server.metrics import Metrics
    from voicebridge.telephony.events import Start

    class Services:
        settings = Settings()
        metrics = Metrics()
        registry = CallRegistry(4)
        gate = CallGate(settings, metrics)

    services = Services()
    await services.gate.register_pending(PendingCall("CAweb", "+15550001111", "+15550002222"))
    session = StreamSession(services, _ClosingSocket(), "CAweb", 16000)  # type: ignore[arg-type]
    start = Start(provider="exotel", stream_sid="MZweb", call_sid="CAweb", encoding="mulaw", rate_note="n")
    completed = await session._complete_start(start)
    assert completed.from_number == "+15550001111"
    assert (completed.encoding, completed.rate_note) == ("mulaw", "n")


def test_a_per_call_whisper_model_is_closable_by_its_declared_protocol() -> None:
    """#14 review 10: the stream releases a call's own model through speech.base.Closable, not a probe."""
    from voicebridge.speech.base import Closable
    from voicebridge.speech.stt import WhisperSTT

    assert issubclass(WhisperSTT, Closable)


# --- #14 review 2: the body deadline covers receiving the body, never the handler's own work -------------


async def _deadline_app_answers(body: object, handler_seconds: float) -> tuple[int, str, float]:
    """POST `body` to an in-process app behind body_deadline (0.5 s) whose handler, once it has the body,
    works `handler_seconds` and then raises TimeoutError of its own (a backend, a database) or answers."""
    from aiohttp.test_utils import TestClient, TestServer

    from voicebridge.config.schema import Settings
    from voicebridge.server.body_deadline import body_deadline
    from voicebridge.server.keys import METRICS, SETTINGS
    from voicebridge.server.metrics import Metrics

    async def slow_work(request: aiohttp.web.Request) -> aiohttp.web.Response:
        received = await request.read()
        await asyncio.sleep(handler_seconds)
        if request.query.get("fail"):
            raise TimeoutError("the backend timed out")
        return aiohttp.web.Response(text=f"{len(received)}")

    app = aiohttp.web.Application(middlewares=[body_deadline])
    app[SETTINGS] = Settings(limits={"request_body_timeout_s": 0.5})  # type: ignore[arg-type]
    app[METRICS] = Metrics()
    app.router.add_post("/work", slow_work)
    async with TestClient(TestServer(app)) as client:
        async with client.post("/work", data=body) as answer:
            status, text = answer.status, await answer.text()
        async with client.post("/work?fail=1", data=b"x" * 10) as failed:
            assert failed.status != 408, "a handler's own TimeoutError was reported as a slow body"
    refused = app[METRICS].connections_refused.labels(reason="slow_request_body")._value.get()
    return status, text, refused


async def _chunks(count: int, pause: float = 0.0):  # type: ignore[no-untyped-def]
    for _ in range(count):
        await asyncio.sleep(pause)
        yield b"y" * 1000


@pytest.mark.parametrize("body", ["chunked", "large"])
async def test_a_handler_slower_than_the_body_deadline_is_not_cut(body: str) -> None:
    # Chunked (no length) and over 64 KiB: the two kinds the old middleware ran whole inside its deadline.
    data = _chunks(5) if body == "chunked" else b"z" * 200_000
    status, text, refused = await _deadline_app_answers(data, handler_seconds=1.0)
    assert (status, text, refused) == (200, "5000" if body == "chunked" else "200000", 0)


async def test_a_chunked_body_that_trickles_is_still_cut() -> None:
    status, _, refused = await _deadline_app_answers(_chunks(20, pause=0.1), handler_seconds=0)
    assert (status, refused) == (408, 1)


# --- #14 review 3: a same-host proxy is not one crowded address; a global ceiling holds the fds --------


def _limits(**overrides: object):  # type: ignore[no-untyped-def]
    from voicebridge.config.schema import Settings
    from voicebridge.server.connection_guard import ConnectionLimits
    from voicebridge.server.metrics import Metrics

    server = {"trusted_proxies": overrides.pop("trusted_proxies", [])}
    settings = Settings(server=server, limits={"max_connections_per_address": 2, **overrides})  # type: ignore[arg-type]
    return ConnectionLimits(settings, Metrics())


def _refused(limits, reason: str) -> float:  # type: ignore[no-untyped-def]
    return limits.metrics.connections_refused.labels(reason=reason)._value.get()


@pytest.mark.parametrize("loopback", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_loopback_peers_are_not_capped_per_address(loopback: str) -> None:
    limits = _limits()
    assert all(limits.admit(loopback) for _ in range(10))  # a local TLS proxy carries every call
    assert [limits.admit("203.0.113.9") for _ in range(3)] == [True, True, False]


def test_an_ipv4_mapped_peer_matches_trusted_proxies_and_shares_its_ipv4_bucket() -> None:
    limits = _limits(trusted_proxies=["10.0.0.0/8"])
    assert all(limits.admit("::ffff:10.1.2.3") for _ in range(10))
    assert [limits.admit(a) for a in ("198.51.100.7", "::ffff:198.51.100.7", "198.51.100.7")] == [
        True,
        True,
        False,
    ]


def test_a_global_ceiling_refuses_many_addresses_counted() -> None:
    limits = _limits(max_connections=3)
    assert [limits.admit(f"198.51.100.{i}") for i in range(4)] == [True, True, True, False]
    assert not limits.admit("127.0.0.1")  # exempt from the per-address cap, not from the ceiling
    assert _refused(limits, "global") == 2
    limits.release("198.51.100.0")
    assert limits.admit("198.51.100.200")


def test_the_global_ceiling_defaults_from_max_concurrent_calls() -> None:
    limits = _limits()
    assert limits.total == 4 * 30 + 256


# --- #14 review 9: GuardedTCPSite lives on aiohttp's private BaseSite slots; this fails loudly if they move


async def test_the_guarded_site_serves_counts_and_stops_on_this_aiohttp() -> None:
    from aiohttp import web

    from voicebridge.config.schema import Settings
    from voicebridge.server.connection_guard import ConnectionLimits, GuardedTCPSite
    from voicebridge.server.metrics import Metrics

    # What GuardedTCPSite.start writes and BaseSite.stop reads; pyproject pins aiohttp < 4.
    assert {"_runner", "_backlog", "_server"} <= set(web.BaseSite.__slots__)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    limits = ConnectionLimits(Settings(), Metrics())
    site = GuardedTCPSite(runner, "127.0.0.1", 0, limits)
    await site.start()
    try:
        assert site in runner.sites
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and limits.open_connections == 1  # through the guard
        writer.close()
        assert await wait_until(lambda: limits.open_connections == 0, 10)
    finally:
        await runner.cleanup()
    # aiohttp's own stop closed the server we created: the port no longer accepts.
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


# --- #14 review 6: the mark rule cuts a provider that stopped reading, never a healthy call -------------


async def test_healthy_long_replies_barge_ins_and_silent_replies_are_never_cut(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A whole stream in-process (StreamSession, the Exotel translator, the mark watch) against a provider
    that plays at real time: it echoes a mark when the audio before it has played, drops queued audio and
    its marks on `clear`, and never echoes a mark that follows no audio. With a 0.3 s grace, a long reply,
    a barge-in and a reply without audio must all leave the stream alone."""
    from dataclasses import dataclass, field

    from tests.engine.fakes import FakeBackend, FakeSocket, FakeSTT, FakeTTS
    from tests.engine.harness import build_services, engine_settings, quiet, voice
    from voicebridge.call.session import StreamSession
    from voicebridge.sim.providers import ExotelCaller

    @dataclass
    class PlayingProvider(FakeSocket):
        caller: ExotelCaller = field(default_factory=lambda: ExotelCaller("CA-play", "SS-play"))
        play_until: float = 0.0
        audio_since_mark: bool = False
        pending: list[asyncio.TimerHandle] = field(default_factory=list)
        echoed: list[str] = field(default_factory=list)
        clears: int = 0
        progress: asyncio.Event = field(default_factory=asyncio.Event)  # set on every message either way

        async def send_str(self, text: str) -> None:
            await super().send_str(text)
            self.progress.set()
            loop = asyncio.get_running_loop()
            message = json.loads(text)
            if message["event"] == "media":
                seconds = len(b64decode_payload(message["media"]["payload"])) / 2 / 8000
                self.play_until = max(self.play_until, loop.time()) + seconds
                self.audio_since_mark = True
            elif message["event"] == "mark" and self.audio_since_mark:
                self.audio_since_mark = False
                self.pending.append(loop.call_at(self.play_until, self._echo, message["mark"]["name"]))
            elif message["event"] == "clear":
                self.clears += 1
                for echo in self.pending:
                    echo.cancel()
                self.pending.clear()
                self.play_until, self.audio_since_mark = loop.time(), False

        def _echo(self, name: str) -> None:
            self.echoed.append(name)
            self.incoming.put_nowait(self.caller.mark(name))

    long_reply = " ".join(f"This is sentence number {n} of a long and patient answer." for n in range(14))
    backend = FakeBackend()
    backend.answer(long_reply)  # several seconds, heard to the end
    backend.answer(long_reply)  # talked over
    backend.answer(" ")  # no audio at all, only its mark
    backend.answer("Sure.")
    settings = engine_settings(tmp_path, limits={"mark_echo_timeout_s": 0.3})
    services = await build_services(settings, FakeSTT(), FakeTTS(), backend, tmp_path / "o.db")
    provider = PlayingProvider()
    cut: list[str] = []
    session = StreamSession(services, provider, "CA-play", 8000, abort=lambda: cut.append("cut"))  # type: ignore[arg-type]
    speech = bytearray()

    async def caller_line() -> None:  # a provider sends media all through the call
        while not provider.closed:
            chunk = bytes(speech[:320]) or quiet(0.02)
            del speech[:320]
            provider.incoming.put_nowait(provider.caller.media(chunk))
            provider.progress.set()
            await asyncio.sleep(0.02)

    provider.incoming.put_nowait(provider.caller.start())
    running = asyncio.create_task(session.run())
    line = asyncio.create_task(caller_line())

    progress = provider.progress

    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(60):
            while not condition() and not cut and not running.done():
                progress.clear()
                await progress.wait()

    def listening() -> bool:
        return (
            session._call is not None and session._call.state == "listening" and session._call._reply is None
        )

    try:
        await until(lambda: len(provider.echoed) == 1)  # the greeting
        speech += voice(0.4) + quiet(0.4)
        await until(lambda: len(provider.echoed) == 2)  # the long reply, played to its end
        speech += voice(0.4) + quiet(0.4)
        await until(lambda: len(backend.requests) == 2 and not listening())
        await asyncio.sleep(1.0)  # well into the second long reply
        speech += voice(0.5) + quiet(0.4)  # the caller talks over it: clear, its marks dropped
        await until(lambda: len(backend.requests) == 3 and listening())  # a reply without audio
        speech += voice(0.4) + quiet(0.4)
        await until(lambda: len(backend.requests) == 4 and len(provider.echoed) == 3)  # "Sure."
        await asyncio.sleep(1.0)  # past the grace of every mark sent
        assert provider.clears >= 1
        assert not cut and not running.done() and session._call is not None and not session._call.ended
        errors = services.metrics.registry.get_sample_value
        assert not errors("voicebridge_errors_total", {"kind": "unacknowledged_audio"})
    finally:
        provider.incoming.put_nowait(provider.caller.stop())
        async with asyncio.timeout(30):
            await running
        line.cancel()
        await services.outbox.close()


def test_a_mark_with_no_audio_before_it_is_not_waited_for() -> None:
    from voicebridge.call.playback_acks import PlaybackAcks
    from voicebridge.telephony.exotel import ExotelTranslator

    now = [100.0]
    acks = PlaybackAcks(ExotelTranslator(), grace_s=5.0, clock=lambda: now[0])
    acks.mark("empty-reply")  # nothing was played before it
    acks.media(bytes(3200))
    acks.clear()
    acks.mark("after-clear")  # the audio before it was dropped
    now[0] = 1000.0
    assert acks.overdue_s() == 0.0


def test_with_the_rule_off_no_mark_is_kept_for_a_provider_that_never_echoes() -> None:
    # Final review: with mark_echo_timeout_s = 0 every mark stayed tracked until an echo or a clear, so a
    # provider that never echoes grew the table for the whole call.
    from voicebridge.call.playback_acks import PlaybackAcks
    from voicebridge.telephony.exotel import ExotelTranslator

    now = [100.0]
    acks = PlaybackAcks(ExotelTranslator(), grace_s=0.0, clock=lambda: now[0])
    for n in range(50):
        acks.media(bytes(3200))
        acks.mark(f"reply-{n}")
    now[0] = 1000.0
    assert acks.overdue_s() == 0.0


async def test_the_mark_watch_is_a_timer_that_fires_once_for_an_overdue_mark() -> None:
    from voicebridge.call.playback_acks import PlaybackAcks
    from voicebridge.telephony.exotel import ExotelTranslator

    fired: list[str] = []
    overdue = asyncio.Event()

    def on_overdue() -> None:
        fired.append("overdue")
        overdue.set()

    acks = PlaybackAcks(ExotelTranslator(), grace_s=0.05)
    acks.watch(on_overdue)
    acks.media(bytes(320))  # 20 ms
    acks.mark("echoed")
    acks.echoed("echoed")
    acks.media(bytes(320))
    acks.mark("never-echoed")
    async with asyncio.timeout(10):
        await overdue.wait()
    acks.media(bytes(320))
    acks.mark("another")
    await asyncio.sleep(0.2)
    assert fired == ["overdue"]  # once: the stream is being cut
    acks.stop_watching()


async def test_an_over_size_body_is_a_counted_413_as_before() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from voicebridge.config.schema import Settings
    from voicebridge.server.body_deadline import body_deadline
    from voicebridge.server.keys import METRICS, SETTINGS
    from voicebridge.server.metrics import Metrics

    async def never(request: aiohttp.web.Request) -> aiohttp.web.Response:
        raise AssertionError("an over-size body reached the handler")

    app = aiohttp.web.Application(middlewares=[body_deadline], client_max_size=1000)
    app[SETTINGS], app[METRICS] = Settings(), Metrics()
    app.router.add_post("/webhooks/twilio/incoming", never)
    async with TestClient(TestServer(app)) as client:
        async with client.post("/webhooks/twilio/incoming", data=_chunks(3)) as answer:
            assert answer.status == 413
    counted = app[METRICS].http_rejections.labels(surface="twilio", reason="body_too_large")._value.get()
    assert counted == 1
