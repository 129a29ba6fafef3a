"""[media] packet_batch: runs taken in one step give exactly what packets taken one by one give.

The equivalence tests play the same packets (loss, reordering, duplicates, an SSRC change,
DTMF, CN, a hold, timestamp jumps, sequence and timestamp wraps, odd headers, RTCP, reads and a
re-offer in between) into a two-stream session with the stereo mix, once with every packet
taken on arrival (batch 1) and once per batch size, and compare the files byte for byte, the
timeline counters, the RTP statistics (jitter to the last bit) and the RTCP reports sent.
"""

from __future__ import annotations

import io
import os
import random
import struct
import warnings
from dataclasses import asdict
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.config import load_config
from siprecd.crypto.at_rest import AtRest
from siprecd.crypto.files import decrypt_stream
from siprecd.crypto.keystore import MemoryKeyStore
from siprecd.media.ports import PortPair
from siprecd.media.rtp import build_rtp
from siprecd.media.runs import payload_offset, queueable, take_run
from siprecd.media.stats import SourceStats
from siprecd.media.timeline import Timeline
from siprecd.recording.session import RecordedStream, RecordingSession
from siprecd.sdp import parse, plan_streams
from siprecd.security.srtp import InboundSRTP, OutboundSRTP
from siprecd.siprec import session_media
from siprecd.siprec.session_media import SessionMedia

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

T0 = 1_700_000_000.0
SRC_HOST = "192.0.2.10"
OFFER = (
    "v=0\r\no=SRC 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101 13\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=label:1\r\na=sendonly\r\n"
    "m=audio 40002 RTP/AVP 0 101 13\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=label:2\r\na=sendonly\r\n"
).encode()


def _tone(rng: random.Random) -> bytes:
    pcm = struct.pack("<160h", *(rng.randrange(-12000, 12000) for _ in range(160)))
    return audioop.lin2ulaw(pcm, 2)


def scenario(seed: int, *, seconds: float = 9.0, srtp: bool = False) -> list[tuple[float, int, str, bytes]]:
    """``(arrival offset, stream, "rtp"/"rtcp"/"read"/"reoffer", datagram)``, in arrival order;
    with ``srtp``, RTP protected under :func:`srtp_key` (duplicates are replays then), and
    forged packets among them."""
    rng = random.Random(seed)
    senders = [OutboundSRTP(SUITE, srtp_key(n)[:16], srtp_key(n)[16:]) for n in (0, 1)]
    events: list[tuple[float, int, str, bytes]] = []
    for stream in (0, 1):
        ssrc = 0xA0 + stream
        # Stream 0 wraps its sequence numbers and timestamps within the first second.
        seq = 65500 if stream == 0 else rng.randrange(65536)
        ts = (1 << 32) - 3200 if stream == 0 else rng.randrange(1 << 32)
        t = 0.005 + 0.007 * stream
        k = 0
        while t < seconds:
            k += 1
            arrival = t + rng.uniform(0, 0.004)  # network jitter
            marker = False
            extension = None
            pt, payload = 0, _tone(rng)
            if k in (60, 61, 62, 63):  # DTMF: an event over four packets, the timestamp fixed
                pt = 101
                payload = struct.pack("!BBH", 5, (0x80 if k == 63 else 0) | 10, 160 * (k - 59))
                marker = k == 60
            elif 90 <= k < 95:  # comfort noise, then talk again with the marker
                pt, payload = 13, b"\x40"
            elif k == 95:
                marker = True
            elif k == 150:  # a hold: nothing for a while, timestamps frozen over it (stream 1's
                hold = 2.5 if stream else 0.3  # is longer than the mix's max_lag: padded there)
                t += hold
                arrival += hold
            elif k == 200:  # a new SSRC, its own sequence and timestamps
                ssrc += 0x100
                seq, ts = rng.randrange(65536), rng.randrange(1 << 32)
            elif k == 230:  # the sender's timestamps jump
                ts = (ts + 123456) & 0xFFFFFFFF
            elif k == 260:  # and its sequence numbers restart
                seq = (seq + 20000) & 0xFFFF
            elif 300 <= k < 340:  # header extensions (RFC 8285 audio level, say) of two sizes
                extension = (0xBEDE, bytes([0x10, k & 0x7F, 0, 0]) * (1 if k < 330 else 2))
            elif k == 290:  # a CSRC
                pass
            roll = rng.random()
            datagram = build_rtp(pt, seq, ts, ssrc, payload, marker=marker, extension=extension,
                                 csrcs=(7,) if k == 290 else ())
            if srtp:
                if k % 50 == 7:  # forged: the right header, no valid tag
                    events.append((arrival - 0.0001, stream, "rtp", datagram + bytes(10)))
                datagram = senders[stream].protect_rtp(datagram)
            if roll < 0.02:
                pass  # lost
            elif roll < 0.04:
                events.append((arrival, stream, "rtp", datagram))
                events.append((arrival + 0.001, stream, "rtp", datagram))  # duplicated
            elif roll < 0.07:
                events.append((arrival + 0.045, stream, "rtp", datagram))  # overtaken by two
            elif roll < 0.075:
                events.append((arrival + 0.5, stream, "rtp", datagram))  # too late
            else:
                events.append((arrival, stream, "rtp", datagram))
            if k == 120:
                events.append((arrival, stream, "rtp", b"\x80\x00\x01"))  # malformed (short)
            if k % 70 == 35 or k == 231:
                # An RTCP SR (one just after the timestamp jump): it maps the timeline as it
                # stands on its arrival.
                sr = struct.pack("!BBHIQIII", 0x80, 200, 6, ssrc, (int(T0 + t) + 2208988800) << 32, ts, k, k * 160)
                events.append((arrival + 0.0005, stream, "rtcp", sr))
            seq = (seq + 1) & 0xFFFF
            if pt != 101:
                ts = (ts + 160) & 0xFFFFFFFF
            elif k == 63:
                ts = (ts + 640) & 0xFFFFFFFF
            t += 0.02
    events.append((1.234, 0, "read", b""))
    events.append((3.3, 1, "read", b""))
    events.append((6.01, 0, "reoffer", b""))
    events.sort(key=lambda event: event[0])
    return events


SUITE = "AES_CM_128_HMAC_SHA1_80"


def srtp_key(stream: int) -> bytes:
    return bytes(range(stream, stream + 30))


class EquivalenceTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Random tick phase and SRS SSRC fixed: the runs to compare must differ only in batching.
        self.patch(session_media.random, "uniform", lambda low, high: (low + high) / 2)
        self.patch(session_media.secrets, "randbits", lambda bits: 0x5151)

    def record(self, events: list[tuple[float, int, str, bytes]], batch: int, *, at_rest: AtRest | None = None,
               srtp: bool = False, **settings: str) -> dict[str, Any]:
        clock = Clock()
        clock.advance(T0)
        directory = os.path.abspath(self.mktemp())
        config = load_config(None, {"SIPRECD_RECORDING_DIRECTORY": directory, "SIPRECD_MEDIA_PACKET_BATCH": str(batch),
                                    **{f"SIPRECD_{key.upper()}": value for key, value in settings.items()}})
        path = os.path.join(directory, "session")
        os.makedirs(path)
        session = RecordingSession(session_id="s1", call_id="c1", started_at=clock.seconds(), src={}, sip={},
                                   siprec=True, directory=path)
        media = SessionMedia(clock, config, session, lambda reason: None, at_rest=at_rest)
        offer = parse(OFFER)
        reports: list[bytes] = []

        class Transport:
            def write(self, data: bytes, addr: tuple[str, int]) -> None:
                reports.append(data)

        for choice in plan_streams(offer, codec_preference=config.siprec.codec_preference):
            stream = RecordedStream(key=f"label:{choice.label}", choice=choice)
            stream.media = media.new_stream_media()
            stream.media.rtp.makeConnection(Transport())
            stream.media.rtcp.makeConnection(Transport())
            if srtp:
                key = srtp_key(choice.index)
                stream.media.secure(InboundSRTP(SUITE, key[:16], key[16:]), None)
            stream.ports = PortPair(20000 + 2 * choice.index, 20001 + 2 * choice.index, None, None)  # type: ignore[arg-type]
            session.streams.append(stream)
        media.attach(session.streams, offer)
        media.start()
        reads = []
        sr_mappings: list[Any] = []
        for arrival, index, kind, datagram in events:
            clock.advance(T0 + arrival - clock.seconds())
            stream_media = session.streams[index].media
            assert stream_media is not None
            source = (SRC_HOST, 40000 + 2 * index)
            if kind == "rtp":
                stream_media.rtp.datagramReceived(datagram, source)
            elif kind == "rtcp":
                stream_media.rtcp.datagramReceived(datagram, (SRC_HOST, source[1] + 1))
                # What the SR mapped (stored now: a later read does not settle the timeline).
                sr_mappings.append(stream_media.recorder.timeline.ntp_mapping)
            elif kind == "read":
                reads.append([s.to_json({}) for s in session.streams])
            else:
                media.attach(session.streams, offer)
        clock.advance(1.0)
        stats = [
            {ssrc: {name: getattr(source, name) for name in SourceStats.__slots__}
             for ssrc, source in s.media.stats.sources.items()}  # type: ignore[union-attr]
            for s in session.streams
        ]
        counters = [s.recorder.counters.as_dict() for s in session.streams]  # type: ignore[union-attr]
        reception = [asdict(s.media.counters) for s in session.streams]  # type: ignore[union-attr, call-overload]
        mappings = [s.recorder.timeline.ntp_mapping for s in session.streams]  # type: ignore[union-attr]
        padded = list(media.mixer.padded)  # type: ignore[union-attr]
        for stream in session.streams:
            media.finish_stream(stream)
            stream.ended = True
        media.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        files = {}
        for name in sorted(os.listdir(path)):
            with open(os.path.join(path, name), "rb") as handle:
                data = handle.read()
            if at_rest is not None:
                out = io.BytesIO()
                self.assertEqual(decrypt_stream(io.BytesIO(data), out, at_rest.keys).state, "ok")  # type: ignore[arg-type]
                data = out.getvalue()
            files[name] = data
        return {
            "files": files,
            "stats": stats,
            "counters": counters,
            "reception": reception,
            "events": [s.recorder.events for s in session.streams],  # type: ignore[union-attr]
            "reports": reports,
            "reads": reads,
            "mappings": mappings,
            "sr_mappings": sr_mappings,
            "padded": padded,
        }

    def assert_equivalent(self, seed: int, batches: tuple[int, ...] = (5, 8, 16)) -> None:
        events = scenario(seed)
        one = self.record(events, 1)
        # The scenario does reach what it is meant to test.
        total = {name: sum(c[name] for c in one["counters"]) for name in one["counters"][0]}
        for name in ("lost", "duplicates", "reordered", "too_late", "ssrc_changes", "sequence_restarts",
                     "timestamp_jumps", "comfort_noise", "telephone_events"):
            self.assertGreater(total[name], 0, name)
        self.assertGreater(one["reception"][0]["malformed"], 0)
        self.assertEqual(len(one["events"][0]), 1)  # the DTMF digit
        self.assertEqual(sorted(one["files"]), ["mix-stereo.wav", "stream-1-1.wav", "stream-2-2.wav"])
        self.assertGreater(len(one["files"]["mix-stereo.wav"]), 8 * 8000 * 4)
        self.assertTrue(one["reports"])
        self.assertGreater(one["padded"][1], 0)  # the mix padded stream 2's hold
        self.assertIsNotNone(one["mappings"][0])
        for batch in batches:
            other = self.record(events, batch)
            for key in ("counters", "stats", "reception", "events", "reports", "reads", "mappings", "sr_mappings", "padded"):
                self.assertEqual(other[key], one[key], f"{key}, batch {batch}")
            self.assertEqual(sorted(other["files"]), sorted(one["files"]))
            for name, data in one["files"].items():
                self.assertTrue(other["files"][name] == data, f"{name} differs with batch {batch}")

    def test_batches_record_what_single_packets_record(self) -> None:
        self.assert_equivalent(1)

    def test_other_seeds(self) -> None:
        for seed in (2, 3):
            self.assert_equivalent(seed, (8,))

    def test_other_settings(self) -> None:
        # No reorder window, no reorder delay, a mono mix, fast flushes with small chunks.
        events = scenario(6, seconds=6.0)
        for settings in ({"media_reorder_window": "0", "recording_mix": "mono"},
                         {"media_max_reorder_delay": "0", "recording_flush_interval": "0.1", "recording_chunk_size": "1024"}):
            one = self.record(events, 1, **settings)
            other = self.record(events, 8, **settings)
            for key in ("counters", "stats", "reception", "events", "reports", "reads", "padded", "files"):
                self.assertTrue(other[key] == one[key], f"{key} with {settings}")

    def test_encrypted_at_rest(self) -> None:
        events = scenario(4)
        keys = AtRest(MemoryKeyStore(), "AES-256-GCM")
        one = self.record(events, 1, at_rest=keys)
        other = self.record(events, 8, at_rest=keys)
        self.assertEqual(sorted(one["files"]), ["mix-stereo.wav.enc", "stream-1-1.wav.enc", "stream-2-2.wav.enc"])
        for name, data in one["files"].items():
            self.assertTrue(other["files"][name] == data, name)

    def test_srtp(self) -> None:
        # Replays and forgeries are dropped before the queue; pylibsrtp called straight
        # (direct_unprotect) or through InboundSRTP.unprotect_rtp, batched or not: one result.
        events = scenario(5, srtp=True)
        one = self.record(events, 1, srtp=True)
        self.assertGreater(one["reception"][0]["srtp_auth_failures"], 5)
        self.assertGreater(one["counters"][0]["packets"], 300)
        others = [self.record(events, 8, srtp=True)]
        self.patch(InboundSRTP, "direct_unprotect", None)
        others += [self.record(events, 1, srtp=True), self.record(events, 8, srtp=True)]
        for other in others:
            for key in ("counters", "stats", "reception", "events", "reports", "reads", "files"):
                self.assertTrue(other[key] == one[key], key)

    def test_the_batch_path_was_taken(self) -> None:
        # Without this the equivalence could hold because batching never happened.
        events = scenario(1)
        taken: list[int] = []
        original = Timeline.push_run

        def push_run(timeline: Timeline, *args: Any) -> int:
            placed = original(timeline, *args)
            taken.append(placed)
            return placed

        self.patch(Timeline, "push_run", push_run)
        self.record(events, 8)
        # (A harsh scenario: after each loss the packets held for the gap go one by one.)
        self.assertGreater(sum(taken), 0.6 * len([e for e in events if e[2] == "rtp"]))


class QueueTests(SynchronousTestCase):
    def test_only_g711_files_queue(self) -> None:
        # G.722 and Opus have no run path: queueing would only delay them.
        from siprecd.recording.recorder import StreamRecorder
        from siprecd.sdp import StreamChoice

        directory = self.mktemp()
        os.makedirs(directory)
        queues = {}
        for index, (codec, rate, pt) in enumerate((("PCMU", 8000, 0), ("PCMA", 8000, 8), ("G722", 8000, 9))):
            choice = StreamChoice(index=index, media_type="audio", label=str(index), accepted=True, direction="recvonly",
                                  offered_direction="sendonly", on_hold=False, codec=codec, clock_rate=rate,
                                  payload_type=pt, channels=1)
            for batch in (1, 8):
                recorder = StreamRecorder(directory, choice, origin=T0, reorder_window=8, max_delay=0.2,
                                          chunk_size=8192, opus_passthrough=False, batch=batch, segment=batch)
                queues[codec, batch] = recorder.queue
                recorder.finish()
        self.assertEqual(queues, {("PCMU", 1): None, ("PCMU", 8): [], ("PCMA", 1): None, ("PCMA", 8): [],
                                  ("G722", 1): None, ("G722", 8): None})


class TakeRunTests(SynchronousTestCase):
    def packets(self, count: int, seq: int = 10, ts: int = 1000, **changes: Any) -> list[bytes]:
        return [build_rtp(0, (seq + i) & 0xFFFF, (ts + 160 * i) & 0xFFFFFFFF, 0x1234, bytes(160), **changes)
                for i in range(count)]

    def test_a_clean_run_and_its_wraps(self) -> None:
        self.assertEqual(take_run(self.packets(8), 0, 8), 8)
        self.assertEqual(take_run(self.packets(8), 3, 8), 8)
        self.assertEqual(take_run(self.packets(8), 0, 5), 5)
        self.assertEqual(take_run(self.packets(8, seq=65533, ts=(1 << 32) - 320), 0, 8), 8)

    def test_what_ends_a_run(self) -> None:
        base = self.packets(6)
        cases = {
            "gap in sequence": base[:3] + base[4:],
            "timestamp jump": base[:3] + [build_rtp(0, 13, 1000 + 160 * 3 + 1, 0x1234, bytes(160))] + base[4:],
            "other ssrc": base[:3] + [build_rtp(0, 13, 1480, 0x9999, bytes(160))] + base[4:],
            "other payload type": base[:3] + [build_rtp(8, 13, 1480, 0x1234, bytes(160))] + base[4:],
            "marker": base[:3] + [build_rtp(0, 13, 1480, 0x1234, bytes(160), marker=True)] + base[4:],
            "other size": base[:3] + [build_rtp(0, 13, 1480, 0x1234, bytes(80))] + base[4:],
            "duplicate": base[:3] + [base[2]] + base[3:],
        }
        for name, packets in cases.items():
            self.assertEqual(take_run(packets, 0, len(packets)), 3, name)

    def test_no_run_starts_at_an_odd_packet(self) -> None:
        base = self.packets(4)
        self.assertEqual(take_run([build_rtp(0, 9, 840, 0x1234, bytes(160), marker=True)] + base, 0, 5), 1)
        for odd in (
            build_rtp(0, 9, 840, 0x1234, bytes(160), csrcs=(5,)),
            build_rtp(0, 9, 840, 0x1234, bytes(160), padding=4),
            build_rtp(0, 9, 840, 0x1234, b"", extension=(1, b"\0\0\0\0"))[:-4],  # extension cut short
            b"\x80\x00",
        ):
            self.assertFalse(queueable(odd), odd)
            self.assertEqual(take_run([odd] + base, 0, 5), 1)
        self.assertTrue(queueable(base[0]))

    def test_runs_with_a_header_extension(self) -> None:
        def extended(seq: int, level: int, words: int = 1) -> bytes:
            return build_rtp(0, seq, 160 * seq, 0x1234, bytes(160), extension=(0xBEDE, bytes([0x10, level, 0, 0]) * words))

        packets = [extended(seq, seq) for seq in range(10, 16)]  # the extension's content varies
        self.assertTrue(all(queueable(p) for p in packets))
        self.assertEqual(payload_offset(packets[0]), 20)
        self.assertEqual(take_run(packets, 0, 6), 6)
        # Another extension length (a second word) ends the run; so does a plain packet.
        self.assertEqual(take_run(packets[:3] + [extended(13, 0, words=2)] + packets[4:], 0, 6), 3)
        plain = build_rtp(0, 13, 160 * 13, 0x1234, bytes(160))
        self.assertEqual(take_run(packets[:3] + [plain] + packets[4:], 0, 6), 3)


class StepTests(SynchronousTestCase):
    """The run steps against as many single steps, drift and all."""

    def test_timeline_run_stops_where_push_would_leave_its_fast_path(self) -> None:
        def fresh() -> Timeline:
            timeline = Timeline(8000, duration_of=lambda pt, payload: len(payload), origin=None)
            for packet in TakeRunTests().packets(2):
                from siprecd.media.rtp import parse_rtp

                timeline.push(parse_rtp(packet), 0.02 * (packet[3] - 10))
            timeline.drain()
            return timeline

        from siprecd.media.rtp import parse_rtp

        packets = TakeRunTests().packets(6, seq=12, ts=1320)
        arrivals = [0.04, 0.06, 0.08, 2.5, 2.52, 2.54]  # the 4th arrives 2.4 s late: resync
        run = fresh()
        placed = run.push_run(0x1234, 0, 12, 1320, bytes(160), arrivals, 0, 6)
        self.assertEqual(placed, 3)
        for packet, arrival in zip(packets[3:], arrivals[3:]):
            run.push(parse_rtp(packet), arrival)
        single = fresh()
        for packet, arrival in zip(packets, arrivals):
            single.push(parse_rtp(packet), arrival)
        self.assertEqual(run.position, single.position)
        self.assertEqual(run.counters, single.counters)
        self.assertEqual(run.counters.timestamp_jumps, 1)

    def test_source_stats_run(self) -> None:
        arrivals = [0.02 * i + 0.001 * (i % 3) for i in range(20)]
        # Runs that cross sequence number 0, start on it, end on it, or stay clear of it.
        for first in (65530, 65532, 65535, 65517, 100):
            single, run = SourceStats(1, 8000), SourceStats(1, 8000)
            for i in range(4):
                single.update((first + i) & 0xFFFF, 160 * i, arrivals[i])
                run.update((first + i) & 0xFFFF, 160 * i, arrivals[i])
            for i in range(4, 20):
                single.update((first + i) & 0xFFFF, 160 * i, arrivals[i])
            run.update_run((first + 4) & 0xFFFF, 640, 160, arrivals, 4, 20)
            for name in SourceStats.__slots__:
                self.assertEqual(getattr(run, name), getattr(single, name), f"{name} from {first}")
            self.assertEqual(run.cycles, {65535: 0, 100: 0}.get(first, 65536))  # 65535: wraps in probation
