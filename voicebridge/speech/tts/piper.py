"""Piper TTS: the embedded default voice, synthesised off the event loop a sentence at a time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from piper import SynthesisConfig

from voicebridge.audio.resample import StreamResampler
from voicebridge.config.schema import TtsConfig
from voicebridge.speech.base import DEFAULT_VOICE, SpeechEngineError, Voice
from voicebridge.speech.languages import is_piper_voice
from voicebridge.speech.models import ModelCache, default_piper_path

_END = object()


class PiperTTS:
    """Local neural TTS; the configured voice shared by every call, other voices (a call's `Voice` naming an
    .onnx path) loaded on first use and kept by the model cache; bounded worker threads."""

    name = "piper"

    def __init__(self, config: TtsConfig, cache: ModelCache, workers: int = 2) -> None:
        self._cache = cache
        self._voice = cache.piper(config.voice or default_piper_path())
        self._syn_config = SynthesisConfig(length_scale=1.0 / config.rate)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="piper")
        self.native_rate: int = self._voice.config.sample_rate

    async def synthesize(
        self, text: str, sample_rate: int, voice: Voice = DEFAULT_VOICE
    ) -> AsyncIterator[bytes]:
        """Yield PCM16 at `sample_rate`, one chunk per sentence, as Piper finishes each; in the voice at
        `voice.name` when that is a Piper model path (an Azure name is spoken in the configured voice)."""
        if not text.strip():
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        path = voice.name if is_piper_voice(voice.name) else ""

        def produce() -> None:
            # Piper's generator synthesises lazily, so it must be iterated here, in the worker; a call's
            # own voice is loaded here too (once), off the event loop.
            try:
                engine = self._cache.piper_voice(path) if path else self._voice
                resampler = StreamResampler(engine.config.sample_rate, sample_rate)
                for chunk in engine.synthesize(text, self._syn_config):
                    if stop.is_set():
                        break
                    pcm = resampler.process(chunk.audio_int16_bytes)
                    if pcm:
                        loop.call_soon_threadsafe(queue.put_nowait, pcm)
                if not stop.is_set():
                    tail = resampler.flush()
                    if tail:
                        loop.call_soon_threadsafe(queue.put_nowait, tail)
            except Exception as exc:  # surfaced to the consumer as an engine error
                loop.call_soon_threadsafe(queue.put_nowait, SpeechEngineError(f"Piper TTS failed: {exc}"))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        worker = loop.run_in_executor(self._executor, produce)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, Exception):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            # A barge-in closes this generator early: tell the worker to stop after its current sentence.
            stop.set()
            if worker.done():
                worker.result()

    def close(self) -> None:
        """Stop the worker threads (pending syntheses finish their current sentence)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
