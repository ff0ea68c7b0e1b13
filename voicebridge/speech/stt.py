"""faster-whisper STT: one shared model, bounded worker threads, a VAD gate, and a short encoder window.

faster-whisper's `transcribe()` pads every utterance to a 30 s window, and on two CPU cores the encoder
pass over that window costs ~0.5 s whatever was said. Phone turns are a few seconds, so we encode a fixed
`stt.window_seconds` window (10 s by default: ~50 ms of encoder, 7.6% vs 6.5% WER in FACTS.md) and fall
back to the full 30 s path for longer audio.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from voicebridge.audio.codecs import pcm16_to_float32
from voicebridge.audio.resample import resample_once
from voicebridge.config import SttConfig
from voicebridge.speech.base import SpeechEngineError, Transcript
from voicebridge.speech.models import ModelCache, default_whisper_path

WHISPER_RATE = 16_000
FRAMES_PER_SECOND = 100
# Decoding from a short window loops unless bounded: ~8 tokens per second of speech is generous.
TOKENS_PER_SECOND = 8
TOKEN_SLACK = 16
# Whisper's own hallucination rule: drop text that is both likely silence and low-confidence.
LOW_LOGPROB = -1.0
# Keep a little context around the speech the VAD found; Whisper clips words cut dead.
SPEECH_PAD_S = 0.2


@dataclass(frozen=True, slots=True)
class _Decoded:
    text: str
    no_speech_prob: float


class WhisperSTT:
    """Local speech recognition shared by every call; at most `stt.workers` utterances decode at once."""

    name = "whisper"

    def __init__(self, config: SttConfig, cache: ModelCache) -> None:
        from faster_whisper.tokenizer import Tokenizer

        self._config = config
        self._model = cache.whisper(
            config.model_path or default_whisper_path(), config.threads, config.workers
        )
        multilingual = self._model.model.is_multilingual
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=config.language if multilingual else None,
        )
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._suppress = [t for t in self._tokenizer.non_speech_tokens] + [
            self._tokenizer.transcribe, self._tokenizer.translate, self._tokenizer.sot,
            self._tokenizer.sot_prev, self._tokenizer.sot_lm,
        ]  # fmt: skip
        self._window_frames = int(config.window_seconds * FRAMES_PER_SECOND)
        self._executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="whisper")
        self._lock = threading.Lock()
        self._submitted = 0
        self._running = 0

    @property
    def queue_depth(self) -> int:
        """Utterances waiting for a free worker (a sign that STT is the bottleneck)."""
        with self._lock:
            return self._submitted - self._running

    @property
    def in_flight(self) -> int:
        """Utterances being decoded right now."""
        with self._lock:
            return self._running

    async def transcribe(self, pcm16: bytes, sample_rate: int) -> Transcript:
        """Transcribe one utterance off the event loop; silence and noise give ""."""
        started = time.perf_counter()
        with self._lock:
            self._submitted += 1
        try:
            decoded = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._transcribe_blocking, pcm16, sample_rate
            )
        finally:
            with self._lock:
                self._submitted -= 1
        return Transcript(
            text=decoded.text,
            audio_seconds=len(pcm16) / 2 / sample_rate,
            processing_seconds=time.perf_counter() - started,
            engine=self.name,
            no_speech_prob=decoded.no_speech_prob,
        )

    def _transcribe_blocking(self, pcm16: bytes, sample_rate: int) -> _Decoded:
        with self._lock:
            self._running += 1
        try:
            audio = pcm16_to_float32(
                resample_once(pcm16[: len(pcm16) - len(pcm16) % 2], sample_rate, WHISPER_RATE)
            )
            speech = self._speech_only(audio)
            if speech is None:
                return _Decoded("", 1.0)
            if len(speech) / WHISPER_RATE <= self._config.window_seconds - 0.5:
                decoded = self._decode_window(speech)
                if decoded is not None:
                    return decoded
            return self._decode_full(speech)
        except SpeechEngineError:
            raise
        except Exception as exc:
            raise SpeechEngineError(f"Whisper failed: {exc}") from exc
        finally:
            with self._lock:
                self._running -= 1

    def _speech_only(self, audio: np.ndarray) -> np.ndarray | None:
        """Silero VAD (shipped with faster-whisper): the audio from first to last speech, or None."""
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        if len(audio) < WHISPER_RATE // 10:
            return None
        spans = get_speech_timestamps(
            audio, VadOptions(min_speech_duration_ms=120, min_silence_duration_ms=300)
        )
        if not spans:
            return None
        pad = int(SPEECH_PAD_S * WHISPER_RATE)
        return audio[max(0, spans[0]["start"] - pad) : spans[-1]["end"] + pad]

    def _decode_window(self, audio: np.ndarray) -> _Decoded | None:
        """Encode a fixed short window; None when the decode ran into its length bound (looping)."""
        from faster_whisper.transcribe import get_ctranslate2_storage

        window_samples = self._window_frames * WHISPER_RATE // FRAMES_PER_SECOND
        padded = np.pad(audio, (0, max(0, window_samples - len(audio))))
        features = self._model.feature_extractor(padded)[:, : self._window_frames]
        encoded = self._model.model.encode(get_ctranslate2_storage(features[None]), to_cpu=False)
        budget = int(TOKENS_PER_SECOND * len(audio) / WHISPER_RATE) + TOKEN_SLACK
        result = self._model.model.generate(
            encoded,
            [self._prompt],
            beam_size=self._config.beam_size,
            max_length=len(self._prompt) + budget,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        if len(tokens) >= budget:
            return None
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else -10.0
        if result.no_speech_prob > self._config.no_speech_threshold and avg_logprob < LOW_LOGPROB:
            return _Decoded("", result.no_speech_prob)
        return _Decoded(_clean(self._tokenizer.decode(tokens)), result.no_speech_prob)

    def _decode_full(self, audio: np.ndarray) -> _Decoded:
        segments, _info = self._model.transcribe(
            audio,
            beam_size=self._config.beam_size,
            language=self._config.language if self._model.model.is_multilingual else None,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        # The generator decodes lazily: iterating it here, in the worker thread, is where the work happens.
        kept, worst = [], 0.0
        for segment in segments:
            worst = max(worst, segment.no_speech_prob)
            if (
                segment.no_speech_prob > self._config.no_speech_threshold
                and segment.avg_logprob < LOW_LOGPROB
            ):
                continue
            kept.append(segment.text)
        return _Decoded(_clean(" ".join(kept)), worst)

    def close(self) -> None:
        """Release the worker threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _clean(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if re.search(r"[A-Za-z0-9]", text) else ""
