"""The per-stream timeline: reordering, loss, duplicates, wrap-around, SSRC and codec changes,
comfort noise, DTMF, and the wall-clock anchors.  Every packet is built as bytes here."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from siprecd.media.dtmf import DtmfEvent
from siprecd.media.rtp import RtpPacket, parse_rtp
from siprecd.media.timeline import Anchor, Event, Silence, Timeline

SSRC = 0x5EC0_0001
OTHER = 0x5EC0_0002
T0 = 1_700_000_000.0
TE = 101  # telephone-event, as the caller would learn it from the SDP


def rtp(
    seq: int,
    ts: int,
    *,
    pt: int = 0,
    ssrc: int = SSRC,
    payload: bytes | None = None,
    marker: bool = False,
) -> bytes:
    header = struct.pack(
        "!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc
    )
    return header + (bytes(160) if payload is None else payload)


def event(digit: int, duration: int, *, end: bool = False, volume: int = 10) -> bytes:
    return struct.pack("!BBH", digit, (0x80 if end else 0) | volume, duration)


def g711(pt: int, payload: bytes) -> int | None:
    return len(payload) if pt in (0, 8) else None


def timeline(**kwargs: Any) -> Timeline:
    kwargs.setdefault("duration_of", g711)
    kwargs.setdefault("telephone_event", (TE,))
    return Timeline(8000, **kwargs)


def run(tl: Timeline, packets: Iterable[tuple[bytes, float]], finish: bool = True) -> list[Event]:
    for data, arrival in packets:
        tl.push(parse_rtp(data), arrival)
    if finish:
        tl.finish()
    return list(tl.drain())


def stream(seqs: Iterable[int], *, seq0: int = 0, ts0: int = 0, at: float = T0) -> list:
    """G.711 20 ms packets: sequence seq0+n, timestamp ts0+160n, sent at at+0.02n."""
    return [(rtp(seq0 + n, ts0 + 160 * n), at + 0.02 * n) for n in seqs]


def brief(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for e in events:
        if isinstance(e, RtpPacket):
            skip = (e.skip,) if e.skip else ()
            out.append(("audio", e.sequence, e.position, e.duration) + skip)
        elif isinstance(e, Silence):
            out.append(("silence", e.position, e.duration, e.reason))
        else:
            assert isinstance(e, DtmfEvent)
            out.append(("dtmf", e.digit, e.position, e.duration, e.ended))
    return out


def audio(seq: int, position: int, duration: int = 160) -> tuple[Any, ...]:
    return ("audio", seq, position, duration)


class TimelineTestCase(SynchronousTestCase):
    def assertTiles(self, events: Sequence[Event]) -> int:  # noqa: N802
        """Audio and silence must each start where the previous one ended."""
        end = None
        for e in events:
            if isinstance(e, DtmfEvent):
                continue
            start = e.position + (e.skip if isinstance(e, RtpPacket) else 0)
            if end is not None:
                self.assertEqual(start, end, f"{e!r} does not start at {end}")
            end = e.position + e.duration
        return end or 0


class OrderTests(TimelineTestCase):
    def test_in_order(self) -> None:
        tl = timeline()
        events = run(tl, stream(range(5), seq0=1000, ts0=123456))
        self.assertEqual(brief(events), [audio(1000 + i, 160 * i) for i in range(5)])
        self.assertEqual(tl.anchor, Anchor(T0, 123456, 0))
        self.assertEqual(tl.position, 800)
        self.assertEqual((tl.counters.packets, tl.counters.bytes), (5, 800))

    def test_loss_is_silence_of_the_missing_duration(self) -> None:
        tl = timeline()
        events = run(tl, stream([0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]))
        self.assertEqual(
            brief(events)[:4],
            [audio(0, 0), audio(1, 160), ("silence", 320, 320, "loss"), audio(4, 640)],
        )
        self.assertEqual(self.assertTiles(events), 14 * 160)
        self.assertEqual((tl.counters.lost, tl.counters.too_late), (2, 0))

    def test_reordering_within_window(self) -> None:
        tl = timeline()
        events = run(tl, stream([0, 1, 3, 2, 5, 6, 4, 7]))
        self.assertEqual(brief(events), [audio(i, 160 * i) for i in range(8)])
        self.assertEqual((tl.counters.reordered, tl.counters.lost), (2, 0))

    def test_held_until_the_gap_fills(self) -> None:
        tl = timeline()
        for data, arrival in stream([0, 2, 3]):
            tl.push(parse_rtp(data), arrival)
        self.assertEqual(brief(tl.drain()), [audio(0, 0)])
        self.assertEqual(tl.pending, 0)
        tl.push(parse_rtp(rtp(1, 160)), T0 + 0.07)
        self.assertEqual(brief(tl.drain()), [audio(1, 160), audio(2, 320), audio(3, 480)])
        self.assertEqual(tl.drain(), ())

    def test_window_full_gives_up_then_too_late(self) -> None:
        tl = timeline(reorder_window=2, max_delay=None)
        events = run(tl, stream([0, 2, 3]), finish=False)
        self.assertEqual(brief(events), [audio(0, 0)])  # two held: the window is not exceeded
        events = run(tl, stream([4, 1]), finish=False)  # a third held: 1 is given up
        self.assertEqual(
            brief(events),
            [("silence", 160, 160, "loss"), audio(2, 320), audio(3, 480), audio(4, 640)],
        )
        self.assertEqual((tl.counters.lost, tl.counters.too_late), (1, 1))

    def test_max_delay_gives_up(self) -> None:
        tl = timeline(max_delay=0.1)
        run(tl, [(rtp(0, 0), T0), (rtp(2, 320), T0 + 0.04)], finish=False)
        # 3 arrives 0.2 s after 2 (DTX): 2 has waited longer than max_delay for 1.
        events = run(tl, [(rtp(3, 480), T0 + 0.24)], finish=False)
        self.assertEqual(
            brief(events), [("silence", 160, 160, "loss"), audio(2, 320), audio(3, 480)]
        )

    def test_duplicates(self) -> None:
        tl = timeline()
        events = run(tl, stream([0, 1, 1, 3, 3, 2, 0, 4]))
        self.assertEqual(brief(events), [audio(i, 160 * i) for i in range(5)])
        self.assertEqual(tl.counters.duplicates, 3)
        self.assertEqual(tl.counters.too_late, 0)

    def test_packets_before_the_start_are_too_late(self) -> None:
        tl = timeline()
        events = run(tl, stream([5, 6, 7, 4]))
        self.assertEqual(brief(events), [audio(5, 0), audio(6, 160), audio(7, 320)])
        self.assertEqual((tl.counters.too_late, tl.counters.duplicates), (1, 0))

    def test_numbers_before_the_start_are_new_again_after_wrapping(self) -> None:
        tl = timeline()
        count = 0x10000 - 50  # from 1000 round to 950: the numbers before 1000 were sent again
        for data, arrival in stream(range(count), seq0=1000):
            tl.push(parse_rtp(data), arrival)
            tl.drain()
        tl.push(parse_rtp(rtp((1000 + count - 10) & 0xFFFF, 160 * (count - 10))), T0 + 0.02 * count)
        self.assertEqual((tl.counters.too_late, tl.counters.duplicates), (0, 1))

    def test_first_packets_reordered(self) -> None:
        tl = timeline()
        events = run(tl, stream([1, 0, 2]))
        self.assertEqual(brief(events), [audio(0, 0), audio(1, 160), audio(2, 320)])
        self.assertEqual(tl.anchor, Anchor(T0, 0, 0))

    def test_finish_flushes_held_and_drops_later(self) -> None:
        tl = timeline()
        events = run(tl, stream([0, 2, 3]))
        self.assertEqual(
            brief(events),
            [audio(0, 0), ("silence", 160, 160, "loss"), audio(2, 320), audio(3, 480)],
        )
        tl.finish()  # twice is harmless
        tl.push(parse_rtp(rtp(4, 640)), T0 + 1)
        self.assertEqual(tl.drain(), ())
        self.assertEqual(tl.counters.too_late, 1)


class WrapTests(TimelineTestCase):
    def test_sequence_and_timestamp_wrap(self) -> None:
        tl = timeline()
        events = run(tl, stream(range(8), seq0=65532, ts0=2**32 - 480))
        self.assertEqual(
            [(e.sequence, e.timestamp) for e in events][2:5],  # type: ignore[union-attr]
            [(65534, 2**32 - 160), (65535, 0), (0, 160)],
        )
        self.assertEqual(brief(events), [audio((65532 + i) % 65536, 160 * i) for i in range(8)])

    def test_loss_and_reordering_across_the_wrap(self) -> None:
        tl = timeline()
        order = [0, 1, 2, 5, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15]  # 4 and 6 lost, 3 late
        events = run(tl, stream(order, seq0=65533, ts0=2**32 - 320))
        self.assertEqual(
            brief(events)[:8],
            [
                audio(65533, 0),
                audio(65534, 160),
                audio(65535, 320),
                audio(0, 480),
                ("silence", 640, 160, "loss"),
                audio(2, 800),
                ("silence", 960, 160, "loss"),
                audio(4, 1120),
            ],
        )
        self.assertEqual(self.assertTiles(events), 16 * 160)
        self.assertEqual((tl.counters.lost, tl.counters.reordered), (2, 1))


class GapTests(TimelineTestCase):
    def test_dtx_gap_follows_timestamps(self) -> None:
        tl = timeline()
        packets = stream([0, 1]) + [(rtp(2, 320 + 8000), T0 + 0.02 + 1.0)]
        events = run(tl, packets)
        self.assertEqual(
            brief(events), [audio(0, 0), audio(1, 160), ("silence", 320, 8000, "gap"),
                            audio(2, 8320)]
        )
        self.assertEqual(tl.counters.timestamp_jumps, 0)

    def test_hold_with_frozen_timestamps_uses_arrival(self) -> None:
        # The sender stopped for 30 s and resumed with the next timestamp: the recording keeps
        # the 30 s (wall clock), not the 0 s its timestamps claim.
        tl = timeline()
        packets = stream([0, 1]) + [(rtp(2, 320), T0 + 0.02 + 30.0)]
        events = run(tl, packets)
        self.assertEqual(
            brief(events),
            [audio(0, 0), audio(1, 160), ("silence", 320, 30 * 8000 - 160, "gap"),
             audio(2, 160 + 30 * 8000)],
        )
        self.assertEqual(tl.counters.timestamp_jumps, 1)

    def test_timestamp_reset_does_not_make_hours_of_silence(self) -> None:
        tl = timeline()
        packets = stream([0, 1]) + [(rtp(2 + n, 90_000_000 + 160 * n), T0 + 0.04 + 0.02 * n)
                                    for n in range(3)]
        events = run(tl, packets)
        self.assertEqual(brief(events), [audio(i, 160 * i) for i in range(5)])
        self.assertEqual(tl.counters.timestamp_jumps, 1)

    def test_overlap_is_skipped(self) -> None:
        # The codec says 160 but the sender advanced its timestamps by 120 once.
        tl = timeline()
        events = run(tl, [(rtp(0, 0), T0), (rtp(1, 120), T0 + 0.015), (rtp(2, 280), T0 + 0.035)])
        self.assertEqual(
            brief(events), [audio(0, 0), ("audio", 1, 120, 160, 40), audio(2, 280, 160)]
        )
        self.assertEqual(self.assertTiles(events), 440)

    def test_fully_overlapped_packet_dropped(self) -> None:
        tl = timeline()
        events = run(tl, [(rtp(0, 0, payload=bytes(320)), T0), (rtp(1, 160), T0 + 0.02),
                          (rtp(2, 320), T0 + 0.04)])
        self.assertEqual(brief(events), [audio(0, 0, 320), audio(2, 320)])
        self.assertEqual(tl.counters.overlaps, 1)

    def test_timestamp_slightly_backwards(self) -> None:
        # Within the tolerance a backward step is an overlap (signed 32-bit difference), not a
        # 2^32 jump forward.
        tl = timeline()
        events = run(tl, [(rtp(0, 1000), T0), (rtp(1, 1160), T0 + 0.02),
                          (rtp(2, 1100), T0 + 0.04), (rtp(3, 1320), T0 + 0.06)])
        self.assertEqual(brief(events), [audio(0, 0), audio(1, 160), audio(3, 320)])
        self.assertEqual((tl.counters.overlaps, tl.counters.timestamp_jumps), (1, 0))

    def test_durations_learnt_without_codec(self) -> None:
        tl = timeline(duration_of=None)
        packets = [(rtp(n, 240 * n, pt=99), T0 + 0.03 * n) for n in range(4)]
        events = run(tl, packets + [(rtp(5, 1200, pt=99), T0 + 0.15)])
        # The first packet is guessed at 20 ms; from the second on the 30 ms step is known.
        self.assertEqual(
            brief(events),
            [("audio", 0, 0, 160), ("silence", 160, 80, "gap"), ("audio", 1, 240, 240),
             ("audio", 2, 480, 240), ("audio", 3, 720, 240), ("silence", 960, 240, "loss"),
             ("audio", 5, 1200, 240)],
        )

    def test_origin_start_silence(self) -> None:
        tl = timeline(origin=T0 - 0.5)
        events = run(tl, stream(range(2)))
        self.assertEqual(
            brief(events), [("silence", 0, 4000, "start"), audio(0, 4000), audio(1, 4160)]
        )
        self.assertEqual(tl.anchor, Anchor(T0, 0, 4000))

    def test_sequence_restart_same_ssrc(self) -> None:
        tl = timeline()
        packets = stream(range(3)) + stream(range(3), seq0=30000, ts0=5_000_000, at=T0 + 0.5)
        events = run(tl, packets)
        # Placed by arrival: 30000 arrived 0.46 s after packet 2 (at 320), so it starts at 4000.
        self.assertEqual(
            brief(events),
            [audio(0, 0), audio(1, 160), audio(2, 320), ("silence", 480, 3520, "gap"),
             audio(30000, 4000), audio(30001, 4160), audio(30002, 4320)],
        )
        self.assertEqual(tl.counters.sequence_restarts, 1)

    def test_lone_far_packet_ignored(self) -> None:
        tl = timeline()
        packets = stream([0, 1]) + [(rtp(40000, 7), T0 + 0.03)] + stream([2, 3])
        events = run(tl, packets)
        self.assertEqual(brief(events), [audio(i, 160 * i) for i in range(4)])
        self.assertEqual(tl.counters.sequence_jumps, 1)


class SourceTests(TimelineTestCase):
    def test_ssrc_change_reanchors_on_arrival(self) -> None:
        tl = timeline()
        old = stream(range(3))  # last packet at T0+0.04, ends at 480
        new = [(rtp(9000 + n, 777_000 + 160 * n, ssrc=OTHER), T0 + 0.54 + 0.02 * n)
               for n in range(8)]
        events = run(tl, old + new)
        # The new source's first packet arrived 0.5 s after the old one's last: it starts
        # 4000 units after that packet's start, so the silence is 4000 - 160.
        self.assertEqual(
            brief(events)[:6],
            [audio(0, 0), audio(1, 160), audio(2, 320), ("silence", 480, 3840, "gap"),
             audio(9000, 4320), audio(9001, 4480)],
        )
        self.assertEqual(self.assertTiles(events), 4320 + 8 * 160)
        self.assertEqual((tl.counters.ssrc_changes, tl.source), (1, OTHER))

    def test_ssrc_change_waits_for_quiet_then_keeps_its_packets(self) -> None:
        tl = timeline(source_switch_idle=0.1)
        old = stream(range(3))
        new = [(rtp(500 + n, 160 * n, ssrc=OTHER), T0 + 0.06 + 0.02 * n) for n in range(6)]
        events = run(tl, old + new, finish=False)
        # Switched once the old source had been quiet 0.1 s (at the 4th new packet); the
        # candidates held meanwhile are all placed, the first at its own arrival.
        self.assertEqual(
            brief(events),
            [audio(0, 0), audio(1, 160), audio(2, 320)]
            + [audio(500 + n, 480 + 160 * n) for n in range(6)],
        )
        self.assertEqual(tl.counters.ssrc_changes, 1)

    def test_stray_packet_of_another_source(self) -> None:
        tl = timeline()
        packets = stream(range(2)) + [(rtp(77, 5, ssrc=OTHER), T0 + 0.03)] + stream([2, 3])
        events = run(tl, packets)
        self.assertEqual(brief(events), [audio(i, 160 * i) for i in range(4)])
        self.assertEqual((tl.counters.foreign, tl.counters.ssrc_changes), (1, 0))

    def test_interleaved_sources_do_not_flip(self) -> None:
        tl = timeline()
        packets = []
        for n in range(10):
            packets.append((rtp(n, 160 * n), T0 + 0.02 * n))
            packets.append((rtp(300 + n, 160 * n, ssrc=OTHER), T0 + 0.02 * n + 0.01))
        events = run(tl, packets, finish=False)
        self.assertEqual(brief(events), [audio(i, 160 * i) for i in range(10)])
        self.assertEqual(tl.counters.ssrc_changes, 0)
        self.assertEqual(tl.counters.foreign, 0)  # still candidates, not yet given up
        tl.finish()
        self.assertEqual(tl.drain(), ())  # it sent alongside the current one: not placed
        self.assertEqual((tl.counters.ssrc_changes, tl.counters.foreign), (0, 10))

    def test_interleaved_from_the_start(self) -> None:
        tl = timeline()
        packets = []
        for n in range(4):
            packets.append((rtp(300 + n, 160 * n, ssrc=OTHER), T0 + 0.02 * n))
            packets.append((rtp(n, 160 * n), T0 + 0.02 * n + 0.01))
        events = run(tl, packets)
        # The first source to pass probation (2 packets) is recorded, the other one is not.
        self.assertEqual([e.ssrc for e in events], [OTHER] * 4)  # type: ignore[union-attr]
        self.assertEqual(tl.counters.foreign, 4)

    def test_switch_just_before_the_end(self) -> None:
        tl = timeline()
        new = [(rtp(50 + n, 160 * n, ssrc=OTHER), T0 + 0.06 + 0.02 * n) for n in range(2)]
        events = run(tl, stream(range(3)) + new)
        self.assertEqual(brief(events)[3:], [audio(50, 480), audio(51, 640)])
        self.assertEqual(tl.counters.ssrc_changes, 1)

    def test_late_packet_of_old_source_after_switch(self) -> None:
        tl = timeline()
        new = [(rtp(9000 + n, 160 * n, ssrc=OTHER), T0 + 0.2 + 0.02 * n) for n in range(4)]
        events = run(tl, stream(range(3)) + new + [(rtp(3, 480), T0 + 0.27)])
        self.assertEqual(tl.counters.ssrc_changes, 1)
        self.assertEqual(tl.counters.foreign, 1)
        self.assertEqual([e.ssrc for e in events if isinstance(e, RtpPacket)],
                         [SSRC] * 3 + [OTHER] * 4)

    def test_codec_change_keeps_the_timeline(self) -> None:
        tl = timeline()
        packets = stream(range(3)) + [
            (rtp(3 + n, 480 + 160 * n, pt=8, payload=b"\xd5" * 160), T0 + 0.06 + 0.02 * n)
            for n in range(3)
        ]
        events = run(tl, packets)
        self.assertEqual(brief(events), [audio(i, 160 * i) for i in range(6)])
        types = [e.payload_type for e in events if isinstance(e, RtpPacket)]
        self.assertEqual(types, [0, 0, 0, 8, 8, 8])
        self.assertEqual(tl.counters.payload_type_changes, 1)

    def test_ntp_mapping(self) -> None:
        tl = timeline()
        tl.sender_report(SSRC, (2208988800 + 1000) << 32, 1_000_000 + 800)
        self.assertIsNone(tl.ntp_mapping)  # no packet placed yet
        run(tl, stream(range(3), ts0=1_000_000), finish=False)
        self.assertEqual(tl.ntp_mapping, (1000.0, 800))
        tl.sender_report(OTHER, (2208988800 + 2000) << 32, 5)  # not the current source
        self.assertEqual(tl.ntp_mapping, (1000.0, 800))


class ComfortNoiseTests(TimelineTestCase):
    def test_cn_is_silence_until_the_next_packet(self) -> None:
        tl = timeline()
        packets = stream(range(2)) + [
            (rtp(2, 320, pt=13, payload=b"\x40"), T0 + 0.04),
            (rtp(3, 320 + 8000), T0 + 1.04),
        ]
        events = run(tl, packets)
        self.assertEqual(
            brief(events),
            [audio(0, 0), audio(1, 160), ("silence", 320, 8000, "cn"), audio(3, 8320)],
        )
        self.assertEqual(tl.counters.comfort_noise, 1)

    def test_dynamic_cn_payload_type_and_trailing_cn(self) -> None:
        tl = timeline(comfort_noise=(13, 118))
        packets = stream(range(2)) + [
            (rtp(2, 320, pt=118, payload=b"\x40"), T0 + 0.04),
            (rtp(3, 320 + 1600, pt=118, payload=b"\x40"), T0 + 0.24),
        ]
        events = run(tl, packets)
        # Ends with CN: silence up to the last CN packet's time.
        self.assertEqual(brief(events), [audio(0, 0), audio(1, 160), ("silence", 320, 1600, "cn")])


class DtmfTests(TimelineTestCase):
    def dtmf_packets(
        self, seq0: int, ts: int, at: float, digit: int = 5, steps: int = 4, ends: int = 3
    ) -> list[tuple[bytes, float]]:
        """An event every 20 ms: durations 160, 320, ..., then `ends` end packets."""
        out = []
        for i in range(steps):
            out.append((rtp(seq0 + i, ts, pt=TE, payload=event(digit, 160 * (i + 1)),
                            marker=i == 0), at + 0.02 * i))
        for j in range(ends):
            out.append((rtp(seq0 + steps + j, ts, pt=TE, payload=event(digit, 160 * steps,
                                                                       end=True)),
                        at + 0.02 * (steps - 1) + 0.005 * (j + 1)))
        return out

    def test_event_deduplicated_and_silence_in_audio(self) -> None:
        tl = timeline()
        packets = (
            stream(range(2))
            + self.dtmf_packets(2, 320, T0 + 0.06)
            + [(rtp(9, 320 + 640), T0 + 0.14)]
        )
        events = run(tl, packets)
        self.assertEqual(
            brief(events),
            [audio(0, 0), audio(1, 160), ("dtmf", "5", 320, 640, True),
             ("silence", 320, 640, "dtmf"), audio(9, 960)],
        )
        dtmf = events[2]
        assert isinstance(dtmf, DtmfEvent)
        self.assertEqual(
            (dtmf.event, dtmf.rtp_timestamp, dtmf.arrival, dtmf.duration_ms, dtmf.volume),
            (5, 320, T0 + 0.06, 80.0, 10),
        )
        self.assertEqual((tl.counters.telephone_events, tl.counters.dtmf_events), (7, 1))

    def test_end_packets_lost(self) -> None:
        tl = timeline()
        first = self.dtmf_packets(0, 0, T0, digit=1, steps=3, ends=0)
        second = self.dtmf_packets(3, 1600, T0 + 0.2, digit=11, steps=2, ends=1)
        events = run(tl, first + second)
        self.assertEqual(
            [b for b in brief(events) if b[0] == "dtmf"],
            [("dtmf", "1", 0, 480, False), ("dtmf", "#", 1600, 320, True)],
        )
        # The call ended with DTMF: the timeline covers it.
        self.assertEqual(brief(events)[-1], ("silence", 0, 1920, "dtmf"))

    def test_unfinished_event_reported_at_finish(self) -> None:
        tl = timeline()
        events = run(tl, stream(range(1)) + self.dtmf_packets(1, 160, T0 + 0.04, digit=16,
                                                               steps=2, ends=0))
        [dtmf] = [e for e in events if isinstance(e, DtmfEvent)]
        self.assertEqual(
            (dtmf.event, dtmf.digit, dtmf.ended, dtmf.duration), (16, None, False, 320)
        )

    def test_reordered_event_packets(self) -> None:
        tl = timeline()
        packets = self.dtmf_packets(0, 0, T0, digit=0, steps=3, ends=3)
        packets[1], packets[2] = packets[2], packets[1]
        packets[4], packets[5] = packets[5], packets[4]
        events = run(tl, packets)
        self.assertEqual([b for b in brief(events) if b[0] == "dtmf"],
                         [("dtmf", "0", 0, 480, True)])

    def test_same_digit_twice(self) -> None:
        tl = timeline()
        packets = self.dtmf_packets(0, 0, T0, digit=7, steps=2) + self.dtmf_packets(
            5, 2400, T0 + 0.3, digit=7, steps=2
        )
        events = run(tl, packets)
        self.assertEqual(
            [b for b in brief(events) if b[0] == "dtmf"],
            [("dtmf", "7", 0, 320, True), ("dtmf", "7", 2400, 320, True)],
        )

    def test_long_event_segments(self) -> None:
        # RFC 4733 §2.5.1.3: past 0xFFFF units the event continues with a new timestamp.
        tl = timeline()
        packets = [
            (rtp(0, 0, pt=TE, payload=event(9, 65000), marker=True), T0 + 8.125),
            (rtp(1, 0, pt=TE, payload=event(9, 65535)), T0 + 8.19),
            (rtp(2, 65535, pt=TE, payload=event(9, 800)), T0 + 8.29),
            (rtp(3, 65535, pt=TE, payload=event(9, 1600, end=True)), T0 + 8.39),
        ]
        events = run(tl, packets)
        [dtmf] = [e for e in events if isinstance(e, DtmfEvent)]
        self.assertEqual((dtmf.digit, dtmf.duration, dtmf.ended), ("9", 65535 + 1600, True))

    def test_short_payload_counted(self) -> None:
        tl = timeline()
        events = run(tl, stream(range(2)) + [(rtp(2, 320, pt=TE, payload=b"\x01"), T0 + 0.04)])
        self.assertEqual(brief(events), [audio(0, 0), audio(1, 160)])
        self.assertEqual(tl.counters.malformed_events, 1)


class SharedSetTests(SynchronousTestCase):
    def test_streams_share_their_payload_type_sets(self) -> None:
        # Three frozensets per stream (216 bytes each) were most of a Timeline's own memory
        # after its slots; equal sets are now one object, distinct ones stay distinct.
        first, second = Timeline(8000, telephone_event=(101,)), Timeline(8000, telephone_event=(101,))
        self.assertIs(first._te, second._te)
        self.assertIs(first._special, second._special)
        self.assertEqual(first._special, {13, 101})
        other = Timeline(8000, comfort_noise=(19,), telephone_event=(96,))
        self.assertEqual((other._cn, other._te, other._special), ({19}, {96}, {19, 96}))
        self.assertEqual(first._cn, {13})
