"""Ogg Opus passthrough: FFmpeg (through PyAV) must read back the right duration and tone."""

from __future__ import annotations

import os
import struct

import av
import numpy as np
from twisted.trial import unittest

from siprecd.media.codecs import opus_packet_duration
from siprecd.recording import recovery
from siprecd.recording.oggopus import OggOpusWriter, ogg_crc, ogg_page, opus_head, plc_packets, silence_packets
from siprecd.recording.wav import RecordingWriteError
from tests.audio import assert_near, dominant_frequency, encode, rms, tone


def pages(path: str) -> list[dict]:
    """Parse every page, checking capture pattern and CRC."""
    with open(path, "rb") as handle:
        data = handle.read()
    out, position = [], 0
    while position < len(data):
        assert data[position : position + 4] == b"OggS", position
        _, version, flags, granule, serial, sequence, crc, count = struct.unpack_from("<4sBBqIIIB", data, position)
        lacing = data[position + 27 : position + 27 + count]
        end = position + 27 + count + sum(lacing)
        page = bytearray(data[position:end])
        page[22:26] = b"\0\0\0\0"
        assert ogg_crc(page) == crc, f"bad CRC on page {sequence}"
        body, packets, start, size = data[position + 27 + count : end], [], 0, 0
        for value in lacing:
            size += value
            if value < 255:
                packets.append(body[start : start + size])
                start, size = start + size, 0
        out.append(dict(flags=flags, granule=granule, serial=serial, sequence=sequence, packets=packets))
        position = end
    return out


def decode_file(path: str, decoder: str | None = None) -> tuple[np.ndarray, av.container.InputContainer]:
    """Demux with libavformat; decode with its default decoder or the one named."""
    container = av.open(path)
    stream = container.streams.audio[0]
    context = None
    if decoder:
        context = av.CodecContext.create(decoder, "r")
        context.sample_rate = 48000
        context.layout = "mono"
    context = context or stream.codec_context
    out = []

    def add(frames: list) -> None:
        for frame in frames:
            samples = frame.to_ndarray().reshape(-1).astype(np.float64)
            out.append(samples * 32768 if frame.format.name in ("fltp", "flt") else samples)

    for packet in container.demux(stream):
        if packet.size:
            add(context.decode(packet))
    add(context.decode(None))
    return np.concatenate(out), container


class OggOpusTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "stream-a.opus")
        self.payloads = encode("libopus", tone(1000, 1.0, 48000), 48000, 960)

    def test_tone_and_duration(self) -> None:
        writer = OggOpusWriter(self.path, tags=[("SIPREC_LABEL", "a")], serial=1234)
        for payload in self.payloads:
            writer.write(payload)
        self.assertTrue(os.path.exists(self.path + ".part"))
        self.assertEqual(writer.finalize(), self.path)
        self.assertFalse(os.path.exists(self.path + ".part"))
        expected = 960 * len(self.payloads)
        for decoder in (None, "libopus"):  # FFmpeg's own opus decoder, then libopus
            samples, container = decode_file(self.path, decoder)
            stream = container.streams.audio[0]
            self.assertEqual((stream.codec_context.name, stream.sample_rate), ("opus", 48000))
            self.assertEqual(stream.metadata.get("SIPREC_LABEL"), "a")
            # libavformat takes the duration from the last granule position.
            self.assertEqual(stream.duration * stream.time_base * 48000, expected)
            container.close()
            self.assertEqual(len(samples), expected, decoder)
            assert_near(self, dominant_frequency(samples[4800:], 48000), 1000, 5)

    def test_page_structure(self) -> None:
        writer = OggOpusWriter(self.path, channels=2, pre_skip=312, serial=77, page_duration=48000 // 4)
        for payload in self.payloads:
            writer.write(payload)
        writer.finalize()
        parsed = pages(self.path)
        self.assertEqual([p["sequence"] for p in parsed], list(range(len(parsed))))
        self.assertEqual({p["serial"] for p in parsed}, {77})
        self.assertEqual(parsed[0]["flags"], 0x02)  # BOS
        self.assertEqual(parsed[0]["packets"], [opus_head(2, 312)])
        self.assertEqual(parsed[0]["packets"][0][9:12], b"\x02\x38\x01")  # channels, pre-skip 312
        self.assertEqual((parsed[1]["granule"], parsed[1]["packets"][0][:8]), (0, b"OpusTags"))
        audio = parsed[2:]
        self.assertEqual([p["flags"] for p in audio], [0] * (len(audio) - 1) + [0x04])  # EOS last
        self.assertGreaterEqual(len(audio), 4)
        total = 312
        for page in audio:
            total += sum(opus_packet_duration(packet) for packet in page["packets"])
            self.assertEqual(page["granule"], total)
        self.assertEqual(total, 312 + 960 * len(self.payloads))
        self.assertEqual([pk for p in audio for pk in p["packets"]], self.payloads)

    def test_gap_is_concealed_with_the_right_duration(self) -> None:
        writer = OggOpusWriter(self.path)
        for payload in self.payloads[:25]:
            writer.write(payload)
        writer.conceal(14400 + 100)  # 300 ms lost (and 100 samples that wait for the next gap)
        writer.conceal(20)  # ... which completes a 2.5 ms unit
        for payload in self.payloads[25:]:
            writer.write(payload)
        writer.finalize()
        expected = 960 * len(self.payloads) + 14400 + 120
        self.assertEqual(pages(self.path)[-1]["granule"], expected)
        for decoder in (None, "libopus"):
            samples, container = decode_file(self.path, decoder)
            container.close()
            self.assertEqual(len(samples), expected, decoder)
            gap_start = 25 * 960
            # 100 ms of concealment, then silence (from 110 ms: the CELT overlap); the tone
            # on both sides.
            self.assertLess(rms(samples[gap_start + 5280 : gap_start + 14400]), 1, decoder)
            self.assertGreater(rms(samples[gap_start - 4800 : gap_start]), 5000)
            after = samples[gap_start + 14520 + 4800 :]
            self.assertGreater(rms(after), 5000)
            assert_near(self, dominant_frequency(after, 48000), 1000, 5)

    def test_long_hold_is_silent(self) -> None:
        writer = OggOpusWriter(self.path)
        for payload in self.payloads[:10]:
            writer.write(payload)
        for _ in range(250):  # a 5 s hold reported 20 ms at a time
            writer.conceal(960)
        writer.write(self.payloads[10])
        writer.finalize()
        parsed = pages(self.path)
        self.assertEqual(parsed[-1]["granule"], 960 * 11 + 240000)
        # 100 ms of empty frames like the last packet's (1 byte each), then silence frames.
        packets = [packet for page in parsed[2:] for packet in page["packets"]][10:-1]
        self.assertEqual(packets[:5], [self.payloads[9][:1]] * 5)
        self.assertEqual(set(packets[5:]), {bytes([31 << 3]) + b"\xff\xfe"})
        for decoder in (None, "libopus"):
            samples, container = decode_file(self.path, decoder)
            container.close()
            self.assertEqual(len(samples), 960 * 11 + 240000)
            self.assertEqual(np.abs(samples[9600 + 5280 : 9600 + 240000]).max(), 0, decoder)

    def test_silence_frame_is_what_libopus_emits(self) -> None:
        for channels, toc in [(1, 31 << 3), (2, 31 << 3 | 4)]:
            silent = np.zeros((9600, channels) if channels == 2 else 9600, "<i2")
            payloads = encode("libopus", silent, 48000, 960, channels=channels)
            self.assertEqual(set(payloads[2:]), {bytes([toc]) + b"\xff\xfe"})
        self.assertEqual(silence_packets(960 * 7 + 600, 0), [
            bytes([31 << 3 | 3, 6]) + b"\xff\xfe" * 6,
            bytes([31 << 3]) + b"\xff\xfe",
            bytes([30 << 3]) + b"\xff\xfe",
            bytes([28 << 3]) + b"\xff\xfe",
        ])

    def test_gap_before_first_packet_and_at_end(self) -> None:
        writer = OggOpusWriter(self.path)
        writer.conceal(9600)
        for payload in self.payloads[:10]:
            writer.write(payload)
        writer.conceal(4800)
        writer.finalize()
        samples, container = decode_file(self.path, "libopus")
        container.close()
        self.assertEqual(len(samples), 9600 + 9600 + 4800)
        self.assertLess(rms(samples[:9600]), 1)

    def test_plc_packets(self) -> None:
        silk_wb_20ms = 9 << 3
        packets = plc_packets(48000 + 120, silk_wb_20ms)
        self.assertEqual(sum(opus_packet_duration(p) for p in packets), 48120)
        self.assertEqual(packets[0], bytes([9 << 3 | 3, 6]))  # 6 empty 20 ms frames = 120 ms
        self.assertEqual(packets[-2], bytes([9 << 3 | 3, 2]))
        self.assertEqual(packets[-1], bytes([20 << 3]))  # 2.5 ms CELT wideband, code 0
        stereo_fb_20 = 31 << 3 | 4
        self.assertEqual(plc_packets(960, stereo_fb_20), [bytes([31 << 3 | 4])])
        silk_60 = 11 << 3
        packets = plc_packets(2880 * 3 + 960 + 480 + 240, silk_60)
        self.assertEqual(
            [(p[0] >> 3, opus_packet_duration(p)) for p in packets], [(11, 5760), (11, 2880), (23, 960), (22, 480), (21, 240)]
        )

    def test_bad_payloads_dropped(self) -> None:
        writer = OggOpusWriter(self.path)
        writer.write(b"")
        writer.write(bytes([31 << 3 | 3]))
        writer.write(self.payloads[0])
        self.assertEqual((writer.dropped, writer.packets, writer.duration), (2, 1, 960))
        writer.finalize()

    def test_eos_set_on_an_already_written_page(self) -> None:
        writer = OggOpusWriter(self.path, page_duration=960 * 5)
        for payload in self.payloads[:10]:  # exactly two full pages, nothing left open
            writer.write(payload)
        writer.finalize()
        parsed = pages(self.path)  # CRCs still valid after the in-place flag change
        self.assertEqual([p["flags"] for p in parsed], [0x02, 0, 0, 0x04])

    def test_no_audio_at_all(self) -> None:
        OggOpusWriter(self.path).finalize()
        parsed = pages(self.path)
        # Two header pages, the second one ending the stream.  (FFmpeg refuses to open an Ogg
        # stream without audio pages, with or without that EOS: writer.packets == 0 tells.)
        self.assertEqual([(p["flags"], p["granule"]) for p in parsed], [(0x02, 0), (0x04, 0)])

    def test_write_error_keeps_whole_pages(self) -> None:
        writer = OggOpusWriter(self.path, page_duration=960 * 5)
        for payload in self.payloads[:10]:
            writer.write(payload)
        real_write = os.write

        def write(fd: int, data: bytes) -> int:
            real_write(fd, bytes(data)[:50])  # half a page, then the disk is full
            raise OSError(28, "No space left on device")

        self.patch(os, "write", write)
        for payload in self.payloads[10:14]:
            writer.write(payload)
        error = self.assertRaises(RecordingWriteError, writer.write, self.payloads[14])
        self.assertTrue(error.disk_full)
        self.assertRaises(RecordingWriteError, writer.write, self.payloads[15])
        writer.finalize()
        parsed = pages(self.path)
        self.assertEqual(parsed[-1]["granule"], 960 * 10)
        samples, container = decode_file(self.path)
        container.close()
        self.assertEqual(len(samples), 960 * 10)

    def test_recovery_trims_a_torn_page(self) -> None:
        writer = OggOpusWriter(self.path, page_duration=960 * 10)
        for payload in self.payloads[:25]:
            writer.write(payload)
        writer.close()  # as if killed: two pages written, the third still open
        with open(self.path + ".part", "ab") as handle:
            handle.write(ogg_page(self.payloads[25:30], granule=1, serial=writer.serial, sequence=9)[:-7])
        (result,) = recovery.recover_directory(self.directory)
        self.assertEqual((result.outcome, result.kind), ("recovered", "ogg"))
        self.assertGreater(result.removed_bytes, 0)
        self.assertEqual(os.listdir(self.directory), ["stream-a.opus"])
        self.assertEqual(pages(self.path)[-1]["granule"], 960 * 20)
        samples, container = decode_file(self.path)
        container.close()
        self.assertEqual(len(samples), 960 * 20)

    def test_crc_matches_libogg_vector(self) -> None:
        # CRC-32/CKSUM (same polynomial, init 0, not reflected) checks "123456789" as 0x765E7680
        # after its final xor with 0xFFFFFFFF; the Ogg CRC has no final xor.
        self.assertEqual(ogg_crc(b"123456789"), 0x89A1897F)
        self.assertEqual(ogg_crc(b""), 0)
