"""A call's context (issue 16, item 1): the provider's custom parameters, bounded, validated, carried."""

from __future__ import annotations

import logging
from types import MappingProxyType

import pytest

from voicebridge.backends.base import CallInfo
from voicebridge.call.context_drops import count_dropped_context
from voicebridge.server.metrics import Metrics
from voicebridge.telephony.context import (
    MAX_CONTEXT_KEYS,
    MAX_CONTEXT_VALUE_CHARS,
    call_context,
    context_for_log,
    first_values,
)
from voicebridge.telephony.events import Start
from voicebridge.telephony.exotel import ExotelTranslator
from voicebridge.telephony.providers import translator_for_start
from voicebridge.telephony.twilio import TwilioTranslator


def exotel_start(custom: dict[str, str] | None = None) -> dict[str, object]:
    body: dict[str, object] = {"stream_sid": "MZ1", "call_sid": "CA1", "from": "+91980", "to": "+91804"}
    if custom is not None:
        body["custom_parameters"] = custom
    return {"event": "start", "start": body}


def twilio_start(custom: dict[str, str]) -> dict[str, object]:
    return {
        "event": "start",
        "start": {
            "streamSid": "MZ2",
            "callSid": "CA2",
            "tracks": ["inbound"],
            "customParameters": custom,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }


def parsed(translator: ExotelTranslator | TwilioTranslator, message: dict[str, object]) -> Start:
    start = translator.parse(message)
    assert isinstance(start, Start)
    return start


def test_exotel_context_is_the_url_query_and_the_start_custom_parameters() -> None:
    url = {"order_id": "A17", "lang": "hi", "sample-rate": "16000"}
    start = parsed(ExotelTranslator(16000, url), exotel_start({"lang": "en", "campaign": "diwali"}))
    # The URL's value wins (what the operator configured; the start's copy may be stripped); the start
    # adds what the URL lacks; `sample-rate` is the daemon's own and left out without a complaint.
    assert dict(start.context) == {"order_id": "A17", "lang": "hi", "campaign": "diwali"}
    assert start.context_dropped == ()
    assert start.sample_rate == 16000
    with pytest.raises(TypeError):
        start.context["order_id"] = "forged"  # type: ignore[index]


def test_exotel_url_parameters_reach_the_translator_of_a_stream() -> None:
    translator = translator_for_start(exotel_start(), None, url_parameters={"order_id": "A17"})
    assert dict(parsed(translator, exotel_start()).context) == {"order_id": "A17"}  # type: ignore[arg-type]


def test_exotel_start_without_a_url_query_takes_the_start_custom_parameters() -> None:
    start = parsed(ExotelTranslator(), exotel_start({"key1": "value1"}))
    assert dict(start.context) == {"key1": "value1"}


def test_twilio_context_is_the_custom_parameters_without_our_own() -> None:
    # From/To/CallSid are the <Parameter>s our own TwiML adds: the call's numbers, not its context.
    custom = {"From": "+15550001111", "To": "+15550002222", "CallSid": "CA2", "order_id": "A17"}
    start = parsed(TwilioTranslator(), twilio_start(custom))
    assert dict(start.context) == {"order_id": "A17"}
    assert start.from_number == "+15550001111" and start.context_dropped == ()


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("order id", "A17", "bad_key"),  # a space
        ("order\nid", "A17", "bad_key"),  # would forge a log line
        ("k" * 65, "v", "bad_key"),
        ("", "v", "bad_key"),
        ("ключ", "v", "bad_key"),
        ("token", "secret-1", "reserved"),
        ("API-Key", "secret-2", "reserved"),
        ("Password", "secret-3", "reserved"),
        ("order_id", "A\r\nforged: yes", "bad_value"),
        ("order_id", "A\x00", "bad_value"),
        ("order_id", "A\u2028B", "bad_value"),  # a line separator to str.splitlines
        ("order_id", "v" * (MAX_CONTEXT_VALUE_CHARS + 1), "too_long"),
    ],
)
def test_a_parameter_that_breaks_a_rule_is_dropped_and_named(key: str, value: str, reason: str) -> None:
    context, dropped = call_context(({key: value, "lang": "hi"},))
    assert dict(context) == {"lang": "hi"}  # the rest of the context stands
    ((why, shown),) = dropped
    assert why == reason
    assert "\n" not in shown and "\r" not in shown and shown.isascii()  # escaped for the log
    assert "secret" not in shown  # a key is named, never a value


def test_at_most_max_keys_are_kept() -> None:
    many = {f"k{index}": "v" for index in range(MAX_CONTEXT_KEYS + 5)}
    context, dropped = call_context((many,))
    assert len(context) == MAX_CONTEXT_KEYS
    assert [reason for reason, _ in dropped] == ["too_many"] * 5


def test_an_exotel_url_with_hostile_parameters_still_gives_a_call() -> None:
    # The URL's query is not bounded by the start's rules: it is bounded here, by dropping.
    url = {**{f"p{index}": "x" for index in range(40)}, "bad key": "v", "token": "t", "long": "y" * 1000}
    start = parsed(ExotelTranslator(None, url), exotel_start())
    assert len(start.context) == MAX_CONTEXT_KEYS
    reasons = sorted({reason for reason, _ in start.context_dropped})
    assert reasons == ["bad_key", "reserved", "too_long", "too_many"]


def test_drops_are_counted_by_reason_and_logged_once_escaped(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    _, dropped = call_context(({"bad\nkey": "v", "token": "s3cr3t", "a b": "v"},))
    log = logging.LoggerAdapter(logging.getLogger("test.context"), {"call_sid": "CA1"})
    with caplog.at_level(logging.WARNING, logger="test.context"):
        count_dropped_context(dropped, metrics, log)
    assert metrics.context_dropped.labels(reason="bad_key")._value.get() == 2
    assert metrics.context_dropped.labels(reason="reserved")._value.get() == 1
    (line,) = caplog.messages
    assert "left out 3 custom parameter(s)" in line and "\n" not in line and "s3cr3t" not in line


def test_the_context_in_a_log_line_is_escaped() -> None:
    shown = context_for_log(MappingProxyType({"name": "Ravi\u2028Kumar", "lang": "हि"}))
    assert shown.isascii() and "\u2028" not in shown
    assert shown == '{"lang": "\\u0939\\u093f", "name": "Ravi\\u2028Kumar"}'


def test_a_query_repeating_a_name_keeps_its_first_value() -> None:
    assert first_values([("lang", "hi"), ("lang", "en"), ("order_id", "A17")]) == {
        "lang": "hi",
        "order_id": "A17",
    }


def test_call_info_context_defaults_to_empty_and_is_immutable() -> None:
    info = CallInfo("CA1", "exotel", "+1", "+2")
    assert dict(info.context) == {}
    with pytest.raises(TypeError):
        info.context["x"] = "y"  # type: ignore[index]
