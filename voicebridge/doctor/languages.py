"""Doctor's check of every configured language: can the Whisper model transcribe it, and which voice says it.

The languages are stt.language, each `[numbers."..."]` language and each `tts.voices` key. Whether the model
is multilingual is read from its vocabulary (CTranslate2's own rule: 51865 tokens or more), so the check
loads nothing. stt.language the model cannot do fails (the daemon refuses to start); a number's or a voice
map's warns (those calls fall back to the model's language, counted).
"""

from __future__ import annotations

from pathlib import Path

from voicebridge.config.schema import Settings
from voicebridge.doctor.report import Check, Status
from voicebridge.speech.languages import AUTO, is_piper_voice, voice_for, voice_locale, whisper_code

MULTILINGUAL_VOCABULARY = 51865


def model_is_multilingual(model_path: str) -> bool | None:
    """Whether the CTranslate2 Whisper model at `model_path` is multilingual; None when it cannot be told."""
    vocabulary = Path(model_path) / "vocabulary.txt"
    try:
        with vocabulary.open(encoding="utf-8") as lines:
            return sum(1 for _ in lines) >= MULTILINGUAL_VOCABULARY
    except OSError:
        return None


def configured_languages(settings: Settings) -> dict[str, str]:
    """Each configured language and where it is configured."""
    found = {settings.stt.language: "stt.language"}
    for number, table in settings.numbers.items():
        if table.language:
            found.setdefault(table.language, f"numbers.{number!r}.language")
    for language in settings.tts.voices:
        found.setdefault(language, "tts.voices")
    return found


def _voice_problem(settings: Settings, language: str, voice: str) -> str:
    tts = settings.tts
    if is_piper_voice(voice):
        if tts.engine != "piper" and tts.fallback_engine != "piper":
            return f"{voice} is a Piper voice but tts.engine is {tts.engine}"
        if not (Path(voice).is_file() and Path(f"{voice}.json").is_file()):
            return f"no Piper voice at {voice} (the .onnx and its .onnx.json)"
        return ""
    if tts.engine == "azure":
        name = voice or tts.azure_voice
        if whisper_code(voice_locale(name) or "en") != whisper_code(language):
            return f"Azure voice {name} does not speak {language}; add it to tts.voices"
        return ""
    if not voice and whisper_code(language) != "en":
        return f"{language} would be spoken by the English Piper voice; add a Piper voice to tts.voices"
    return ""


def check_languages(settings: Settings, model_path: str = "") -> Check:
    """One line per configured language: what the model and the voice make of it."""
    from voicebridge.speech.models import default_whisper_path
    from voicebridge.speech.whisper_languages import language_problem

    model_path = model_path or settings.stt.model_path or default_whisper_path()
    multilingual = model_is_multilingual(model_path)
    lines: list[str] = []
    status: Status = "pass"
    for language, where in configured_languages(settings).items():
        problem = "" if multilingual is None else language_problem(language, multilingual, model_path)
        if problem:
            status = "fail" if where == "stt.language" else ("warn" if status == "pass" else status)
            lines.append(f"{where} {language}: {problem}")
            continue
        if language == AUTO:
            lines.append(f"{where} auto: detected per call by the multilingual model")
            continue
        own = next((t.voice for t in settings.numbers.values() if t.language == language and t.voice), "")
        voice = own or voice_for(settings.tts.voices, language)
        if why := _voice_problem(settings, language, voice):
            status = "warn" if status == "pass" else status
            lines.append(f"{where} {language}: {why}")
        else:
            lines.append(f"{where} {language}: transcribed; spoken by {voice or 'the configured voice'}")
    if multilingual is None:
        status = "warn" if status == "pass" else status
        lines.append(f"cannot tell whether {model_path} is multilingual (no vocabulary.txt)")
    fix = "" if status == "pass" else "see the README's Languages section (a multilingual model, voices)"
    return Check("languages", status, "; ".join(lines), fix)
