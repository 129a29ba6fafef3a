"""siprecd.workers.relay: frames between the parent and a worker."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from siprecd.workers.relay import (
    MAX_FRAME,
    Closed,
    FrameDecoder,
    Hello,
    Inbound,
    Outbound,
    RelayError,
    encode,
)

FRAMES = [
    Inbound("UDP", "10.1.2.3", 5060, 0, b"INVITE sip:x SIP/2.0\r\n\r\n", True),
    Inbound("TLS", "::1", 40000, 7, b"BYE", False),
    Outbound("TCP", "192.0.2.9", 5062, 4294967295, b"SIP/2.0 200 OK\r\n\r\n" + bytes(range(256))),
    Outbound("UDP", "h", 1, 0, b""),
    Closed(12),
    Hello(4242, 0),
    Hello(1, 65535),
]


class FramingTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        stream = b"".join(encode(frame) for frame in FRAMES)
        self.assertEqual(FrameDecoder().feed(stream), FRAMES)

    def test_one_byte_at_a_time(self) -> None:
        stream = b"".join(encode(frame) for frame in FRAMES)
        decoder = FrameDecoder()
        out = []
        for i in range(len(stream)):
            out.extend(decoder.feed(stream[i:i + 1]))
        self.assertEqual(out, FRAMES)
        self.assertEqual(decoder.pending, 0)

    def test_partial_frame_held(self) -> None:
        data = encode(FRAMES[0])
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(data[:-1]), [])
        self.assertEqual(decoder.pending, len(data) - 1)
        self.assertEqual(decoder.feed(data[-1:]), [FRAMES[0]])

    def test_garbage_fails_and_stays_failed(self) -> None:
        for garbage in (b"\x00\x00\x00\x02Zz", b"\x00\x00\x00\x00", (MAX_FRAME + 1).to_bytes(4, "big"),
                        b"\x00\x00\x00\x03I\x01\x00", b"\x00\x00\x00\x02C\x01",
                        b"\x00\x00\x00\x0bI\x09\x00\x00\x00\x00\x13\xc4\x01\x00x"):
            decoder = FrameDecoder()
            self.assertRaises(RelayError, decoder.feed, garbage)
            self.assertRaises(RelayError, decoder.feed, encode(Closed(1)))

    def test_host_too_long(self) -> None:
        self.assertRaises(ValueError, encode, Outbound("UDP", "h" * 256, 1, 0, b""))

    def test_not_a_frame(self) -> None:
        self.assertRaises(TypeError, encode, "nope")  # type: ignore[arg-type]
