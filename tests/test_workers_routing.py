"""siprecd.workers.routing: Call-ID extraction and the worker a call belongs to."""

from __future__ import annotations

import zlib

from twisted.trial.unittest import SynchronousTestCase

from siprecd.workers.routing import Peek, peek, worker_for

INVITE = (
    b"INVITE sip:srs@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:src@10.0.0.1>;tag=a\r\n"
    b"To: <sip:srs@127.0.0.1>\r\n"
    b"Call-ID: abc-123@10.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 4\r\n\r\n"
    b"Call-ID: not-this-one\r\n"
)


class PeekTests(SynchronousTestCase):
    def test_initial_invite(self) -> None:
        self.assertEqual(peek(INVITE), Peek(b"abc-123@10.0.0.1", b"INVITE", False))
        self.assertTrue(peek(INVITE).needs_token)

    def test_compact_and_case_and_folding(self) -> None:
        data = (
            b"\r\nBYE sip:srs@h SIP/2.0\n"
            b"v: SIP/2.0/TCP h;branch=z9hG4bK2\n"
            b"t: <sip:srs@h>\n ;tag=xyz\n"
            b"I : folded\n\t-id\n\n"
        )
        self.assertEqual(peek(data), Peek(b"folded -id", b"BYE", True))
        self.assertFalse(peek(data).needs_token)

    def test_call_id_is_case_sensitive(self) -> None:
        lower = peek(INVITE.replace(b"abc-123", b"ABC-123"))
        self.assertEqual(lower.call_id, b"ABC-123@10.0.0.1")

    def test_response(self) -> None:
        data = b"SIP/2.0 200 OK\r\nCALL-ID: r1\r\nTo: <sip:a@b>;tag=1\r\n\r\n"
        self.assertEqual(peek(data), Peek(b"r1", None, True))
        self.assertFalse(peek(data).needs_token)

    def test_uri_tag_is_not_a_header_tag(self) -> None:
        data = INVITE.replace(b"To: <sip:srs@127.0.0.1>", b"To: <sip:srs@127.0.0.1;tag=uri>")
        self.assertFalse(peek(data).to_tagged)

    def test_no_call_id(self) -> None:
        self.assertEqual(peek(INVITE.replace(b"Call-ID: abc-123@10.0.0.1\r\n", b"")).call_id, None)
        self.assertEqual(peek(INVITE.replace(b"abc-123@10.0.0.1", b"")).call_id, None)

    def test_not_sip(self) -> None:
        for data in (b"", b"\x00\x01garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n"):
            self.assertIsNone(peek(data), data)

    def test_options_and_cancel_and_ack_take_no_token(self) -> None:
        for method in (b"OPTIONS", b"CANCEL", b"ACK", b"REGISTER"):
            data = INVITE.replace(b"INVITE", method)
            self.assertEqual(peek(data).method, method)
            self.assertFalse(peek(data).needs_token, method)
        self.assertTrue(peek(INVITE.replace(b"INVITE", b"UPDATE")).needs_token)

    def test_one_byte_at_a_time_is_not_a_message(self) -> None:
        """Every prefix of a message either peeks or is refused: never an exception."""
        for end in range(len(INVITE)):
            peek(INVITE[:end])


class WorkerForTests(SynchronousTestCase):
    def test_stable_crc32(self) -> None:
        self.assertEqual(worker_for(b"abc-123@10.0.0.1", 2), zlib.crc32(b"abc-123@10.0.0.1") % 2)
        self.assertEqual(worker_for(b"x", 1), 0)

    def test_spread(self) -> None:
        counts = [0, 0, 0]
        for n in range(3000):
            counts[worker_for(f"{n:08x}@10.0.0.{n % 7}".encode(), 3)] += 1
        self.assertTrue(all(900 < c < 1100 for c in counts), counts)

    def test_bad_count(self) -> None:
        self.assertRaises(ValueError, worker_for, b"x", 0)
