"""End to end on loopback: real RTP into ``twistd -n siprec``, and what ends up in the files.

The SRC is :mod:`tests.e2e.src` (SIP over UDP and paced RTP, a known tone per stream encoded
by FFmpeg through PyAV) or SIPp replaying a real RTP capture.  Each test reads the final
session.json and decodes the written WAV files with the stdlib ``wave`` module, and checks:
durations against what was sent, the tone (FFT peak) in the right file and the right channel of
the stereo mix, the alignment of the legs, loss and reordering, hold, DTMF, and what ``kill -9``
leaves on disk and start-up recovery makes of it.

Durations.  Every file of a session starts at the session's start (``started_at``), so a file
holds the silence before its stream's first packet, then the stream.  With a tone that is never
quiet, the first loud sample (the onset) is where the first packet was placed: the audio after
it must be exactly (G.711) or nearly (G.722 and Opus have codec delay) what was sent, and the
whole file must last from ``started_at`` to the end of the last packet sent.  G.711 A-law has
no zero code, so in a PCMA file a zero sample is always silence the server inserted: the loss
and hold tests check which 20 ms blocks are silent, block by block.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import struct
import threading
import time
from datetime import datetime
from typing import Any

import av
import numpy as np
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.audio import assert_near, dominant_frequency, encode, onset, read_wav, rms, tone
from tests.e2e.server import REPOSITORY, Server, run_sipp, sipp_available
from tests.e2e.src import SendReport, SRCClient, StreamSpec, telephone_event

PCAP = os.path.join(REPOSITORY, "tests", "data", "pcap", "g711a.pcap")
TONE_A, TONE_B = 440.0, 1000.0
PACKET_TIME = 0.02
SECONDS = 3.0
PACKETS = round(SECONDS / PACKET_TIME)
TONE_RMS = 0.5 * 32767 / 2**0.5  # tone()'s default amplitude

# name: (rtpmap, payload type, PyAV encoder, encoder rate, samples per packet at that rate,
#        RTP timestamp step, rate of the recorded WAV)
CODECS: dict[str, tuple[str, int, str, int, int, int, int]] = {
    "PCMU": ("PCMU/8000", 0, "pcm_mulaw", 8000, 160, 160, 8000),
    "PCMA": ("PCMA/8000", 8, "pcm_alaw", 8000, 160, 160, 8000),
    "G722": ("G722/8000", 9, "g722", 16000, 320, 160, 16000),  # RFC 3551: 8000 in SDP, 16 kHz audio
    "opus": ("opus/48000/2", 111, "libopus", 48000, 960, 960, 48000),  # mono payloads
}


def stream(codec: str, label: str, frequency: float, seconds: float = SECONDS, **extra: Any) -> StreamSpec:
    rtpmap, payload_type, encoder, rate, samples, step, _ = CODECS[codec]
    payloads = encode(encoder, tone(frequency, seconds, rate), rate, samples)
    return StreamSpec(label, payload_type, rtpmap, payloads, step, **extra)


def iso_seconds(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def silent_blocks(samples: np.ndarray, start: int, count: int, size: int) -> list[int]:
    """Indices of the ``size``-sample blocks from ``start`` that are all zero."""
    blocks = samples[start : start + count * size].reshape(count, size)
    return [int(i) for i in np.flatnonzero(~blocks.any(axis=1))]


def read_pcap_rtp(path: str) -> list[tuple[int, int, int, bytes]]:
    """(sequence, timestamp, payload type, payload) of each RTP packet in a classic
    little-endian pcap of Ethernet/IPv4/UDP frames."""
    with open(path, "rb") as handle:
        data = handle.read()
    magic, _, _, _, _, _, link = struct.unpack_from("<IHHiIII", data)
    assert magic == 0xA1B2C3D4 and link == 1, (hex(magic), link)
    packets = []
    offset = 24
    while offset < len(data):
        _, _, captured, _ = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        ip = frame[14:]
        assert ip[0] >> 4 == 4 and ip[9] == 17, "IPv4/UDP only"
        udp = ip[(ip[0] & 15) * 4 :]
        length = struct.unpack_from("!H", udp, 4)[0]
        rtp = udp[8:length]
        count = rtp[0] & 15
        sequence, timestamp = struct.unpack_from("!HI", rtp, 2)
        packets.append((sequence, timestamp, rtp[1] & 0x7F, rtp[12 + 4 * count :]))
    return packets


class MediaTestCase(SynchronousTestCase):
    recording: dict[str, str] = {}

    def setUp(self) -> None:
        self.server = self.start_server(self.mktemp())

    def start_server(self, directory: str) -> Server:
        server = Server(directory, sections={"recording": dict(self.recording)})
        server.start()
        self.addCleanup(self._stop, server)
        return server

    def _stop(self, server: Server) -> None:
        if server.process is None:
            return
        code = server.stop()
        log = server.log()
        self.assertIn(code, (0, -15), f"twistd exit status {code}\n{log}")
        self.assertNotIn("Traceback", log)

    def client(self) -> SRCClient:
        client = SRCClient(self.server.sip_port)
        self.addCleanup(client.close)
        return client

    def start_call(self, client: SRCClient, streams: list[StreamSpec]) -> None:
        response = client.invite(streams)
        self.assertEqual(response.status, 200, response)
        self.assertEqual(sorted(client.answer_ports), sorted(s.label for s in streams))

    def end_call(self, client: SRCClient) -> None:
        self.assertEqual(client.bye().status, 200)

    def session(self, call_id: str) -> tuple[dict[str, Any], str]:
        """The session.json of a call and its directory."""
        for path in glob.glob(os.path.join(self.server.recordings, "*", "*", "*", "*", "session.json")):
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            if document["call_id"] == call_id:
                return document, os.path.dirname(path)
        self.fail(f"no session.json for call {call_id}\n{self.server.log()[-3000:]}")

    def streams_by_label(self, document: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {s["label"]: s for s in document["streams"]}

    def first_sound(self, samples: np.ndarray, what: str) -> int:
        """Index of the first non-zero sample: in a PCMA recording (A-law has no zero code),
        the first sample of the first packet placed."""
        sound = np.flatnonzero(samples)
        self.assertTrue(len(sound), f"{what}: no audio at all ({len(samples)} samples of silence)")
        return int(sound[0])

    def assert_duration(self, what: str, frames: int, rate: int, document: dict[str, Any], last_sent: float) -> None:
        """The whole file: from the session's start to the end of the last packet, within 1%."""
        expected = last_sent + PACKET_TIME - iso_seconds(document["started_at"])
        assert_near(self, frames / rate, expected, 0.01 * expected, f"{what}: duration")


class CodecTests(MediaTestCase):
    """Two streams per call (440 Hz on "a", 1000 Hz on "b"), one call per codec, all at once."""

    def test_codecs_tones_alignment_mix_and_dtmf(self) -> None:
        # Every call is set up first, so no INVITE is being handled (files created, fsynced)
        # while another call's first packets wait in its socket; then the media of the four
        # calls runs in parallel, one sending thread per call.
        calls = {}
        for codec in CODECS:
            extra: dict[str, Any] = {}
            if codec == "PCMU":
                # Key "5" pressed on stream a for 160 ms from packet 75: 8 updates, the E bit
                # on the last and two repeats of it (10 slots); 101 offered beside PCMU.
                extra = {"extra_rtpmaps": ["101 telephone-event/8000"], "overrides": telephone_event(5, 75, 8)}
            streams = [stream(codec, "a", TONE_A, **extra), stream(codec, "b", TONE_B)]
            client = self.client()
            self.start_call(client, streams)
            calls[codec] = (client, streams)
        reports: dict[str, Any] = {}

        def send(codec: str) -> None:
            client, streams = calls[codec]
            try:
                reports[codec] = client.send_rtp(streams)
            except BaseException as error:  # noqa: BLE001 - reported below
                reports[codec] = error

        threads = [threading.Thread(target=send, args=(codec,)) for codec in CODECS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for codec, (client, _) in calls.items():
            self.assertIsInstance(reports.get(codec), SendReport, f"{codec}: sending failed: {reports.get(codec)!r}")
            self.end_call(client)
        for codec, (client, streams) in calls.items():
            self.check_call(codec, client.call_id, streams, reports[codec])

    def check_call(self, codec: str, call_id: str, streams: list[StreamSpec], report: SendReport) -> None:
        rtpmap, _, _, _, _, step, rate = CODECS[codec]
        document, directory = self.session(call_id)
        self.assertEqual((document["state"], document["end_reason"]), ("ended", "BYE from the SRC"))
        by_label = self.streams_by_label(document)
        started = iso_seconds(document["started_at"])
        onsets = {}
        audio = {}
        for spec, frequency in zip(streams, (TONE_A, TONE_B)):
            label = spec.label
            what = f"{codec} stream {label}"
            entry = by_label[label]
            self.assertEqual(entry["codec"].upper(), rtpmap.split("/")[0].upper(), what)
            self.assertEqual(entry["recording"]["format"], "wav-pcm16", what)
            self.assertIsNone(entry["recording"]["error"], what)
            timeline = entry["recording"]["timeline"]
            self.assertEqual((timeline["lost"], timeline["reordered"], timeline["too_late"]), (0, 0, 0), what)
            self.assertEqual(entry["packets_received"], len(spec.payloads), what)
            file_rate, channels, samples = read_wav(os.path.join(directory, entry["file"]))
            self.assertEqual((file_rate, channels), (rate, 1), what)
            sent_seconds = len(spec.payloads) * step / int(rtpmap.split("/")[1])
            self.assert_duration(what, len(samples), rate, document, report.times[label][-1])
            start = onset(samples)
            self.assertIsNotNone(start, f"{what}: silent")
            # Before the tone: the time from the session's start to the first packet.
            assert_near(self, start / rate, report.times[label][0] - started, 0.02, f"{what}: leading silence")
            # The tone itself lasts what was sent (codec delay aside: < 10 ms).
            assert_near(self, (len(samples) - start) / rate, sent_seconds, min(0.01 * sent_seconds, 0.01), what)
            body = samples[start + rate // 10 : len(samples) - rate // 50]
            assert_near(self, dominant_frequency(body, rate), frequency, 3, f"{what}: tone")
            # The level of a sine at half scale (the DTMF's 200 ms of silence on a lowers it 3%).
            assert_near(self, rms(body), TONE_RMS, 0.1 * TONE_RMS, f"{what}: level")
            onsets[label] = start
            audio[label] = samples
        # Both legs start together: their first packets left in the same millisecond.
        assert_near(self, (onsets["a"] - onsets["b"]) / rate, 0, 0.02, f"{codec}: legs aligned")

        # The stereo mix: stream a on the left, b on the right, sample for sample.
        mix = document["mix"]
        self.assertEqual(mix["mode"], "stereo", codec)
        self.assertEqual([(c["channel"], c["label"]) for c in mix["channels"]], [("left", "a"), ("right", "b")])
        mix_rate, channels, mixed = read_wav(os.path.join(directory, mix["file"]))
        self.assertEqual((mix_rate, channels), (rate, 2), codec)
        self.assertEqual(len(mixed), max(len(audio["a"]), len(audio["b"])), codec)
        for column, label, frequency in ((0, "a", TONE_A), (1, "b", TONE_B)):
            self.assertTrue(np.array_equal(mixed[: len(audio[label]), column], audio[label]), f"{codec} mix {label}")
            body = mixed[onsets[label] + rate // 10 : len(audio[label]) - rate // 50, column]
            assert_near(self, dominant_frequency(body, rate), frequency, 3, f"{codec} mix channel {column}")

        if codec == "PCMU":
            self.check_dtmf(by_label["a"], audio["a"], onsets["a"])
        else:
            self.assertEqual(by_label["a"]["events"], [], codec)

    def check_dtmf(self, entry: dict[str, Any], samples: np.ndarray, start: int) -> None:
        self.assertEqual(entry["telephone_event_payload_type"], 101)
        self.assertEqual(entry["recording"]["timeline"]["telephone_events"], 10)
        events = entry["events"]
        self.assertEqual(
            [(e["type"], e["digit"], e["event"], e["duration_ms"], e["ended"]) for e in events],
            [("dtmf", "5", 5, 160.0, True)],
        )
        # It starts where packet 75 would have been; that audio (10 slots) is silence, and the
        # tone goes on on both sides of it.
        position = events[0]["start_position"]
        self.assertLessEqual(abs(position - (start + 75 * 160)), 1, (position, start))
        assert_near(self, events[0]["start_seconds"], position / 8000, 0.001)
        self.assertFalse(samples[position + 1 : position + 1600].any(), "audio during the DTMF event")
        self.assertGreater(rms(samples[position - 160 : position]), 6000)
        self.assertGreater(rms(samples[position + 1601 : position + 1760]), 6000)


class LossTests(MediaTestCase):
    def test_loss_and_reordering(self) -> None:
        """10% loss and 10% reordering on both streams (PCMA): lost packets become exactly
        their 20 ms of silence, reordered ones are put back in place, the counters say so."""
        client = self.client()
        streams = [stream("PCMA", "a", TONE_A), stream("PCMA", "b", TONE_B)]
        self.start_call(client, streams)
        report = client.send_rtp(streams, loss=0.1, reorder=0.1, seed=11)
        self.end_call(client)
        document, directory = self.session(client.call_id)
        by_label = self.streams_by_label(document)
        for label, frequency in (("a", TONE_A), ("b", TONE_B)):
            what = f"stream {label}"
            order = report.indices[label]
            first, last = order[0], max(order)
            received = set(order)
            # What the timeline must have done: every index after the first one placed that
            # never came is lost; one that came after a later one is reordered.
            self.assertEqual(first, min(order), "with this seed the first packet goes out first")
            lost = sorted(set(range(first, last + 1)) - received)
            reordered = sum(1 for n, index in enumerate(order) if n and index < max(order[:n]))
            self.assertGreater(len(lost), 0)
            self.assertGreater(reordered, 0)
            self.assertLess(len(order), PACKETS)
            entry = by_label[label]
            timeline = entry["recording"]["timeline"]
            self.assertEqual(
                (timeline["lost"], timeline["reordered"], timeline["too_late"], timeline["duplicates"]),
                (len(lost), reordered, 0, 0),
                what,
            )
            (source,) = entry["reception"]["sources"]
            self.assertEqual(source["lost"], len(lost), what)
            self.assertEqual(entry["packets_received"], len(order), what)

            rate, _, samples = read_wav(os.path.join(directory, entry["file"]))
            self.assertEqual(rate, 8000)
            # A-law never decodes to 0: the first non-zero sample is the first packet placed.
            start = self.first_sound(samples, what)
            self.assertEqual(len(samples), start + (last - first + 1) * 160, f"{what}: length")
            self.assert_duration(what, len(samples), rate, document, max(report.times[label]))
            assert_near(self, start / rate, report.times[label][0] - iso_seconds(document["started_at"]), 0.02, what)
            self.assertEqual(
                silent_blocks(samples, start, last - first + 1, 160), [index - first for index in lost], what
            )
            assert_near(self, dominant_frequency(samples[start:], rate), frequency, 3, f"{what}: tone")


class HoldTests(MediaTestCase):
    def test_hold_and_resume(self) -> None:
        """1 s of tone, a re-INVITE with a=inactive, 1 s with no RTP, a re-INVITE with
        sendonly, 1 s more: the file has exactly that second of silence in the middle."""
        client = self.client()
        streams = [stream("PCMA", "a", TONE_A), stream("PCMA", "b", TONE_B)]
        self.start_call(client, streams)
        ports = dict(client.answer_ports)
        states: list[str] = []

        def reinvite(direction: str) -> None:
            response = client.invite(streams, direction=direction)
            self.assertEqual(response.status, 200)
            self.assertEqual(client.answer_ports, ports)
            # session.json is rewritten before the 200 leaves.
            states.append(self.session(client.call_id)[0]["state"])

        report = client.send_rtp(
            streams, gaps=[(50, 50)], actions={50: lambda: reinvite("inactive"), 100: lambda: reinvite("sendonly")}
        )
        self.end_call(client)
        self.assertEqual(states, ["paused", "active"])
        document, directory = self.session(client.call_id)
        self.assertEqual(document["state"], "ended")
        answers = [name for name in document["sdp_files"] if name.endswith("-answer.sdp")]
        directions = []
        for name in answers:
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                text = handle.read()
            directions.append([line[2:] for line in text.splitlines() if line in ("a=recvonly", "a=inactive")])
        self.assertEqual(directions, [["recvonly"] * 2, ["inactive"] * 2, ["recvonly"] * 2])
        by_label = self.streams_by_label(document)
        for label, frequency in (("a", TONE_A), ("b", TONE_B)):
            what = f"stream {label}"
            self.assertEqual(report.indices[label], list(range(50)) + list(range(100, 150)))
            entry = by_label[label]
            self.assertEqual(entry["recording"]["timeline"]["lost"], 0, what)
            rate, _, samples = read_wav(os.path.join(directory, entry["file"]))
            start = self.first_sound(samples, what)
            self.assertEqual(len(samples), start + 150 * 160, f"{what}: length")
            self.assert_duration(what, len(samples), rate, document, report.times[label][-1])
            self.assertEqual(silent_blocks(samples, start, 150, 160), list(range(50, 100)), f"{what}: the hold")
            for part in (samples[start : start + 8000], samples[start + 16000 :]):
                assert_near(self, dominant_frequency(part, rate), frequency, 3, f"{what}: tone")


class SippTestCase(MediaTestCase):
    def setUp(self) -> None:
        if not sipp_available():
            raise SkipTest("sipp (Debian package sip-tester) is not installed: run scripts/setup")
        super().setUp()


class PcapTests(SippTestCase):

    def test_sipp_play_pcap_audio(self) -> None:
        """SIPp replays a real A-law capture to the port of the SRS's answer: the recording is
        that audio, sample for sample, after the silence before the first packet."""
        packets = read_pcap_rtp(PCAP)
        self.assertEqual({pt for _, _, pt, _ in packets}, {8})
        duration = (packets[-1][1] - packets[0][1] + len(packets[-1][3])) / 8000
        self.assertEqual([seq for seq, _, _, _ in packets], list(range(packets[0][0], packets[0][0] + len(packets))))
        decoder = av.CodecContext.create("pcm_alaw", "r")
        decoder.sample_rate = 8000
        decoder.layout = "mono"
        (frame,) = decoder.decode(av.Packet(b"".join(p for _, _, _, p in packets)))
        expected = frame.to_ndarray().reshape(-1).astype(np.float64)
        self.assertEqual(len(expected), round(duration * 8000))

        workdir = os.path.join(self.server.directory, "sipp")
        os.makedirs(workdir)
        shutil.copy(PCAP, workdir)  # the scenario names it relative to SIPp's directory
        result = run_sipp("siprec_pcap.xml", self.server.sip_port, workdir)
        self.assertEqual(result.returncode, 0, f"{result.explain()}\n--- server log\n{self.server.log()[-3000:]}")
        (path,) = glob.glob(os.path.join(self.server.recordings, "*", "*", "*", "*", "session.json"))
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        (entry,) = document["streams"]
        self.assertEqual((entry["codec"], entry["label"], entry["packets_received"]), ("PCMA", "1", len(packets)))
        self.assertEqual(entry["recording"]["timeline"]["lost"], 0)
        rate, channels, samples = read_wav(os.path.join(os.path.dirname(path), entry["file"]))
        self.assertEqual((rate, channels), (8000, 1))
        start = self.first_sound(samples, "pcap stream")
        self.assertFalse(samples[:start].any())
        self.assertLess(start / rate, 0.5, "more than 0.5 s between the INVITE and the first packet")
        assert_near(self, (len(samples) - start) / rate, duration, 0.01 * duration, "audio after the first packet")
        self.assertTrue(np.array_equal(samples[start:], expected), "the recording is not the capture's audio")
        self.assertGreater(rms(samples[start:]), 500)


class KillTests(MediaTestCase):
    recording = {"flush_interval": "0.2", "chunk_size": "1048576"}  # only the periodic flush writes

    def test_kill_9_then_recovery(self) -> None:
        """kill -9 half a second after 2 s of tone: the .part files play and hold every sample
        received (the flush every 0.2 s wrote them; chunks are too large to have); a new
        server on the same directory publishes them intact and closes session.json."""
        client = self.client()
        streams = [stream("PCMA", "a", TONE_A, 2.0), stream("PCMA", "b", TONE_B, 2.0)]
        self.start_call(client, streams)
        report = client.send_rtp(streams)
        time.sleep(0.2 + 0.3)
        process = self.server.process
        assert process is not None
        killed_at = time.time()
        process.send_signal(signal.SIGKILL)
        self.assertEqual(process.wait(10), -signal.SIGKILL)
        self.server.process = None
        document, directory = self.session(client.call_id)
        self.assertEqual(document["state"], "active")
        by_label = self.streams_by_label(document)
        names = sorted(os.listdir(directory))
        files = [by_label["a"]["file"], by_label["b"]["file"], document["mix"]["file"]]
        for name in files:
            self.assertIn(name + ".part", names)
            self.assertNotIn(name, names)
        before = {}
        for label, name in zip(("a", "b"), files):
            rate, channels, samples = read_wav(os.path.join(directory, name + ".part"))
            self.assertEqual((rate, channels), (8000, 1))
            start = self.first_sound(samples, f"{name}.part")
            self.assertEqual(len(samples), start + 100 * 160, f"{label}: samples on disk at the kill")
            self.assert_duration(label, len(samples), rate, document, report.times[label][-1])
            before[name] = samples
        rate, channels, mixed = read_wav(os.path.join(directory, files[2] + ".part"))
        self.assertEqual((rate, channels), (8000, 2))
        for column, name in enumerate(files[:2]):
            self.assertTrue(np.array_equal(mixed[:, column], before[name][: len(mixed)]), f"mix channel {column}")
        self.assertGreaterEqual(len(mixed), min(len(before[files[0]]), len(before[files[1]])) - 1600)
        before[files[2]] = mixed

        # A fresh server on the same recording directory recovers the session at start-up.
        restarted = Server(self.server.directory, sections={"recording": dict(self.recording)})
        restarted.start()
        self.addCleanup(self._stop, restarted)
        self.server = restarted
        document, directory = self.session(client.call_id)
        self.assertEqual(document["state"], "ended")
        self.assertTrue(document["end_reason"].startswith("interrupted"), document["end_reason"])
        # The end is the last write to the session's files: after the last packet, before the kill.
        ended = iso_seconds(document["ended_at"])
        self.assertTrue(report.last() - 0.002 <= ended <= killed_at + 0.002, (report.last(), ended, killed_at))
        self.assertEqual(
            sorted((r["file"], r["outcome"]) for r in document["recovered_files"]),
            sorted((name, "recovered") for name in files),
        )
        self.assertEqual([n for n in os.listdir(directory) if n.endswith(".part")], [])
        self.assertEqual(os.listdir(os.path.join(restarted.recordings, ".active")), [])
        for name in files:
            _, _, samples = read_wav(os.path.join(directory, name))
            self.assertTrue(np.array_equal(samples, before[name]), f"{name} changed in recovery")
