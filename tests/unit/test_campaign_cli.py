"""`voicebridge campaign …` against a control socket served in-process by the real ControlServer, over
campaigns run by the fake dialler: the commands, their output, and a refusal as one line and exit 1."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.fakes.dialer import FakeDialer, FakeLoad
from voicebridge.admission.registry import CallRegistry
from voicebridge.campaigns.dnc import DoNotCall
from voicebridge.campaigns.runner import CampaignRunner
from voicebridge.campaigns.service import Campaigns
from voicebridge.campaigns.store import CampaignStore
from voicebridge.cli.app import app
from voicebridge.cli.errors import CliError
from voicebridge.config.schema import CampaignsConfig
from voicebridge.server.control import ControlServer


@contextlib.asynccontextmanager
async def control_socket(tmp_path: Path, dialer: FakeDialer) -> AsyncIterator[Path]:
    store = CampaignStore(tmp_path / "campaigns.sqlite3")
    await store.open(0.0)
    runner = CampaignRunner(store, dialer, dialer, FakeLoad(dialer), DoNotCall(""), poll_s=0.01)
    task = asyncio.create_task(runner.run())
    path = tmp_path / "control.sock"
    control = ControlServer(
        CallRegistry(30, lambda: ""), path, dict, campaigns=Campaigns(store, runner, CampaignsConfig())
    )
    await control.start()
    try:
        yield path
    finally:
        await control.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.settled()
        await store.close()


async def cli(*args: str) -> Result:
    """The CLI in a thread: its socket client blocks, and the loop must keep serving the socket."""
    env = {"COLUMNS": "200", "NO_COLOR": "1"}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


def failure(result: Result) -> str:
    """The one line the CLI prints for a failed operation (the CliError `main` turns into it)."""
    assert isinstance(result.exception, CliError), result.output
    return str(result.exception)


@pytest.fixture
def listed(tmp_path: Path) -> Path:
    path = tmp_path / "list.csv"
    path.write_text("number,name\n+919800000001,Asha\n+919800000001,again\n+919800000002,Ravi\nbad,row\n")
    return path


async def test_run_status_pause_resume_cancel(tmp_path: Path, listed: Path) -> None:
    dialer = FakeDialer(ring_s=0.0, talk_s=0.0)
    async with control_socket(tmp_path, dialer) as sock:
        common = ["--socket", str(sock)]
        hours = ["--hours", "00:00-24:00", "--tz", "UTC", "--rate-per-minute", "600"]
        run = await cli(
            "campaign", "run", str(listed), "--concurrency", "2", "--max-attempts", "2", *hours, *common
        )
        assert run.exit_code == 0, run.output
        assert "campaign 1 started: 2 number(s), 1 duplicate(s) left out, 1 bad row(s)" in run.output
        assert "line 5: number is not E.164" in run.output
        async with asyncio.timeout(10):
            while True:
                answer = json.loads((await cli("campaign", "status", "1", "--json", *common)).output)
                if answer["state"] == "finished":
                    break
                await asyncio.sleep(0.05)
        shown = await cli("campaign", "status", "1", *common)
        assert shown.exit_code == 0, shown.output
        assert "finished" in shown.output and "2/2 numbers settled" in shown.output
        assert (answer["human"], answer["remaining"], answer["options"]["max_attempts"]) == (2, 0, 2)
        # A finished campaign cannot be paused: one line, exit 1.
        refused = await cli("campaign", "pause", "1", *common)
        assert refused.exit_code == 1 and "campaign 1 is finished" in failure(refused)
        second = await cli("campaign", "run", str(listed), "--hours", "03:00-03:01", "--tz", "UTC", *common)
        assert second.exit_code == 0, second.output
        for command, state in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
            moved = await cli("campaign", command, "2", *common)
            assert moved.output.strip() == f"campaign 2 {state}", moved.output
        every = await cli("campaign", "status", *common)
        assert "campaign 1" in every.output and "campaign 2" in every.output


async def test_bad_options_are_one_line(tmp_path: Path, listed: Path) -> None:
    async with control_socket(tmp_path, FakeDialer()) as sock:
        bad = await cli("campaign", "run", str(listed), "--tz", "Mars/Base", "--socket", str(sock))
        assert bad.exit_code == 1 and "unknown time zone 'Mars/Base'" in failure(bad)
        missing = await cli("campaign", "status", "7", "--socket", str(sock))
        assert missing.exit_code == 1 and "no campaign 7" in failure(missing)
