"""The node and openai backends against in-process fakes: streaming, actions, errors, retries, breaker."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from pydantic import SecretStr

from tests.fakes.node_api import FakeNodeApi
from tests.fakes.openai_server import FakeOpenAI
from voicebridge.backends import (
    BackendError,
    BackendHttp,
    BackendUnavailable,
    BudgetCheck,
    BusinessLookup,
    CallInfo,
    CircuitBreaker,
    ConversationTurn,
    EchoBackend,
    NodeBackend,
    OpenAIBackend,
    RecordSink,
    ReplyAction,
    build_backend,
)
from voicebridge.backends.business import BusinessDirectory
from voicebridge.backends.openai import auth_headers
from voicebridge.config.load import ConfigError, load_settings
from voicebridge.config.schema import BackendConfig

CALL = CallInfo(
    "CA123", "exotel", "+919800000001", "+918047491899", MappingProxyType({"order_id": "A17", "lang": "hi"})
)
HISTORY = [ConversationTurn("bot", "Welcome to Sunrise Clinic."), ConversationTurn("caller", "Hi.")]
KEY = "node-key-MARKER-7781"


class Clock:
    """A hand-moved clock for the breaker, so no test waits out its reset time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def node_config(url: str, **overrides: Any) -> BackendConfig:
    return BackendConfig(kind="node", url=url, api_key=SecretStr(KEY), **overrides)


async def collect(items: AsyncIterator[str | ReplyAction]) -> list[str | ReplyAction]:
    return [item async for item in items]


@pytest.fixture
async def fake() -> AsyncIterator[FakeNodeApi]:
    async with FakeNodeApi(api_key=KEY) as server:
        yield server


async def started(config: BackendConfig, **http_args: Any) -> NodeBackend:
    backend = NodeBackend(config, BackendHttp(config, retry_base=0.001, retry_cap=0.005, **http_args))
    await backend.start()
    return backend


@pytest.fixture
async def node(fake: FakeNodeApi) -> AsyncIterator[NodeBackend]:
    backend = await started(node_config(fake.url, request_timeout=5.0))
    yield backend
    await backend.close()


# --- node: replies ---------------------------------------------------------------------------------


async def test_reply_streams_deltas_as_they_arrive_with_the_contract_headers_and_body(
    fake: FakeNodeApi, node: NodeBackend
) -> None:
    fake.gate = asyncio.Event()  # the second line waits until the first has reached us
    replies = node.reply(CALL, "What time do you open on Sunday?", HISTORY)
    assert await anext(replies) == "We open at nine"
    fake.gate.set()
    assert await collect(replies) == [" on Sunday. Anything else?"]

    (seen,) = fake.seen("/messages")
    assert seen.path == "/v1/calls/CA123/messages"
    assert seen.headers["X-Api-Key"] == KEY
    assert seen.headers["X-Voicebridge-Version"] == "1"
    assert "application/x-ndjson" in seen.headers["Accept"]
    assert seen.headers["Content-Type"].startswith("application/json")
    assert "Idempotency-Key" not in seen.headers  # a caller message records nothing
    assert seen.body == {
        "turn": 2,
        "text": "What time do you open on Sunday?",
        "from": "+919800000001",
        "to": "+918047491899",
        "context": {"order_id": "A17", "lang": "hi"},
        "direction": "inbound",
        "history": [{"role": "bot", "text": "Welcome to Sunrise Clinic."}, {"role": "caller", "text": "Hi."}],
    }


async def test_a_call_without_context_sends_an_empty_context_object(
    fake: FakeNodeApi, node: NodeBackend
) -> None:
    # CallInfo's default: callers that know nothing of context still build one, and the field is there.
    plain = CallInfo("CA124", "twilio", "+15550001111", "+15550002222")
    assert await collect(node.reply(plain, "Hi", []))
    (seen,) = fake.seen("/messages")
    assert seen.body["context"] == {}


async def test_a_finished_stream_leaves_its_connection_for_the_next_turn(
    fake: FakeNodeApi, node: NodeBackend
) -> None:
    fake.eof_delay = 0.01  # the stream's end arrives just after its done line, as it may on a real network
    for _ in range(3):
        assert await collect(node.reply(CALL, "Hi", []))
    assert len({seen.peer_port for seen in fake.requests}) == 1


async def test_an_abandoned_reply_closes_its_stream(fake: FakeNodeApi, node: NodeBackend) -> None:
    fake.gate = asyncio.Event()  # never set: the backend is still producing when the caller barges in
    replies = node.reply(CALL, "Hi", [])
    assert await anext(replies) == "We open at nine"
    await replies.aclose()
    for _ in range(200):
        if fake.abandoned:
            break
        await asyncio.sleep(0.01)
    assert fake.abandoned == 1


async def test_a_plain_json_answer_is_one_delta_then_the_action(fake: FakeNodeApi, node: NodeBackend) -> None:
    fake.stream, fake.action = False, {"type": "hangup"}
    assert await collect(node.reply(CALL, "Bye", [])) == [
        "We open at nine on Sunday. Anything else?",
        ReplyAction("hangup"),
    ]
    assert fake.seen("/messages")[0].body["turn"] == 1


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ({"type": "transfer", "number": "+919800000000"}, ReplyAction("transfer", number="+919800000000")),
        ({"type": "hangup"}, ReplyAction("hangup")),
        ({"type": "collect_digits", "max_digits": 6}, ReplyAction("collect_digits", max_digits=6)),
        ({"type": "transfer"}, None),  # no number to transfer to
        ({"type": "collect_digits", "max_digits": "6"}, None),
        ({"type": "teleport"}, None),  # unknown: logged and ignored
        (None, None),
    ],
)
async def test_actions_are_validated(
    fake: FakeNodeApi, node: NodeBackend, stream: bool, action: dict[str, Any] | None, expected: ReplyAction
) -> None:
    fake.stream, fake.action = stream, action
    items = await collect(node.reply(CALL, "Can I talk to someone?", HISTORY))
    assert (
        "".join(item for item in items if isinstance(item, str))
        == "We open at nine on Sunday. Anything else?"
    )
    assert [item for item in items if isinstance(item, ReplyAction)] == ([expected] if expected else [])


async def test_digits_go_to_the_dtmf_endpoint(fake: FakeNodeApi, node: NodeBackend) -> None:
    fake.action = {"type": "collect_digits", "max_digits": 4}
    items = await collect(node.digits(CALL, "1234", HISTORY))
    assert items[-1] == ReplyAction("collect_digits", max_digits=4)
    (seen,) = fake.seen("/dtmf")
    assert seen.body["digits"] == "1234" and seen.body["to"] == CALL.to_number
    assert seen.body["context"] == {"order_id": "A17", "lang": "hi"}
    assert seen.body["history"][0] == {"role": "bot", "text": "Welcome to Sunrise Clinic."}


async def test_a_stream_without_its_done_line_is_an_error(fake: FakeNodeApi, node: NodeBackend) -> None:
    fake.end_stream = False
    replies = node.reply(CALL, "Hello?", [])
    assert await anext(replies) == "We open at nine"  # what arrived is still spoken
    with pytest.raises(BackendError, match="done"):
        await collect(replies)


async def test_a_wrong_key_is_an_error_that_never_shows_a_key(
    fake: FakeNodeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-MARKER-4242"
    config = BackendConfig(kind="node", url=fake.url, api_key=SecretStr(wrong))
    backend = await started(config)
    try:
        with pytest.raises(BackendError) as caught:
            await collect(backend.reply(CALL, "Hi", []))
    finally:
        await backend.close()
    assert "401" in str(caught.value) and "\n" not in str(caught.value)
    for secret in (wrong, KEY):
        assert secret not in str(caught.value) and secret not in caplog.text
    assert fake.requests[0].headers["X-Api-Key"] == wrong


async def test_a_slow_backend_times_out_within_the_request_timeout(fake: FakeNodeApi) -> None:
    fake.delay = 30.0
    backend = await started(node_config(fake.url, request_timeout=0.3))
    started_at = time.monotonic()
    try:
        with pytest.raises(BackendError, match="timed out"):
            await collect(backend.reply(CALL, "Hi", []))
    finally:
        await backend.close()
    assert time.monotonic() - started_at < 5.0


# --- node: retries and the breaker -------------------------------------------------------------------


async def test_budget_check_is_retried_after_a_503(fake: FakeNodeApi, node: NodeBackend) -> None:
    fake.statuses = [503, 503]
    decision = await node.budget_check("CA9", "+919800000001", "+918047491899", "exotel")
    assert (decision.allow, decision.reason, decision.minutes_left) == (True, "", 42.5)
    seen = fake.seen("/budget/check")
    assert len(seen) == 3
    assert seen[0].body == {
        "call_sid": "CA9",
        "from": "+919800000001",
        "to": "+918047491899",
        "provider": "exotel",
    }


async def test_budget_check_gives_up_after_its_attempts(fake: FakeNodeApi, node: NodeBackend) -> None:
    fake.statuses = [503, 503, 503, 503]
    with pytest.raises(BackendError, match="503"):
        await node.budget_check("CA9", "+91", "+91", "exotel")
    assert len(fake.seen("/budget/check")) == 3


async def test_budget_refusal_and_a_connection_refused_backend(fake: FakeNodeApi, node: NodeBackend) -> None:
    fake.budget = {"allow": False, "reason": "out of minutes"}
    decision = await node.budget_check("CA9", "+91", "+91", "exotel")
    assert (decision.allow, decision.reason, decision.minutes_left) == (False, "out of minutes", None)
    dead = await started(node_config(f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(BackendError, match="connection refused"):
            await dead.budget_check("CA9", "+91", "+91", "exotel")
    finally:
        await dead.close()


async def test_a_caller_message_is_never_retried(fake: FakeNodeApi, node: NodeBackend) -> None:
    fake.statuses = [503]
    with pytest.raises(BackendError, match="503"):
        await collect(node.reply(CALL, "Hi", []))
    assert len(fake.seen("/messages")) == 1


async def test_the_breaker_opens_fails_fast_then_lets_one_probe_through(fake: FakeNodeApi) -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, reset_after=30.0, clock=clock)
    backend = await started(node_config(fake.url), breaker=breaker)
    try:
        fake.statuses = [500] * 3
        for _ in range(3):
            with pytest.raises(BackendError, match="500"):
                await collect(backend.reply(CALL, "Hi", []))
        assert breaker.state == "open"

        asked = len(fake.requests)
        with pytest.raises(BackendUnavailable):
            await collect(backend.reply(CALL, "Hi", []))
        with pytest.raises(BackendUnavailable):
            await backend.budget_check("CA1", "+91", "+91", "exotel")
        assert (await backend.deliver("/v1/calls/CA1/cost", {"total": 1}, "CA1:cost"))[0] == "retry"
        assert len(fake.requests) == asked  # the dead backend was not asked while open

        clock.now += 31
        assert breaker.state == "half_open"
        fake.statuses = [502]  # the probe fails: open again at once
        with pytest.raises(BackendError, match="502"):
            await collect(backend.reply(CALL, "Hi", []))
        assert breaker.state == "open" and len(fake.requests) == asked + 1

        clock.now += 31
        assert await collect(backend.reply(CALL, "Hi", []))  # the probe succeeds: closed
        assert breaker.state == "closed"
    finally:
        await backend.close()


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_after=5.0, clock=clock)
    assert breaker.acquire() is False
    breaker.record(False)
    with pytest.raises(BackendUnavailable):
        breaker.acquire()
    clock.now += 5
    assert breaker.acquire() is True
    with pytest.raises(BackendUnavailable):
        breaker.acquire()  # the probe is still out
    breaker.release(True)  # the probe was cancelled: the next request probes instead
    assert breaker.acquire() is True
    breaker.record(True)
    assert breaker.state == "closed" and breaker.acquire() is False


async def test_a_4xx_counts_as_alive_for_the_breaker(fake: FakeNodeApi) -> None:
    breaker = CircuitBreaker(failures=2, reset_after=30.0, clock=Clock())
    backend = await started(node_config(fake.url), breaker=breaker)
    try:
        fake.statuses = [400] * 5
        for _ in range(5):
            with pytest.raises(BackendError):
                await collect(backend.reply(CALL, "Hi", []))
        assert breaker.state == "closed"
    finally:
        await backend.close()


# --- node: records, business settings --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "delivered"),
        (204, "delivered"),
        # Only a record the backend can never accept is parked; a wrong key (401/403) or a deploy (404)
        # may yet succeed, so those are retried (issue 14.8: a wrong key for an hour lost every record).
        (400, "parked"),
        (422, "parked"),
        (401, "retry"),
        (403, "retry"),
        (404, "retry"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
    ],
)
async def test_deliver_maps_the_status(
    fake: FakeNodeApi, node: NodeBackend, status: int, expected: str
) -> None:
    fake.record_status = status
    payload = {"event": "started", "at": 1764000000.0}
    result, error = await node.deliver("/v1/calls/CA1/events", payload, "CA1:event:started")
    assert result == expected
    assert error == ("" if expected == "delivered" else f"HTTP {status}")
    (seen,) = fake.seen("/events")  # delivered once: the outbox owns retrying
    assert seen.headers["Idempotency-Key"] == "CA1:event:started"
    assert seen.body == payload


async def test_a_repeated_delivery_is_stored_once(fake: FakeNodeApi, node: NodeBackend) -> None:
    for _ in range(2):
        assert (await node.deliver("/v1/calls/CA1/cost", {"total": 0.03}, "CA1:cost"))[0] == "delivered"
    assert fake.records == {"CA1:cost": {"total": 0.03}}


async def test_deliver_to_a_refused_connection_is_retry() -> None:
    backend = await started(node_config(f"http://127.0.0.1:{free_port()}"))
    try:
        assert (await backend.deliver("/v1/calls/CA1/cost", {"total": 1}, "CA1:cost"))[0] == "retry"
    finally:
        await backend.close()


async def test_business_settings_by_called_number(fake: FakeNodeApi, node: NodeBackend) -> None:
    fake.businesses["+918047491899"] = {
        "greeting": "Welcome to Sunrise Clinic.",
        "voice": "",
        "max_call_minutes": 10,
        "transfer_number": "+919800000000",
    }
    settings = await node.business("+918047491899")
    assert settings is not None
    assert settings.greeting == "Welcome to Sunrise Clinic." and settings.voice is None
    assert settings.max_call_minutes == 10.0 and settings.transfer_number == "+919800000000"
    assert settings.language is None and settings.system_prompt is None
    assert fake.seen("/business")[0].query == {"to": "+918047491899"}
    assert await node.business("+910000000000") is None  # 404: nothing configured for that number


# --- openai ---------------------------------------------------------------------------------------------


async def openai_backend(server: FakeOpenAI, key: str, system_prompt: str = "Be brief.") -> OpenAIBackend:
    config = BackendConfig(
        kind="openai", url=server.url, api_key=SecretStr(key), model="gpt-test", system_prompt=system_prompt
    )
    backend = OpenAIBackend(config, BackendHttp(config, auth_headers=auth_headers(config)))
    await backend.start()
    return backend


async def test_openai_streams_the_pieces_in_order_and_sends_model_messages_and_bearer() -> None:
    async with FakeOpenAI(api_key="sk-MARKER-1") as server:
        backend = await openai_backend(server, "sk-MARKER-1")
        try:
            pieces = await collect(backend.reply(CALL, "When do you open?", HISTORY))
            assert pieces == ["Sure", ", we open", " at nine."]
            assert await collect(backend.digits(CALL, "1234", []))
        finally:
            await backend.close()
    assert server.auth_headers == ["Bearer sk-MARKER-1"] * 2
    first, keypad = server.bodies
    assert first == {
        "model": "gpt-test",
        "stream": True,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "assistant", "content": "Welcome to Sunrise Clinic."},
            {"role": "user", "content": "Hi."},
            {"role": "user", "content": "When do you open?"},
        ],
    }
    assert keypad["messages"][-1] == {"role": "user", "content": "The caller pressed the keys: 1 2 3 4"}


async def test_openai_system_prompt_placeholders_take_the_call_context() -> None:
    # {order_id} and {lang} are filled; {missing} has no key and stays; {0.__class__} and {order_id.x} are
    # not placeholders (no attribute access, unlike str.format); a value is not expanded again.
    prompt = "Order {order_id} in {lang}. {missing} {0.__class__} {order_id.x} {{lang}} {nested}"
    call = CallInfo("CA9", "exotel", "+1", "+2", MappingProxyType({**CALL.context, "nested": "{lang}"}))
    async with FakeOpenAI() as server:
        backend = await openai_backend(server, "sk-fake", system_prompt=prompt)
        try:
            assert await collect(backend.reply(call, "Hi", []))
            assert await collect(backend.reply(CallInfo("CA10", "twilio", "+1", "+2"), "Hi", []))
        finally:
            await backend.close()
    with_context, without = (body["messages"][0] for body in server.bodies)
    assert with_context == {
        "role": "system",
        "content": "Order A17 in hi. {missing} {0.__class__} {order_id.x} {hi} {lang}",
    }
    assert without == {"role": "system", "content": prompt}  # no context: the prompt as written


@pytest.mark.parametrize("status", [401, 500])
async def test_openai_error_status_is_a_backend_error_without_the_key(status: int) -> None:
    async with FakeOpenAI(api_key="sk-right", status=status) as server:
        backend = await openai_backend(server, "sk-right" if status != 401 else "sk-MARKER-wrong")
        try:
            with pytest.raises(BackendError, match=str(status)) as caught:
                await collect(backend.reply(CALL, "Hi", []))
        finally:
            await backend.close()
    assert "MARKER" not in str(caught.value) and "sk-" not in str(caught.value)


# --- building and config --------------------------------------------------------------------------------


async def test_build_backend_by_kind() -> None:
    assert isinstance(build_backend(BackendConfig()), EchoBackend)
    node = build_backend(BackendConfig(kind="node", url="http://127.0.0.1:1"))
    openai = build_backend(BackendConfig(kind="openai", url="https://api.example.com/v1"))
    assert (node.name, node.speculative_safe) == ("node", False)
    assert openai.name == "openai"
    for backend in (node, openai):
        assert isinstance(backend, NodeBackend | OpenAIBackend)
        await backend.start()
        await backend.close()


def test_only_the_node_backend_offers_the_optional_capabilities() -> None:
    """The daemon wires budget check, business lookup and record delivery by these declared Protocols."""
    node = build_backend(BackendConfig(kind="node", url="http://127.0.0.1:1"))
    openai = build_backend(BackendConfig(kind="openai", url="https://api.example.com/v1"))
    for capability in (BudgetCheck, BusinessLookup, RecordSink):
        assert isinstance(node, capability)
        assert not isinstance(openai, capability) and not isinstance(EchoBackend(), capability)


async def test_a_directory_without_a_business_lookup_leaves_the_config_in_charge() -> None:
    assert await BusinessDirectory(None).settings_for("+918047491899") is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", r"backend\.url must be an http\(s\) URL"),
        ("api.example.com", r"backend\.url must be an http\(s\) URL"),
        ("ftp://api.example.com", r"backend\.url must be an http\(s\) URL"),
        ("https://user:secret-MARKER@api.example.com", "must not contain credentials"),
    ],
)
def test_node_and_openai_need_an_http_url(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [name for name in os.environ if name.startswith("VOICEBRIDGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no voicebridge.toml of the developer's is picked up
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(None, {"backend": {"kind": "node", "url": url}})
    assert "\n" not in str(caught.value) and "MARKER" not in str(caught.value)
    assert load_settings(None, {"backend": {"kind": "echo", "url": url}}).backend.kind == "echo"
