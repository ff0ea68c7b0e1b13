"""Doctor checks of the speech engines, run for real on a spoken sample, and of the CPUs sized from them.

Speech libraries are imported inside the checks that need them, so the rest of doctor starts quickly.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from voicebridge.config.schema import Settings
from voicebridge.doctor.report import Check, error_text

# "one two three" spoken by the shipped Piper voice: 0.9 s, 8 kHz mono PCM16, like a phone turn.
SAMPLE_WAV = Path(__file__).resolve().parents[1] / "data" / "doctor_sample.wav"
SAMPLE_TEXT = "one two three"
# A caller waits for STT before any reply can start; a short clip taking longer than this means the
# host is too slow (or too busy) for conversation, whatever else is tuned.
STT_BOUND_S = 3.0
# Piper's first sentence normally lands in ~0.1 s; a second of silence before the bot speaks is noticed.
TTS_FIRST_AUDIO_BOUND_S = 1.0
# A remote engine gets longer: it includes DNS, TLS and the service's own queueing.
AZURE_TIMEOUT_S = 10.0
# Capacity model: one caller turn per call every ~8 s (a few seconds of speech, then the bot's reply
# being played). STT is the shared, CPU-bound stage, so it is the one sized against the call limit;
# Piper shares the same CPUs, which is why the figure is reported rather than trusted to the last call.
SECONDS_BETWEEN_TURNS = 8.0


def check_stt(settings: Settings) -> tuple[Check, float | None]:
    """Load the Whisper model and transcribe the sample; also return the warm seconds per utterance."""
    from voicebridge.audio.wav import read_wav
    from voicebridge.speech.base import SpeechEngineError
    from voicebridge.speech.factory import build_local_stt
    from voicebridge.speech.models import ModelCache, default_whisper_path
    from voicebridge.speech.wer import word_error_rate

    name = "stt"
    path = settings.stt.model_path or default_whisper_path()
    if not (Path(path) / "model.bin").is_file():
        fix = "set stt.model_path to a CTranslate2 Whisper model directory"
        return Check(name, "fail", f"no Whisper model at {path} (model.bin missing)", fix), None
    pcm, rate = read_wav(SAMPLE_WAV)

    async def twice() -> tuple[float, float, str]:
        # The first pass pays one-off allocations; the second is what callers see in steady state, so
        # it is the figure held to the bound and used for throughput.
        cold = await engine.transcribe(pcm, rate)
        warm = await engine.transcribe(pcm, rate)
        return cold.processing_seconds, warm.processing_seconds, warm.text

    started = time.perf_counter()
    try:
        # The local model, used alone or standing by for a remote engine (check_remote_stt checks that).
        engine = build_local_stt(settings, ModelCache())
        loaded = time.perf_counter() - started
        cold, warm, text = asyncio.run(twice())
    except SpeechEngineError as exc:
        fix = "check stt.model_path points at a CTranslate2 Whisper model"
        return Check(name, "fail", error_text(exc), fix), None
    detail = (
        f"loaded in {loaded:.1f} s; {len(pcm) / 2 / rate:.1f} s sample heard as {text.strip()!r} "
        f"in {warm:.2f} s ({cold:.2f} s cold); model {path}"
    )
    if word_error_rate(SAMPLE_TEXT, text) > 0.34:  # one misheard word of the three is tolerated
        fix = f"the sample says {SAMPLE_TEXT!r}: check stt.model_path and stt.language"
        return Check(name, "warn", detail, fix), warm
    if warm > STT_BOUND_S:
        fix = f"over {STT_BOUND_S:.0f} s: use a faster host, fewer busy processes, or stt.beam_size = 1"
        return Check(name, "warn", detail, fix), warm
    return Check(name, "pass", detail), warm


def check_remote_stt(settings: Settings) -> Check:
    """Transcribe the sample on the configured remote STT server, without the local fallback."""
    from voicebridge.audio.wav import read_wav
    from voicebridge.speech.base import SpeechEngineError
    from voicebridge.speech.factory import build_remote_stt
    from voicebridge.speech.wer import word_error_rate

    name = "remote stt"
    stt = settings.stt
    if stt.engine == "whisper":
        return Check(name, "pass", "not used (stt.engine = whisper)")
    pcm, rate = read_wav(SAMPLE_WAV)
    engine = build_remote_stt(settings)

    async def once() -> tuple[str, float]:
        try:
            heard = await engine.transcribe(pcm, rate)
        finally:
            await engine.aclose()
        return heard.text, heard.processing_seconds

    # The server's own address is named (stt.url carries no credentials: the config refuses them).
    where = f"{stt.engine} at {stt.url}"
    try:
        text, seconds = asyncio.run(once())
    except SpeechEngineError as exc:
        # Calls still work while the local model stands in; without it, every turn would hear the apology.
        status = "warn" if stt.fallback else "fail"
        return Check(name, status, f"{where}: {error_text(exc)}", "check stt.url, stt.api_key and the server")
    detail = f"{where}: sample heard as {text.strip()!r} in {seconds:.2f} s"
    if word_error_rate(SAMPLE_TEXT, text) > 0.34:
        return Check(name, "warn", detail, f"the sample says {SAMPLE_TEXT!r}: check the server's model")
    return Check(name, "pass", detail)


def check_tts(settings: Settings) -> Check:
    """Synthesise a short phrase with the configured engine and time its first audio."""
    from voicebridge.speech.base import Closable, SpeechEngineError
    from voicebridge.speech.factory import build_tts
    from voicebridge.speech.models import ModelCache

    name = "tts"
    engine_name = settings.tts.engine
    if engine_name == "azure" and not settings.tts.azure_key.get_secret_value():
        fix = "set VOICEBRIDGE_TTS__AZURE_KEY or tts.azure_key"
        return Check(name, "fail", "tts.azure_key is not set", fix)
    try:
        engine = build_tts(settings, ModelCache())
    except SpeechEngineError as exc:
        fix = "set tts.voice to a Piper .onnx voice with its .onnx.json beside it"
        return Check(name, "fail", error_text(exc), fix)
    timeout = AZURE_TIMEOUT_S if engine_name == "azure" else None
    # From the config, not the engine: with a fallback configured the engine is a wrapper around Azure.
    endpoint = settings.tts.azure_endpoint if engine_name == "azure" else ""

    async def first_audio() -> tuple[float, int]:
        started = time.perf_counter()
        first, size = 0.0, 0
        async for piece in engine.synthesize("Hello, thanks for calling.", 8000):
            first = first or time.perf_counter() - started
            size += len(piece)
        return first, size

    try:
        first, size = asyncio.run(asyncio.wait_for(first_audio(), timeout))
    except TimeoutError:
        fix = f"check network access to {endpoint} and tts.azure_region"
        return Check(name, "fail", f"Azure TTS ({endpoint}) sent no audio within {timeout:.0f} s", fix)
    except SpeechEngineError as exc:
        fix = "check tts.azure_key, tts.azure_region (or tts.azure_host) and network access"
        return Check(name, "fail", error_text(exc), fix if engine_name == "azure" else "check tts.voice")
    finally:
        if isinstance(engine, Closable):  # an optional capability, declared in speech/base.py
            engine.close()
    if not size:
        return Check(name, "fail", f"{engine_name} produced no audio", "check tts.voice / tts.azure_voice")
    detail = f"{engine_name}{f' ({endpoint})' if endpoint else ''}: first audio in {first * 1000:.0f} ms"
    if first > TTS_FIRST_AUDIO_BOUND_S:
        return Check(name, "warn", detail, "callers hear a pause before each reply: use a faster host")
    return Check(name, "pass", detail)


def check_cpu(settings: Settings, stt_seconds: float | None) -> Check:
    """Measured STT throughput against one turn per call every SECONDS_BETWEEN_TURNS seconds."""
    name = "cpu"
    # The affinity mask, where the OS has one: taskset/cpusets restrict what the daemon may use.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    stt = settings.stt
    calls = settings.server.max_concurrent_calls
    if stt_seconds is None:
        return Check(name, "warn", f"{cpus} CPUs; no STT measurement to size against", "fix the stt check")
    from voicebridge.speech.stt import worker_count

    # The daemon never runs more workers than the cores can run at stt.threads each.
    parallel = worker_count(stt, cpus)
    throughput = parallel / max(stt_seconds, 1e-3)
    needed = calls / SECONDS_BETWEEN_TURNS
    detail = (
        f"{cpus} CPUs; STT ~{throughput:.1f} utterances/s ({parallel} workers, stt.threads "
        f"{stt.threads}, {stt_seconds:.2f} s each) vs {needed:.1f}/s needed for {calls} calls "
        f"(a turn per call every {SECONDS_BETWEEN_TURNS:.0f} s)"
    )
    if throughput >= needed:
        return Check(name, "pass", detail)
    fix = "lower server.max_concurrent_calls, or add CPUs (stt.workers = 0 uses them all)"
    return Check(name, "warn", detail, fix)
