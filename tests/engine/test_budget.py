"""#14.14: a budget of zero or fewer minutes means no minutes left, never "no limit"."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from tests.engine.conftest import OpenEngine
from tests.engine.fakes import BudgetBackend
from tests.fakes.node_api import FakeNodeApi
from voicebridge.admission.gate import CallGate
from voicebridge.backends.base import BudgetDecision, BusinessSettings
from voicebridge.backends.http import BackendHttp
from voicebridge.backends.node import NodeBackend
from voicebridge.config.schema import BackendConfig, Settings
from voicebridge.server.metrics import Metrics


def budget_gate(backend: Any) -> CallGate:
    return CallGate(Settings(), Metrics(), backend)


@pytest.mark.parametrize("minutes", [0.0, -3.0])
async def test_the_gate_refuses_a_call_with_no_minutes_left(minutes: float) -> None:
    metrics = Metrics()
    gate = CallGate(Settings(), metrics, BudgetBackend(decision=BudgetDecision(True, "", minutes)))
    reason = await gate.check("CA-broke", "+919800000001", "+918047491899", "exotel")
    assert reason and await gate.denied("CA-broke") == reason
    sample = metrics.registry.get_sample_value
    assert sample("voicebridge_calls_rejected_total", {"reason": "budget"}) == 1


async def test_the_gate_lets_a_call_with_minutes_left_through_with_its_cap() -> None:
    gate = budget_gate(BudgetBackend(decision=BudgetDecision(True, "", 2.5)))
    assert await gate.check("CA-rich", "+919800000001", "+918047491899", "exotel") == ""
    pending = await gate.take_pending("CA-rich")
    assert pending is not None and pending.minutes_left == 2.5


@pytest.mark.parametrize("minutes", [0, -3])
async def test_the_node_backend_reads_no_minutes_left_as_a_refusal(minutes: int) -> None:
    async with FakeNodeApi(api_key="k", budget={"allow": True, "minutes_left": minutes}) as fake:
        config = BackendConfig(kind="node", url=fake.url, api_key=SecretStr("k"))
        node = NodeBackend(config, BackendHttp(config))
        await node.start()
        try:
            decision = await node.budget_check("CA-broke", "+91", "+91", "exotel")
        finally:
            await node.close()
    assert not decision.allow and decision.minutes_left == 0


async def test_a_call_capped_at_zero_minutes_says_goodbye_and_ends(open_engine: OpenEngine) -> None:
    engine = await open_engine(max_minutes=0.0)
    await engine.until(lambda: engine.call.ended, "the call to end")
    assert engine.call.outcome == "time_limit" and engine.history[-1] == ("bot", "Bye now.")


@pytest.mark.parametrize("minutes", [0.0, -1.0])
async def test_a_business_cap_of_zero_or_less_is_no_cap(open_engine: OpenEngine, minutes: float) -> None:
    """#14 review 7: a business's max_call_minutes caps each call; 0 or less is no meaningful cap."""
    engine = await open_engine(business=BusinessSettings(max_call_minutes=minutes))
    configured = engine.services.settings.calls.max_call_minutes
    assert engine.call._actions.minute_limits == ([configured] if configured > 0 else [])
    await engine.listening()
    await engine.say()
    await engine.listening()
    assert not engine.call.ended
