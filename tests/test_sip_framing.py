"""StreamFramer: SIP over TCP/TLS cut into messages, fed whole, split anywhere, byte by byte."""

from __future__ import annotations

from collections.abc import Iterable

from twisted.trial.unittest import SynchronousTestCase

from siprecd.sip.framing import Event, Frame, FramingError, KeepAlive, StreamFramer
from siprecd.sip.message import Limits, parse_message

from .sipfakes import build_request

# Content-Length is deliberately not the last header: CRLF line ends must not hide it.
INVITE = (
    b"INVITE sip:srs@192.0.2.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
    b"Content-Length: 12\r\n"
    b"From: <sip:src@example.com>;tag=1\r\n"
    b"To: <sip:srs@example.com>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"hello\r\n\r\nbye"
)
OPTIONS = build_request("OPTIONS", transport="TCP")
PING = b"\r\n\r\n"


def feed_all(framer: StreamFramer, chunks: Iterable[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events.extend(framer.feed(chunk))
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


class FramerTestMixin:
    """Checks one input in every feeding pattern."""

    limits = Limits()

    def assertFrames(self, data: bytes, expected: list[Event]) -> None:  # noqa: N802
        test: SynchronousTestCase = self  # type: ignore[assignment]
        test.assertEqual(feed_all(StreamFramer(self.limits), [data]), expected, "whole")
        test.assertEqual(feed_all(StreamFramer(self.limits), bytewise(data)), expected, "byte by byte")
        for offset in range(len(data) + 1):
            events = feed_all(StreamFramer(self.limits), [data[:offset], data[offset:]])
            test.assertEqual(events, expected, f"split at {offset}")
        for a in range(0, len(data), 7):
            b = min(len(data), a + 13)
            events = feed_all(StreamFramer(self.limits), [data[:a], data[a:b], data[b:]])
            test.assertEqual(events, expected, f"split at {a} and {b}")


class FramingTests(FramerTestMixin, SynchronousTestCase):
    def test_message_with_body(self) -> None:
        self.assertFrames(INVITE, [Frame(INVITE)])
        message = parse_message(INVITE, stream=True)
        self.assertEqual(message.body, b"hello\r\n\r\nbye")

    def test_content_length_last(self) -> None:
        data = build_request("INVITE", transport="TCP", body=b"v=0\r\n", content_type="application/sdp")
        self.assertTrue(data.endswith(b"Content-Length: 5\r\n\r\nv=0\r\n"))
        self.assertFrames(data, [Frame(data)])

    def test_compact_content_length_and_spacing(self) -> None:
        data = INVITE.replace(b"Content-Length: 12", b"l  :\t12 \t")
        self.assertFrames(data, [Frame(data)])

    def test_lf_only(self) -> None:
        head, body = INVITE.split(b"\r\n\r\n", 1)
        data = head.replace(b"\r\n", b"\n") + b"\n\n" + body
        self.assertFrames(data, [Frame(data)])

    def test_two_messages_back_to_back(self) -> None:
        self.assertFrames(INVITE + OPTIONS, [Frame(INVITE), Frame(OPTIONS)])
        self.assertFrames(OPTIONS + INVITE + OPTIONS, [Frame(OPTIONS), Frame(INVITE), Frame(OPTIONS)])

    def test_keepalive(self) -> None:
        self.assertFrames(PING, [KeepAlive()])

    def test_keepalives_between_messages(self) -> None:
        self.assertFrames(
            PING + INVITE + PING + OPTIONS + PING,
            [KeepAlive(), Frame(INVITE), KeepAlive(), Frame(OPTIONS), KeepAlive()],
        )

    def test_each_ping_is_one_event(self) -> None:
        self.assertFrames(PING * 3 + b"\r\n" + OPTIONS, [KeepAlive()] * 3 + [Frame(OPTIONS)])
        self.assertFrames(b"\n" + PING + b"\r" + PING, [KeepAlive(), KeepAlive()])

    def test_lone_crlf_between_messages_ignored(self) -> None:
        self.assertFrames(INVITE + b"\r\n" + OPTIONS, [Frame(INVITE), Frame(OPTIONS)])
        self.assertFrames(b"\r\n" + OPTIONS + b"\n" + INVITE, [Frame(OPTIONS), Frame(INVITE)])

    def test_lone_crlf_at_end_waits(self) -> None:
        framer = StreamFramer(self.limits)
        self.assertEqual(framer.feed(OPTIONS + b"\r\n"), [Frame(OPTIONS)])
        self.assertEqual(framer.feed(b"\r\n"), [KeepAlive()])
        self.assertEqual(framer.buffered, 0)

    def test_whitespace_run_stays_bounded(self) -> None:
        framer = StreamFramer(self.limits)
        for _ in range(10000):
            framer.feed(b"\n")
        self.assertLessEqual(framer.buffered, 3)
        self.assertEqual(framer.feed(OPTIONS), [Frame(OPTIONS)])

    def test_missing_content_length_means_no_body(self) -> None:
        without = build_request("OPTIONS", transport="TCP", content_length=False)
        self.assertFrames(without + OPTIONS, [Frame(without), Frame(OPTIONS)])
        self.assertEqual(parse_message(without, stream=True).body, b"")

    def test_partial_message_is_buffered(self) -> None:
        framer = StreamFramer(self.limits)
        self.assertEqual(framer.feed(INVITE[:-3]), [])
        self.assertEqual(framer.buffered, len(INVITE) - 3)
        self.assertEqual(framer.feed(INVITE[-3:] + OPTIONS[:10]), [Frame(INVITE)])
        self.assertEqual(framer.buffered, 10)


class FramingErrorTests(SynchronousTestCase):
    def test_conflicting_content_length(self) -> None:
        data = INVITE.replace(b"Call-ID: c1\r\n", b"Call-ID: c1\r\nl: 3\r\n")
        for chunks in ([data], bytewise(data)):
            framer = StreamFramer(Limits())
            self.assertEqual(
                feed_all(framer, chunks), [FramingError("conflicting Content-Length values [3, 12]")]
            )
            self.assertEqual(framer.feed(OPTIONS), [])
            self.assertEqual(framer.buffered, 0)

    def test_repeated_equal_content_length_is_fine(self) -> None:
        data = INVITE.replace(b"Call-ID: c1\r\n", b"Call-ID: c1\r\nl: 12\r\n")
        self.assertEqual(StreamFramer(Limits()).feed(data), [Frame(data)])

    def test_oversized_message(self) -> None:
        limits = Limits(max_message_size=len(INVITE) - 1)
        for chunks in ([INVITE + OPTIONS], bytewise(INVITE + OPTIONS)):
            framer = StreamFramer(limits)
            self.assertEqual(
                feed_all(framer, chunks),
                [FramingError(f"message of {len(INVITE)} bytes exceeds the limit of {len(INVITE) - 1}")],
            )
            self.assertEqual(framer.feed(OPTIONS), [])
            self.assertEqual(framer.feed(PING), [])

    def test_message_exactly_at_limit(self) -> None:
        framer = StreamFramer(Limits(max_message_size=len(INVITE)))
        self.assertEqual(feed_all(framer, bytewise(INVITE)), [Frame(INVITE)])

    def test_huge_content_length_rejected_before_body_arrives(self) -> None:
        data = INVITE.replace(b"Content-Length: 12", b"Content-Length: 99999999")
        framer = StreamFramer(Limits())
        events = framer.feed(data)
        self.assertEqual(len(events), 1)
        assert isinstance(events[0], FramingError)
        self.assertIn("exceeds the limit of 65535", events[0].reason)

    def test_no_end_of_headers(self) -> None:
        framer = StreamFramer(Limits(max_message_size=100))
        events = feed_all(framer, bytewise(b"INVITE sip:a@b SIP/2.0\r\n" + b"X-Long: " + b"a" * 100))
        self.assertEqual(events, [FramingError("no end of headers within 100 bytes")])
        self.assertEqual(framer.buffered, 0)
        self.assertEqual(framer.feed(OPTIONS), [])
