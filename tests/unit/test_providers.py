"""Provider translators: pure wire JSON ⇄ event translation, no network."""

from __future__ import annotations

import base64
import json
from types import MappingProxyType

import numpy as np
import pytest

from voicebridge.audio.codecs import pcm16_to_ulaw
from voicebridge.sim.providers import ExotelCaller, TwilioCaller
from voicebridge.telephony.events import (
    Audio,
    Connected,
    Dtmf,
    MarkEcho,
    ProtocolViolation,
    Start,
    Stop,
    UnknownEvent,
)
from voicebridge.telephony.exotel import ExotelTranslator
from voicebridge.telephony.providers import translator_for_start
from voicebridge.telephony.twilio import TwilioTranslator
from voicebridge.telephony.wire import event_name, load_message

# The documented shapes (docs/exotel-stream.md, docs/twilio-stream.md).
EXOTEL_START = {
    "event": "start",
    "sequence_number": "1",
    "stream_sid": "MZ1",
    "start": {
        "stream_sid": "MZ1",
        "call_sid": "CA1",
        "account_sid": "AC1",
        "from": "+919876543210",
        "to": "+918047491899",
        "custom_parameters": {"key1": "value1"},
        "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"},
    },
}
TWILIO_START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": "MZ2",
    "start": {
        "accountSid": "AC2",
        "streamSid": "MZ2",
        "callSid": "CA2",
        "tracks": ["inbound"],
        "customParameters": {"From": "+15550001111"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}
PCM = np.arange(-800, 800, 10, dtype="<i2").tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_detects_the_provider_from_start() -> None:
    assert isinstance(translator_for_start(EXOTEL_START, 8000), ExotelTranslator)
    assert isinstance(translator_for_start(TWILIO_START, 8000), TwilioTranslator)


def test_exotel_start_and_events() -> None:
    translator = ExotelTranslator()
    start = translator.parse(EXOTEL_START)
    assert start == Start(
        "exotel",
        "MZ1",
        "CA1",
        "AC1",
        "+919876543210",
        "+918047491899",
        8000,
        {"key1": "value1"},
        context=MappingProxyType({"key1": "value1"}),
    )
    assert translator.parse({"event": "connected"}) == Connected()
    media = {
        "event": "media",
        "stream_sid": "MZ1",
        "media": {"chunk": "2", "timestamp": "200", "payload": b64(PCM)},
    }
    assert translator.parse(media) == Audio(PCM, 8000)
    assert translator.parse({"event": "dtmf", "dtmf": {"digit": "5", "duration": "100"}}) == Dtmf("5")
    assert translator.parse({"event": "mark", "mark": {"name": "greeting-complete"}}) == MarkEcho(
        "greeting-complete"
    )
    stop = {"event": "stop", "stop": {"call_sid": "CA1", "reason": "callended"}}
    assert translator.parse(stop) == Stop("callended")


@pytest.mark.parametrize(
    ("media_format", "rate"),
    [
        ({"sample_rate": "16000Hz", "bit_rate": "16kbps"}, 16000),
        ({"sample_rate": 24000}, 24000),
        ({"encoding": "linear16"}, 8000),
        ({}, 8000),
    ],
)
def test_exotel_start_is_lenient(media_format: dict[str, object], rate: int) -> None:
    # Seen in the wild: `Event`, `streamSid` in place of `stream_sid`, no top-level sid, units in strings.
    message = {
        "Event": "start",
        "start": {"streamSid": "MZ9", "call_sid": "CA9", "media_format": media_format},
    }
    start = ExotelTranslator().parse(message)  # a URL without sample-rate: the start's rate applies
    assert isinstance(start, Start)
    assert (start.stream_sid, start.call_sid, start.sample_rate) == ("MZ9", "CA9", rate)


def test_exotel_query_rate_is_the_default() -> None:
    start = ExotelTranslator(16000).parse({"event": "start", "start": {"call_sid": "CA3"}})
    assert isinstance(start, Start) and start.sample_rate == 16000


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ({"event": "media", "media": {"payload": "@@not-base64@@"}}, "bad_base64"),
        ({"event": "media", "media": {"payload": b64(b"\x01\x02\x03")}}, "bad_audio"),
        ({"event": "media", "media": {"payload": ""}}, "bad_audio"),
        ({"event": "media", "media": {}}, "missing_field"),
        ({"event": "media"}, "missing_field"),
        ({"event": "dtmf", "dtmf": {"digit": "x"}}, "bad_dtmf"),
        ({"event": "karaoke"}, "unknown_event"),
        (
            {"event": "start", "start": {"call_sid": "CA", "media_format": {"sample_rate": "11025"}}},
            "bad_sample_rate",
        ),
        ({"event": "start", "start": {}}, "missing_field"),
    ],
)
def test_exotel_violations_are_labelled(message: dict[str, object], kind: str) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        ExotelTranslator().parse(message)
    assert caught.value.kind == kind


def test_unknown_events_are_a_distinct_kind() -> None:
    with pytest.raises(UnknownEvent):
        ExotelTranslator().parse({"event": "karaoke"})


def test_exotel_outbound_uses_snake_case_and_pcm() -> None:
    translator = ExotelTranslator()
    start = translator.parse(EXOTEL_START)
    assert isinstance(start, Start)
    translator.accept(start)
    media = json.loads(translator.media(PCM))
    assert media == {"event": "media", "stream_sid": "MZ1", "media": {"payload": b64(PCM)}}
    assert json.loads(translator.mark("turn-3")) == {
        "event": "mark",
        "stream_sid": "MZ1",
        "mark": {"name": "turn-3"},
    }
    assert json.loads(translator.clear()) == {"event": "clear", "stream_sid": "MZ1"}


def test_twilio_start_and_media_in_mulaw() -> None:
    translator = TwilioTranslator()
    start = translator.parse(TWILIO_START)
    assert isinstance(start, Start)
    assert (start.provider, start.stream_sid, start.call_sid, start.from_number) == (
        "twilio",
        "MZ2",
        "CA2",
        "+15550001111",
    )
    ulaw = pcm16_to_ulaw(PCM)
    audio = translator.parse({"event": "media", "media": {"track": "inbound", "payload": b64(ulaw)}})
    assert isinstance(audio, Audio) and len(audio.pcm16) == 2 * len(ulaw)
    assert np.max(np.abs(np.frombuffer(audio.pcm16, "<i2").astype(int) - np.frombuffer(PCM, "<i2"))) < 64
    assert translator.parse({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "1"}}) == Dtmf("1")
    assert translator.parse({"event": "stop", "stop": {"callSid": "CA2"}}) == Stop("stopped")
    with pytest.raises(UnknownEvent) as caught:
        translator.parse({"event": "media", "media": {"track": "outbound", "payload": b64(ulaw)}})
    assert caught.value.kind == "ignored_track"


def test_twilio_outbound_uses_camel_case_and_mulaw() -> None:
    translator = TwilioTranslator()
    start = translator.parse(TWILIO_START)
    assert isinstance(start, Start)
    translator.accept(start)
    media = json.loads(translator.media(PCM))
    assert media["streamSid"] == "MZ2" and "stream_sid" not in media
    assert base64.b64decode(media["media"]["payload"]) == pcm16_to_ulaw(PCM)
    assert json.loads(translator.clear()) == {"event": "clear", "streamSid": "MZ2"}


def test_load_message_rejects_non_objects() -> None:
    assert load_message('{"event": "connected"}') == {"event": "connected"}
    for bad in ("{not json", "[1, 2]", '"text"', ""):
        with pytest.raises(ProtocolViolation) as caught:
            load_message(bad)
        assert caught.value.kind == "malformed_json"
    assert event_name({"Event": " Media "}) == "media"
    assert event_name({"event": 5}) == ""


@pytest.mark.parametrize("caller_kind", ["exotel", "twilio"])
def test_caller_and_translator_agree(caller_kind: str) -> None:
    caller = (
        ExotelCaller("CA7", "MZ7", sample_rate=16000)
        if caller_kind == "exotel"
        else TwilioCaller("CA7", "MZ7", from_number="+1555", to_number="+1666")
    )
    start_message = json.loads(caller.start())
    translator = translator_for_start(start_message, None)
    start = translator.parse(start_message)
    assert isinstance(start, Start) and start.call_sid == "CA7" and start.provider == caller_kind
    assert start.sample_rate == caller.sample_rate
    translator.accept(start)
    audio = translator.parse(json.loads(caller.media(PCM)))
    assert isinstance(audio, Audio) and len(audio.pcm16) == len(PCM)
    assert translator.parse(json.loads(caller.dtmf("#"))) == Dtmf("#")
    assert translator.parse(json.loads(caller.mark("m1"))) == MarkEcho("m1")
    assert isinstance(translator.parse(json.loads(caller.stop())), Stop)
    # And the other direction: what the daemon sends, the caller side reads back.
    outbound = caller.parse_outbound(translator.media(PCM))
    assert outbound.kind == "media" and len(outbound.pcm16) == len(PCM) and outbound.stream_sid == "MZ7"
    assert caller.parse_outbound(translator.mark("turn-1")).mark_name == "turn-1"
    assert caller.parse_outbound(translator.clear()).kind == "clear"


# --- issue 14 items 12, 20, 21: μ-law both ways, refused starts change nothing, bounded identifiers


def exotel_start(**media_format: object) -> dict[str, object]:
    return {"event": "start", "stream_sid": "MZ5", "start": {"call_sid": "CA5", "media_format": media_format}}


def test_exotel_mulaw_stream_sends_mulaw() -> None:
    translator = ExotelTranslator()
    start = translator.parse(exotel_start(encoding="audio/x-mulaw", sample_rate="8000"))
    assert isinstance(start, Start) and start.encoding == "mulaw"
    translator.accept(start)
    sent = base64.b64decode(json.loads(translator.media(PCM))["media"]["payload"])
    assert sent == pcm16_to_ulaw(PCM)


@pytest.mark.parametrize(
    ("url_rate", "stated", "rate", "announced"),
    [
        (None, None, 8000, None),  # Exotel's default
        (None, "16000", 16000, None),  # no URL parameter: the start's media format
        (16000, None, 16000, None),
        (16000, "16000", 16000, None),
        (
            16000,
            "8000",
            16000,
            8000,
        ),  # the URL's sample-rate sets the rate; the start disagreeing is reported
        (24000, "8000", 24000, 8000),
    ],
)
def test_exotel_sample_rate_precedence(
    url_rate: int | None, stated: str | None, rate: int, announced: int | None
) -> None:
    media_format = {"sample_rate": stated} if stated else {}
    start = ExotelTranslator(url_rate).parse(exotel_start(**media_format))
    assert isinstance(start, Start)
    assert (start.sample_rate, start.announced_rate) == (rate, announced)


def test_a_start_changes_nothing_until_accepted() -> None:
    for translator, first, second in (
        (ExotelTranslator(), EXOTEL_START, exotel_start(encoding="audio/x-mulaw")),
        (TwilioTranslator(), TWILIO_START, {**TWILIO_START, "streamSid": "MZother"}),
    ):
        start = translator.parse(first)
        assert isinstance(start, Start)
        translator.accept(start)
        before = (translator.media(PCM), translator.mark("m"), translator.clear(), translator.sample_rate)
        assert isinstance(translator.parse(second), Start)  # parsed, then refused by the stream
        assert (
            translator.media(PCM),
            translator.mark("m"),
            translator.clear(),
            translator.sample_rate,
        ) == before


@pytest.mark.parametrize(
    ("start_body", "kind"),
    [
        ({"call_sid": "CA1", "stream_sid": "M" * 300_000}, "field_too_long"),
        ({"call_sid": "C" * 129}, "bad_call_sid"),  # longer than the one sid rule allows
        ({"call_sid": "CA1", "account_sid": "A" * 1000}, "field_too_long"),
        ({"call_sid": "CA1", "stream_sid": "MZ1\nforged"}, "bad_stream_sid"),
        ({"call_sid": "../../admin"}, "bad_call_sid"),
        ({"call_sid": "CA1", "from": "+91" + "9" * 100}, "field_too_long"),
        ({"call_sid": "CA1", "custom_parameters": {"k": "v" * 257}}, "field_too_long"),
        ({"call_sid": "CA1", "custom_parameters": {"k" * 65: "v"}}, "field_too_long"),
        ({"call_sid": "CA1", "custom_parameters": {f"k{i}": "v" for i in range(33)}}, "field_too_long"),
    ],
)
def test_identifiers_from_the_wire_are_bounded(start_body: dict[str, object], kind: str) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        ExotelTranslator().parse({"event": "start", "start": start_body})
    assert caught.value.kind == kind


def test_long_mark_names_and_twilio_numbers_are_refused() -> None:
    for translator in (ExotelTranslator(), TwilioTranslator()):
        with pytest.raises(ProtocolViolation) as caught:
            translator.parse({"event": "mark", "mark": {"name": "m" * 129}})
        assert caught.value.kind == "field_too_long"
    start = json.loads(json.dumps(TWILIO_START))
    start["start"]["customParameters"]["From"] = "+1" + "5" * 100
    with pytest.raises(ProtocolViolation) as caught:
        TwilioTranslator().parse(start)
    assert caught.value.kind == "field_too_long"


# --- #14 review 1: one sid rule (voicebridge.telephony.sids) for every sid from the wire


@pytest.mark.parametrize("field", ["call_sid", "stream_sid", "account_sid"])
@pytest.mark.parametrize("value", ["..", "a.b", "C" * 65, "CA:1"])
def test_a_start_sid_follows_the_one_sid_rule(field: str, value: str) -> None:
    body = {"call_sid": "CA1", "stream_sid": "MZ1", field: value}
    for translator, message in (
        (ExotelTranslator(), {"event": "start", "start": body}),
        (
            TwilioTranslator(),
            {
                "event": "start",
                "start": {
                    "callSid": body["call_sid"],
                    "streamSid": body["stream_sid"],
                    "accountSid": body.get("account_sid", "AC1"),
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            },
        ),
    ):
        with pytest.raises(ProtocolViolation) as caught:
            translator.parse(message)
        assert caught.value.kind == f"bad_{field}"  # bad_call_sid, bad_stream_sid, bad_account_sid


def test_a_sid_of_64_characters_is_accepted() -> None:
    start = ExotelTranslator().parse(
        {"event": "start", "start": {"call_sid": "C" * 64, "stream_sid": "M" * 64}}
    )
    assert isinstance(start, Start) and start.call_sid == "C" * 64


# --- #14 review 4: every μ-law spelling, `rate=` in the encoding, a mismatch reported as it is


@pytest.mark.parametrize(
    "encoding", ["audio/x-mulaw", "g711_ulaw", "ulaw", "audio/x-ulaw", "PCMU", "audio/PCMU", "MULAW"]
)
def test_every_mulaw_spelling_makes_a_mulaw_stream(encoding: str) -> None:
    start = ExotelTranslator().parse(exotel_start(encoding=encoding))
    assert isinstance(start, Start)
    assert (start.encoding, start.sample_rate) == ("mulaw", 8000)


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [("audio/L16;rate=16000", 16000), ("audio/L16; rate=8000", 8000), ("audio/x-mulaw;rate=8000", 8000)],
)
def test_the_rate_in_the_encoding_is_honoured(encoding: str, rate: int) -> None:
    start = ExotelTranslator().parse(exotel_start(encoding=encoding))
    assert isinstance(start, Start) and start.sample_rate == rate and not start.rate_note


def test_a_bad_rate_in_the_encoding_is_refused() -> None:
    with pytest.raises(ProtocolViolation) as caught:
        ExotelTranslator().parse(exotel_start(encoding="audio/L16;rate=44100"))
    assert caught.value.kind == "bad_sample_rate"


def test_a_mulaw_start_under_a_16k_url_is_reported_as_mulaw_not_as_a_stated_rate() -> None:
    start = ExotelTranslator(16000).parse(exotel_start(encoding="audio/x-mulaw"))
    assert isinstance(start, Start) and start.sample_rate == 8000
    assert start.announced_rate is None  # the start stated no rate
    assert "μ-law" in start.rate_note and "says" not in start.rate_note
    stated = ExotelTranslator(16000).parse(exotel_start(sample_rate="8000"))
    assert isinstance(stated, Start) and "start says 8000" in stated.rate_note


# --- #14 review 7: outbound chunks meet Exotel's 3,200-byte minimum on the wire, μ-law too


@pytest.mark.parametrize(("encoding", "rate"), [("audio/x-mulaw", 8000), ("audio/x-raw", 8000)])
async def test_outbound_chunks_are_at_least_3200_bytes_on_the_wire(encoding: str, rate: int) -> None:
    import asyncio

    from voicebridge.call.pacer import OutboundPacer
    from voicebridge.server.metrics import Metrics

    translator = ExotelTranslator()
    start = translator.parse(exotel_start(encoding=encoding, sample_rate=str(rate)))
    assert isinstance(start, Start)
    translator.accept(start)
    sent: list[str] = []
    first = asyncio.Event()

    async def send(text: str) -> None:
        sent.append(text)
        first.set()

    pacer = OutboundPacer(translator, send, rate, Metrics())
    pacer.play(bytes(2 * rate))  # one second
    runner = asyncio.create_task(pacer.run())
    try:
        async with asyncio.timeout(10):
            await first.wait()
    finally:
        runner.cancel()
    payload = base64.b64decode(json.loads(sent[0])["media"]["payload"])
    assert len(payload) == 3200 and len(payload) % 320 == 0
