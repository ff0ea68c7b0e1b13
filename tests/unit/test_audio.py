"""Audio core: G.711 codecs, base64 payloads, outbound chunking, the streaming resampler and WAV io."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicebridge.audio.chunker import OutboundChunker
from voicebridge.audio.codecs import (
    alaw_to_pcm16,
    b64decode_payload,
    b64encode_payload,
    float32_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_float32,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from voicebridge.audio.resample import StreamResampler, resample_once
from voicebridge.audio.wav import AudioFileError, interleave_stereo, read_wav, write_wav

pcm_samples = st.lists(st.integers(-32768, 32767), max_size=2000).map(
    lambda values: np.array(values, dtype="<i2").tobytes()
)


def _quantisation_bound(sample: np.ndarray) -> np.ndarray:
    # G.711 keeps ~4 mantissa bits: the step is 1/16 of the segment, so error <= 1/32 of |x| plus a floor.
    return np.abs(sample.astype(np.int32)) / 16 + 32


@given(pcm_samples)
def test_ulaw_round_trip_is_within_one_quantisation_step(pcm: bytes) -> None:
    encoded = pcm16_to_ulaw(pcm)
    assert len(encoded) == len(pcm) // 2
    decoded = np.frombuffer(ulaw_to_pcm16(encoded), "<i2").astype(np.int32)
    original = np.frombuffer(pcm, "<i2").astype(np.int32)
    assert np.all(np.abs(decoded - original) <= _quantisation_bound(original))


@given(pcm_samples)
def test_alaw_round_trip_is_within_one_quantisation_step(pcm: bytes) -> None:
    decoded = np.frombuffer(alaw_to_pcm16(pcm16_to_alaw(pcm)), "<i2").astype(np.int32)
    original = np.frombuffer(pcm, "<i2").astype(np.int32)
    assert np.all(np.abs(decoded - original) <= _quantisation_bound(original))


def test_g711_codes_are_a_fixed_point() -> None:
    # Decoding then re-encoding any code gives the same code (μ-law 0x7F is an alias of ±0).
    codes = bytes(range(256))
    reencoded = pcm16_to_ulaw(ulaw_to_pcm16(codes))
    assert [a for a, b in zip(codes, reencoded, strict=True) if a != b] in ([], [0x7F])
    assert pcm16_to_alaw(alaw_to_pcm16(codes)) == codes


def test_ulaw_known_values() -> None:
    silence = np.zeros(4, "<i2").tobytes()
    assert pcm16_to_ulaw(silence) == b"\xff" * 4
    assert pcm16_to_alaw(silence) == b"\xd5" * 4
    assert np.frombuffer(ulaw_to_pcm16(b"\x00\x80"), "<i2").tolist() == [-32124, 32124]


def test_odd_length_pcm_is_rejected() -> None:
    with pytest.raises(ValueError, match="odd length"):
        pcm16_to_ulaw(b"\x00\x01\x02")


@given(st.binary(max_size=4000))
def test_base64_payload_round_trip(data: bytes) -> None:
    assert b64decode_payload(b64encode_payload(data)) == data


@pytest.mark.parametrize("payload", ["@@not-base64@@", "AAA", "AA=A", "hello world"])
def test_invalid_base64_is_a_value_error(payload: str) -> None:
    with pytest.raises(ValueError, match="invalid base64"):
        b64decode_payload(payload)


@given(st.lists(st.floats(-1.0, 1.0, allow_nan=False), max_size=500))
def test_float_conversion_round_trip(values: list[float]) -> None:
    pcm = float32_to_pcm16(np.array(values, dtype=np.float32))
    back = pcm16_to_float32(pcm)
    assert np.all(np.abs(back - np.array(values, dtype=np.float32)) <= 1.5 / 32768)


@pytest.mark.parametrize(("rate", "frame"), [(8000, 320), (16000, 640), (24000, 960)])
@given(pieces=st.lists(st.integers(0, 9000), max_size=12))
@settings(max_examples=60)
def test_chunks_are_frame_aligned_and_never_short(rate: int, frame: int, pieces: list[int]) -> None:
    chunker = OutboundChunker(rate)
    sent = b"".join(bytes([index % 251 + 1]) * (size - size % 2) for index, size in enumerate(pieces))
    chunks: list[bytes] = []
    offset = 0
    for size in pieces:
        size -= size % 2
        chunks += chunker.push(sent[offset : offset + size])
        offset += size
    chunks += chunker.flush()
    assert chunker.buffered_bytes == 0
    for chunk in chunks:
        assert len(chunk) % frame == 0
        assert len(chunk) >= frame * 10  # 3200 bytes at 8 kHz: 200 ms
    joined = b"".join(chunks)
    # Everything arrives in order; only zero padding is added at the very end.
    assert joined[: len(sent)] == sent
    assert set(joined[len(sent) :]) <= {0}
    assert len(joined) - len(sent) < frame * 10


def test_chunker_reset_drops_buffered_audio() -> None:
    chunker = OutboundChunker(8000)
    assert chunker.push(b"\x01\x00" * 1000) == []
    assert chunker.buffered_bytes == 2000
    chunker.reset()
    assert chunker.flush() == []


def _tone(rate: int, seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * math.pi * hz * t) * 12000).astype("<i2").tobytes()


@pytest.mark.parametrize(
    ("in_rate", "out_rate"),
    [(22050, 8000), (8000, 16000), (16000, 8000), (24000, 8000), (8000, 24000), (22050, 16000)],
)
@given(cuts=st.lists(st.integers(1, 3000), min_size=1, max_size=20))
@settings(max_examples=25, deadline=None)
def test_stream_resampler_is_continuous_across_chunks(in_rate: int, out_rate: int, cuts: list[int]) -> None:
    source = _tone(in_rate, 0.5)
    reference = np.frombuffer(resample_once(source, in_rate, out_rate), "<i2").astype(np.int32)
    resampler = StreamResampler(in_rate, out_rate)
    pieces: list[bytes] = []
    offset = 0
    for cut in cuts:  # odd cuts too: a half sample is carried to the next chunk
        pieces.append(resampler.process(source[offset : offset + cut]))
        offset += cut
    pieces.append(resampler.process(source[offset:]))
    pieces.append(resampler.flush())
    streamed = np.frombuffer(b"".join(pieces), "<i2").astype(np.int32)
    # Same length as a one-shot conversion and no clicks at the seams.
    assert abs(len(streamed) - len(reference)) <= 1
    length = min(len(streamed), len(reference))
    assert np.max(np.abs(streamed[:length] - reference[:length])) <= 4


def test_stream_resampler_tolerates_empty_and_tiny_input() -> None:
    resampler = StreamResampler(22050, 8000)
    assert resampler.process(b"") == b""
    assert isinstance(resampler.process(b"\x01"), bytes)
    assert isinstance(resampler.flush(), bytes)


def test_same_rate_passes_audio_through() -> None:
    audio = _tone(8000, 0.1)
    assert StreamResampler(8000, 8000).process(audio) == audio
    assert resample_once(audio, 8000, 8000) == audio


def _write_raw_wav(path: Path, frames: bytes, rate: int, width: int, channels: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(frames)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize(("width", "channels"), [(1, 1), (2, 1), (2, 2), (3, 1), (4, 2)])
def test_read_wav_any_rate_width_and_channels(tmp_path: Path, rate: int, width: int, channels: int) -> None:
    tone = np.frombuffer(_tone(rate, 0.2), "<i2").astype(np.float64) / 32768
    if width == 1:
        samples = np.round(tone * 127 + 128).astype(np.uint8)
    else:
        samples = np.round(tone * (2 ** (8 * width - 1) - 1)).astype(np.int64)
    interleaved = np.repeat(samples, channels)
    if width == 3:
        raw = b"".join(int(value).to_bytes(3, "little", signed=True) for value in interleaved)
    else:
        raw = interleaved.astype({1: np.uint8, 2: "<i2", 4: "<i4"}[width]).tobytes()
    path = tmp_path / "in.wav"
    _write_raw_wav(path, raw, rate, width, channels)
    pcm, read_rate = read_wav(path)
    assert read_rate == rate
    decoded = np.frombuffer(pcm, "<i2").astype(np.float64) / 32768
    assert len(decoded) == len(tone)
    tolerance = 1 / 100 if width == 1 else 1 / 2000
    assert np.max(np.abs(decoded - tone)) <= tolerance


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    audio = _tone(8000, 0.3)
    write_wav(tmp_path / "out.wav", audio, 8000)
    assert read_wav(tmp_path / "out.wav") == (audio, 8000)
    stereo = interleave_stereo(audio, audio[:100])
    write_wav(tmp_path / "stereo.wav", stereo, 8000, channels=2)
    with wave.open(str(tmp_path / "stereo.wav")) as check:
        assert check.getnchannels() == 2 and check.getnframes() == len(audio) // 2


def test_unreadable_audio_gives_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="no such file"):
        read_wav(tmp_path / "missing.wav")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all")
    with pytest.raises(AudioFileError, match="not a readable WAV"):
        read_wav(garbage)
    with pytest.raises(AudioFileError, match="directory"):
        read_wav(tmp_path)
