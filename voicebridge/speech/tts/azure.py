"""Azure TTS through the Speech SDK: raw PCM at the call's rate, streamed as the service sends it.

We ask the service for the call's own rate (8/16/24 kHz raw PCM) so nothing is resampled, and forward
each `synthesizing` chunk as it lands so the first audio leaves before the sentence is finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import azure.cognitiveservices.speech as speechsdk

from voicebridge.config.schema import TtsConfig
from voicebridge.speech.base import DEFAULT_VOICE, SpeechEngineError, Voice
from voicebridge.speech.languages import is_azure_voice, is_piper_voice, ssml_language

FORMATS = {
    8000: speechsdk.SpeechSynthesisOutputFormat.Raw8Khz16BitMonoPcm,
    16000: speechsdk.SpeechSynthesisOutputFormat.Raw16Khz16BitMonoPcm,
    24000: speechsdk.SpeechSynthesisOutputFormat.Raw24Khz16BitMonoPcm,
}


class _Done:
    """The synthesis finished; `audio` is all of it, the ground truth for what the events delivered."""

    def __init__(self, audio: bytes = b"") -> None:
        self.audio = audio


class _Live:
    """The synthesizer of one utterance while it speaks, shared with a stop under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.synthesizer: speechsdk.SpeechSynthesizer | None = None
        self.closed = False


def _stop(live: _Live) -> None:
    with live.lock:
        synthesizer = live.synthesizer
    if synthesizer is not None:
        synthesizer.stop_speaking_async().get()


def azure_voice_name(voice: Voice, config: TtsConfig) -> str:
    """The Azure voice for a call's `Voice`: its name when that is an Azure voice name, else azure_voice."""
    name = voice.name
    return name if name and not is_piper_voice(name) and is_azure_voice(name) else config.azure_voice


def build_ssml(text: str, config: TtsConfig, voice: Voice = DEFAULT_VOICE) -> str:
    """SSML for one utterance: the call's voice (else azure_voice) and language as `xml:lang` (else the
    voice's locale), optional speaking style, speaking rate; the text XML-escaped."""
    name = azure_voice_name(voice, config)
    language = ssml_language(voice.language, name)
    body = f"<prosody rate={quoteattr(f'{round((config.rate - 1) * 100):+d}%')}>{escape(text)}</prosody>"
    if config.azure_style:
        body = f"<mstts:express-as style={quoteattr(config.azure_style)}>{body}</mstts:express-as>"
    return (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" '
        f'xmlns:mstts="https://www.w3.org/2001/mstts" xml:lang={quoteattr(language)}>'
        f"<voice name={quoteattr(name)}>{body}</voice></speak>"
    )


class AzureTTS:
    """Azure neural voices: one SpeechConfig per output rate, one (cheap) synthesizer per utterance."""

    name = "azure"

    def __init__(self, config: TtsConfig, workers: int = 32) -> None:
        key = config.azure_key.get_secret_value()
        if not key:
            raise SpeechEngineError("Azure TTS needs tts.azure_key (or VOICEBRIDGE_TTS__AZURE_KEY)")
        self._config = config
        self._key = key
        self.endpoint = config.azure_endpoint
        self._speech_configs: dict[int, speechsdk.SpeechConfig] = {}
        # A worker waits on the network for a whole utterance, so size for concurrent calls, not cores.
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="azure-tts")
        # Stops run apart from the workers: a barge-in must not queue behind busy syntheses.
        self._stopper = ThreadPoolExecutor(max_workers=4, thread_name_prefix="azure-tts-stop")

    def _speech_config(self, sample_rate: int) -> speechsdk.SpeechConfig:
        # The output format lives on the SpeechConfig, so keep one per rate; synthesizers copy it.
        if sample_rate not in self._speech_configs:
            config = self._config
            if config.azure_host:
                speech_config = speechsdk.SpeechConfig(host=config.azure_host, subscription=self._key)
            else:
                speech_config = speechsdk.SpeechConfig(subscription=self._key, region=config.azure_region)
            speech_config.set_speech_synthesis_output_format(FORMATS[sample_rate])
            self._speech_configs[sample_rate] = speech_config
        return self._speech_configs[sample_rate]

    async def synthesize(
        self, text: str, sample_rate: int, voice: Voice = DEFAULT_VOICE
    ) -> AsyncIterator[bytes]:
        """Yield PCM16 at `sample_rate` as the service streams it, in chunks of at least 20 ms, in the
        call's voice and language (the voice is named in the SSML, so one SpeechConfig serves them all)."""
        if sample_rate not in FORMATS:
            raise SpeechEngineError(f"Azure TTS cannot produce {sample_rate} Hz (8000, 16000 or 24000)")
        if not text.strip():
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        speech_config = self._speech_config(sample_rate)
        live = _Live()

        def on_chunk(event: Any) -> None:
            # SDK callback thread: hand the chunk to the loop, never touch asyncio objects here.
            if not live.closed and event.result.audio_data:
                loop.call_soon_threadsafe(queue.put_nowait, bytes(event.result.audio_data))

        def run() -> None:
            # The synthesizer lives and dies in this thread: its destructor closes the websocket and waits
            # for the close handshake (a round trip, ~1 s if unanswered), which must never block the loop.
            synthesizer: speechsdk.SpeechSynthesizer | None = None
            done = _Done()
            try:
                synthesizer = speechsdk.SpeechSynthesizer(speech_config=speech_config, audio_config=None)
                synthesizer.synthesizing.connect(on_chunk)
                with live.lock:
                    if live.closed:  # closed before a worker was free: don't start at all
                        return
                    live.synthesizer = synthesizer
                result = synthesizer.speak_ssml_async(build_ssml(text, self._config, voice)).get()
                if result.reason == speechsdk.ResultReason.Canceled and not live.closed:
                    details = result.cancellation_details
                    error = self._error(f"{details.reason}: {details.error_details}")
                    loop.call_soon_threadsafe(queue.put_nowait, error)
                else:
                    done = _Done(bytes(result.audio_data or b""))
            except Exception as exc:  # the SDK's own failures reach the consumer as one line
                loop.call_soon_threadsafe(queue.put_nowait, self._error(str(exc)))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)
                with live.lock:
                    live.synthesizer = None
                if synthesizer is not None:
                    synthesizer.synthesizing.disconnect_all()

        loop.run_in_executor(self._executor, run)  # run() reports everything, errors too, via the queue
        min_bytes = sample_rate // 50 * 2  # 20 ms of PCM16: fewer, fuller frames for the pacer
        delivered = 0
        pending = b""
        try:
            while not isinstance(item := await queue.get(), _Done):
                if isinstance(item, Exception):
                    raise item
                assert isinstance(item, bytes)
                delivered += len(item)
                pending += item
                if len(pending) >= min_bytes:
                    cut = len(pending) & ~1  # whole samples only
                    yield pending[:cut]
                    pending = pending[cut:]
            # The SDK can fire the last `synthesizing` event after the result completes: send what it missed.
            tail = pending + item.audio[delivered:]
            if len(tail) >= 2:
                yield tail[: len(tail) & ~1]
        finally:
            with live.lock:
                live.closed = True
                speaking = live.synthesizer is not None
            if speaking:
                # Closed early (barge-in): stop the service sending, without making the caller wait for
                # the socket to close; the worker returns once it has.
                with contextlib.suppress(RuntimeError):  # after close(): the process is going away
                    self._stopper.submit(_stop, live)

    def _error(self, details: str) -> SpeechEngineError:
        condensed = " ".join((details or "no details").split()).replace(self._key, "********")
        return SpeechEngineError(f"Azure TTS ({self.endpoint}) failed: {condensed[:300]}")

    def close(self) -> None:
        """Release the worker threads; syntheses already started or queued still finish (none hangs)."""
        self._executor.shutdown(wait=False)
        self._stopper.shutdown(wait=False)
