"""A campaign that really dials (issue 17, acceptance): a real daemon, the Exotel REST fake placing each
call and streaming back with the URL it was given, the node backend fake taking the records.

20 numbers: 10 people, 5 busy, 3 no-answer, 2 answering machines; concurrency 4, two attempts each,
retries a second apart. The daemon is SIGKILLed mid-campaign and restarted on the same port and state:
the campaign resumes and finishes with the right outcome per number, never more than 4 calls at once, no
number dialled more often than its attempts allow, and one record set per call that streamed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.fakes.node_api import FakeNodeApi
from tests.wire.test_operator_cli import no_traceback, voicebridge
from voicebridge.sim.daemon import DaemonProcess, free_port, start_daemon
from voicebridge.sim.provider_rest import Answer, FakeProviderRest

pytestmark = pytest.mark.e2e

MANAGEMENT = "management-token-campaign"
PEOPLE = [f"+9198000010{index:02d}" for index in range(10)]
BUSY = [f"+9198000020{index:02d}" for index in range(5)]
NO_ANSWER = [f"+9198000030{index:02d}" for index in range(3)]
MACHINES = [f"+9198000040{index:02d}" for index in range(2)]


def machine_answer(speak: Callable[[str, int], bytes]) -> bytes:
    greeting = speak("You have reached the Rao family. Please leave a message after the tone.", 8000)
    t = np.arange(4000) / 8000
    return greeting + bytes(1600) + (np.sin(2 * np.pi * 1000 * t) * 12000).astype("<i2").tobytes()


async def campaign_rows(daemon: DaemonProcess, campaign: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {MANAGEMENT}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{daemon.http}/api/campaigns/{campaign}?numbers=1", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def test_a_campaign_dials_retries_survives_sigkill_and_finishes(
    tmp_path: Path, speak: Callable[[str, int], bytes]
) -> None:
    hello = speak("Hello? Yes, speaking.", 8000)
    listed = tmp_path / "list.csv"
    listed.write_text("number,batch\n" + "".join(f"{n},b1\n" for n in PEOPLE + BUSY + NO_ANSWER + MACHINES))
    port = free_port()
    async with (
        FakeNodeApi(api_key="k") as backend,
        FakeProviderRest("exotel", Answer(pick_up=hello)) as exotel,
    ):
        for number in BUSY:
            exotel.script(number, Answer(outcome="busy", ring_s=0.2))
        for number in NO_ANSWER:
            exotel.script(number, Answer(outcome="no-answer", ring_s=0.5))
        for number in MACHINES:
            exotel.script(number, Answer(pick_up=machine_answer(speak), machine_records_s=30))
        overrides: dict[str, dict[str, Any]] = {
            "server": {"port": port, "max_concurrent_calls": 10},
            "prompts": {
                "outbound_greeting": "Hello, this is Sunrise Clinic.",
                "voicemail_message": "Call us.",
            },
            "backend": {"kind": "node", "url": backend.url, "api_key": "k"},
            "outbox": {"retry_base_s": 0.2, "retry_cap_s": 1.0},
            "management": {"token": MANAGEMENT},
            "exotel": {
                "account_sid": "acme",
                "api_key": "key",
                "api_token": "secret",
                "api_base": exotel.url,
                "caller_id": "+918047491899",
            },
            "campaigns": {"retry_base_s": 1, "retry_cap_s": 2, "inbound_reserve": 0.2},
        }
        first = await asyncio.to_thread(start_daemon, tmp_path / "d", overrides)
        try:
            run = await asyncio.to_thread(
                voicebridge,
                "campaign",
                "run",
                str(listed),
                "--concurrency",
                "4",
                "--max-attempts",
                "2",
                "--rate-per-minute",
                "600",
                "--hours",
                "00:00-24:00",
                "--tz",
                "UTC",
                "--socket",
                str(first.control_socket),
            )
            no_traceback(run)
            assert run.returncode == 0, run.stderr + first.log()
            # Mid-campaign: some calls done, some live.
            deadline = time.monotonic() + 60
            while sum(call.done.is_set() for call in exotel.calls.values()) < 6:
                assert time.monotonic() < deadline, first.log()[-3000:]
                await asyncio.sleep(0.2)
        finally:
            first.process.kill()  # SIGKILL: no drain, no cleanup
            await asyncio.to_thread(first.process.wait, 10)
        second = await asyncio.to_thread(start_daemon, tmp_path / "d", overrides)
        try:
            deadline = time.monotonic() + 180
            while (status := await campaign_rows(second, 1))["state"] != "finished":
                assert time.monotonic() < deadline, (status, second.log()[-3000:])
                await asyncio.sleep(0.5)
            rows = {row["number"]: row for row in status["rows"]}
            dialled = Counter(form["From"] for form in exotel.requests)
            for number in PEOPLE + BUSY + NO_ANSWER + MACHINES:
                # An attempt is written before its dial is sent: a kill between the two leaves an attempt
                # that never reached the provider (under-dialled, never over).
                assert 1 <= dialled[number] <= rows[number]["attempts"] <= 2, (number, rows[number])
            for number in BUSY:
                assert (rows[number]["outcome"], rows[number]["attempts"]) == ("busy", 2), rows[number]
            for number in NO_ANSWER:
                assert (rows[number]["outcome"], rows[number]["attempts"]) == ("no-answer", 2), rows[number]
            assert sum(dialled[number] for number in BUSY + NO_ANSWER) >= 2 * len(BUSY + NO_ANSWER) - 4
            for number in MACHINES:
                assert rows[number]["outcome"] in ("machine", "interrupted"), rows[number]
            for number in PEOPLE:
                assert rows[number]["outcome"] in ("human", "interrupted"), rows[number]
            # The kill cut at most the calls that were live then; everyone else got their answer.
            finished = [n for n in PEOPLE + MACHINES if rows[n]["outcome"] != "interrupted"]
            assert len(finished) >= len(PEOPLE + MACHINES) - 4, rows
            assert 2 <= exotel.most_live <= 4, exotel.most_live
            # One record set per call that streamed to a daemon that lived to keep it: the ended event
            # once per call sid (a number dialled twice would show two sids), none doubled.
            streamed = {
                sid for sid, call in exotel.calls.items() if call.greeted and call.form["From"] in finished
            }
            ended = Counter(key.split(":")[0] for key in backend.records if key.endswith(":event:ended"))
            for sid in streamed:
                assert ended[sid] == 1, (sid, sorted(backend.records))
            assert "Traceback" not in second.log()
        finally:
            assert second.terminate() == 0
