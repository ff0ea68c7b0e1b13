"""The campaign runner in-process, over the fake dialler (tests/fakes/dialer.py): outcomes, retries,
concurrency, rate, calling hours, the inbound share, DNC, pause/cancel, and a daemon killed mid-campaign."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.fakes.dialer import FakeClock, FakeDialer, FakeLoad
from voicebridge.campaigns.dnc import DoNotCall
from voicebridge.campaigns.model import CampaignOptions
from voicebridge.campaigns.numbers_csv import parse_list
from voicebridge.campaigns.runner import CampaignRunner
from voicebridge.campaigns.store import CampaignStore

IST = ZoneInfo("Asia/Kolkata")
TEN_AM = datetime(2026, 12, 7, 10, 0, tzinfo=IST).timestamp()


def numbers(count: int) -> list[str]:
    return [f"+9198000{i:05d}" for i in range(count)]


@dataclass
class Rig:
    store: CampaignStore
    dialer: FakeDialer
    load: FakeLoad
    clock: FakeClock
    runner: CampaignRunner
    task: asyncio.Task[None]

    async def campaign(self, listed: list[str], options: CampaignOptions) -> int:
        entries = parse_list("number,slot\n" + "".join(f"{n},x\n" for n in listed)).entries
        campaign = await self.store.create("test", options, entries)
        self.runner.wake()
        return campaign

    async def until(self, done: Callable[[], object], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            # Polled: the conditions are store reads and fake counters, with no event to wait on.
            while not await _truthy(done()):  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    async def finished(self, campaign: int, timeout: float = 10.0) -> dict[str, dict[str, object]]:
        async def state() -> bool:
            return (await self.store.campaign(campaign)).state == "finished"

        await self.until(state, timeout)
        return {row["number"]: row for row in await self.store.numbers(campaign, 1000)}


async def _truthy(value: object) -> bool:
    if asyncio.iscoroutine(value):
        value = await value
    return bool(value)


async def start_rig(
    path: Path,
    dialer: FakeDialer,
    clock: FakeClock,
    dnc: str = "",
    slots: int = 30,
    reserve: float = 0.2,
    attempt_timeout_s: float = 7200.0,
) -> Rig:
    store = CampaignStore(path)
    await store.open(clock())
    load = FakeLoad(dialer, slots=slots)
    runner = CampaignRunner(
        store,
        dialer,
        dialer,
        load,
        DoNotCall(dnc),
        clock=clock,
        inbound_reserve=reserve,
        poll_s=0.005,
        attempt_timeout_s=attempt_timeout_s,
    )
    return Rig(store, dialer, load, clock, runner, asyncio.create_task(runner.run()))


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, dialer: FakeDialer, clock: FakeClock, **kwargs: object) -> AsyncIterator[Rig]:
    running = await start_rig(tmp_path / "campaigns.sqlite3", dialer, clock, **kwargs)  # type: ignore[arg-type]
    try:
        yield running
    finally:
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.task
        await running.runner.settled()
        await running.store.close()


# Fast clock: 1 real second is 100 campaign seconds, so a 30 s backoff takes 0.3 s.
def fast_clock() -> FakeClock:
    return FakeClock(TEN_AM, speed=100)


QUICK = {"rate_per_minute": 100_000.0, "retry_base_s": 30.0, "retry_cap_s": 120.0}


async def test_twenty_numbers_with_busy_no_answer_and_machines(tmp_path: Path) -> None:
    listed = numbers(20)
    scripts = {
        **{n: ["busy", "human"] for n in listed[0:3]},  # busy once, then answered
        **{n: ["busy"] for n in listed[3:5]},  # busy every time: gives up after 3
        **{n: ["no-answer", "no-answer", "human"] for n in listed[5:6]},
        **{n: ["no-answer"] for n in listed[6:8]},
        **{n: ["machine"] for n in listed[8:10]},
    }
    dialer = FakeDialer(scripts=scripts)
    async with rig(tmp_path, dialer, fast_clock()) as r:
        campaign = await r.campaign(listed, CampaignOptions(concurrency=4, max_attempts=3, **QUICK))
        rows = await r.finished(campaign)
        status = await r.runner.status(await r.store.campaign(campaign))
    expected = {
        **{n: ("human", 2) for n in listed[0:3]},
        **{n: ("busy", 3) for n in listed[3:5]},
        listed[5]: ("human", 3),
        **{n: ("no-answer", 3) for n in listed[6:8]},
        **{n: ("machine", 1) for n in listed[8:10]},
        **{n: ("human", 1) for n in listed[10:]},
    }
    assert {n: (row["outcome"], row["attempts"]) for n, row in rows.items()} == expected
    assert all(dialer.dials[n] == attempts for n, (_, attempts) in expected.items())
    assert dialer.max_live == 4  # reached, never exceeded
    assert {req.context["slot"] for req in dialer.requests} == {"x"}
    assert {req.origin for req in dialer.requests} == {f"campaign:{campaign}"}
    assert (status["human"], status["machine"], status["remaining"], status["failed"]) == (14, 2, 0, 4)
    assert status["dialled"] == sum(a for _, a in expected.values())


async def test_retries_wait_out_their_backoff(tmp_path: Path) -> None:
    dialer = FakeDialer(scripts={"+919800000000": ["busy", "busy", "human"]}, ring_s=0.0, talk_s=0.0)
    clock = FakeClock(TEN_AM, speed=100)
    async with rig(tmp_path, dialer, clock) as r:
        options = CampaignOptions(concurrency=1, max_attempts=3, **{**QUICK, "retry_base_s": 50.0})
        rows = await r.finished(await r.campaign(["+919800000000"], options))
    assert rows["+919800000000"]["outcome"] == "human"
    gaps = [(b - a) * 100 for a, b in zip(dialer.dial_times, dialer.dial_times[1:], strict=False)]
    assert gaps[0] >= 50 and gaps[1] >= 100  # 50 s, then doubled (campaign seconds)


async def test_rate_per_minute_spaces_the_dials(tmp_path: Path) -> None:
    dialer = FakeDialer(ring_s=0.0, talk_s=0.0)
    clock = FakeClock(TEN_AM, speed=60)  # a real second is a campaign minute
    async with rig(tmp_path, dialer, clock) as r:
        options = CampaignOptions(concurrency=2, rate_per_minute=120.0)
        await r.finished(await r.campaign(numbers(12), options))
    # Two at once to start, then 2 a campaign second: 10 more need >= 5 campaign seconds.
    assert (dialer.dial_times[-1] - dialer.dial_times[0]) * 60 >= 4.9


async def test_nothing_is_dialled_outside_calling_hours_until_they_open(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 12, 7, 7, 0, tzinfo=IST).timestamp())
    dialer = FakeDialer()
    async with rig(tmp_path, dialer, clock) as r:
        campaign = await r.campaign(numbers(3), CampaignOptions(concurrency=3, **QUICK))
        await asyncio.sleep(0.3)
        assert sum(dialer.dials.values()) == 0
        assert not (await r.runner.status(await r.store.campaign(campaign)))["in_hours"]
        clock.set(datetime(2026, 12, 7, 9, 0, tzinfo=IST).timestamp())
        rows = await r.finished(campaign)
    assert {row["outcome"] for row in rows.values()} == {"human"}


async def test_a_call_in_progress_at_closing_time_finishes_and_nothing_more_is_dialled(
    tmp_path: Path,
) -> None:
    closing = datetime(2026, 12, 7, 21, 0, tzinfo=IST).timestamp()
    clock = FakeClock(closing - 10, speed=10)  # a real second is 10 campaign seconds
    dialer = FakeDialer(ring_s=0.0, talk_s=2.0)  # 20 campaign seconds: ends after closing
    first, second = numbers(2)
    async with rig(tmp_path, dialer, clock) as r:
        campaign = await r.campaign([first, second], CampaignOptions(concurrency=1, **QUICK))
        clock.set(closing - 5)  # from here the runner has half a real second to dial the first
        await r.until(lambda: dialer.dials[first] == 1)
        await r.until(lambda: dialer.live == 0, timeout=5)
        await asyncio.sleep(0.3)  # the runner's passes after the call ended, hours closed
        await r.runner.settled()
        rows = {row["number"]: row for row in await r.store.numbers(campaign, 10)}
    assert clock() > closing
    assert rows[first]["outcome"] == "human"  # left to finish
    assert rows[second]["state"] == "pending" and dialer.dials[second] == 0


@pytest.mark.parametrize(("inbound", "most_outbound"), [(0, 8), (5, 5), (9, 1), (10, 0)])
async def test_inbound_keeps_its_share(tmp_path: Path, inbound: int, most_outbound: int) -> None:
    # Capacity 10 with a 0.2 reserve: at most 8 of ours, and never more than capacity with inbound.
    dialer = FakeDialer(ring_s=0.05, talk_s=0.1)
    async with rig(tmp_path, dialer, fast_clock(), slots=10, reserve=0.2) as r:
        r.load.inbound = inbound
        campaign = await r.campaign(numbers(16), CampaignOptions(concurrency=16, **QUICK))
        if most_outbound:
            await r.finished(campaign)
        else:
            await asyncio.sleep(0.3)
    assert dialer.max_live == most_outbound


async def test_dnc_numbers_are_never_dialled(tmp_path: Path) -> None:
    listed = numbers(4)
    dnc = tmp_path / "dnc.txt"
    dnc.write_text(f"{listed[1]}\n{listed[3]}\n")
    dialer = FakeDialer()
    async with rig(tmp_path, dialer, fast_clock(), dnc=str(dnc)) as r:
        rows = await r.finished(await r.campaign(listed, CampaignOptions(concurrency=2, **QUICK)))
    assert {n: row["outcome"] for n, row in rows.items()} == dict(
        zip(listed, ["human", "dnc", "human", "dnc"], strict=True)
    )
    assert dialer.dials[listed[1]] == dialer.dials[listed[3]] == 0
    assert rows[listed[1]]["attempts"] == 0


async def test_at_capacity_refusal_is_no_attempt(tmp_path: Path) -> None:
    dialer = FakeDialer(scripts={"+919800000000": ["refuse:at_capacity", "human"]})
    async with rig(tmp_path, dialer, fast_clock()) as r:
        options = CampaignOptions(concurrency=1, max_attempts=1, **QUICK)
        rows = await r.finished(await r.campaign(["+919800000000"], options))
    assert (rows["+919800000000"]["outcome"], rows["+919800000000"]["attempts"]) == ("human", 1)


async def test_an_end_never_heard_frees_its_slot_after_the_timeout(tmp_path: Path) -> None:
    listed = numbers(2)
    dialer = FakeDialer(scripts={listed[0]: ["silent"]})
    async with rig(tmp_path, dialer, fast_clock(), attempt_timeout_s=60.0) as r:
        options = CampaignOptions(concurrency=1, max_attempts=3, **QUICK)
        rows = await r.finished(await r.campaign(listed, options))
    lost = rows[listed[0]]
    assert (lost["outcome"], lost["last_status"], lost["attempts"]) == ("unknown", "lost", 1)  # not retried
    assert rows[listed[1]]["outcome"] == "human"


async def test_pause_resume_and_cancel(tmp_path: Path) -> None:
    dialer = FakeDialer(ring_s=0.0, talk_s=0.05)
    async with rig(tmp_path, dialer, fast_clock()) as r:
        options = CampaignOptions(concurrency=1, **QUICK)
        campaign = await r.campaign(numbers(6), options)
        await r.until(lambda: sum(dialer.dials.values()) >= 1)
        assert await r.store.set_state(campaign, "paused", ("running",))
        await asyncio.sleep(0.1)
        held = sum(dialer.dials.values())
        await asyncio.sleep(0.3)
        assert sum(dialer.dials.values()) == held  # nothing new while paused
        assert await r.store.set_state(campaign, "running", ("paused",))
        await r.until(lambda: sum(dialer.dials.values()) > held)
        assert await r.store.set_state(campaign, "cancelled", ("running", "paused"))
        await asyncio.sleep(0.3)
        cancelled_at = sum(dialer.dials.values())
        rows = await r.store.numbers(campaign, 10)
        await r.runner.settled()
    assert cancelled_at < 6
    assert sum(1 for row in rows if row["outcome"] == "cancelled") == 6 - cancelled_at


async def test_killed_mid_campaign_resumes_from_the_file_and_never_over_dials(tmp_path: Path) -> None:
    path = tmp_path / "campaigns.sqlite3"
    listed = numbers(20)
    scripts = {n: ["busy", "human"] for n in listed[:6]}
    first = FakeDialer(scripts=scripts, ring_s=0.02, talk_s=0.1)
    clock = fast_clock()
    options = CampaignOptions(concurrency=4, max_attempts=2, **QUICK)
    killed = await start_rig(path, first, clock)
    campaign = await killed.campaign(listed, options)
    await killed.until(lambda: sum(first.dials.values()) >= 8)
    # SIGKILL, as near as in-process gets: the task stops mid-flight, no cleanup, calls vanish unheard.
    killed.task.cancel()
    first.kill()
    second = FakeDialer(scripts=scripts, ring_s=0.02, talk_s=0.02, asked=first.asked.copy())
    restarted = await start_rig(path, second, clock)
    try:
        rows = await restarted.finished(campaign)
    finally:
        restarted.task.cancel()
        await restarted.store.close()
        await killed.store.close()
    for number in listed:
        total = first.dials[number] + second.dials[number]
        assert total == rows[number]["attempts"] <= options.max_attempts
    assert {row["state"] for row in rows.values()} <= {"done", "failed"}
    assert sum(second.dials.values()) > 0  # it resumed
