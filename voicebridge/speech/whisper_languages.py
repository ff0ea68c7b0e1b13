"""Which languages the loaded Whisper model can transcribe, and each call's language resolved against them.

An English-only model (`tiny.en`, `model.is_multilingual` false) does English alone: configuring another
language for it is refused at start-up, and a business or number asking for one at run time is logged once
per language, counted, and transcribed in the model's language instead. A multilingual model serves every
Whisper language from the one loaded model: the language is a token of each decoding's prompt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from voicebridge.speech.base import SpeechEngineError
from voicebridge.speech.languages import AUTO, whisper_code

if TYPE_CHECKING:
    from faster_whisper.tokenizer import Tokenizer

logger = logging.getLogger("voicebridge.stt")

# Languages whose fallback was logged are remembered up to this many (the log stays bounded too).
WARNED_KEPT = 200


def whisper_language_codes() -> frozenset[str]:
    """Every language code a multilingual Whisper model knows (faster-whisper's list)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


def language_problem(language: str, multilingual: bool, model_path: str) -> str:
    """Why the model cannot transcribe `language` (a tag or "auto"), "" when it can; one line."""
    if not language:
        return ""
    if not multilingual:
        if language == AUTO:
            return f"stt.language 'auto' needs a multilingual Whisper model; {model_path} is English-only"
        if whisper_code(language) != "en":
            return (
                f"language {language!r} needs a multilingual Whisper model; {model_path} is English-only "
                "(see the README's Languages section for a Hindi-capable model)"
            )
        return ""
    if language != AUTO and whisper_code(language) not in whisper_language_codes():
        return f"language {language!r} is not one Whisper knows ({whisper_code(language)!r})"
    return ""


class WhisperLanguages:
    """The model's languages; the configured one checked once, each call's resolved per transcription."""

    def __init__(
        self,
        hf_tokenizer: Any,
        multilingual: bool,
        configured: str,
        model_path: str,
        on_fallback: Callable[[str], None] = lambda _language: None,
    ) -> None:
        if problem := language_problem(configured, multilingual, model_path):
            raise SpeechEngineError(problem if configured == AUTO else f"stt.language: {problem}")
        self.multilingual = multilingual
        self._model_path = model_path
        self._hf_tokenizer = hf_tokenizer
        # None: "auto", detected per call. An English-only model speaks "en" whatever "en-IN" was asked.
        self.default: str | None = None if configured == AUTO else whisper_code(configured)
        self._on_fallback = on_fallback
        self._warned: set[str] = set()
        # Tokenizers are built in the worker threads on first use of a language (a few ms each).
        self._lock = threading.Lock()
        self._tokenizers: dict[str, Tokenizer] = {}

    def problems(self, languages: Iterable[str]) -> dict[str, str]:
        """For doctor: each language the model cannot do, and why."""
        found = {
            language: language_problem(language, self.multilingual, self._model_path)
            for language in languages
        }
        return {language: why for language, why in found.items() if why}

    def resolve(self, language: str) -> str | None:
        """Whisper's code for a call's language; None to detect it. A language the model cannot do is
        logged once, counted, and replaced by the configured one."""
        if not language:
            return self.default
        if not language_problem(language, self.multilingual, self._model_path):
            return None if language == AUTO else whisper_code(language)
        self._on_fallback(whisper_code(language))
        if language not in self._warned and len(self._warned) < WARNED_KEPT:
            self._warned.add(language)
            logger.warning(
                "%s; transcribing those calls in %s",
                language_problem(language, self.multilingual, self._model_path),
                self.default or "the detected language",
            )
        return self.default

    def detected(self, token: str) -> str:
        """The code of a language token from detection ("<|hi|>" -> "hi")."""
        return token.strip("<|>") or (self.default or "en")

    def tokenizer(self, code: str) -> Tokenizer:
        """The decoding tokenizer for a language (the model's own when it is English-only)."""
        from faster_whisper.tokenizer import Tokenizer

        key = code if self.multilingual else "en"
        with self._lock:
            if key not in self._tokenizers:
                self._tokenizers[key] = Tokenizer(
                    self._hf_tokenizer,
                    self.multilingual,
                    task="transcribe",
                    language=key if self.multilingual else None,
                )
            return self._tokenizers[key]
