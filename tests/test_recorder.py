"""StreamRecorder: timeline events -> decoder -> WAV (or Ogg Opus), DTMF events, kept failures."""

from __future__ import annotations

import errno
import math
import os
import struct
import warnings
import wave

import av
import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from siprecd.media.rtp import build_rtp, parse_rtp
from siprecd.recording.recorder import StreamRecorder, stream_file_name, write_silence
from siprecd.recording.wav import RecordingWriteError
from siprecd.sdp import StreamChoice

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

T0 = 1_700_000_000.0
SSRC = 0x1234ABCD


def choice(codec: str = "PCMU", pt: int = 0, clock_rate: int = 8000, *, channels: int | None = None,
           te: int | None = 101, index: int = 0, label: str | None = "caller") -> StreamChoice:
    return StreamChoice(
        index=index,
        media_type="audio",
        label=label,
        accepted=True,
        direction="recvonly",
        offered_direction="sendonly",
        on_hold=False,
        payload_type=pt,
        codec=codec,
        clock_rate=clock_rate,
        channels=channels,
        telephone_event_pt=te,
    )


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    n = round(seconds * rate)
    return (np.sin(2 * math.pi * frequency * np.arange(n) / rate) * amplitude * 32767).astype("<i2")


def ulaw_packets(samples: np.ndarray, size: int = 160) -> list[bytes]:
    data = audioop.lin2ulaw(samples.astype("<i2").tobytes(), 2)
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


def av_encode(codec: str, samples: np.ndarray, rate: int, frame: int) -> list[bytes]:
    encoder = av.CodecContext.create(codec, "w")
    encoder.sample_rate = rate
    encoder.layout = "mono"
    encoder.format = "s16"
    if codec == "libopus":
        encoder.bit_rate = 48000
    encoder.open()
    out: list[bytes] = []
    for start in range(0, len(samples) - frame + 1, frame):
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[start : start + frame].reshape(1, -1)),
                                       format="s16", layout="mono")
        f.sample_rate = rate
        f.pts = start
        out += [bytes(p) for p in encoder.encode(f)]
    out += [bytes(p) for p in encoder.encode(None)]
    return out


def read_wav(path: str) -> tuple[int, int, np.ndarray]:
    with wave.open(path, "rb") as handle:
        rate, channels = handle.getframerate(), handle.getnchannels()
        data = handle.readframes(handle.getnframes())
    samples = np.frombuffer(data, "<i2").astype(np.float64)
    return rate, channels, samples.reshape(-1, channels) if channels > 1 else samples


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def assert_near(test: SynchronousTestCase, value: float, expected: float, delta: float) -> None:
    test.assertLessEqual(abs(value - expected), delta, f"{value} is not within {delta} of {expected}")


def telephone_event(event: int, duration: int, end: bool = False, volume: int = 10) -> bytes:
    return struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)


class RecorderTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def recorder(self, c: StreamChoice | None = None, *, passthrough: bool = False, **kwargs) -> StreamRecorder:
        return StreamRecorder(
            self.directory,
            c or choice(),
            origin=T0,
            reorder_window=kwargs.pop("reorder_window", 8),
            max_delay=kwargs.pop("max_delay", 0.2),
            chunk_size=kwargs.pop("chunk_size", 4096),
            opus_passthrough=passthrough,
            **kwargs,
        )

    def push(self, recorder: StreamRecorder, pt: int, seq: int, ts: int, payload: bytes, arrival: float,
             marker: bool = False) -> None:
        packet = parse_rtp(build_rtp(pt, seq, ts, SSRC, payload, marker=marker))
        recorder.timeline.push(packet, arrival)
        if recorder.timeline.pending:
            recorder.consume()


class WavTests(RecorderTestCase):
    def test_length_is_timeline_with_start_silence_and_loss(self) -> None:
        recorder = self.recorder()
        payloads = ulaw_packets(tone(1000, 1.0, 8000))  # 50 packets
        start = T0 + 0.5  # the stream's first packet comes half a second after the session started
        for n, payload in enumerate(payloads):
            if n in (20, 21, 22):
                continue  # lost
            self.push(recorder, 0, 1000 + n, 5000 + 160 * n, payload, start + 0.02 * n)
        recorder.finish()
        self.assertTrue(recorder.writer.finalized)
        self.assertFalse(os.path.exists(recorder.writer.part_path))
        self.assertEqual(recorder.file, "stream-1-caller.wav")
        rate, channels, samples = read_wav(os.path.join(self.directory, recorder.file))
        self.assertEqual((rate, channels), (8000, 1))
        self.assertEqual(len(samples), recorder.timeline.position)
        self.assertEqual(len(samples), 4000 + 50 * 160)
        self.assertFalse(samples[:4000].any(), "leading silence from the session's start")
        lost = samples[4000 + 20 * 160 : 4000 + 23 * 160]
        self.assertFalse(lost.any(), "lost packets are silence")
        self.assertGreater(np.abs(samples[4000 : 4000 + 20 * 160]).max(), 5000)
        assert_near(self, dominant_frequency(samples[4000 + 23 * 160 :], 8000), 1000, delta=10)
        self.assertEqual(recorder.counters.lost, 3)
        self.assertEqual(recorder.to_json()["format"], "wav-pcm16")
        self.assertIsNone(recorder.to_json()["error"])

    def test_overlap_is_skipped(self) -> None:
        recorder = self.recorder()
        loud = audioop.lin2ulaw(struct.pack("<h", 8000) * 160, 2)
        first_half = audioop.lin2ulaw(struct.pack("<h", -16000) * 80, 2)
        second_half = audioop.lin2ulaw(struct.pack("<h", 16000) * 80, 2)
        self.push(recorder, 0, 1, 0, loud, T0)
        self.push(recorder, 0, 2, 160, loud, T0 + 0.02)
        # Timestamp 80 units into the previous packet: its first 80 units are already written.
        self.push(recorder, 0, 3, 240, first_half + second_half, T0 + 0.04)
        self.push(recorder, 0, 4, 400, loud, T0 + 0.06)
        recorder.finish()
        _, _, samples = read_wav(os.path.join(self.directory, recorder.file))
        self.assertEqual(len(samples), 560)
        self.assertEqual(len(samples), recorder.timeline.position)
        middle = samples[320:400]
        self.assertTrue((middle > 10000).all(), "only the part of the packet after the overlap")
        self.assertFalse((samples < -10000).any(), "the overlapping part is dropped")

    def test_unknown_payload_type_is_silence(self) -> None:
        recorder = self.recorder()
        payloads = ulaw_packets(tone(440, 0.2, 8000))  # 10 packets
        for n, payload in enumerate(payloads):
            pt = 8 if 4 <= n < 7 else 0  # PCMA was never negotiated
            self.push(recorder, pt, n, 160 * n, payload, T0 + 0.02 * n)
        recorder.finish()
        _, _, samples = read_wav(os.path.join(self.directory, recorder.file))
        self.assertEqual(len(samples), 10 * 160)
        self.assertFalse(samples[4 * 160 : 7 * 160].any(), "not noise")
        self.assertTrue(samples[7 * 160 :].any())
        self.assertEqual(recorder.counters.payload_type_changes, 2)

    def test_g722_at_16khz(self) -> None:
        recorder = self.recorder(choice("G722", 9))
        self.assertEqual(recorder.rate, 16000)
        payloads = av_encode("g722", tone(3000, 1.0, 16000), 16000, 320)
        self.assertEqual(len(payloads[0]), 160)
        start = T0 + 0.25
        for n, payload in enumerate(payloads):
            self.push(recorder, 9, n, 160 * n, payload, start + 0.02 * n)
        recorder.finish()
        rate, channels, samples = read_wav(os.path.join(self.directory, recorder.file))
        self.assertEqual((rate, channels), (16000, 1))
        self.assertEqual(len(samples), 2 * recorder.timeline.position)
        self.assertEqual(len(samples), 4000 + 320 * len(payloads))
        self.assertFalse(samples[:4000].any())
        assert_near(self, dominant_frequency(samples[4000:], 16000), 3000, delta=20)

    def test_opus_decoded_to_wav(self) -> None:
        recorder = self.recorder(choice("opus", 111, 48000, channels=2))
        payloads = av_encode("libopus", tone(600, 0.5, 48000), 48000, 960)
        for n, payload in enumerate(payloads):
            self.push(recorder, 111, n, 960 * n, payload, T0 + 0.02 * n)
        recorder.finish()
        rate, channels, samples = read_wav(os.path.join(self.directory, recorder.file))
        self.assertEqual((rate, channels), (48000, 1))
        self.assertEqual(len(samples), recorder.timeline.position)
        assert_near(self, dominant_frequency(samples[4800:], 48000), 600, delta=10)

    def test_codec_change_keeps_the_file_rate(self) -> None:
        # A re-offer switches the stream from PCMU (8 kHz) to G.722 (16 kHz output): the WAV stays
        # 8 kHz and its length keeps matching the timeline, with the tone intact.
        recorder = self.recorder()
        for n, payload in enumerate(ulaw_packets(tone(1000, 0.5, 8000))):
            self.push(recorder, 0, n, 160 * n, payload, T0 + 0.02 * n)
        recorder.renegotiated(choice("G722", 9))
        for n, payload in enumerate(av_encode("g722", tone(1000, 0.5, 16000), 16000, 320)):
            self.push(recorder, 9, 25 + n, 160 * (25 + n), payload, T0 + 0.02 * (25 + n))
        recorder.finish()
        rate, _, samples = read_wav(os.path.join(self.directory, recorder.file))
        self.assertEqual(rate, 8000)
        self.assertEqual(len(samples), recorder.timeline.position)
        second = samples[4000 + 400 :]
        assert_near(self, dominant_frequency(second, 8000), 1000, delta=20)

    def test_codec_change_to_narrowband_is_upsampled(self) -> None:
        recorder = self.recorder(choice("G722", 9))
        recorder.renegotiated(choice("PCMU", 0))
        for n, payload in enumerate(ulaw_packets(tone(1000, 0.5, 8000))):
            self.push(recorder, 0, n, 160 * n, payload, T0 + 0.02 * n)
        recorder.finish()
        rate, _, samples = read_wav(os.path.join(self.directory, recorder.file))
        self.assertEqual(rate, 16000)
        self.assertEqual(len(samples), 2 * recorder.timeline.position)
        assert_near(self, dominant_frequency(samples[320:], 16000), 1000, delta=20)
        # No zero-filled half packets: a 1 kHz tone has no run of 40 zero samples.
        self.assertGreater(np.abs(samples[320:]).reshape(-1, 40).max(axis=1).min(), 1000)

    def test_codec_change_to_other_clock_rate_is_silence(self) -> None:
        recorder = self.recorder()
        recorder.renegotiated(choice("opus", 111, 48000))  # cannot share an 8 kHz timeline
        for n, payload in enumerate(ulaw_packets(tone(1000, 0.1, 8000))):
            self.push(recorder, 0, n, 160 * n, payload, T0 + 0.02 * n)
        opus = av_encode("libopus", tone(600, 0.1, 48000), 48000, 960)
        for n, payload in enumerate(opus[:5]):
            self.push(recorder, 111, 5 + n, 160 * (5 + n), payload, T0 + 0.02 * (5 + n))
        recorder.finish()
        _, _, samples = read_wav(os.path.join(self.directory, recorder.file))
        self.assertEqual(len(samples), recorder.timeline.position)
        self.assertFalse(samples[800:].any())


class OpusPassthroughTests(RecorderTestCase):
    def test_opus_stored_as_ogg(self) -> None:
        recorder = self.recorder(choice("opus", 111, 48000, channels=2), passthrough=True)
        self.assertTrue(recorder.passthrough)
        self.assertEqual(recorder.file, "stream-1-caller.opus")
        payloads = av_encode("libopus", tone(600, 1.0, 48000), 48000, 960)
        start = T0 + 0.1
        for n, payload in enumerate(payloads):
            if n in (10, 11):
                continue  # lost: concealed in the file
            self.push(recorder, 111, n, 960 * n, payload, start + 0.02 * n)
        recorder.finish()
        path = os.path.join(self.directory, recorder.file)
        with open(path, "rb") as handle:
            data = handle.read()
        self.assertEqual(data[:4], b"OggS")
        self.assertIn(b"OpusHead", data[:100])
        self.assertEqual(recorder.writer.duration, recorder.timeline.position)
        self.assertEqual(recorder.timeline.position, 4800 + 960 * len(payloads))
        # Every payload is stored verbatim.
        self.assertIn(payloads[20], data)
        json = recorder.to_json()
        self.assertEqual((json["format"], json["sample_rate"]), ("ogg-opus", 48000))
        container = av.open(path)
        try:
            decoded = sum(frame.samples for frame in container.decode(audio=0))
        finally:
            container.close()
        assert_near(self, decoded, recorder.timeline.position, delta=960)

    def test_foreign_payload_type_is_not_stored_as_opus(self) -> None:
        recorder = self.recorder(choice("opus", 111, 48000), passthrough=True)
        payloads = av_encode("libopus", tone(600, 0.2, 48000), 48000, 960)
        for n, payload in enumerate(payloads[:10]):
            pt = 0 if n in (4, 5) else 111
            body = b"\x7c" * 160 if pt == 0 else payload  # reads as a valid Opus TOC
            self.push(recorder, pt, n, 960 * n, body, T0 + 0.02 * n)
        recorder.finish()
        with open(os.path.join(self.directory, recorder.file), "rb") as handle:
            data = handle.read()
        self.assertFalse(b"\x7c" * 160 in data, "a PCMU payload written as Opus")
        self.assertEqual(recorder.writer.duration, recorder.timeline.position)


class DtmfTests(RecorderTestCase):
    def test_dtmf_event_listed(self) -> None:
        recorder = self.recorder()
        payloads = ulaw_packets(tone(440, 0.4, 8000))
        seq = 0
        for n in range(5):
            self.push(recorder, 0, seq, 160 * n, payloads[n], T0 + 0.02 * n)
            seq += 1
        # Key "5" pressed at timestamp 800 for 800 units (100 ms), the end sent three times.
        for step in range(1, 6):
            end = step == 5
            for _ in range(3 if end else 1):
                self.push(recorder, 101, seq, 800, telephone_event(5, 160 * step, end), T0 + 0.1 + 0.02 * step,
                          marker=step == 1)
                seq += 1
        for n in range(10, 20):
            self.push(recorder, 0, seq, 160 * n, payloads[n], T0 + 0.02 * n)
            seq += 1
        recorder.finish()
        [event] = recorder.events
        self.assertEqual(event["type"], "dtmf")
        self.assertEqual(event["digit"], "5")
        self.assertEqual(event["event"], 5)
        self.assertEqual(event["duration_ms"], 100.0)
        self.assertEqual(event["start_position"], 800)
        self.assertEqual(event["start_seconds"], 0.1)
        self.assertTrue(event["ended"])
        _, _, samples = read_wav(os.path.join(self.directory, recorder.file))
        self.assertEqual(len(samples), recorder.timeline.position)
        self.assertFalse(samples[800:1600].any(), "the key press is silence in the audio")

    def test_unfinished_event_reported_at_finish(self) -> None:
        recorder = self.recorder()
        self.push(recorder, 0, 1, 0, b"\xff" * 160, T0)
        self.push(recorder, 101, 2, 160, telephone_event(11, 160), T0 + 0.04, marker=True)
        self.push(recorder, 101, 3, 160, telephone_event(11, 320), T0 + 0.06)
        recorder.finish()
        [event] = recorder.events
        self.assertEqual((event["digit"], event["ended"]), ("#", False))


class FailureTests(RecorderTestCase):
    def disk_full(self, *args: object) -> None:
        raise RecordingWriteError(self.path, OSError(errno.ENOSPC, "No space left on device"))

    def test_write_error_sets_failed_without_raising(self) -> None:
        recorder = self.recorder()
        self.path = recorder.writer.part_path
        payloads = ulaw_packets(tone(440, 0.2, 8000))
        for n in range(3):
            self.push(recorder, 0, n, 160 * n, payloads[n], T0 + 0.02 * n)
        self.patch(recorder.writer, "write", self.disk_full)
        for n in range(3, 6):
            self.push(recorder, 0, n, 160 * n, payloads[n], T0 + 0.02 * n)  # must not raise
        self.assertIsNotNone(recorder.failed)
        self.assertTrue(recorder.failed.disk_full)
        self.assertEqual(recorder.failed.errno, errno.ENOSPC)
        self.assertEqual(recorder.timeline.pending, 0)  # still drained
        for n in range(6, 10):
            self.push(recorder, 0, n, 160 * n, payloads[n], T0 + 0.02 * n)
        self.assertEqual(recorder.timeline.pending, 0)
        recorder.flush()  # a failed recorder does not touch its writer again
        recorder.finish()  # keeps what reached the disk
        self.assertIn("No space left", recorder.to_json()["error"])
        self.assertTrue(os.path.exists(os.path.join(self.directory, recorder.file)))

    def test_flush_error_sets_failed(self) -> None:
        recorder = self.recorder()
        self.path = recorder.writer.part_path
        self.patch(recorder.writer, "flush", self.disk_full)
        recorder.flush()
        self.assertTrue(recorder.failed.disk_full)

    def test_mix_sink_error_kept(self) -> None:
        def sink(pcm: bytes) -> None:
            raise RecordingWriteError("mix.wav", OSError(errno.EIO, "Input/output error"))

        recorder = self.recorder(pcm_sink=sink)
        self.push(recorder, 0, 1, 0, b"\xff" * 160, T0)
        self.push(recorder, 0, 2, 160, b"\xff" * 160, T0 + 0.02)
        self.assertEqual(recorder.failed.errno, errno.EIO)

    def test_cannot_create_file(self) -> None:
        self.recorder(choice(label="x"))
        with self.assertRaises(RecordingWriteError):
            self.recorder(choice(label="x"))  # the .part name exists: never overwritten


class HelperTests(SynchronousTestCase):
    def test_stream_file_name(self) -> None:
        self.assertEqual(stream_file_name(0, "caller", "wav"), "stream-1-caller.wav")
        self.assertEqual(stream_file_name(2, None, "opus"), "stream-3.opus")
        self.assertEqual(stream_file_name(1, "../../etc/passwd", "wav"), "stream-2-etc_passwd.wav")
        self.assertEqual(stream_file_name(1, "...", "wav"), "stream-2.wav")

    def test_write_silence_in_pieces(self) -> None:
        pieces: list[bytes] = []
        write_silence(pieces.append, 150000)
        self.assertEqual(sum(map(len, pieces)), 150000)
        self.assertLessEqual(max(map(len, pieces)), 65536)
        self.assertFalse(any(any(p) for p in pieces))
