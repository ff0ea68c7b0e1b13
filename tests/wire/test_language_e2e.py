"""Issue 16, items 2 and 3, over the wire: a real daemon applies the called business's voice, language and
system prompt (from the node backend, or from a [numbers] table with no node backend), and refuses to start
with a language its Whisper model cannot do."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomli_w

from tests.fakes.node_api import FakeNodeApi
from tests.fakes.openai_server import FakeOpenAI
from voicebridge.sim.azure_speech import FakeAzureSpeech
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon

pytestmark = pytest.mark.e2e

CALLED = "+918047491899"
Speak = Any


async def metric(http: str, pattern: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as response:
        found = re.search(rf"^{pattern} (\S+)$", await response.text(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_the_node_business_voice_and_language_reach_azure_and_stt(tmp_path: Path, speak: Speak) -> None:
    azure = FakeAzureSpeech(pieces=2, piece_seconds=0.3)
    business = {"voice": "hi-IN-SwaraNeural", "language": "hi-IN", "system_prompt": "Speak Hindi."}
    daemon: DaemonProcess | None = None
    await azure.__aenter__()
    try:
        async with FakeNodeApi(businesses={CALLED: business}) as node:
            overrides = {
                "prompts": {"greeting": "Hello."},
                "tts": {"engine": "azure", "azure_key": "fake-key", "azure_host": azure.host_url},
                "backend": {"kind": "node", "url": node.url, "api_key": "node-key"},
            }
            daemon = await asyncio.to_thread(start_daemon, tmp_path, overrides)
            at_start = len(azure.ssml_received)  # the fixed phrases, rendered once in the config's voice
            assert set(azure.voices_received) == {"en-IN-NeerjaNeural"}
            assert set(azure.languages_received) == {"en-IN"}
            async with SimulatedCaller(
                f"{daemon.ws}/ws/stream/CA-lang", call_sid="CA-lang", to_number=CALLED
            ) as caller:
                await caller.listen_until_mark(timeout=20)
                turn = await caller.turn(speak("What time do you open on Sunday?", 8000), timeout=30)
                assert turn.mark_at is not None, daemon.log()
                await caller.stop()
            assert node.seen("/v1/business")[0].query == {"to": CALLED}
        # The call's reply: the business's voice, and its language as xml:lang.
        assert azure.voices_received[at_start:] and set(azure.voices_received[at_start:]) == {
            "hi-IN-SwaraNeural"
        }
        assert set(azure.languages_received[at_start:]) == {"hi-IN"}
        # The fixed phrases in the call's voice too: the greeting first (the caller heard it in that voice),
        # then the others (re-prompt, goodbye, ...) for whatever the call says later.
        in_call_voice = azure.ssml_received[at_start:]
        assert "Hello." in in_call_voice[0], in_call_voice[0]
        for phrase in ("Are you still there?", "Thank you for calling. Goodbye.", "One moment, please."):
            assert any(phrase in ssml for ssml in in_call_voice), phrase
        # tiny.en cannot do Hindi: the turn was transcribed in English, logged once and counted.
        assert await metric(daemon.http, "voicebridge_stt_language_fallbacks_total") >= 1
        assert daemon.log().count("'hi-IN' needs a multilingual Whisper model") == 1
    finally:
        if daemon is not None:
            daemon.terminate()
        await azure.__aexit__(None, None, None)


async def test_a_number_table_gives_the_openai_backend_its_system_prompt(
    tmp_path: Path, speak: Speak
) -> None:
    """No node backend: the [numbers] table is the business lookup."""
    async with FakeOpenAI() as openai:
        overrides = {
            "prompts": {"greeting": "Hello."},
            "backend": {"kind": "openai", "url": openai.url, "api_key": "sk-fake", "model": "m"},
            "numbers": {CALLED: {"system_prompt": "You are the clinic's receptionist. Answer in Hindi."}},
        }
        daemon = await asyncio.to_thread(start_daemon, tmp_path, overrides)
        try:
            async with SimulatedCaller(
                f"{daemon.ws}/ws/stream/CA-prompt", call_sid="CA-prompt", to_number=CALLED
            ) as caller:
                await caller.listen_until_mark(timeout=20)
                turn = await caller.turn(speak("Do you open on Sunday?", 8000), timeout=30)
                assert turn.mark_at is not None, daemon.log()
                await caller.stop()
        finally:
            daemon.terminate()
    assert openai.bodies, "the backend was never asked"
    system = openai.bodies[0]["messages"][0]
    assert system == {"role": "system", "content": "You are the clinic's receptionist. Answer in Hindi."}


def test_hindi_with_the_english_only_model_refuses_to_start(tmp_path: Path) -> None:
    config = {
        "server": {"port": 0, "state_dir": str(tmp_path / "state")},
        "control": {"socket_path": str(tmp_path / "control.sock")},
        "stt": {"language": "hi"},
    }
    (tmp_path / "vb.toml").write_text(tomli_w.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "voicebridge", "serve", "--config", str(tmp_path / "vb.toml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "stt.language: language 'hi' needs a multilingual Whisper model" in output
    assert "English-only" in output and "Traceback" not in output
