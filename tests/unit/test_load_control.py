"""Load control without models: the STT scheduler's order, the worker count, the overload guard, the gate."""

from __future__ import annotations

import asyncio
import time

import pytest

from voicebridge.admission.gate import CallGate
from voicebridge.admission.load_guard import OverloadGuard
from voicebridge.admission.registry import CallRegistry
from voicebridge.config.schema import Settings, SttConfig
from voicebridge.server.metrics import Metrics
from voicebridge.speech.scheduler import SttScheduler
from voicebridge.speech.stt import worker_count


async def take_turns(scheduler: SttScheduler, order: list[str], name: str, confirmed: asyncio.Event) -> None:
    await scheduler.acquire(confirmed.is_set)
    order.append(name)
    await asyncio.sleep(0.01)
    scheduler.release()


def confirmed_event(value: bool) -> asyncio.Event:
    event = asyncio.Event()
    if value:
        event.set()
    return event


async def test_confirmed_turns_go_before_earlier_speculative_ones() -> None:
    scheduler = SttScheduler(workers=1)
    order: list[str] = []
    await scheduler.acquire()  # the one worker is busy
    guess_a, guess_b, late_guess = confirmed_event(False), confirmed_event(False), confirmed_event(False)
    tasks = [
        asyncio.create_task(take_turns(scheduler, order, "guess-a", guess_a)),
        asyncio.create_task(take_turns(scheduler, order, "guess-b", guess_b)),
        asyncio.create_task(take_turns(scheduler, order, "confirmed", confirmed_event(True))),
        asyncio.create_task(take_turns(scheduler, order, "guess-confirmed-while-waiting", late_guess)),
    ]
    await asyncio.sleep(0)
    assert scheduler.waiting == 4
    late_guess.set()  # its turn ended while it queued: it now outranks the other guesses
    scheduler.release()
    await asyncio.gather(*tasks)
    assert order == ["confirmed", "guess-confirmed-while-waiting", "guess-a", "guess-b"]
    assert scheduler.waiting == 0


async def test_a_cancelled_waiter_never_runs_and_loses_no_worker() -> None:
    scheduler = SttScheduler(workers=1)
    await scheduler.acquire()
    hung_up = asyncio.create_task(scheduler.acquire())
    await asyncio.sleep(0)
    hung_up.cancel()  # the caller hung up while its utterance queued
    with pytest.raises(asyncio.CancelledError):
        await hung_up
    assert scheduler.waiting == 0
    scheduler.release()
    async with asyncio.timeout(1):
        assert await scheduler.acquire() == pytest.approx(0.0)  # the worker was not lost


async def test_a_worker_granted_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    scheduler = SttScheduler(workers=1)
    await scheduler.acquire()
    first = asyncio.create_task(scheduler.acquire())
    second = asyncio.create_task(scheduler.acquire())
    await asyncio.sleep(0)
    scheduler.release()  # granted to `first`...
    first.cancel()  # ...which is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(1):
        waited = await second
    assert waited >= 0.0 and scheduler.waiting == 0


@pytest.mark.parametrize(
    ("threads", "workers", "cores", "expected"),
    [(1, 0, 2, 2), (2, 0, 2, 1), (1, 0, 8, 8), (4, 0, 2, 1), (1, 1, 2, 1), (1, 4, 2, 2), (2, 2, 2, 1)],
)
def test_workers_never_oversubscribe_the_cores(threads: int, workers: int, cores: int, expected: int) -> None:
    assert worker_count(SttConfig(threads=threads, workers=workers), cores) == expected


def test_the_guard_refuses_while_turns_queue_for_speech_recognition() -> None:
    guard = OverloadGuard(max_stt_wait_s=0.4, max_loop_lag_s=0.15)
    assert guard.refusal() == ""
    guard.observe_stt_wait(2.0)
    assert guard.refusal() == "", "one slow turn is not overload"
    for wait in (0.0, 0.1, 0.9, 1.2, 0.8):
        guard.observe_stt_wait(wait)
    assert guard.stt_wait_p90() >= 0.9 and guard.refusal() == "overloaded"


def test_the_guard_refuses_while_the_event_loop_lags() -> None:
    guard = OverloadGuard(max_stt_wait_s=0.4, max_loop_lag_s=0.15)
    for _ in range(40):
        guard.observe_loop_lag(0.01)
    assert guard.refusal() == ""
    guard.observe_loop_lag(0.6)
    assert guard.refusal() == "", "one stall (a GC pause, a heap trim) is not overload"
    for _ in range(5):
        guard.observe_loop_lag(0.3)
    assert guard.loop_lag() >= 0.3 and guard.refusal() == "overloaded"
    assert OverloadGuard(0, 0).refusal() == "", "0 turns the checks off"


def test_the_guard_refuses_the_call_that_would_overwork_speech_recognition() -> None:
    live = {"calls": 0}
    guard = OverloadGuard(max_stt_wait_s=0, max_loop_lag_s=0, max_stt_utilisation=0.8)
    guard.stt_workers = 2
    guard.count_calls(lambda: live["calls"])
    guard.observe_stt_work(0.5)
    assert guard.call_capacity() is None and guard.refusal() == "", "no guess before a minute of calls"
    guard.observe_call_seconds(100.0)  # e.g. 10 calls for 10 s
    for _ in range(15):
        guard.observe_stt_work(0.1)  # 2 s of worker time in all: 0.02 s per call-second
    # Two workers at 80% carry 1.6 worker-seconds per second: 80 such calls.
    assert guard.call_capacity() == 80
    live["calls"] = 79
    assert guard.refusal() == ""
    live["calls"] = 80
    assert guard.refusal() == "overloaded"
    assert OverloadGuard(0, 0, max_stt_utilisation=0).call_capacity() is None, "0 turns it off"


async def test_the_guard_counts_live_calls_over_time() -> None:
    guard = OverloadGuard(max_stt_wait_s=0, max_loop_lag_s=0, max_stt_utilisation=0.8)
    guard.count_calls(lambda: 200)
    watcher = asyncio.create_task(guard.watch_loop())
    await asyncio.sleep(0.45)
    watcher.cancel()
    guard.observe_stt_work(1.0)
    # 200 calls for ~0.4 s of probes: ~80 call-seconds, enough to judge; 1 s of STT over them.
    demand = guard.stt_seconds_per_call_second()
    assert demand is not None and 1 / 100 < demand < 1 / 70


async def test_the_guard_measures_real_loop_lag() -> None:
    guard = OverloadGuard(max_stt_wait_s=0, max_loop_lag_s=0.15)
    watcher = asyncio.create_task(guard.watch_loop())
    await asyncio.sleep(0.25)
    assert guard.refusal() == ""
    time.sleep(0.3)  # noqa: ASYNC251 -- blocking the loop on purpose: the next probe fires ~0.3 s late
    await asyncio.sleep(0.25)
    watcher.cancel()
    assert guard.loop_lag() >= 0.2 and guard.refusal() == "overloaded"


def test_the_registry_names_why_a_call_is_refused() -> None:
    load = {"refusal": ""}
    registry = CallRegistry(max_concurrent_calls=5, load_refusal=lambda: load["refusal"])
    assert registry.refusal() == "" and registry.has_capacity()
    load["refusal"] = "overloaded"
    assert registry.refusal() == "overloaded" and not registry.has_capacity()
    registry.draining = True
    assert registry.refusal() == "draining"


async def test_the_gate_rate_limits_a_caller_and_remembers_the_denial_for_its_stream() -> None:
    metrics = Metrics()
    settings = Settings.model_validate({"calls": {"rate_limit_calls": 1, "rate_limit_window_s": 600}})
    gate = CallGate(settings, metrics)  # no budget check: only the rate limit decides
    assert await gate.check("CA-1", "+919800000001", "+918047491899", "twilio") == ""
    reason = await gate.check("CA-2", "+919800000001", "+918047491899", "twilio")
    assert reason and await gate.denied("CA-2") == reason and await gate.denied("CA-1") is None
    assert await gate.check("CA-3", "+919800000002", "+918047491899", "twilio") == ""  # another caller
    sample = metrics.registry.get_sample_value("voicebridge_calls_rejected_total", {"reason": "rate_limited"})
    assert sample == 1
