"""Audio helpers shared by the codec, mix, Ogg Opus and end-to-end media tests.

Known tones (:func:`tone`) are encoded by FFmpeg's own encoders through PyAV (:func:`encode`),
so the decoders under test never check themselves; recordings are read back with the stdlib
``wave`` module (:func:`read_wav`) and judged by their FFT peak (:func:`dominant_frequency`).
"""

from __future__ import annotations

import math
import wave

import av
import numpy as np


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    """A sine as int16 samples."""
    n = round(seconds * rate)
    return (np.sin(2 * math.pi * frequency * np.arange(n) / rate) * amplitude * 32767).astype("<i2")


def encode(
    codec: str, samples: np.ndarray, rate: int, packet_samples: int, channels: int = 1, options: dict | None = None
) -> list[bytes]:
    """Encode int16 samples (shape (n,) or (n, 2)) into payloads of ``packet_samples`` each."""
    layout = "stereo" if channels == 2 else "mono"
    encoder = av.CodecContext.create(codec, "w")
    encoder.sample_rate = rate
    encoder.layout = layout
    encoder.format = "s16"
    if codec == "libopus":
        encoder.bit_rate = 48000
    if options:
        encoder.options = options
    encoder.open()
    packets: list[bytes] = []
    for start in range(0, len(samples) - packet_samples + 1, packet_samples):
        block = samples[start : start + packet_samples].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="s16", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        packets += [bytes(p) for p in encoder.encode(frame)]
    packets += [bytes(p) for p in encoder.encode(None)]
    return packets


def pcm_array(pcm: bytes, channels: int = 1) -> np.ndarray:
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    return samples.reshape(-1, channels) if channels > 1 else samples


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def assert_near(test, value: float, expected: float, delta: float, message: str = "") -> None:  # noqa: ANN001
    """trial's assertAlmostEqual has no ``delta``."""
    test.assertLessEqual(
        abs(value - expected), delta, f"{message}{': ' if message else ''}{value} is not within {delta} of {expected}"
    )


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples.astype(np.float64))))) if len(samples) else 0.0


def read_wav(path: str) -> tuple[int, int, np.ndarray]:
    """(sample rate, channels, samples) of a 16-bit PCM WAV; samples are (n,) or (n, channels).

    Reads through the stdlib ``wave`` module, so a malformed header fails here."""
    with wave.open(path, "rb") as handle:
        if handle.getsampwidth() != 2 or handle.getcomptype() != "NONE":
            raise ValueError(f"{path}: not 16-bit PCM")
        rate, channels = handle.getframerate(), handle.getnchannels()
        data = handle.readframes(handle.getnframes())
    return rate, channels, pcm_array(data, channels)


def onset(samples: np.ndarray, threshold: float = 1000.0) -> int | None:
    """Index of the first sample whose magnitude exceeds ``threshold`` (None: never)."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return int(loud[0]) if len(loud) else None
