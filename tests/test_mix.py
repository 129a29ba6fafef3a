"""Stereo and mono mixes of two sides at different rates, streamed in chunks."""

from __future__ import annotations

import os
import wave

import numpy as np
from twisted.trial import unittest

from siprecd.recording.mix import Mixer, interleave, mixdown
from siprecd.recording.wav import WavWriter
from tests.audio import assert_near, dominant_frequency, pcm_array, tone


class Collect:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, pcm: bytes) -> None:
        self.chunks.append(pcm)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def with_click(samples: np.ndarray, at: int) -> np.ndarray:
    """The tone with a full-scale 3-sample click, to find a position after resampling."""
    samples = samples.copy()
    samples[at : at + 3] = 32767
    return samples


def click_position(channel: np.ndarray) -> int:
    return int(np.argmax(channel))


def chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, position, n = [], 0, 0
    while position < len(data):
        size = sizes[n % len(sizes)]
        out.append(data[position : position + size])
        position += size
        n += 1
    return out


class HelperTests(unittest.TestCase):
    def test_interleave(self) -> None:
        left = np.array([1, -2, 3], "<i2").tobytes()
        right = np.array([100, 200, -300], "<i2").tobytes()
        self.assertEqual(np.frombuffer(interleave(left, right), "<i2").tolist(), [1, 100, -2, 200, 3, -300])

    def test_mixdown_clips(self) -> None:
        left = np.array([30000, -30000, 1000], "<i2").tobytes()
        right = np.array([30000, -30000, -250], "<i2").tobytes()
        self.assertEqual(np.frombuffer(mixdown(left, right), "<i2").tolist(), [32767, -32768, 750])


class MixerTests(unittest.TestCase):
    def test_8k_and_16k_stay_aligned(self) -> None:
        # Left: G.711-like 8 kHz with 1 kHz tone; right: G.722-like 16 kHz with 3 kHz tone.
        # Both carry a click at 0.6 s: it must land on the same output frame.
        left = with_click(tone(1000, 1.0, 8000, 0.3), 4800).tobytes()
        right = with_click(tone(3000, 1.0, 16000, 0.3), 9600).tobytes()
        stereo, mono = Collect(), Collect()
        mixer = Mixer(8000, 16000, stereo=stereo, mono=mono)
        self.assertEqual(mixer.output_rate, 16000)
        # Packet-sized, unequal, interleaved appends (20 ms left vs 30 ms right).
        left_chunks, right_chunks = chunks(left, [320]), chunks(right, [960])
        while left_chunks or right_chunks:
            if left_chunks:
                mixer.append(0, left_chunks.pop(0))
            if right_chunks:
                mixer.append(1, right_chunks.pop(0))
        mixer.finish()
        out = pcm_array(stereo.data, channels=2)
        assert_near(self, len(out), 16000, 2)
        self.assertEqual(mixer.frames, len(out))
        assert_near(self, click_position(out[:, 0]), 9600, 2)
        assert_near(self, click_position(out[:, 1]), 9600, 2)
        assert_near(self, dominant_frequency(out[:9000, 0], 16000), 1000, 5)
        assert_near(self, dominant_frequency(out[:9000, 1], 16000), 3000, 5)
        mixed = pcm_array(mono.data)
        self.assertEqual(len(mixed), len(out))
        np.testing.assert_array_equal(mixed, np.clip(out[:, 0] + out[:, 1], -32768, 32767))

    def test_chunked_resampling_equals_one_shot(self) -> None:
        left = tone(440, 0.5, 8000).tobytes()
        right = bytes(len(left) * 2)
        one, many = Collect(), Collect()
        mixer = Mixer(8000, 16000, mono=one)
        mixer.append(0, left)
        mixer.append(1, right)
        mixer.finish()
        mixer = Mixer(8000, 16000, mono=many)
        for piece in chunks(left, [2, 320, 14, 1000]):
            mixer.append(0, piece)
        mixer.append(1, right)
        mixer.finish()
        self.assertEqual(one.data, many.data)

    def test_shorter_side_padded_at_end(self) -> None:
        stereo = Collect()
        mixer = Mixer(8000, 8000, stereo=stereo)
        mixer.append(0, tone(1000, 1.0, 8000).tobytes())
        mixer.append(1, tone(1000, 0.5, 8000).tobytes())
        self.assertEqual(len(stereo.data), 4000 * 4)  # only what both sides cover so far
        mixer.finish()
        mixer.finish()
        out = pcm_array(stereo.data, channels=2)
        self.assertEqual(len(out), 8000)
        self.assertFalse(out[4000:, 1].any())
        self.assertTrue(out[4000:, 0].any())
        self.assertRaises(ValueError, mixer.append, 0, b"\0\0")

    def test_stalled_side_is_padded_and_late_data_dropped(self) -> None:
        stereo = Collect()
        mixer = Mixer(8000, 8000, stereo=stereo, max_lag=0.5)
        packet = tone(1000, 0.02, 8000).tobytes()
        for _ in range(100):  # 2 s of left, nothing on the right
            mixer.append(0, packet)
        self.assertEqual(mixer.frames, 0)  # padding happens at a flush only
        mixer.flush()
        # Output kept flowing with silence on the right; memory stayed under the lag.
        self.assertGreaterEqual(mixer.frames, 16000 - 4000)
        self.assertLessEqual(16000 - mixer.frames, 4000)
        self.assertGreater(mixer.padded[1], 0)
        self.assertEqual(mixer.padded[0], 0)
        # Now the right side's timeline delivers its 2 s, late: the part already padded is
        # dropped so the right side's sample n still lands on frame n.
        right = np.zeros(16000, "<i2")
        right[15000] = 32767  # beyond what was padded (the left side was at most 0.5 s ahead)
        mixer.append(1, right.tobytes())
        mixer.finish()
        out = pcm_array(stereo.data, channels=2)
        self.assertEqual(len(out), 16000)
        self.assertLess(mixer.padded[1], 15000)
        self.assertEqual(click_position(out[:, 1]), 15000)
        self.assertEqual(mixer.frames, 16000)

    def test_writes_a_stereo_wav(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "mix.wav")
        writer = WavWriter(path, sample_rate=16000, channels=2, chunk_size=4096)
        mixer = Mixer(16000, 8000, stereo=writer)
        mixer.append(0, tone(500, 0.5, 16000).tobytes())
        mixer.append(1, tone(1500, 0.5, 8000).tobytes())
        mixer.finish()
        writer.finalize()
        with wave.open(path, "rb") as reader:
            self.assertEqual((reader.getnchannels(), reader.getframerate()), (2, 16000))
            frames = pcm_array(reader.readframes(reader.getnframes()), channels=2)
        assert_near(self, len(frames), 8000, 2)
        assert_near(self, dominant_frequency(frames[:, 0], 16000), 500, 5)
        assert_near(self, dominant_frequency(frames[:, 1], 16000), 1500, 5)

    def test_batched_output_is_the_same_audio_and_flush_writes_the_rest(self) -> None:
        one, batched = Collect(), Collect()
        plain = Mixer(8000, 8000, stereo=one)
        mixer = Mixer(8000, 8000, stereo=batched, batch=0.2)
        left, right = tone(700, 0.5, 8000).tobytes(), tone(900, 0.5, 8000).tobytes()
        for start in range(0, len(left), 320):  # 20 ms packets, alternating sides
            for m in (plain, mixer):
                m.append(0, left[start:start + 320])
                m.append(1, right[start:start + 320])
        # 0.5 s in: two 0.2 s batches written, 0.1 s waiting until a flush.
        self.assertEqual(len(batched.data), 2 * 1600 * 4)
        mixer.flush()
        self.assertEqual(batched.data, one.data)
        mixer.finish()
        plain.finish()
        mixer.flush()  # after finish: nothing more, no error
        self.assertEqual(batched.data, one.data)

    def test_needs_a_sink(self) -> None:
        self.assertRaises(ValueError, Mixer, 8000, 8000)
