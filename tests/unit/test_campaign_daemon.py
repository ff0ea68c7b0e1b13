"""Campaigns in the daemon, in-process: the cleanup context opens the store and runs the runner, the
management API and the control socket drive it (hostile input refused and counted), a restart over the
same state directory resumes a running campaign, and with no provider set up to dial nothing is dialled
(nor given up on)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.fakes.dialer import FakeDialer
from tests.unit.test_server_startup import PooledSTT, PooledTTS
from voicebridge.config.schema import Settings
from voicebridge.server import app as app_module
from voicebridge.server.control import ControlServer
from voicebridge.server.keys import ATTEMPTS, CAMPAIGNS, DIALER, METRICS, REGISTRY
from voicebridge.speech.factory import Engines

TOKEN = "campaign-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIST = "number,name\n" + "".join(f"+9198000{i:05d},n{i}\n" for i in range(6))
ALL_DAY = {"hours": "00:00-24:00", "tz": "UTC", "rate_per_minute": 6000, "concurrency": 2}


def settings_in(tmp_path: Path) -> Settings:
    return Settings(
        server={
            "host": "127.0.0.1",
            "port": 0,
            "state_dir": str(tmp_path / "state"),
            # A trusted proxy makes the management API take only the bearer token.
            "trusted_proxies": ["10.0.0.0/8"],
        },
        management={"token": TOKEN},
        campaigns={"retry_base_s": 1, "max_attempts": 2},
        control={"socket_path": str(tmp_path / "control.sock")},
    )


async def client_for(tmp_path: Path, dialer: FakeDialer | None) -> TestClient[Any, Any]:
    app = app_module.create_app(settings_in(tmp_path), Engines(stt=PooledSTT([]), tts=PooledTTS([])))
    if dialer is not None:  # in place of the daemon's own dialler (which would reach a provider)
        app[DIALER] = dialer
        app[ATTEMPTS] = dialer  # type: ignore[assignment]
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def status(client: TestClient[Any, Any], campaign: int) -> dict[str, Any]:
    response = await client.get(f"/api/campaigns/{campaign}?numbers=1", headers=AUTH)
    assert response.status == 200
    return dict(await response.json())


async def until_state(client: TestClient[Any, Any], campaign: int, state: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while (answer := await status(client, campaign))["state"] != state:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return answer


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], FakeDialer]]:
    dialer = FakeDialer(ring_s=0.01, talk_s=0.01)
    client = await client_for(tmp_path, dialer)
    yield client, dialer
    await client.close()


async def test_a_campaign_over_the_management_api(daemon: tuple[TestClient[Any, Any], FakeDialer]) -> None:
    client, dialer = daemon
    assert (await client.post("/api/campaigns", json={"csv": LIST})).status == 401  # management auth
    response = await client.post("/api/campaigns", json={"csv": LIST, **ALL_DAY}, headers=AUTH)
    assert response.status == 201
    created = await response.json()
    assert (created["numbers"], created["bad_rows"]) == (6, 0)
    finished = await until_state(client, created["id"], "finished")
    assert (finished["human"], finished["remaining"], finished["dialled"]) == (6, 0, 6)
    assert {req.context["name"] for req in dialer.requests} == {f"n{i}" for i in range(6)}
    listing = await (await client.get("/api/campaigns", headers=AUTH)).json()
    assert [c["id"] for c in listing["campaigns"]] == [created["id"]]
    # A finished campaign cannot be paused.
    assert (await client.post(f"/api/campaigns/{created['id']}/pause", headers=AUTH)).status == 409


@pytest.mark.parametrize(
    ("body", "status_code"),
    [
        ("not json", 400),
        ("[1, 2]", 400),
        (json.dumps({"csv": LIST, "concurency": 4}), 400),  # a typo is refused, not ignored
        (json.dumps({"csv": LIST, "concurrency": "4"}), 400),
        (json.dumps({"csv": LIST, "concurrency": True}), 400),
        (json.dumps({"csv": LIST, "concurrency": 10**400}), 400),
        (json.dumps({"csv": LIST, "rate_per_minute": -1}), 400),
        (json.dumps({"csv": LIST, "hours": "9-5"}), 400),
        (json.dumps({"csv": LIST, "tz": "../../etc/passwd"}), 400),
        (json.dumps({"csv": LIST, "from": "12345"}), 400),
        (json.dumps({"csv": "phone\n+919800000000\n"}), 400),
        (json.dumps({"csv": "number\nnope\n"}), 400),
        (json.dumps({"csv": 5}), 400),
        ("[" * 5000, 400),
    ],
)
async def test_hostile_campaign_bodies_are_counted_4xx(
    daemon: tuple[TestClient[Any, Any], FakeDialer], body: str, status_code: int
) -> None:
    client, dialer = daemon
    response = await client.post(
        "/api/campaigns", data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status == status_code
    assert not (await response.json())["ok"]
    assert b"voicebridge_http_rejections_total{reason=" in client.app[METRICS].render()
    assert dialer.requests == []


@pytest.mark.parametrize("ref", ["abc", "0", "-1", "9" * 40, "1.5"])
async def test_bad_campaign_ids_are_400_and_unknown_ones_404(
    daemon: tuple[TestClient[Any, Any], FakeDialer], ref: str
) -> None:
    client, _ = daemon
    assert (await client.get(f"/api/campaigns/{ref}", headers=AUTH)).status == 400
    assert (await client.post(f"/api/campaigns/{ref}/cancel", headers=AUTH)).status == 400
    assert (await client.get("/api/campaigns/999", headers=AUTH)).status == 404


async def test_a_restart_resumes_a_running_campaign_and_never_over_dials(tmp_path: Path) -> None:
    first = FakeDialer(
        scripts={f"+9198000{i:05d}": ["busy", "human"] for i in range(3)}, ring_s=0.05, talk_s=1.0
    )
    client = await client_for(tmp_path, first)
    created = await (await client.post("/api/campaigns", json={"csv": LIST, **ALL_DAY}, headers=AUTH)).json()
    async with asyncio.timeout(10):
        while sum(first.dials.values()) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    first.kill()  # the calls die with the daemon: their ends are never heard
    await client.close()
    second = FakeDialer(scripts=first.scripts, ring_s=0.01, talk_s=0.01, asked=first.asked.copy())
    client = await client_for(tmp_path, second)
    try:
        finished = await until_state(client, created["id"], "finished")
    finally:
        await client.close()
    assert sum(second.dials.values()) > 0  # resumed at start-up, nobody asked it to
    for row in finished["rows"]:
        total = first.dials[row["number"]] + second.dials[row["number"]]
        assert total == row["attempts"] <= 2, row


async def test_with_no_provider_set_up_to_dial_nothing_is_dialled_nor_given_up(tmp_path: Path) -> None:
    client = await client_for(tmp_path, None)
    try:
        created = await (
            await client.post("/api/campaigns", json={"csv": LIST, **ALL_DAY}, headers=AUTH)
        ).json()
        await asyncio.sleep(0.5)
        answer = await status(client, created["id"])
    finally:
        await client.close()
    assert (answer["state"], answer["dialled"], answer["remaining"]) == ("running", 0, 6)


async def control_exchange(path: Path, lines: list[bytes]) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    answers = []
    for line in lines:
        writer.write(line + b"\n")
        await writer.drain()
        answers.append(json.loads(await reader.readline()))
    writer.close()
    return answers


async def test_campaign_ops_over_the_control_socket(
    tmp_path: Path, daemon: tuple[TestClient[Any, Any], FakeDialer]
) -> None:
    client, dialer = daemon
    app: web.Application = client.app
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(LIST)
    control = ControlServer(
        app[REGISTRY], tmp_path / "c.sock", dict, metrics=app[METRICS], campaigns=app[CAMPAIGNS]
    )
    await control.start()
    try:
        run = {"version": 1, "op": "campaign_run", "path": str(csv_path), **ALL_DAY, "concurrency": 1}
        hostile = [
            {"version": 1, "op": "campaign_run", "path": "list.csv"},  # relative: whose working directory?
            {"version": 1, "op": "campaign_run", "path": str(tmp_path / "missing.csv")},
            {"version": 1, "op": "campaign_run", "path": str(csv_path), "max_attempts": 99},
            {"version": 1, "op": "campaign_run", "path": str(csv_path), "bogus": 1},
            {"version": 1, "op": "campaign_pause", "campaign": [1]},
            {"version": 1, "op": "campaign_status", "campaign": 12345},
        ]
        answers = await control_exchange(
            tmp_path / "c.sock", [json.dumps(r).encode() for r in (run, *hostile)]
        )
        assert answers[0]["ok"], answers[0]
        campaign = answers[0]["result"]["id"]
        assert [a.get("code") for a in answers[1:]] == [
            "bad_request",
            "bad_list",
            "bad_request",
            "bad_request",
            "bad_request",
            "unknown_campaign",
        ]
        rendered = app[METRICS].render().decode()
        assert 'voicebridge_control_refusals_total{code="bad_request"} 4.0' in rendered
        moves = [{"version": 1, "op": f"campaign_{op}", "campaign": campaign} for op in ("pause", "resume")]
        answers = await control_exchange(tmp_path / "c.sock", [json.dumps(m).encode() for m in moves])
        assert [a["result"]["state"] for a in answers] == ["paused", "running"]
        await until_state(client, campaign, "finished")
        [done] = await control_exchange(
            tmp_path / "c.sock",
            [json.dumps({"version": 1, "op": "campaign_status", "campaign": campaign}).encode()],
        )
        assert done["result"]["human"] == 6
        assert sum(dialer.dials.values()) == 6  # the refused requests dialled nothing
    finally:
        await control.close()
