"""The control socket: a private directory, and one JSON reply for every line whatever it holds."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomli_w

from voicebridge.admission.registry import CallRegistry
from voicebridge.cli.control_client import ControlClient, DaemonUnreachable
from voicebridge.config.schema import Settings
from voicebridge.server.control import ControlServer, ControlSocketError
from voicebridge.server.metrics import Metrics
from voicebridge.sim.daemon import free_port, start_daemon


def test_control_socket_follows_an_absolute_xdg_runtime_dir_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert Settings().control_socket_path() == tmp_path / "run" / "voicebridge" / "control.sock"
    fallback = Path(tempfile.gettempdir()) / f"voicebridge-{os.getuid()}"
    for ignored in ("run/user/1000", ""):
        monkeypatch.setenv("XDG_RUNTIME_DIR", ignored)
        assert Settings().control_socket_path() == fallback / "voicebridge" / "control.sock"


def fallback_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ControlServer:
    """A control server on the default path with no runtime dir: the private fallback under $TMPDIR."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = Settings().control_socket_path()
    assert path == tmp_path / f"voicebridge-{os.getuid()}" / "voicebridge" / "control.sock"
    return ControlServer(CallRegistry(4), path, dict)


async def test_the_fallback_directory_is_created_private(
    short_tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fallback_server(short_tmp_path, monkeypatch)
    await server.start()
    try:
        private = short_tmp_path / f"voicebridge-{os.getuid()}"
        assert stat.S_IMODE(private.stat().st_mode) == 0o700 and private.stat().st_uid == os.geteuid()
        assert server.path.is_socket()
    finally:
        await server.close()


@pytest.mark.parametrize("attack", ["world_writable", "group_writable", "not_ours", "symlink"])
async def test_a_fallback_directory_someone_else_could_control_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    server = fallback_server(tmp_path, monkeypatch)
    private = tmp_path / f"voicebridge-{os.getuid()}"
    if attack == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        private.symlink_to(tmp_path / "elsewhere")
    else:
        private.mkdir()
        private.chmod({"world_writable": 0o777, "group_writable": 0o770, "not_ours": 0o700}[attack])
    if attack == "not_ours":
        if os.geteuid() != 0:
            pytest.fail("run as root to hand the directory to another uid")
        os.chown(private, os.geteuid() + 4242, -1)
    with pytest.raises(ControlSocketError) as refused:
        await server.start()
    message = str(refused.value)
    assert str(private) in message and "\n" not in message
    assert not (private / "voicebridge").exists() and not (tmp_path / "elsewhere" / "voicebridge").exists()


@pytest.mark.e2e
def test_a_daemon_refuses_a_world_writable_fallback_directory_in_one_line(tmp_path: Path) -> None:
    private = tmp_path / f"voicebridge-{os.getuid()}"
    private.mkdir()
    private.chmod(0o777)
    config = tmp_path / "daemon.toml"
    config.write_text(tomli_w.dumps({"server": {"port": free_port(), "state_dir": str(tmp_path / "state")}}))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VOICEBRIDGE_") and k not in ("XDG_RUNTIME_DIR", "RUNTIME_DIRECTORY")
    }
    result = subprocess.run(
        [sys.executable, "-m", "voicebridge", "serve", "--config", str(config)],
        env={**env, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    (refusal,) = [line for line in output.splitlines() if "control socket directory" in line]
    assert "ERROR" in refusal and "writable by group or others" in refusal and str(private) in refusal
    assert not (private / "voicebridge").exists()


DEEP = 20_000
HOSTILE_LINES: list[tuple[bytes, str]] = [
    (b"[" * 30_000, "bad_request"),
    (b"[" * DEEP + b"]" * DEEP, "bad_request"),
    (b'{"version": ' + b"7" * 5_000 + b', "op": "list"}', "bad_request"),
    (
        b'{"version": 1, "op": "show", "call_sid": "CA-' + b"9" * 5_000 + b'"}',
        "bad_call_sid",
    ),  # over 64 characters
    (b'\xff\xfe{"version": 1, "op": "list"}', "bad_request"),
    (b'{"version": 1, "op": "\xed\xa0\x80"}', "bad_request"),
    (b'{"version": NaN, "op": "list"}', "bad_request"),
    (b'{"version": 1, "op": "list", "id": Infinity}', "bad_request"),
    (b'{"version": true, "op": "list"}', "bad_version"),
    (b'{"version": "' + b"v" * 50_000 + b'", "op": "list"}', "bad_version"),
    (b'{"version": 1, "op": "' + b"x" * 50_000 + b'"}', "unknown_op"),
    (b'{"version": 1, "op": "show", "call_sid": {"a": [1, 2]}}', "bad_request"),
    (b'{"version": 1, "op": ["list"]}', "unknown_op"),
    (b'{"version": 1, "op": "list", "id": ' + b"[" * 900 + b"]" * 900 + b"}", ""),
    (b"", "bad_request"),
    (b"\x00\x01\x02", "bad_request"),
]


async def exchange(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every hostile line on one connection, then a status request: the replies, in order."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
    replies = []
    try:
        for line, _ in HOSTILE_LINES:
            writer.write(line + b"\n")
            await writer.drain()
            raw = await asyncio.wait_for(reader.readline(), 30)
            assert raw.endswith(b"\n"), (line[:60], raw)
            replies.append(json.loads(raw))
        writer.write(b'{"version": 1, "op": "status", "id": "last"}\n')
        await writer.drain()
        status = json.loads(await asyncio.wait_for(reader.readline(), 30))
    finally:
        writer.close()
    return replies, status


async def too_large(path: Path) -> dict[str, Any]:
    """A line beyond the request limit gets one reply, and the connection goes on with the next line."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
    try:
        for size in (300_000, 64 * 1024 - 1, 64 * 1024, 2_000_000):
            writer.write(b'{"version": 1, "op": "' + b"a" * size + b'"}\n')
            await writer.drain()
            reply = json.loads(await asyncio.wait_for(reader.readline(), 30))
            assert reply["code"] == "too_large", (size, reply)
            writer.write(b'{"version": 1, "op": "status", "id": 1}\n')
            await writer.drain()
            assert json.loads(await asyncio.wait_for(reader.readline(), 30))["id"] == 1
    finally:
        writer.close()
    return reply


def check_replies(replies: list[dict[str, Any]], status: dict[str, Any]) -> None:
    for (line, code), reply in zip(HOSTILE_LINES, replies, strict=True):
        assert reply["version"] == 1, line[:60]
        if code:
            assert not reply["ok"] and reply["code"] == code, (line[:60], reply)
            assert len(reply["error"]) < 300
        else:
            assert reply["ok"] and "id" not in reply  # an id that is not a short string or number is dropped
    assert status["ok"] and status["id"] == "last"


async def test_every_hostile_line_gets_one_json_reply_in_process(tmp_path: Path) -> None:
    unhandled: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    server = ControlServer(CallRegistry(4), tmp_path / "c.sock", lambda: {"status": "ok"})
    await server.start()
    try:
        replies, status = await exchange(server.path)
        check_replies(replies, status)
        assert (await too_large(server.path))["code"] == "too_large"
        replies, status = await exchange(server.path)  # and the server still serves new connections
        check_replies(replies, status)
    finally:
        await server.close()
        loop.set_exception_handler(None)
    assert unhandled == []


@pytest.mark.e2e
async def test_every_hostile_line_gets_one_json_reply_from_a_real_daemon(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"prompts": {"greeting": "Hello."}})
    try:
        replies, status = await exchange(daemon.control_socket)
        check_replies(replies, status)
        assert status["result"]["status"] == "ok"
        assert (await too_large(daemon.control_socket))["code"] == "too_large"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{daemon.http}/metrics") as response:
                metrics = await response.text()
        assert "voicebridge_unhandled_exceptions_total 0.0" in metrics
        assert "Traceback" not in daemon.log()
    finally:
        assert daemon.terminate() == 0


@pytest.mark.parametrize(
    "answer", [b"[" * 30_000 + b"\n", b'{"ok": ' + b"1" * 5_000 + b"}\n", b"\xff\xfe\n", b"x" * 5_000_000]
)
async def test_the_client_turns_a_hostile_answer_into_one_error(tmp_path: Path, answer: bytes) -> None:
    """Something else on the socket path (or a broken daemon) answering garbage: a clean error, no crash."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(answer)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(reply, path=str(tmp_path / "odd.sock"))
    try:
        client = ControlClient(tmp_path / "odd.sock", timeout=30)
        with pytest.raises(DaemonUnreachable) as failed:
            await asyncio.to_thread(client.request, "list")
    finally:
        server.close()
    assert "\n" not in str(failed.value) and len(str(failed.value)) < 300


def test_doctor_fails_a_fallback_directory_the_daemon_would_refuse(
    short_tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voicebridge.doctor.checks import check_control_socket

    server = fallback_server(short_tmp_path, monkeypatch)
    assert check_control_socket(Settings()).status == "pass"  # absent: it will be created 0700
    private = server.path.parent.parent
    private.mkdir()
    private.chmod(0o757)
    check = check_control_socket(Settings())
    assert check.status == "fail" and "writable by group or others" in check.detail, check
    private.chmod(0o700)
    assert check_control_socket(Settings()).status == "pass"


# --- #14 review: refusals counted and logged, the last line, the client's check, group, no blocking ---


async def test_each_refused_line_is_counted_and_logged_on_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    server = ControlServer(CallRegistry(4), tmp_path / "c.sock", dict, metrics=metrics)
    await server.start()
    caplog.set_level(logging.INFO, logger="voicebridge.control")
    try:
        reader, writer = await asyncio.open_unix_connection(str(server.path), limit=1 << 20)
        for line in (b"[[[", b'{"version": 1, "op": "nope\\nINFO forged line"}', b'{"version": 2}'):
            writer.write(line + b"\n")
            await writer.drain()
            await asyncio.wait_for(reader.readline(), 30)
        writer.close()
    finally:
        await server.close()
    counted = {
        code: metrics.registry.get_sample_value("voicebridge_control_refusals_total", {"code": code})
        for code in ("bad_request", "unknown_op", "bad_version")
    }
    assert counted == {"bad_request": 1, "unknown_op": 1, "bad_version": 1}
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 3 and all("\n" not in message and len(message) < 400 for message in refusals)


async def test_an_over_long_last_line_without_a_newline_gets_its_reply(tmp_path: Path) -> None:
    server = ControlServer(CallRegistry(4), tmp_path / "c.sock", dict)
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(server.path), limit=1 << 20)
        writer.write(b'{"version": 1, "op": "' + b"a" * 200_000 + b'"}')
        await writer.drain()
        writer.write_eof()
        reply = json.loads(await asyncio.wait_for(reader.readline(), 30))
        writer.close()
    finally:
        await server.close()
    assert reply["code"] == "too_large"


def test_the_client_refuses_a_fallback_directory_someone_else_could_control(
    short_tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A squatter's directory: the CLI must not hand it a transfer, nor believe its answers."""
    path = fallback_server(short_tmp_path, monkeypatch).path
    path.parent.mkdir(parents=True)
    path.parent.parent.chmod(0o777)
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind(str(path))
    squatter.listen(1)
    squatter.settimeout(0.5)
    try:
        with pytest.raises(DaemonUnreachable) as refused:
            ControlClient(path, timeout=5).request("transfer", call_sid="CA1", number="+15550001111")
        with pytest.raises(TimeoutError):
            squatter.accept()  # nothing ever connected
    finally:
        squatter.close()
    message = str(refused.value)
    assert "writable by group or others" in message and "\n" not in message


async def test_a_group_on_the_private_fallback_directory_is_refused_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = fallback_server(tmp_path, monkeypatch).path
    group = grp.getgrgid(os.getgid()).gr_name
    server = ControlServer(CallRegistry(4), path, dict, group=group)
    with pytest.raises(ControlSocketError) as refused:
        await server.start()
    assert "control.socket_path" in str(refused.value) and "XDG_RUNTIME_DIR" in str(refused.value)


def fill_backlog(path: Path) -> list[socket.socket]:
    """Connect until the listener's accept backlog is full (the next connect answers EAGAIN)."""
    fillers = []
    while True:
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        filler.setblocking(False)
        fillers.append(filler)
        try:
            filler.connect(str(path))
        except BlockingIOError:
            return fillers


async def test_a_busy_live_daemon_is_seen_as_live_because_the_loop_stays_free(tmp_path: Path) -> None:
    """The stale-socket probe runs off the loop: a live server on this very loop, whose accept backlog is
    full, accepts the probe. (Probed on the loop, nothing accepts, the probe times out, and the live
    socket was taken for stale and removed.)"""
    path = tmp_path / "c.sock"
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    live = await asyncio.start_unix_server(hold, path=str(path), backlog=1)
    fillers = fill_backlog(path)  # with no await, so the live server accepts none of them yet
    try:
        with pytest.raises(ControlSocketError, match="another voicebridge answers"):
            await ControlServer(CallRegistry(4), path, dict).start()
        assert path.is_socket()
    finally:
        for filler in fillers:
            filler.close()
        for writer in held:
            writer.close()
        live.close()


async def test_a_live_daemon_that_accepts_nothing_for_long_is_still_not_taken_for_stale(
    tmp_path: Path,
) -> None:
    """EAGAIN means something listens: however long its backlog stays full, its socket is left alone.
    (A probe that retried EAGAIN for a second and then took the socket for stale removed a live
    daemon's socket whenever that daemon was stuck for longer.)"""
    path = tmp_path / "c.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)  # and never accepts
    fillers = fill_backlog(path)
    try:
        with pytest.raises(ControlSocketError, match="another voicebridge answers"):
            await ControlServer(CallRegistry(4), path, dict).start()
        assert path.is_socket()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
