"""Azure TTS through the Speech SDK: raw PCM at the call's rate, streamed as the service sends it.

We ask the service for the call's own rate (8/16/24 kHz raw PCM) so nothing is resampled, and forward
each `synthesizing` chunk as it lands so the first audio leaves before the sentence is finished.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import azure.cognitiveservices.speech as speechsdk

from voicebridge.config import TtsConfig
from voicebridge.speech.base import SpeechEngineError

FORMATS = {
    8000: speechsdk.SpeechSynthesisOutputFormat.Raw8Khz16BitMonoPcm,
    16000: speechsdk.SpeechSynthesisOutputFormat.Raw16Khz16BitMonoPcm,
    24000: speechsdk.SpeechSynthesisOutputFormat.Raw24Khz16BitMonoPcm,
}


class _Done:
    """The synthesis finished; `audio` is all of it, the ground truth for what the events delivered."""

    def __init__(self, audio: bytes = b"") -> None:
        self.audio = audio


def build_ssml(text: str, config: TtsConfig) -> str:
    """SSML for one utterance: voice, optional speaking style, speaking rate; the text XML-escaped."""
    language = "-".join(config.azure_voice.split("-")[:2]) or "en-US"
    body = f"<prosody rate={quoteattr(f'{round((config.rate - 1) * 100):+d}%')}>{escape(text)}</prosody>"
    if config.azure_style:
        body = f"<mstts:express-as style={quoteattr(config.azure_style)}>{body}</mstts:express-as>"
    return (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" '
        f'xmlns:mstts="https://www.w3.org/2001/mstts" xml:lang={quoteattr(language)}>'
        f"<voice name={quoteattr(config.azure_voice)}>{body}</voice></speak>"
    )


class AzureTTS:
    """Azure neural voices; one SpeechConfig per process, one synthesizer per utterance (they are cheap)."""

    name = "azure"

    def __init__(self, config: TtsConfig, workers: int = 4) -> None:
        key = config.azure_key.get_secret_value()
        if not key:
            raise SpeechEngineError("Azure TTS needs tts.azure_key (or VOICEBRIDGE_TTS__AZURE_KEY)")
        self._config = config
        self._key = key
        self.endpoint = config.azure_host or f"region {config.azure_region}"
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="azure-tts")

    def _speech_config(self, sample_rate: int) -> speechsdk.SpeechConfig:
        if self._config.azure_host:
            speech_config = speechsdk.SpeechConfig(host=self._config.azure_host, subscription=self._key)
        else:
            speech_config = speechsdk.SpeechConfig(subscription=self._key, region=self._config.azure_region)
        speech_config.set_speech_synthesis_output_format(FORMATS[sample_rate])
        return speech_config

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Yield PCM16 at `sample_rate` as the service streams it."""
        if sample_rate not in FORMATS:
            raise SpeechEngineError(f"Azure TTS cannot produce {sample_rate} Hz (8000, 16000 or 24000)")
        if not text.strip():
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        synthesizer = speechsdk.SpeechSynthesizer(
            speech_config=self._speech_config(sample_rate), audio_config=None
        )
        finished = threading.Event()

        def on_chunk(event: Any) -> None:
            # SDK callback thread: hand the chunk to the loop, never touch asyncio objects here.
            if not finished.is_set() and event.result.audio_data:
                loop.call_soon_threadsafe(queue.put_nowait, bytes(event.result.audio_data))

        synthesizer.synthesizing.connect(on_chunk)

        def run() -> None:
            done = _Done()
            try:
                result = synthesizer.speak_ssml_async(build_ssml(text, self._config)).get()
                if result.reason == speechsdk.ResultReason.Canceled and not finished.is_set():
                    details = result.cancellation_details
                    error = self._error(details.reason, details.error_details)
                    loop.call_soon_threadsafe(queue.put_nowait, error)
                else:
                    done = _Done(bytes(result.audio_data or b""))
            except Exception as exc:  # the SDK's own failures reach the consumer as one line
                loop.call_soon_threadsafe(queue.put_nowait, SpeechEngineError(f"Azure TTS failed: {exc}"))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = loop.run_in_executor(self._executor, run)
        delivered = 0
        try:
            while not isinstance(item := await queue.get(), _Done):
                if isinstance(item, Exception):
                    raise item
                assert isinstance(item, bytes)
                delivered += len(item)
                yield item
            # The SDK can fire the last `synthesizing` event after the result completes: send what it missed.
            if len(item.audio) > delivered:
                yield item.audio[delivered:]
        finally:
            finished.set()
            if not worker.done():
                # Closed early (barge-in): stop the service sending; the worker returns once it has.
                await loop.run_in_executor(self._executor, lambda: synthesizer.stop_speaking_async().get())
            synthesizer.synthesizing.disconnect_all()

    def _error(self, reason: object, details: str) -> SpeechEngineError:
        condensed = " ".join((details or "no details").split()).replace(self._key, "********")
        return SpeechEngineError(f"Azure TTS ({self.endpoint}) failed: {reason}: {condensed[:240]}")

    def close(self) -> None:
        """Release the worker threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
