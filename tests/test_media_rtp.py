"""RTP header parsing (RFC 3550 §5.1, §5.3.1), building, and RTP/RTCP/DTLS/STUN demultiplexing."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from siprecd.media.rtp import MalformedPacket, build_rtp, classify, is_rtcp, parse_rtp

# V=2 P=0 X=0 CC=0 | M=0 PT=0 | seq 0x1234 | ts 0xDEADBEEF | SSRC 0x01020304 | payload
MINIMAL = bytes.fromhex("80 00 1234 deadbeef 01020304") + b"\xff" * 160

# V=2 P=1 X=1 CC=2 | M=1 PT=101 | seq 65535 | ts 0xFFFFFFFF | SSRC 0xCAFEBABE
# CSRC 0x11111111, 0x22222222 | extension profile 0xBEDE, 2 words | payload "abcd" | 3 pad octets
FULL = bytes.fromhex(
    "b2 e5 ffff ffffffff cafebabe"
    "11111111 22222222"
    "bede 0002 10ff0000 00000000"
    "61626364"
    "0000 03"
)


class ParseTests(SynchronousTestCase):
    def test_minimal(self) -> None:
        p = parse_rtp(MINIMAL)
        self.assertEqual(
            (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc, p.csrcs),
            (0, False, 0x1234, 0xDEADBEEF, 0x01020304, ()),
        )
        self.assertEqual(p.payload, b"\xff" * 160)
        self.assertIsInstance(p.payload, bytes)

    def test_csrc_extension_padding(self) -> None:
        p = parse_rtp(FULL)
        self.assertEqual(
            (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc),
            (101, True, 65535, 0xFFFFFFFF, 0xCAFEBABE),
        )
        self.assertEqual(p.csrcs, (0x11111111, 0x22222222))
        self.assertEqual(p.payload, b"abcd")

    def test_extension_without_csrc(self) -> None:
        data = bytes.fromhex("90 08 0001 00000010 00000001 1000 0001 aabbccdd") + b"xy"
        p = parse_rtp(data)
        self.assertEqual((p.payload_type, p.payload), (8, b"xy"))

    def test_padding_may_take_the_whole_payload(self) -> None:
        data = bytes.fromhex("a0 00 0001 00000000 00000001 00000004")
        self.assertEqual(parse_rtp(data).payload, b"")

    def test_empty_payload(self) -> None:
        self.assertEqual(parse_rtp(MINIMAL[:12]).payload, b"")

    def assertReason(self, data: bytes, reason: str) -> None:  # noqa: N802
        error = self.assertRaises(MalformedPacket, parse_rtp, data)
        self.assertEqual(error.reason, reason)

    def test_rejects(self) -> None:
        self.assertReason(MINIMAL[:11], "short")
        self.assertReason(b"", "short")
        self.assertReason(b"\x40" + MINIMAL[1:], "version")  # version 1
        self.assertReason(b"\xc0" + MINIMAL[1:], "version")  # version 3
        self.assertReason(b"\x00" + MINIMAL[1:], "version")
        # padding count 0, and padding longer than what follows the header
        self.assertReason(bytes.fromhex("a0 00 0001 00000000 00000001 616200"), "padding")
        self.assertReason(bytes.fromhex("a0 00 0001 00000000 00000001 616205"), "padding")
        # padding may not eat into the CSRC list or the extension
        self.assertReason(bytes.fromhex("a1 00 0001 00000000 00000001 00000002 0006"), "padding")
        # CSRC count beyond the packet
        self.assertReason(bytes.fromhex("83 00 0001 00000000 00000001 00000002"), "short")
        # extension header cut, extension length beyond the packet
        self.assertReason(bytes.fromhex("90 00 0001 00000000 00000001 bede"), "extension")
        self.assertReason(
            bytes.fromhex("90 00 0001 00000000 00000001 bede 0002 00000000"), "extension"
        )

    def test_malformed_is_a_value_error(self) -> None:
        self.assertIsInstance(MalformedPacket("short"), ValueError)


class BuildTests(SynchronousTestCase):
    def test_minimal_vector(self) -> None:
        self.assertEqual(
            build_rtp(0, 0x1234, 0xDEADBEEF, 0x01020304, b"\xff" * 160), MINIMAL
        )

    def test_full_vector(self) -> None:
        data = build_rtp(
            101,
            65535,
            0xFFFFFFFF,
            0xCAFEBABE,
            b"abcd",
            marker=True,
            csrcs=[0x11111111, 0x22222222],
            extension=(0xBEDE, bytes.fromhex("10ff0000 00000000")),
            padding=3,
        )
        self.assertEqual(data, FULL)

    def test_wraps_sequence_and_timestamp(self) -> None:
        p = parse_rtp(build_rtp(0, 65536 + 5, 2**32 + 7, 1))
        self.assertEqual((p.sequence, p.timestamp), (5, 7))

    def test_bad_arguments(self) -> None:
        self.assertRaises(ValueError, build_rtp, 0, 1, 1, 1, csrcs=range(16))
        self.assertRaises(ValueError, build_rtp, 0, 1, 1, 1, extension=(1, b"abc"))
        self.assertRaises(ValueError, build_rtp, 0, 1, 1, 1, padding=256)


class DemuxTests(SynchronousTestCase):
    def test_rfc5761(self) -> None:
        for second in (192, 200, 201, 202, 203, 204, 205, 206, 207, 223):
            self.assertTrue(is_rtcp(bytes([0x80, second, 0, 1])), second)
        # RTP: PT 0 and 96..127 with or without the marker, PT 63 with the marker (191)
        for second in (0x00, 0x80, 0x60, 0xE0, 0x7F, 0xFF, 191, 224):
            self.assertFalse(is_rtcp(bytes([0x80, second, 0, 1])), second)
        self.assertFalse(is_rtcp(b"\x80"))

    def test_rfc7983(self) -> None:
        cases = {
            0: "stun",
            1: "stun",
            3: "stun",
            16: "zrtp",
            19: "zrtp",
            20: "dtls",
            22: "dtls",
            63: "dtls",
            64: "turn",
            79: "turn",
            128: "rtp",
            191: "rtp",
            4: "unknown",
            80: "unknown",
            192: "unknown",
        }
        self.assertEqual({b: classify(bytes([b, 0])) for b in cases}, cases)
        self.assertEqual(classify(b""), "unknown")
