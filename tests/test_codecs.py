"""Decoders: known tones encoded by FFmpeg's own encoders (through PyAV) must come back out.

The helpers (tone, encode, dominant_frequency, ...) live in tests/audio.py, shared with the other
audio tests.
"""

from __future__ import annotations

import math

import av
import numpy as np
from twisted.trial import unittest

from siprecd.media import codecs
from siprecd.media.codecs import SUPPORTED_CODECS, decoder_for, opus_packet_duration
from tests.audio import assert_near, dominant_frequency, encode, pcm_array, rms, tone


class RegistryTests(unittest.TestCase):
    def test_supported_codecs(self) -> None:
        self.assertEqual(SUPPORTED_CODECS, {"PCMU", "PCMA", "G722", "OPUS"})
        for name, rate in [("PCMU", 8000), ("pcma", 8000), ("G722", 8000), ("opus", 48000), ("OPUS", 48000)]:
            decoder = decoder_for(name, rate, 2 if name.upper() == "OPUS" else 1)
            self.assertIsNotNone(decoder, name)
            self.assertEqual(decoder.encoding, name.upper())

    def test_unsupported_is_none(self) -> None:
        for args in [
            ("G729", 8000, 1),
            ("telephone-event", 8000, 1),
            ("PCMU", 16000, 1),
            ("PCMU", 8000, 2),
            ("G722", 16000, 1),
            ("opus", 8000, 2),
            ("opus", 48000, 3),
            ("L16", 8000, 1),
            ("", 8000, 1),
        ]:
            self.assertIsNone(decoder_for(*args), args)

    def test_rates_and_units(self) -> None:
        expected = {
            ("PCMU", 8000): (8000, 1),
            ("PCMA", 8000): (8000, 1),
            ("G722", 8000): (16000, 2),
            ("opus", 48000): (48000, 1),
        }
        for (name, clock), (rate, per_unit) in expected.items():
            decoder = decoder_for(name, clock, 1)
            self.assertEqual((decoder.output_rate, decoder.samples_per_timestamp_unit), (rate, per_unit))
            self.assertEqual(decoder.samples(160), 160 * per_unit)

    def test_static_payload_types(self) -> None:
        for payload_type, (name, clock, channels) in codecs.STATIC_PAYLOAD_TYPES.items():
            self.assertIsNotNone(decoder_for(name, clock, channels), payload_type)

    def test_duration_of(self) -> None:
        duration = codecs.duration_of({0: decoder_for("PCMU", 8000), 111: decoder_for("opus", 48000, 2)})
        self.assertEqual(duration(0, bytes(160)), 160)
        self.assertEqual(duration(111, bytes([31 << 3 | 1])), 1920)
        self.assertIsNone(duration(111, b""))
        self.assertIsNone(duration(101, bytes(4)))  # telephone-event: the timeline's business

    def test_decoders_are_per_stream(self) -> None:
        self.assertIsNot(decoder_for("G722", 8000), decoder_for("G722", 8000))


class G711Tests(unittest.TestCase):
    def check_tone(self, name: str, av_codec: str) -> None:
        original = tone(1000, 1.0, 8000)
        payloads = encode(av_codec, original, 8000, 160)
        self.assertEqual(len(payloads), 50)
        decoder = decoder_for(name, 8000, 1)
        out = []
        for payload in payloads:
            self.assertEqual(decoder.duration(payload), 160)
            pcm = decoder.decode(payload)
            self.assertEqual(len(pcm), 320)
            out.append(pcm)
        decoded = pcm_array(b"".join(out))
        self.assertEqual(len(decoded), 8000)
        assert_near(self, dominant_frequency(decoded, 8000), 1000, 5)
        # G.711 is ~38 dB SNR on a loud sine; anything far off means a wrong table.
        noise = decoded - original
        self.assertGreater(20 * math.log10(rms(original) / rms(noise)), 30)

    def test_pcmu_tone(self) -> None:
        self.check_tone("PCMU", "pcm_mulaw")

    def test_pcma_tone(self) -> None:
        self.check_tone("PCMA", "pcm_alaw")

    def test_all_codes_match_ffmpeg(self) -> None:
        every_code = bytes(range(256))
        for name, av_codec in [("PCMU", "pcm_mulaw"), ("PCMA", "pcm_alaw")]:
            reference = av.CodecContext.create(av_codec, "r")
            reference.sample_rate = 8000
            reference.layout = "mono"
            (frame,) = reference.decode(av.Packet(every_code))
            expected = frame.to_ndarray().reshape(-1).astype("<i2").tobytes()
            self.assertEqual(decoder_for(name, 8000).decode(every_code), expected, name)

    def test_conceal(self) -> None:
        decoder = decoder_for("PCMA", 8000)
        self.assertEqual(decoder.conceal(160), bytes(320))
        self.assertEqual(decoder.conceal(0), b"")
        self.assertEqual(decoder.conceal(-5), b"")


class G722Tests(unittest.TestCase):
    def decode_all(self, payloads: list[bytes]) -> np.ndarray:
        decoder = decoder_for("G722", 8000, 1)
        out = []
        for payload in payloads:
            self.assertEqual(decoder.duration(payload), len(payload))
            pcm = decoder.decode(payload)
            self.assertEqual(len(pcm), 4 * len(payload))  # 2 samples per byte, 2 bytes each
            out.append(pcm)
        self.assertEqual(decoder.errors, 0)
        return pcm_array(b"".join(out))

    def test_tone_and_duration(self) -> None:
        payloads = encode("g722", tone(1000, 1.0, 16000), 16000, 320)  # 20 ms
        self.assertEqual({len(p) for p in payloads}, {160})
        decoded = self.decode_all(payloads)
        self.assertEqual(len(decoded), 16000)
        assert_near(self, dominant_frequency(decoded[400:], 16000), 1000, 5)

    def test_wideband(self) -> None:
        # 6 kHz is above anything an 8 kHz decode could hold: proves the 16 kHz output is real.
        decoded = self.decode_all(encode("g722", tone(6000, 0.5, 16000), 16000, 320))
        assert_near(self, dominant_frequency(decoded[400:], 16000), 6000, 10)

    def test_conceal_is_two_samples_per_unit(self) -> None:
        self.assertEqual(decoder_for("G722", 8000).conceal(160), bytes(640))


class OpusTests(unittest.TestCase):
    def decode_all(self, payloads: list[bytes], output_channels: int = 1) -> bytes:
        decoder = decoder_for("opus", 48000, 2, output_channels=output_channels)
        out = []
        for payload in payloads:
            pcm = decoder.decode(payload)
            self.assertEqual(len(pcm), decoder.duration(payload) * 2 * output_channels)
            out.append(pcm)
        self.assertEqual(decoder.errors, 0)
        return b"".join(out)

    def test_mono_tone(self) -> None:
        payloads = encode("libopus", tone(1000, 1.0, 48000), 48000, 960)
        self.assertEqual({opus_packet_duration(p) for p in payloads}, {960})
        self.assertEqual(len(payloads), 51)  # the encoder's 6.5 ms lookahead spills into a 51st
        decoded = pcm_array(self.decode_all(payloads))
        self.assertEqual(len(decoded), 51 * 960)
        assert_near(self, dominant_frequency(decoded[4800:], 48000), 1000, 5)
        self.assertGreater(rms(decoded[4800:]), 5000)

    def test_stereo_stream(self) -> None:
        # Different tones per channel: stereo output keeps them apart, mono output mixes them.
        samples = np.stack([tone(1000, 1.0, 48000), tone(2500, 1.0, 48000)], axis=1)
        payloads = encode("libopus", samples, 48000, 960, channels=2)
        stereo = pcm_array(self.decode_all(payloads, output_channels=2), channels=2)
        self.assertEqual(stereo.shape, (960 * len(payloads), 2))
        assert_near(self, dominant_frequency(stereo[4800:, 0], 48000), 1000, 5)
        assert_near(self, dominant_frequency(stereo[4800:, 1], 48000), 2500, 5)
        mono = pcm_array(self.decode_all(payloads, output_channels=1))
        self.assertEqual(len(mono), 960 * len(payloads))
        spectrum = np.abs(np.fft.rfft(mono[4800:]))
        bins = len(mono[4800:]) / 48000
        self.assertGreater(spectrum[round(1000 * bins)], spectrum.mean() * 50)
        self.assertGreater(spectrum[round(2500 * bins)], spectrum.mean() * 50)

    def test_60ms_packets(self) -> None:
        payloads = encode("libopus", tone(1000, 1.2, 48000), 48000, 2880, options={"frame_duration": "60"})
        self.assertEqual({opus_packet_duration(p) for p in payloads}, {2880})
        decoded = pcm_array(self.decode_all(payloads))
        self.assertEqual(len(decoded), 2880 * len(payloads))
        assert_near(self, dominant_frequency(decoded[4800:], 48000), 1000, 5)

    def test_bad_packet_is_counted_not_raised(self) -> None:
        decoder = decoder_for("opus", 48000, 2)
        self.assertEqual(decoder.decode(b""), b"")
        self.assertEqual(decoder.decode(b"\x03"), b"")  # code 3 without a frame count
        # Code 1 (two equal frames) with an odd number of frame bytes: libopus refuses it, and
        # the decoder gives the silence its TOC announces (2 x 20 ms).
        self.assertEqual(decoder.decode(bytes([15 << 3 | 1, 0xFC, 0xFF, 0x01])), bytes(2 * 960 * 2))
        self.assertEqual(decoder.errors, 3)
        self.assertEqual(len(decoder.decode(encode("libopus", tone(1000, 0.02, 48000), 48000, 960)[0])), 1920)

    def test_native_decoder_fallback(self) -> None:
        # Without libopus, FFmpeg's own decoder is used; its float output is converted to s16.
        class NativeOpus(codecs.OpusDecoder):
            codec_names = ("no-such-codec", "opus")

        payloads = encode("libopus", tone(1000, 0.5, 48000), 48000, 960)
        for channels in (1, 2):
            decoder = NativeOpus(channels)
            self.assertEqual(decoder.codec_name, "opus")
            pcm = b"".join(decoder.decode(p) for p in payloads)
            self.assertEqual(len(pcm), 960 * len(payloads) * 2 * channels)
            decoded = pcm_array(pcm, channels)
            left = decoded[:, 0] if channels == 2 else decoded
            assert_near(self, dominant_frequency(left[4800:], 48000), 1000, 5)
            self.assertGreater(rms(left[4800:]), 5000)

        class Nothing(codecs.OpusDecoder):
            codec_names = ("no-such-codec",)

        self.assertRaises(LookupError, Nothing)

    def test_packet_duration(self) -> None:
        cases = {
            bytes([0 << 3]): 480,  # SILK NB 10 ms, code 0
            bytes([3 << 3]): 2880,  # SILK NB 60 ms
            bytes([9 << 3 | 1, 0, 0]): 1920,  # SILK WB 20 ms, code 1: 2 frames
            bytes([13 << 3 | 2, 1, 0]): 1920,  # hybrid SWB 20 ms, code 2: 2 frames
            bytes([16 << 3 | 3, 3]): 360,  # CELT NB 2.5 ms, code 3: 3 frames
            bytes([31 << 3 | 3, 0x86]): 5760,  # CELT FB 20 ms, 6 frames (VBR flag set)
            bytes([16 << 3 | 3, 48]): 5760,  # 48 x 2.5 ms
        }
        for packet, samples in cases.items():
            self.assertEqual(opus_packet_duration(packet), samples, packet.hex())
        for bad in [b"", bytes([31 << 3 | 3]), bytes([31 << 3 | 3, 0]), bytes([31 << 3 | 3, 7]), bytes([3 << 3 | 3, 3])]:
            self.assertIsNone(opus_packet_duration(bad), bad.hex())

    def test_conceal(self) -> None:
        self.assertEqual(decoder_for("opus", 48000, 2).conceal(960), bytes(1920))
        self.assertEqual(decoder_for("opus", 48000, 2, output_channels=2).conceal(960), bytes(3840))
