"""The idle memory returner trims the heap once per busy spell, never while a call is live; Piper's
syntheses leave nothing behind that the trim cannot give back, and its phonemizer leaks nothing."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from dataclasses import dataclass
from typing import Any

from piper import espeakbridge

from voicebridge.admission.registry import CallRegistry
from voicebridge.config.schema import TtsConfig
from voicebridge.records.call_records import CallRecord
from voicebridge.server.memory import IdleMemoryReturner, glibc_malloc_trim, rss_bytes
from voicebridge.speech.espeak_leaks import plug_espeak_leaks
from voicebridge.speech.models import ModelCache, default_piper_path
from voicebridge.speech.tts.piper import PiperTTS


@dataclass
class QuietCall:
    """The least a registry needs of a live call."""

    call_sid: str

    def snapshot(self) -> dict[str, Any]:
        return {"call_sid": self.call_sid}

    async def hangup(self) -> None:
        return None

    async def transfer(self, number: str) -> None:
        return None

    async def end_for_shutdown(self) -> None:
        return None


def record(call_sid: str) -> CallRecord:
    return CallRecord(call_sid, "exotel", "+91", "+91", 0.0, 1.0, 1.0, 0, "completed", [])


async def test_trims_once_after_the_last_call_ends_and_not_while_calls_are_live() -> None:
    registry = CallRegistry(10)
    trims: list[int] = []
    returner = IdleMemoryReturner(registry, lambda: trims.append(registry.active_count) is None, 0.01)
    task = asyncio.create_task(returner.run())
    try:
        await asyncio.sleep(0.05)
        assert trims == []  # no call has ended yet: nothing to give back
        first, second = QuietCall("CA-1"), QuietCall("CA-2")
        assert registry.admit(first) and registry.admit(second)
        registry.finish(first, record("CA-1"))
        await asyncio.sleep(0.05)
        assert trims == []  # CA-2 is still live
        registry.finish(second, record("CA-2"))
        await asyncio.sleep(0.05)
        assert trims == [0] and returner.trims == 1  # once, with no call live
        await asyncio.sleep(0.05)
        assert returner.trims == 1  # idle and nothing new ended: no more trims
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_real_glibc_trim_runs() -> None:
    trim = glibc_malloc_trim()
    assert trim is not None  # these machines run glibc
    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # ~128 MB of small-ish heap, then freed
    del blocks
    assert isinstance(await asyncio.to_thread(trim), bool)


async def test_concurrent_piper_sentences_leave_nothing_the_idle_trim_cannot_return(
    model_cache: ModelCache,
) -> None:
    # onnxruntime's CPU arena keeps every synthesis's high-water mark where no trim reaches it: with it,
    # this grew 95-205 MB; without (as the voice's session now runs), one reading reached 51 MB.
    tts = PiperTTS(TtsConfig(), model_cache)
    trim = glibc_malloc_trim()
    assert trim is not None
    sentences = [
        "Thank you for calling. Your booking for Saturday the fourteenth at half past six is confirmed.",
        "We open at nine in the morning on weekdays, and at ten on Saturdays and Sundays.",
    ]

    async def say(text: str) -> int:
        return sum([len(pcm) async for pcm in tts.synthesize(text, 8000)])

    # Once as the calls will run it, so the worker threads and their malloc arenas exist.
    assert all(await asyncio.gather(*(say(text) for text in sentences)))
    await asyncio.to_thread(trim)
    before = rss_bytes()
    after: list[int] = []
    for _ in range(4):
        await asyncio.gather(*(say(text) for text in sentences))
        await asyncio.to_thread(trim)
        after.append(rss_bytes())
    tts.close()
    # The lowest reading: glibc's own fragmentation moves one reading by tens of MB; the arena's
    # growth is in every reading, since it never gives anything back.
    grown_mb = (min(after) - before) / 1e6
    assert grown_mb < 50, f"RSS grew {grown_mb:.0f} MB over eight sentences and stayed"


def test_phonemizing_a_sentence_leaks_neither_python_objects_nor_native_memory(
    model_cache: ModelCache,
) -> None:
    # piper-tts 1.8's espeak bridge kept ~2 KB a sentence for good (6 Python blocks and a native copy
    # of the voice): 40 MB and 120,000 blocks over these 20,000 sentences before espeak_leaks.
    voice = model_cache.piper(default_piper_path())
    trim = glibc_malloc_trim()
    assert trim is not None
    text = "You said: I need to change my booking. What time do you open on Saturday?"
    for _ in range(100):
        voice.phonemize(text)
    gc.collect()
    trim()
    blocks, rss = sys.getallocatedblocks(), rss_bytes()
    for _ in range(20_000):
        voice.phonemize(text)
    gc.collect()
    trim()
    assert sys.getallocatedblocks() - blocks < 2_000
    assert (rss_bytes() - rss) / 1e6 < 10
    bridge = (espeakbridge.set_voice, espeakbridge.get_phonemes)
    plug_espeak_leaks(voice)  # another voice loading: the bridge is wrapped once, not twice
    assert (espeakbridge.set_voice, espeakbridge.get_phonemes) == bridge
    # And it still phonemizes: punctuation, stress marks and sentence breaks as Piper expects.
    assert ["".join(sentence) for sentence in voice.phonemize("Hello there, friend. Bye!")] == [
        "həlˈoʊ ðˈɛɹ, fɹˈɛnd.",
        "bˈaɪ!",
    ]
