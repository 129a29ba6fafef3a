"""RTCP compound packets (RFC 3550 §6.4-6.6) against hand-built byte vectors."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from siprecd.media.rtcp import (
    CNAME,
    NAME,
    Bye,
    OtherRtcp,
    ReceiverReport,
    ReportBlock,
    Sdes,
    SdesChunk,
    SenderReport,
    build_bye,
    build_receiver_report,
    build_rr,
    build_sdes,
    ntp_middle,
    ntp_to_unix,
    parse_rtcp,
    unix_to_ntp,
)
from siprecd.media.rtp import MalformedPacket


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


# SR, RC=1, length 12 words: SSRC, NTP e1a2b3c4.80000000, RTP 0x00abcdef, 100 packets,
# 16000 octets; one block: SSRC 0x55667788, fraction 64/256, cumulative -2, highest 0x10005,
# jitter 32, LSR 0xb3c48000, DLSR 1 s.
SR_VECTOR = hx(
    "81c8000c 11223344 e1a2b3c4 80000000 00abcdef 00000064 00003e80"
    "55667788 40fffffe 00010005 00000020 b3c48000 00010000"
)
# SDES, SC=2: (0x11223344: CNAME "user@host", NAME "Al"), (0x55667788: CNAME "x")
SDES_VECTOR = hx("82ca0007 11223344 0109 7573657240686f7374 0202 416c 00 55667788 0101 78 00")
# BYE, SC=2, reason "bye"
BYE_VECTOR = hx("82cb0003 11223344 55667788 03 627965")
APP_VECTOR = hx("81cc0003 11223344 54455354 01020304")  # subtype 1, name "TEST"
XR_VECTOR = hx("80cf0001 11223344")
NACK_VECTOR = hx("81cd0003 11223344 55667788 00050000")  # RTPFB FMT 1 (generic NACK)
# RR, RC=0, with 4 padding octets (allowed only on the last part of a compound packet)
PADDED_RR_VECTOR = hx("a0c90002 11223344 00000004")

BLOCK = ReportBlock(0x55667788, 64, -2, 0x10005, 32, 0xB3C48000, 0x10000)


class ParseTests(SynchronousTestCase):
    def test_sender_report(self) -> None:
        [sr] = parse_rtcp(SR_VECTOR)
        self.assertEqual(
            sr, SenderReport(0x11223344, 0xE1A2B3C480000000, 0xABCDEF, 100, 16000, (BLOCK,))
        )
        assert isinstance(sr, SenderReport)
        self.assertEqual(sr.ntp_middle, 0xB3C48000)
        self.assertEqual(sr.unix_time, 0xE1A2B3C4 - 2208988800 + 0.5)

    def test_receiver_report_two_blocks(self) -> None:
        block = hx("00000009 0100000a 0000ffff 00000000 00000000 00000000")
        data = hx("82c9000d 11223344") + SR_VECTOR[28:52] + block
        [rr] = parse_rtcp(data)
        self.assertEqual(
            rr,
            ReceiverReport(
                0x11223344, (BLOCK, ReportBlock(9, 1, 10, 0xFFFF, 0, 0, 0))
            ),
        )

    def test_sdes(self) -> None:
        [sdes] = parse_rtcp(SDES_VECTOR)
        self.assertEqual(
            sdes,
            Sdes(
                (
                    SdesChunk(0x11223344, ((CNAME, b"user@host"), (NAME, b"Al"))),
                    SdesChunk(0x55667788, ((CNAME, b"x"),)),
                )
            ),
        )
        assert isinstance(sdes, Sdes)
        self.assertEqual([c.cname for c in sdes.chunks], ["user@host", "x"])
        self.assertIsNone(SdesChunk(1, ((NAME, b"n"),)).cname)

    def test_bye(self) -> None:
        self.assertEqual(parse_rtcp(BYE_VECTOR), [Bye((0x11223344, 0x55667788), "bye")])
        self.assertEqual(parse_rtcp(hx("81cb0001 11223344")), [Bye((0x11223344,), None)])

    def test_compound_with_unknown_types(self) -> None:
        data = (
            SR_VECTOR + SDES_VECTOR + APP_VECTOR + XR_VECTOR + NACK_VECTOR + BYE_VECTOR
            + PADDED_RR_VECTOR
        )
        parts = parse_rtcp(data)
        self.assertEqual(
            [type(p).__name__ for p in parts],
            [
                "SenderReport",
                "Sdes",
                "OtherRtcp",
                "OtherRtcp",
                "OtherRtcp",
                "Bye",
                "ReceiverReport",
            ],
        )
        self.assertEqual(parts[2], OtherRtcp(204, 1, hx("11223344 54455354 01020304")))
        self.assertEqual(parts[3], OtherRtcp(207, 0, hx("11223344")))
        self.assertEqual(parts[4], OtherRtcp(205, 1, hx("11223344 55667788 00050000")))
        self.assertEqual(parts[6], ReceiverReport(0x11223344, ()))

    def assertReason(self, data: bytes, reason: str) -> None:  # noqa: N802
        error = self.assertRaises(MalformedPacket, parse_rtcp, data)
        self.assertEqual(error.reason, reason, str(error))

    def test_rejects(self) -> None:
        self.assertReason(b"\x81\xc8\x00", "short")
        self.assertReason(b"\x41" + SR_VECTOR[1:], "version")
        self.assertReason(SR_VECTOR + b"\x40" + XR_VECTOR[1:], "version")  # in the second part
        self.assertReason(SR_VECTOR[:-4], "length")  # length field beyond the data
        self.assertReason(SR_VECTOR + b"\x80\xcf", "length")  # trailing bytes
        self.assertReason(PADDED_RR_VECTOR + XR_VECTOR, "padding")  # padding not on the last
        self.assertReason(hx("a0c90002 11223344 00000000"), "padding")  # padding count 0
        self.assertReason(hx("a0c90002 11223344 00000009"), "padding")  # more than the body
        self.assertReason(hx("82c80006") + SR_VECTOR[4:28], "length")  # RC=2, no blocks
        self.assertReason(hx("81c90001 11223344"), "length")  # RC=1, no block
        self.assertReason(hx("81ca0002 11223344 01027878"), "length")  # SDES: no null item
        self.assertReason(hx("81ca0002 11223344 0109 7878"), "length")  # SDES item cut
        self.assertReason(hx("82ca0002 11223344 00000000"), "length")  # SC=2, one chunk
        self.assertReason(hx("82cb0001 11223344"), "length")  # BYE SC=2, one SSRC
        self.assertReason(hx("81cb0002 11223344 09627965"), "length")  # reason cut


class BuildTests(SynchronousTestCase):
    def test_receiver_report_vector(self) -> None:
        block = ReportBlock(0x11223344, 25, -3, 0x00010010, 37, 0xB3C48000, 0x8000)
        self.assertEqual(
            build_receiver_report(0xAABBCCDD, [block], "srs@example"),
            hx(
                "81c90007 aabbccdd 11223344 19fffffd 00010010 00000025 b3c48000 00008000"
                "81ca0005 aabbccdd 010b 7372734065 78616d706c65 000000"
            ),
        )

    def test_round_trip(self) -> None:
        data = build_receiver_report(7, [BLOCK], "me@here", bye="done")
        self.assertEqual(
            parse_rtcp(data),
            [
                ReceiverReport(7, (BLOCK,)),
                Sdes((SdesChunk(7, ((CNAME, b"me@here"),)),)),
                Bye((7,), "done"),
            ],
        )

    def test_empty_rr(self) -> None:
        self.assertEqual(build_rr(0x01020304), hx("80c90001 01020304"))

    def test_sdes_padding_needs_a_whole_null_word(self) -> None:
        self.assertEqual(build_sdes(1, "ab"), hx("81ca0003 00000001 0102 6162 00000000"))
        self.assertEqual(build_sdes(1, "abcde"), hx("81ca0003 00000001 0105 6162636465 00"))

    def test_bye(self) -> None:
        self.assertEqual(
            build_bye([0x01020304], "gone"), hx("81cb0003 01020304 04 676f6e65 000000")
        )
        self.assertEqual(build_bye([1, 2]), hx("82cb0002 00000001 00000002"))
        self.assertEqual(
            build_receiver_report(1, [], "a", bye="")[-8:], hx("81cb0001 00000001")
        )

    def test_cumulative_lost_clamped(self) -> None:
        high = ReportBlock(1, 0, 10_000_000, 0, 0, 0, 0)
        low = ReportBlock(1, 0, -9_000_000, 0, 0, 0, 0)
        self.assertEqual(build_rr(2, [high])[12:16], hx("007fffff"))
        self.assertEqual(build_rr(2, [low])[12:16], hx("00800000"))
        [rr] = parse_rtcp(build_rr(2, [low]))
        assert isinstance(rr, ReceiverReport)
        self.assertEqual(rr.reports[0].cumulative_lost, -0x800000)

    def test_more_than_31_blocks(self) -> None:
        blocks = [ReportBlock(i, 0, i, i, 0, 0, 0) for i in range(40)]
        data = build_rr(9, blocks)
        self.assertEqual(len(data), 8 + 31 * 24 + 8 + 9 * 24)
        first, second = parse_rtcp(data)
        assert isinstance(first, ReceiverReport) and isinstance(second, ReceiverReport)
        self.assertEqual((len(first.reports), len(second.reports)), (31, 9))
        self.assertEqual(list(first.reports + second.reports), blocks)


class NtpTests(SynchronousTestCase):
    def test_conversions(self) -> None:
        self.assertEqual(unix_to_ntp(0.0), 2208988800 << 32)
        self.assertEqual(unix_to_ntp(1.5), (2208988801 << 32) | 0x80000000)
        self.assertEqual(ntp_to_unix((2208988801 << 32) | 0x40000000), 1.25)
        self.assertEqual(ntp_middle(0x0123456789ABCDEF), 0x456789AB)
        now = 1_700_000_000.125
        self.assertEqual(ntp_to_unix(unix_to_ntp(now)), now)
