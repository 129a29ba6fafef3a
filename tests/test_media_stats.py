"""Reception statistics: RFC 3550 A.1 sequence validity, A.3 loss and fraction, A.8 jitter."""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from siprecd.media.rtcp import ReceiverReport, ReportBlock, build_rr, parse_rtcp
from siprecd.media.rtp import parse_rtp
from siprecd.media.stats import SourceStats, StreamCounters, StreamStats


def feed(stats: SourceStats, seqs: list[int], start: float = 50.0) -> list[bool]:
    """Timestamps 160 per sequence step and arrival 20 ms per step, so no jitter within one
    call (sequence numbers count from 65000 so the wrap at 65535 does not reset them)."""
    steps = [(s - 65000) & 0xFFFF for s in seqs]
    return [stats.update(s, n * 160, start + n * 0.02) for s, n in zip(seqs, steps, strict=True)]


class JitterTests(SynchronousTestCase):
    def test_known_transit_variation(self) -> None:
        # Packet i is sent at timestamp 160*i and delayed by offset[i] extra samples, so
        # transit differences D are |16-0|, |0-16|, |32-0|, |32-32|, |0-32| = 16, 16, 32, 0, 32.
        # Packet 0 is the probation packet (A.1): not counted, so its transit is never used.
        offsets = [0, 0, 16, 0, 32, 32, 0]
        stats = SourceStats(1, 8000)
        seen = []
        for i, offset in enumerate(offsets):
            stats.update(i, 160 * i, 100.0 + (160 * i + offset) / 8000)
            seen.append(stats.jitter)
        # By hand, J += (|D| - J) / 16:
        #   J2 = 16/16 = 1;  J3 = 1 + 15/16 = 1.9375;  J4 = 1.9375 + 30.0625/16 = 3.81640625;
        #   J5 = 3.81640625 * 15/16 = 3.577880859375;
        #   J6 = 3.577880859375 + (32 - 3.577880859375)/16 = 5.3542633056640625
        expected = [0.0, 0.0, 1.0, 1.9375, 3.81640625, 3.577880859375, 5.3542633056640625]
        for got, want in zip(seen, expected, strict=True):
            self.assertAlmostEqual(got, want, places=6)
        self.assertEqual(stats.report_block(101.0).jitter, 5)

    def test_timestamp_wrap_does_not_read_as_jitter(self) -> None:
        stats = SourceStats(1, 8000)
        for i in range(6):
            stats.update(i, (2**32 - 480 + 160 * i) % 2**32, 7.0 + 0.02 * i)
        self.assertAlmostEqual(stats.jitter, 0.0, places=6)

    def test_constant_delay_is_no_jitter(self) -> None:
        stats = SourceStats(1, 48000)
        for i in range(20):
            stats.update(i, 960 * i, 3.25 + 0.02 * i)
        self.assertAlmostEqual(stats.jitter, 0.0, places=6)


class LossTests(SynchronousTestCase):
    def test_loss_and_fraction_after_wrap(self) -> None:
        stats = SourceStats(7, 8000)
        seqs = [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 3, 4, 6, 7, 8, 9]
        self.assertEqual(feed(stats, seqs), [False] + [True] * 13)
        # Probation made 65531 the base: expected 65531..65545 (extended) = 15, received 13.
        self.assertEqual((stats.base_seq, stats.cycles, stats.max_seq), (65531, 65536, 9))
        self.assertEqual((stats.expected, stats.received, stats.cumulative_lost), (15, 13, 2))
        block = stats.report_block(60.0)
        self.assertEqual(block, ReportBlock(7, (2 << 8) // 15, 2, 0x10009, 0, 0, 0))
        self.assertEqual(block.fraction_lost, 34)

        # Next interval: 10 new packets and one duplicate: no loss, cumulative 1.
        feed(stats, [*range(10, 20), 19], start=61.0)
        block = stats.report_block(62.0)
        self.assertEqual((block.fraction_lost, block.cumulative_lost), (0, 1))
        self.assertEqual(block.highest_sequence, 0x10013)

        # Duplicates outnumber losses: cumulative lost goes negative, as A.3 says it may.
        feed(stats, [19, 19, 19], start=63.0)
        block = stats.report_block(64.0)
        self.assertEqual((block.fraction_lost, block.cumulative_lost), (0, -2))
        self.assertEqual(build_rr(1, [block])[12:16], bytes.fromhex("00fffffe"))
        [rr] = parse_rtcp(build_rr(1, [block]))
        assert isinstance(rr, ReceiverReport)
        self.assertEqual(rr.reports[0], block)

    def test_fraction_in_interval_only(self) -> None:
        stats = SourceStats(1, 8000)
        feed(stats, [0, 1, 2, 3])
        stats.report_block(1.0)
        feed(stats, [4, 8, 9, 10, 11], start=2.0)  # 5, 6, 7 lost: 3 of 8
        self.assertEqual(stats.report_block(3.0).fraction_lost, (3 << 8) // 8)
        feed(stats, [12, 13], start=4.0)
        block = stats.report_block(5.0)
        self.assertEqual((block.fraction_lost, block.cumulative_lost), (0, 3))
        self.assertEqual(stats.report_block(6.0).fraction_lost, 0)  # nothing expected

    def test_probation(self) -> None:
        stats = SourceStats(1, 8000)
        self.assertEqual(feed(stats, [10, 12, 13, 14]), [False, False, True, True])
        self.assertEqual((stats.base_seq, stats.received, stats.expected), (13, 2, 2))

    def test_probation_across_wrap(self) -> None:
        stats = SourceStats(1, 8000)
        self.assertEqual(feed(stats, [65535, 0, 1]), [False, True, True])
        self.assertEqual((stats.base_seq, stats.extended_max, stats.expected), (0, 1, 2))

    def test_restart_after_big_jump(self) -> None:
        stats = SourceStats(1, 8000)
        feed(stats, [100, 101, 102, 103, 104])
        self.assertEqual(feed(stats, [20000], start=51.0), [False])
        self.assertEqual(stats.max_seq, 104)
        self.assertEqual(feed(stats, [20001, 20002], start=51.02), [True, True])
        self.assertEqual((stats.base_seq, stats.received, stats.restarts), (20001, 2, 1))

    def test_lone_jump_ignored(self) -> None:
        stats = SourceStats(1, 8000)
        feed(stats, [100, 101, 102])
        self.assertEqual(feed(stats, [40000, 103, 104], start=51.0), [False, True, True])
        self.assertEqual((stats.expected, stats.received, stats.restarts), (4, 4, 0))

    def test_reordered_counts_as_received(self) -> None:
        stats = SourceStats(1, 8000)
        feed(stats, [0, 1, 2, 4, 3, 5])
        self.assertEqual((stats.max_seq, stats.expected, stats.received), (5, 5, 5))

    def test_lsr_dlsr(self) -> None:
        stats = SourceStats(1, 8000)
        feed(stats, [0, 1, 2])
        stats.sender_report(0x0123456789ABCDEF, 10.0)
        block = stats.report_block(10.5)
        self.assertEqual((block.lsr, block.dlsr), (0x456789AB, 32768))


class StreamStatsTests(SynchronousTestCase):
    def packet(self, ssrc: int, seq: int) -> bytes:
        return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + bytes(160)

    def test_sources_and_report_blocks(self) -> None:
        stats = StreamStats(8000)
        for i in range(5):
            stats.update(parse_rtp(self.packet(0xA, i)), 1.0 + 0.02 * i)
        for i in range(3):
            stats.update(parse_rtp(self.packet(0xB, 100 + i)), 2.0 + 0.02 * i)
        stats.sender_report(0xA, 0x0000111122220000, 2.5)
        stats.sender_report(0xC, 0x0000333344440000, 2.5)  # unknown source: ignored
        blocks = stats.report_blocks(3.0)
        self.assertEqual(
            blocks,
            [
                ReportBlock(0xA, 0, 0, 4, 0, 0x11112222, 32768),
                ReportBlock(0xB, 0, 0, 102, 0, 0, 0),
            ],
        )
        self.assertEqual(stats.report_blocks(4.0), [])  # nothing new since
        stats.update(parse_rtp(self.packet(0xB, 103)), 4.0)
        self.assertEqual([b.ssrc for b in stats.report_blocks(5.0)], [0xB])

    def test_bounded_sources(self) -> None:
        stats = StreamStats(8000, max_sources=2)
        for ssrc in (1, 2, 3):
            stats.update(parse_rtp(self.packet(ssrc, 0)), 1.0)
        self.assertEqual(list(stats.sources), [2, 3])

    def test_counters_as_dict(self) -> None:
        counters = StreamCounters(packets=3, duplicates=1)
        as_dict = counters.as_dict()
        self.assertEqual((as_dict["packets"], as_dict["duplicates"], as_dict["lost"]), (3, 1, 0))
