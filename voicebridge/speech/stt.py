"""faster-whisper STT: one shared model, bounded worker threads, a VAD gate and a short encoder window.

faster-whisper's `transcribe()` pads every utterance to a 30 s window, and on two CPU cores the encoder
pass over that window costs ~0.5 s whatever was said. Phone turns are a few seconds, so we encode a fixed
`stt.window_seconds` window (10 s by default: 0.12 s per 3 s utterance instead of 0.50 s, for about one
point of WER in bench/stt_bench.py) and fall back to the full 30 s path only for longer speech.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from voicebridge.audio.codecs import pcm16_to_float32
from voicebridge.audio.resample import resample_once
from voicebridge.config.schema import SttConfig
from voicebridge.speech.base import SpeechEngineError, SttCapacity, Transcript
from voicebridge.speech.models import ModelCache, default_whisper_path
from voicebridge.speech.scheduler import LoopSchedulers, SttScheduler, always_confirmed
from voicebridge.speech.whisper_languages import WhisperLanguages

if TYPE_CHECKING:
    from faster_whisper.vad import VadOptions

WHISPER_RATE = 16_000
FRAMES_PER_SECOND = 100
# Room left after the last word inside the window, so speech never runs into the window's edge.
WINDOW_MARGIN_S = 0.5
# Silence put around a clip before the VAD looks at it (see the threshold below).
VAD_LEAD_IN_S = 0.3
# How much audio before the first word Whisper gets: real or, when the clip has less, silence.
LEAD_IN_S = 0.5
# Context kept around the speech when a long clip is trimmed to fit the short window.
TRIM_PAD_S = 0.4
# Decoding from a short window loops unless bounded: ~8 tokens per second of speech is generous.
TOKENS_PER_SECOND = 8
TOKEN_SLACK = 16
# Whisper's own hallucination rule: text that is both likely silence and low-confidence is dropped.
LOW_LOGPROB = -1.0
# Bracketed captions ("[BLANK_AUDIO]", "(music)") and music notes are never words a caller said.
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|[♪♫*]+")

logger = logging.getLogger("voicebridge.stt")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and systemd narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count(config: SttConfig, cores: int) -> int:
    """Decoding workers: `stt.workers`, or cores // threads when 0, never threads × workers > cores.

    Each worker runs `stt.threads` CTranslate2 threads; more than the cores can run makes every
    utterance slower and none sooner (the encoder is compute-bound).
    """
    fit = max(1, cores // config.threads)
    return fit if config.workers == 0 else min(config.workers, fit)


class _Decoded(NamedTuple):
    text: str
    no_speech_prob: float
    language: str = ""


class WhisperSTT(SttCapacity):
    """Local speech recognition shared by every call; at most `stt.workers` utterances decode at once."""

    name = "whisper"

    def __init__(
        self,
        config: SttConfig,
        cache: ModelCache,
        on_language_fallback: Callable[[str], None] = lambda _language: None,
    ) -> None:
        from faster_whisper.transcribe import get_suppressed_tokens
        from faster_whisper.vad import VadOptions, get_vad_model

        self._config = config
        cores = usable_cores()
        self.workers = worker_count(config, cores)
        if config.workers > self.workers:
            logger.warning(
                "stt.workers = %d with stt.threads = %d would oversubscribe %d cores; using %d workers",
                config.workers,
                config.threads,
                cores,
                self.workers,
            )
        path = config.model_path or default_whisper_path()
        self._model = cache.whisper(path, config.threads, self.workers)
        self._multilingual: bool = self._model.model.is_multilingual
        # Raises at start-up when stt.language is one the model cannot do (an English-only model and "hi").
        self.languages = WhisperLanguages(
            self._model.hf_tokenizer, self._multilingual, config.language, path, on_language_fallback
        )
        tokenizer = self.languages.tokenizer(self.languages.default or "en")
        self._suppress = list(get_suppressed_tokens(tokenizer, [-1]))
        # Threshold 0.25 (Silero's default is 0.5) with silence around the clip: over 200 renders of
        # one-word answers that missed none, where 0.5 unpadded missed 35; white noise to 3000 RMS,
        # brown noise, hum, clicks, tones and DTMF still gave no speech.
        self._vad_options: VadOptions = VadOptions(
            threshold=0.25, min_speech_duration_ms=120, min_silence_duration_ms=300, speech_pad_ms=0
        )
        get_vad_model()  # load the (process-wide) Silero session now, not on the first caller's turn
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="whisper")
        self._schedulers = LoopSchedulers(self.workers)
        self._running = 0

    @property
    def queue_depth(self) -> int:
        """Utterances waiting for a free worker (a sign that STT is the bottleneck)."""
        return self._schedulers.waiting

    @property
    def in_flight(self) -> int:
        """Utterances being decoded right now."""
        return self._running

    async def transcribe(
        self,
        pcm16: bytes,
        sample_rate: int,
        confirmed: Callable[[], bool] = always_confirmed,
        language: str = "",
    ) -> Transcript:
        """Transcribe one utterance off the event loop in the call's language; silence and noise give ""."""
        code = self.languages.resolve(language)  # None: detect it
        if sample_rate <= 0:
            raise SpeechEngineError(f"Whisper STT needs a positive sample rate, not {sample_rate}")
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        scheduler = self._schedulers.current()
        queued = await scheduler.acquire(confirmed)
        self._running += 1
        try:
            work = loop.run_in_executor(self._executor, self._transcribe_blocking, pcm16, sample_rate, code)
        except RuntimeError as exc:  # the executor was shut down by close()
            self._running -= 1
            scheduler.release()
            raise SpeechEngineError(f"Whisper STT is closed: {exc}") from None
        # Keep the worker until the thread is really done, even if this caller is cancelled (barge-in).
        work.add_done_callback(lambda done: self._release(scheduler, done))
        decoded = await asyncio.shield(work)
        return Transcript(
            text=decoded.text,
            audio_seconds=len(pcm16) / 2 / sample_rate,
            processing_seconds=time.perf_counter() - started,
            engine=self.name,
            no_speech_prob=decoded.no_speech_prob,
            queued_seconds=queued,
            language=decoded.language,
        )

    def _release(self, scheduler: SttScheduler, done: asyncio.Future[_Decoded]) -> None:
        self._running -= 1
        scheduler.release()
        if not done.cancelled():
            done.exception()  # retrieved here so an abandoned (cancelled) caller's error is not logged

    def _transcribe_blocking(self, pcm16: bytes, sample_rate: int, code: str | None) -> _Decoded:
        try:
            audio = pcm16_to_float32(resample_once(pcm16[: len(pcm16) & ~1], sample_rate, WHISPER_RATE))
            spans = self._speech_spans(audio)
            if not spans:
                return _Decoded("", 1.0, code or "")
            speech_seconds = sum(span["end"] - span["start"] for span in spans) / WHISPER_RATE
            fits = self._config.window_seconds - WINDOW_MARGIN_S
            onset = spans[0]["start"]
            # Keep the audio as the turn detector cut it (a tight cut to the VAD spans measured no
            # better, and worse on noisy lines); trim only when that is what makes it fit the window.
            if len(audio) / WHISPER_RATE > fits:
                start = max(0, onset - int(TRIM_PAD_S * WHISPER_RATE))
                audio = audio[start : spans[-1]["end"] + int(TRIM_PAD_S * WHISPER_RATE)]
                onset -= start
            # Speech from the first frames loses words (trailing ones, too): a lead-in of silence took
            # bare clips from 4.9% to 3.5% WER over 80 sentences, and left noisy 0.2 s pre-rolls as they were.
            lead_in = int(LEAD_IN_S * WHISPER_RATE) - onset
            if lead_in > 0:
                audio = np.concatenate([np.zeros(lead_in, dtype=np.float32), audio])
            if len(audio) / WHISPER_RATE <= fits:
                decoded = self._decode_window(audio, speech_seconds, code)
                if decoded is not None:
                    return decoded
            return self._decode_full(audio, code)
        except Exception as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise SpeechEngineError(f"Whisper STT failed: {detail[:300]}") from exc

    def _speech_spans(self, audio: np.ndarray) -> list[dict[str, int]]:
        """Silero VAD (shipped with faster-whisper): sample spans of speech, [] for silence or noise."""
        from faster_whisper.vad import get_speech_timestamps

        if len(audio) < WHISPER_RATE // 10:
            return []
        # Silero's recurrent state needs a lead-in: a word at the very first sample is often missed.
        pad = int(VAD_LEAD_IN_S * WHISPER_RATE)
        spans = get_speech_timestamps(np.pad(audio, pad), self._vad_options)
        return [
            {"start": max(0, span["start"] - pad), "end": min(len(audio), span["end"] - pad)}
            for span in spans
        ]

    def _decode_window(self, audio: np.ndarray, speech_seconds: float, code: str | None) -> _Decoded | None:
        """Encode one fixed short window; None when decoding hit its length bound (a loop).

        `code` None: the language is detected from this window's encoding (one decoder step)."""
        from faster_whisper.transcribe import get_ctranslate2_storage

        frames = int(self._config.window_seconds * FRAMES_PER_SECOND)
        # Pad the audio, not the features: zero audio gives the log-mel floor Whisper was trained on.
        padded = np.pad(audio, (0, max(0, frames * WHISPER_RATE // FRAMES_PER_SECOND - len(audio))))
        features = self._model.feature_extractor(padded)[:, :frames]
        encoded = self._model.model.encode(get_ctranslate2_storage(features[None]), to_cpu=False)
        if code is None:
            code = self.languages.detected(self._model.model.detect_language(encoded)[0][0][0])
        tokenizer = self.languages.tokenizer(code)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        budget = int(TOKENS_PER_SECOND * speech_seconds) + TOKEN_SLACK
        result = self._model.model.generate(
            encoded,
            [prompt],
            beam_size=self._config.beam_size,
            max_length=len(prompt) + budget,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = [token for token in result.sequences_ids[0] if token < tokenizer.eot]
        text = clean_text(tokenizer.decode(tokens))
        # A short window sometimes doubles a lone word ("Nine." -> "9 9", 1 in 5) or loops; the 30 s
        # path got those right. A genuine "bye bye" only costs the slower path.
        if len(tokens) >= budget or _repeats(text):
            return None
        # CTranslate2 scores are length-normalised; this is faster-whisper's avg_logprob.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if self._is_silence(result.no_speech_prob, avg_logprob):
            return _Decoded("", result.no_speech_prob, code)
        return _Decoded(text, result.no_speech_prob, code)

    def _decode_full(self, audio: np.ndarray, code: str | None) -> _Decoded:
        """faster-whisper's own 30 s-window path, for speech longer than the short window."""
        segments, info = self._model.transcribe(
            audio,
            beam_size=self._config.beam_size,
            # None detects (faster-whisper reports it as info.language); an English-only model takes none.
            language=code if self._multilingual else None,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        kept: list[str] = []
        worst = 0.0
        # The generator decodes lazily: iterating it here, in the worker thread, is where the work happens.
        for segment in segments:
            worst = max(worst, segment.no_speech_prob)
            if not self._is_silence(segment.no_speech_prob, segment.avg_logprob):
                kept.append(segment.text)
        return _Decoded(clean_text(" ".join(kept)), worst, code or info.language)

    def _is_silence(self, no_speech_prob: float, avg_logprob: float) -> bool:
        return no_speech_prob > self._config.no_speech_threshold and avg_logprob < LOW_LOGPROB

    def close(self) -> None:
        """Release the worker threads (an utterance being decoded finishes on its own)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def clean_text(text: str) -> str:
    """Collapse whitespace and drop captions; "" when no word is left."""
    text = " ".join(_ANNOTATION.sub(" ", text).split())
    return text if re.search(r"[^\W_]", text) else ""


def _repeats(text: str, times: int = 2) -> bool:
    """True when a word or a phrase of up to four words comes `times` times in a row (a decoding slip)."""
    words = re.findall(r"[^\W_]+", text.lower())
    for size in range(1, 5):
        for start in range(len(words) - size * times + 1):
            phrase = words[start : start + size]
            if all(words[start + k * size : start + (k + 1) * size] == phrase for k in range(1, times)):
                return True
    return False
