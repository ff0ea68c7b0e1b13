"""`voicebridge doctor` as an operator runs it: a real process, real models, a scrubbed environment."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from voicebridge.config.load import SYSTEM_CONFIG_PATH
from voicebridge.sim.daemon import free_port

ALL_CHECKS = [
    "config",
    "listen port",
    "public url",
    "authentication",
    "stt",
    "remote stt",
    "languages",
    "tts",
    "backend",
    "control socket",
    "state dir",
    "open files",
    "cpu",
]


def run_doctor(
    home: Path, *args: str, config: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `voicebridge doctor` in `home` with no VOICEBRIDGE_* or systemd variables leaking in."""
    (home / "home").mkdir(exist_ok=True)
    (home / "run").mkdir(exist_ok=True)
    if config is not None:
        (home / "vb.toml").write_text(tomli_w.dumps(config))
        args = (*args, "--config", "vb.toml")
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("VOICEBRIDGE_") and key not in ("RUNTIME_DIRECTORY", "STATE_DIRECTORY")
    }
    # COLUMNS: rich would wrap the table at 80 columns when not on a terminal, splitting long values.
    clean |= {"HOME": str(home / "home"), "XDG_RUNTIME_DIR": str(home / "run"), "COLUMNS": "250"}
    result = subprocess.run(
        [sys.executable, "-m", "voicebridge", "doctor", *args],
        cwd=home,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def checks_of(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    """The --json document's checks by name (after checking its shape)."""
    document = json.loads(result.stdout)
    assert document["ok"] is (result.returncode == 0)
    return {check["name"]: check for check in document["checks"]}


@pytest.fixture(scope="module")
def default_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[subprocess.CompletedProcess[str]]]:
    """The default config (only server.port moved to a free port), run once as JSON and once as a table."""
    home = tmp_path_factory.mktemp("doctor-default")
    config = {"server": {"port": free_port()}}
    return home, [run_doctor(home, "--json", config=config), run_doctor(home, config=config)]


def test_default_config_passes_every_check(
    default_runs: tuple[Path, list[subprocess.CompletedProcess[str]]],
) -> None:
    home, (result, _) = default_runs
    assert result.returncode == 0, result.stdout + result.stderr
    checks = checks_of(result)
    assert list(checks) == ALL_CHECKS
    assert [name for name, check in checks.items() if check["status"] == "fail"] == []
    assert re.search(r"in \d+\.\d\d s", checks["stt"]["detail"]), checks["stt"]
    assert re.search(r"first audio in \d+ ms", checks["tts"]["detail"]), checks["tts"]
    assert "utterances/s" in checks["cpu"]["detail"] and "CPUs" in checks["cpu"]["detail"]
    # The directories come from the scrubbed HOME and XDG_RUNTIME_DIR, and nothing was created.
    assert str(home / "run" / "voicebridge" / "control.sock") in checks["control socket"]["detail"]
    assert str(home / "home" / ".local" / "state" / "voicebridge") in checks["state dir"]["detail"]
    assert not (home / "run" / "voicebridge").exists() and not (home / "home" / ".local").exists()
    assert checks["public url"]["status"] == "warn" and checks["public url"]["fix"]
    assert (
        checks["languages"]["status"] == "pass"
        and "stt.language en: transcribed" in checks["languages"]["detail"]
    )


def test_default_table_shows_every_check_with_its_status(
    default_runs: tuple[Path, list[subprocess.CompletedProcess[str]]],
) -> None:
    _, (_, table) = default_runs
    assert table.returncode == 0, table.stdout + table.stderr
    lines = table.stdout.splitlines()
    header = next(line for line in lines if "status" in line)
    assert all(column in header for column in ("check", "detail", "fix"))
    for name in ALL_CHECKS:
        assert any(re.search(rf"\b(PASS|WARN)\b\s*│ {name}\s", line) for line in lines), name
    assert "0 failed" in table.stdout and "FAIL" not in table.stdout


def test_no_config_at_all_passes_unless_8080_is_taken(tmp_path: Path) -> None:
    if SYSTEM_CONFIG_PATH.exists():
        pytest.skip(f"{SYSTEM_CONFIG_PATH} exists on this machine and would be used")
    result = run_doctor(tmp_path, "--json")
    checks = checks_of(result)
    assert list(checks) == ALL_CHECKS
    failed = [name for name, check in checks.items() if check["status"] == "fail"]
    if result.returncode != 0:  # tolerated only when this machine already uses the default port
        assert failed == ["listen port"] and "port 8080" in checks["listen port"]["detail"], checks
    assert checks["config"]["detail"].startswith("no config file")


def test_bad_value_is_one_fail_row_naming_the_key(tmp_path: Path) -> None:
    result = run_doctor(tmp_path, "--json", config={"stt": {"beam_size": 0}})
    assert result.returncode == 1
    checks = checks_of(result)
    assert list(checks) == ["config"] and checks["config"]["status"] == "fail"
    assert "stt.beam_size" in checks["config"]["detail"] and checks["config"]["fix"]

    table = run_doctor(tmp_path, config={"stt": {"beam_size": 0}})
    assert table.returncode == 1 and "FAIL" in table.stdout and "stt.beam_size" in table.stdout

    from_env = run_doctor(tmp_path, "--json", env={"VOICEBRIDGE_SERVER__PORT": "70000"})
    assert from_env.returncode == 1
    assert "VOICEBRIDGE_SERVER__PORT" in from_env.stdout and "server.port" in from_env.stdout


def test_port_in_use_dead_backend_and_missing_azure_key_each_fail(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = {
            "server": {"port": port},
            "backend": {"kind": "node", "url": dead},
            "tts": {"engine": "azure"},
        }
        result = run_doctor(tmp_path, "--json", config=config)
    assert result.returncode == 1
    checks = checks_of(result)
    assert list(checks) == ALL_CHECKS
    assert checks["listen port"] == {
        "name": "listen port",
        "status": "fail",
        "detail": f"port {port} on 127.0.0.1 is in use",
        "fix": "stop whatever holds it or set server.port",
    }
    assert checks["backend"]["status"] == "fail"
    assert f"{dead}/v1/health unreachable: connection refused" in checks["backend"]["detail"]
    assert checks["tts"]["status"] == "fail" and "tts.azure_key" in checks["tts"]["detail"]
    assert "VOICEBRIDGE_TTS__AZURE_KEY" in checks["tts"]["fix"]
    assert checks["stt"]["status"] == "pass"  # one broken part does not hide the others


@pytest.fixture
def rejecting_backend() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server that answers 401 to everything and records the Authorization headers it got."""
    seen: list[str] = []

    class Reject(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Reject)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()
    server.server_close()


def test_keys_are_sent_but_never_printed(tmp_path: Path, rejecting_backend: tuple[str, list[str]]) -> None:
    url, seen = rejecting_backend
    azure_host = f"wss://127.0.0.1:{free_port()}"  # nothing listens: fails at once, internet or not
    config = {
        "server": {"port": free_port()},
        "tts": {"engine": "azure", "azure_host": azure_host},
        "backend": {"kind": "openai", "url": url},
    }
    secrets = {
        "VOICEBRIDGE_TTS__AZURE_KEY": "AZ-MARKER-5150",
        "VOICEBRIDGE_BACKEND__API_KEY": "BK-MARKER-8086",
    }
    as_json = run_doctor(tmp_path, "--json", config=config, env=secrets)
    table = run_doctor(tmp_path, config=config, env=secrets)
    assert as_json.returncode == 1 and table.returncode == 1
    checks = checks_of(as_json)
    assert checks["tts"]["status"] == "fail" and azure_host in checks["tts"]["detail"]
    assert checks["backend"]["status"] == "fail"
    assert f"{url}/models rejected the API key" in checks["backend"]["detail"]
    assert seen == ["Bearer BK-MARKER-8086"] * 2
    for result in (as_json, table):
        for secret in secrets.values():
            assert secret not in result.stdout + result.stderr


def test_port_held_by_a_running_voicebridge_is_a_warning(tmp_path: Path) -> None:
    control = tmp_path / "run" / "voicebridge" / "control.sock"
    control.parent.mkdir(parents=True)
    with socket.socket() as holder, socket.socket(socket.AF_UNIX) as daemon:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        daemon.bind(str(control))
        daemon.listen()
        port = holder.getsockname()[1]
        result = run_doctor(tmp_path, "--json", config={"server": {"port": port}})
    assert result.returncode == 0, result.stdout
    check = checks_of(result)["listen port"]
    assert check["status"] == "warn" and f"port {port}" in check["detail"] and str(control) in check["detail"]


def test_hindi_on_the_english_only_model_fails_stt_and_languages_naming_the_fix(tmp_path: Path) -> None:
    """Issue 16, item 3: stt.language "hi" with tiny.en is a clear error; a number's Hindi is a warning
    (those calls fall back), and each configured language gets its line."""
    config = {
        "server": {"port": free_port()},
        "stt": {"language": "hi"},
        "numbers": {"+918047491899": {"language": "ta-IN"}},
    }
    result = run_doctor(tmp_path, "--json", config=config)
    assert result.returncode == 1, result.stdout + result.stderr
    checks = checks_of(result)
    assert checks["stt"]["status"] == "fail" and "English-only" in checks["stt"]["detail"]
    languages = checks["languages"]
    assert languages["status"] == "fail" and "README" in languages["fix"]
    assert "stt.language hi: " in languages["detail"] and "needs a multilingual" in languages["detail"]
    assert "numbers.'+918047491899'.language ta-IN: " in languages["detail"]


async def test_the_remote_stt_server_is_checked_on_its_own(tmp_path: Path) -> None:
    """The server hears the sample (not the local model standing by); a dead one warns while the local
    model stands in, and fails when nothing does."""
    from tests.fakes.transcription_server import FakeWyoming

    async with FakeWyoming(text="One, two, three.") as server:
        config = {"server": {"port": free_port()}, "stt": {"engine": "wyoming", "url": server.url}}
        result = await asyncio.to_thread(run_doctor, tmp_path, "--json", config=config)
    check = checks_of(result)["remote stt"]
    assert check["status"] == "pass" and check["detail"].startswith(
        f"wyoming at {server.url}: sample heard as"
    )
    assert len(server.heard) == 1 and server.heard[0].rate == 8000
    dead = f"tcp://127.0.0.1:{free_port()}"
    for fallback, status in (("whisper", "warn"), ("", "fail")):
        config = {
            "server": {"port": free_port()},
            "stt": {"engine": "wyoming", "url": dead, "fallback": fallback},
        }
        check = checks_of(await asyncio.to_thread(run_doctor, tmp_path, "--json", config=config))[
            "remote stt"
        ]
        assert check["status"] == status and "connection refused" in check["detail"], check
