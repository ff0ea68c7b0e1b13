"""WAV files in and out: any common rate, width and channel count in; PCM16 mono (or stereo) out."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from voicebridge.audio.codecs import alaw_to_pcm16, ulaw_to_pcm16

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_IEEE_FLOAT = 3
_WAVE_FORMAT_ALAW = 6
_WAVE_FORMAT_MULAW = 7
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


class AudioFileError(Exception):
    """An audio file that is missing or cannot be read; the message is one line."""


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Read a WAV file as PCM16LE mono (channels averaged) and its sample rate."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AudioFileError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise AudioFileError(f"{path} is a directory, not a WAV file") from None
    except OSError as exc:
        raise AudioFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        fmt, channels, rate, width, frames = _parse_riff(data)
    except (ValueError, IndexError) as exc:
        raise AudioFileError(f"{path} is not a readable WAV file: {exc}") from None
    samples = _to_float(fmt, width, frames)
    if channels > 1:
        usable = len(samples) - len(samples) % channels
        samples = samples[:usable].reshape(-1, channels).mean(axis=1)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    return pcm, rate


def _parse_riff(data: bytes) -> tuple[int, int, int, int, bytes]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("no RIFF/WAVE header")
    offset, fmt_chunk, frames = 12, b"", None
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        body = data[offset + 8 : offset + 8 + size]
        if chunk_id == b"fmt ":
            fmt_chunk = body
        elif chunk_id == b"data":
            frames = body
            break
        offset += 8 + size + (size & 1)
    if len(fmt_chunk) < 16 or frames is None:
        raise ValueError("missing fmt or data chunk")
    fmt = int.from_bytes(fmt_chunk[0:2], "little")
    channels = int.from_bytes(fmt_chunk[2:4], "little")
    rate = int.from_bytes(fmt_chunk[4:8], "little")
    width = int.from_bytes(fmt_chunk[14:16], "little") // 8
    if fmt == _WAVE_FORMAT_EXTENSIBLE and len(fmt_chunk) >= 26:
        fmt = int.from_bytes(fmt_chunk[24:26], "little")
    if channels < 1 or not 1000 <= rate <= 384_000:
        raise ValueError(f"implausible header ({channels} channels, {rate} Hz)")
    if not frames:
        raise ValueError("no audio in the data chunk")
    return fmt, channels, rate, width, frames


def _to_float(fmt: int, width: int, frames: bytes) -> np.ndarray:
    if fmt == _WAVE_FORMAT_MULAW and width == 1:
        return np.frombuffer(ulaw_to_pcm16(frames), "<i2") / 32768.0
    if fmt == _WAVE_FORMAT_ALAW and width == 1:
        return np.frombuffer(alaw_to_pcm16(frames), "<i2") / 32768.0
    if fmt == _WAVE_FORMAT_IEEE_FLOAT and width in (4, 8):
        return np.frombuffer(frames[: len(frames) - len(frames) % width], f"<f{width}").astype(np.float64)
    if fmt != _WAVE_FORMAT_PCM:
        raise ValueError(f"unsupported encoding (format tag {fmt})")
    frames = frames[: len(frames) - len(frames) % width]
    if width == 1:
        return (np.frombuffer(frames, np.uint8).astype(np.float64) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(frames, "<i2") / 32768.0
    if width == 3:
        raw = np.frombuffer(frames, np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        return np.where(value >= 1 << 23, value - (1 << 24), value) / float(1 << 23)
    if width == 4:
        return np.frombuffer(frames, "<i4") / float(1 << 31)
    raise ValueError(f"unsupported sample width {width * 8} bits")


def write_wav(path: str | Path | io.BytesIO, pcm16: bytes, sample_rate: int, channels: int = 1) -> None:
    """Write PCM16LE (interleaved if `channels` > 1) as a WAV file, or into an open binary stream."""
    with wave.open(path if isinstance(path, io.IOBase) else str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm16)


def wav_bytes(pcm16: bytes, sample_rate: int) -> bytes:
    """PCM16LE mono as the bytes of a WAV file (an upload to a transcription server)."""
    buffer = io.BytesIO()
    write_wav(buffer, pcm16, sample_rate)
    return buffer.getvalue()


def interleave_stereo(left: bytes, right: bytes) -> bytes:
    """Two PCM16 mono tracks as one stereo stream, the shorter padded with silence."""
    a, b = np.frombuffer(left, "<i2"), np.frombuffer(right, "<i2")
    length = max(len(a), len(b))
    stereo = np.zeros((length, 2), dtype="<i2")
    stereo[: len(a), 0], stereo[: len(b), 1] = a, b
    return stereo.tobytes()
