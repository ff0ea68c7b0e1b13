"""`voicebridge tts` and `voicebridge stt` as a user runs them: real processes, real models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.unit.test_config import run_cli
from voicebridge.audio.wav import read_wav, write_wav
from voicebridge.speech.wer import word_error_rate

SENTENCE = "Thank you for calling. Your appointment is confirmed for tomorrow at ten."


def test_tts_then_stt_round_trip_at_8k(tmp_path: Path) -> None:
    made = run_cli("tts", SENTENCE, "-o", "a.wav", "--rate", "8000", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    pcm, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and len(pcm) > 8000 * 2 * 2

    heard = run_cli("stt", "a.wav", cwd=tmp_path)
    assert heard.returncode == 0, heard.stderr
    assert word_error_rate(SENTENCE, heard.stdout) <= 0.1, heard.stdout

    as_json = run_cli("stt", "a.wav", "--json", cwd=tmp_path)
    document = json.loads(as_json.stdout)
    assert document["engine"] == "whisper" and abs(document["audio_seconds"] - len(pcm) / 2 / 8000) < 0.01
    assert document["processing_seconds"] > 0 and word_error_rate(SENTENCE, document["text"]) <= 0.1


def test_stt_prints_no_words_for_silence_or_line_noise(tmp_path: Path) -> None:
    write_wav(tmp_path / "silence.wav", bytes(3 * 8000 * 2), 8000)
    noise = np.random.default_rng(7).normal(0, 300, 3 * 8000).astype("<i2").tobytes()
    write_wav(tmp_path / "noise.wav", noise, 8000)
    for name in ("silence.wav", "noise.wav"):
        result = run_cli("stt", name, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "", (name, result.stdout)


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "junk.wav").write_text("not audio")
    for args in (
        ("stt", "missing.wav"),
        ("stt", "junk.wav"),
        ("tts", "hi", "-o", "x.wav", "--rate", "11025"),
    ):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
