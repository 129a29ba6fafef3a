"""SessionMedia: recorders per stream, the stereo/mono mix, the staggered periodic tick."""

from __future__ import annotations

import errno
import os
import struct
import warnings
import wave

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.config import load_config
from siprecd.media.ports import PortPair
from siprecd.media.rtcp import ReceiverReport, parse_rtcp
from siprecd.media.rtp import build_rtp
from siprecd.recording.session import RecordedStream, RecordingSession
from siprecd.recording.wav import RecordingWriteError
from siprecd.sdp import parse, plan_streams
from siprecd.siprec import session_media
from siprecd.siprec.session_media import SessionMedia

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

T0 = 1_700_000_000.0
SRC_HOST = "192.0.2.10"


def offer(*codecs: tuple[str, str]) -> bytes:
    """An SRC's offer: one sendonly m-line per (payload types, rtpmap lines) pair."""
    lines = [
        "v=0",
        f"o=SRC 1 1 IN IP4 {SRC_HOST}",
        "s=-",
        f"c=IN IP4 {SRC_HOST}",
        "t=0 0",
    ]
    for n, (pts, rtpmap) in enumerate(codecs):
        lines += [f"m=audio {40000 + 2 * n} RTP/AVP {pts}", *filter(None, rtpmap.split("|")), f"a=label:{n + 1}",
                  "a=sendonly"]
    return ("\r\n".join(lines) + "\r\n").encode()


PCMU = ("0 101", "a=rtpmap:0 PCMU/8000|a=rtpmap:101 telephone-event/8000")
G722 = ("9", "a=rtpmap:9 G722/8000")
OPUS = ("111", "a=rtpmap:111 opus/48000/2")


class FakeDatagramTransport:
    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


def wav_info(path: str) -> tuple[int, int, int]:
    with wave.open(path, "rb") as handle:
        return handle.getframerate(), handle.getnchannels(), handle.getnframes()


def header_data_size(path: str) -> int:
    with open(path, "rb") as handle:
        return struct.unpack("<I", handle.read(44)[40:44])[0]


class SessionMediaTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.failures: list[str] = []
        self.sequences: dict[int, int] = {}
        # The start phase is random; with none, ticks fall on whole intervals from start().
        self.patch(session_media.random, "uniform", lambda low, high: low)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def make(self, *codecs: tuple[str, str], **settings: str) -> SessionMedia:
        environ = {"SIPRECD_RECORDING_DIRECTORY": os.path.abspath(self.mktemp())}
        environ.update({f"SIPRECD_{key.upper()}": value for key, value in settings.items()})
        self.config = load_config(None, environ)
        directory = os.path.join(self.config.recording.directory, "session")
        os.makedirs(directory)
        self.session = RecordingSession(
            session_id="s1", call_id="c1", started_at=self.clock.seconds(), src={}, sip={}, siprec=True,
            directory=directory,
        )
        media = SessionMedia(self.clock, self.config, self.session, self.failures.append)
        self.offer = parse(offer(*codecs))
        self.transports = []
        for choice in plan_streams(self.offer, codec_preference=self.config.siprec.codec_preference):
            stream = RecordedStream(key=f"label:{choice.label}", choice=choice)
            if choice.accepted:
                stream.media = media.new_stream_media()
                rtp, rtcp = FakeDatagramTransport(), FakeDatagramTransport()
                stream.media.rtp.makeConnection(rtp)
                stream.media.rtcp.makeConnection(rtcp)
                self.transports.append(rtcp)
                stream.ports = PortPair(20000 + 2 * choice.index, 20001 + 2 * choice.index, None, None)  # type: ignore[arg-type]
            self.session.streams.append(stream)
        self.media = media
        return media

    def attach(self) -> None:
        self.media.attach(self.session.streams, self.offer)

    def play(self, seconds: float, streams: tuple[int, ...] = (0, 1)) -> None:
        """Real time passes in 20 ms steps; each stream listed sends a packet every step."""
        for _ in range(round(seconds / 0.02)):
            for index in streams:
                self.send(index)
            self.clock.advance(0.02)

    def send(self, index: int) -> None:
        """One 20 ms packet of a tone (G.711) or of G.722 bytes on stream ``index``."""
        stream = self.session.streams[index]
        pt = stream.choice.payload_type
        if pt == 9:
            payload = bytes(range(64, 224))  # some G.722 bytes: 160 units
        else:
            pcm = b"".join(struct.pack("<h", v) for v in (0, 7000, 10000, 7000, 0, -7000, -10000, -7000))
            payload = audioop.lin2ulaw(pcm * 20, 2)
        seq = self.sequences.get(index, 0)
        self.sequences[index] = seq + 1
        stream.media.rtp.datagramReceived(
            build_rtp(pt, seq, 160 * seq, 0xA0 + index, payload), (SRC_HOST, 40000 + 2 * index)
        )

    def path(self, name: str) -> str:
        return os.path.join(self.session.directory, name)

    def end(self) -> None:
        for stream in self.session.streams:
            self.media.finish_stream(stream)
            stream.ended = True
        self.media.stop()


class MixTests(SessionMediaTestCase):
    def test_stereo_mix_at_the_higher_rate(self) -> None:
        media = self.make(PCMU, G722)
        self.attach()
        self.assertIsNotNone(media.mixer)
        self.assertIsNone(media.mix_note)
        self.play(1.0)
        self.end()
        self.assertEqual(wav_info(self.path("stream-1-1.wav")), (8000, 1, 8000))
        self.assertEqual(wav_info(self.path("stream-2-2.wav")), (16000, 1, 16000))
        self.assertEqual(wav_info(self.path("mix-stereo.wav")), (16000, 2, 16000))
        self.assertFalse([n for n in os.listdir(self.session.directory) if n.endswith(".part")])
        view = media.to_json({"1": ["alice"], "2": ["bob"]})
        self.assertEqual(view["file"], "mix-stereo.wav")
        self.assertEqual(view["sample_rate"], 16000)
        self.assertEqual([c["channel"] for c in view["channels"]], ["left", "right"])
        self.assertEqual([c["sending_participants"] for c in view["channels"]], [["alice"], ["bob"]])
        self.assertEqual(view["channels"][1]["stream_file"], "stream-2-2.wav")
        self.assertIsNone(view["error"])

    def test_mono_mix(self) -> None:
        media = self.make(PCMU, PCMU, RECORDING_MIX="mono")
        self.attach()
        self.play(0.5)
        self.end()
        self.assertEqual(wav_info(self.path("mix-mono.wav")), (8000, 1, 4000))
        self.assertEqual(media.to_json({})["channels"][0]["channel"], "mixed")

    def test_one_stream_not_mixed(self) -> None:
        media = self.make(PCMU)
        self.attach()
        self.assertIsNone(media.mixer)
        self.assertIn("1 recorded stream(s)", media.mix_note)
        self.assertEqual(media.to_json({}), {"file": None, "note": media.mix_note})
        self.end()
        self.assertFalse([n for n in os.listdir(self.session.directory) if n.startswith("mix")])

    def test_three_streams_not_mixed(self) -> None:
        media = self.make(PCMU, PCMU, PCMU)
        self.attach()
        self.assertIsNone(media.mixer)
        self.assertIn("3 recorded stream(s)", media.mix_note)
        self.end()

    def test_mix_none(self) -> None:
        media = self.make(PCMU, PCMU, RECORDING_MIX="none")
        self.attach()
        self.assertIsNone(media.mixer)
        self.assertIn("disabled", media.mix_note)
        self.end()

    def test_opus_passthrough_not_mixed(self) -> None:
        media = self.make(OPUS, OPUS, RECORDING_OPUS_PASSTHROUGH="true", SIPREC_CODEC_PREFERENCE="opus")
        self.attach()
        self.assertIsNone(media.mixer)
        self.assertIn("Opus", media.mix_note)
        self.end()

    def test_reoffer_keeps_recorders_and_mix(self) -> None:
        media = self.make(PCMU, PCMU)
        self.attach()
        recorders = [s.recorder for s in self.session.streams]
        mixer = media.mixer
        self.attach()
        self.assertEqual([s.recorder for s in self.session.streams], recorders)
        self.assertIs(media.mixer, mixer)
        self.end()

    def test_attach_failure_leaves_no_open_file(self) -> None:
        self.make(PCMU, PCMU)
        # The second stream's file cannot be created (its name is taken: never overwritten).
        open(self.path("stream-2-2.wav.part"), "wb").close()
        with self.assertRaises(RecordingWriteError):
            self.attach()
        first = self.session.streams[0]
        self.assertIsNone(first.recorder, "the first stream's recorder is given up")
        self.assertFalse(os.path.exists(self.path("stream-1-1.wav.part")))
        self.media.stop()


class TickTests(SessionMediaTestCase):
    def test_tick_flushes(self) -> None:
        media = self.make(PCMU, PCMU)
        self.attach()
        media.start()
        self.clock.advance(0)  # the (patched) random phase: the loop starts now
        self.play(0.2, (0,))  # 10 packets, 3200 bytes: less than a chunk, still buffered
        part = self.path("stream-1-1.wav.part")
        self.assertEqual(header_data_size(part), 0)
        self.assertEqual(os.path.getsize(part), 44)
        self.clock.advance(1.0)  # past the first tick (1 s)
        self.assertEqual(header_data_size(part), 3200)
        self.assertEqual(os.path.getsize(part), 44 + 3200)
        self.play(0.1, (0,))
        self.clock.advance(1.0)  # past the second
        self.assertEqual(header_data_size(part), 4800)
        self.end()

    def test_receiver_reports_every_rtcp_interval(self) -> None:
        media = self.make(PCMU, PCMU, MEDIA_RTCP_INTERVAL="2", RECORDING_FLUSH_INTERVAL="0.5")
        self.attach()
        media.start()
        self.clock.advance(0)
        self.play(0.2)
        for _ in range(3):
            self.clock.advance(0.5)  # past ticks 1..3 (LoopingCall runs a late tick once, not per interval)
        self.assertEqual([len(t.written) for t in self.transports], [0, 0])
        self.clock.advance(0.5)  # the 4th tick: 2 s
        self.assertEqual([len(t.written) for t in self.transports], [1, 1])
        data, addr = self.transports[0].written[0]
        self.assertEqual(addr, (SRC_HOST, 40001))
        rr = parse_rtcp(data)[0]
        assert isinstance(rr, ReceiverReport)
        self.assertEqual(rr.reports[0].ssrc, 0xA0)
        for _ in range(3):
            self.clock.advance(0.5)
        self.assertEqual([len(t.written) for t in self.transports], [1, 1])
        self.clock.advance(0.5)  # the 8th tick
        self.assertEqual([len(t.written) for t in self.transports], [2, 2])
        self.end()

    def test_failure_calls_on_failure_once(self) -> None:
        media = self.make(PCMU, PCMU)
        self.attach()
        media.start()
        recorder = self.session.streams[1].recorder

        def disk_full() -> None:
            raise RecordingWriteError(recorder.writer.part_path, OSError(errno.ENOSPC, "No space left on device"))

        self.patch(recorder.writer, "flush", disk_full)
        media._tick()
        self.assertIsNotNone(recorder.failed)
        self.assertEqual(self.failures, [])  # not from inside the tick: on the next turn
        self.clock.advance(0)
        self.assertEqual(len(self.failures), 1)
        self.assertIn("stream-2-2.wav", self.failures[0])
        self.assertIn("No space left", self.failures[0])
        self.clock.advance(3.5)
        self.assertEqual(len(self.failures), 1)
        self.end()

    def test_failure_in_packet_path_noticed_by_tick(self) -> None:
        media = self.make(PCMU, PCMU)
        self.attach()
        media.start()
        self.clock.advance(0)
        recorder = self.session.streams[0].recorder

        def io_error(pcm: bytes) -> None:
            raise RecordingWriteError(recorder.writer.part_path, OSError(errno.EIO, "Input/output error"))

        self.patch(recorder.writer, "write", io_error)
        self.play(0.4, (0,))  # must not raise (more packets than the largest packet_batch)
        self.assertIsNotNone(recorder.failed)
        self.assertEqual(self.failures, [])
        self.clock.advance(1.0)
        self.assertEqual(len(self.failures), 1)
        self.assertIn("Input/output error", self.failures[0])
        self.end()

    def test_failure_when_a_stream_finishes(self) -> None:
        media = self.make(PCMU)
        self.attach()
        recorder = self.session.streams[0].recorder
        recorder.failed = RecordingWriteError(recorder.writer.part_path, OSError(errno.EIO, "Input/output error"))
        media.finish_stream(self.session.streams[0])
        self.clock.advance(0)
        self.assertEqual(len(self.failures), 1)
        self.session.streams[0].ended = True
        media.stop()

    def test_tick_survives_unexpected_error(self) -> None:
        media = self.make(PCMU, PCMU, MEDIA_RTCP_INTERVAL="1")
        self.attach()
        media.start()
        calls = []

        def broken() -> bool:
            calls.append(1)
            raise ValueError("boom")

        self.patch(self.session.streams[0].media, "send_report", broken)
        self.clock.advance(0)
        self.clock.advance(1.5)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.clock.advance(1.0)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(calls), 2)
        self.assertTrue(media._loop.running)
        self.assertEqual(self.failures, [])
        self.end()

    def test_stop_before_first_tick(self) -> None:
        media = self.make(PCMU, PCMU)
        self.attach()
        media.start()
        self.end()
        media.stop()  # idempotent

    def test_stop_finalizes_mix_and_leaves_no_delayed_calls(self) -> None:
        media = self.make(PCMU, PCMU)
        self.attach()
        media.start()
        self.play(1.0)
        self.play(0.4, (0,))  # the right side stops sending
        self.end()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse([n for n in os.listdir(self.session.directory) if n.endswith(".part")])
        self.assertEqual(wav_info(self.path("stream-1-1.wav")), (8000, 1, 70 * 160))
        self.assertEqual(wav_info(self.path("stream-2-2.wav")), (8000, 1, 50 * 160))
        self.assertEqual(wav_info(self.path("mix-stereo.wav")), (8000, 2, 70 * 160))
