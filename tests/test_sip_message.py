"""parse_message, Request/Response serialization and make_response."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from siprecd.errors import BadRequest
from siprecd.sip.headers import CSeq, Via
from siprecd.sip.message import (
    Limits,
    MessageTooLarge,
    NotSIP,
    Request,
    Response,
    head_end,
    make_response,
    parse_message,
    split_head,
)
from siprecd.sip.uri import AbsoluteURI, SipURI, TelURI

from .sipfakes import build_request, request

INVITE = (
    b"INVITE sip:srs@192.0.2.10:5060;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-a;rport\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK-b\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "SRC" <sip:src@example.com>;tag=f1\r\n'
    b"To: <sip:srs@example.com>\r\n"
    b"Call-ID: abc@192.0.2.1\r\n"
    b"CSeq: 101 INVITE\r\n"
    b"Contact: <sip:src@192.0.2.1:5060>;+sip.src\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 5\r\n"
    b"\r\n"
    b"v=0\r\n"
)

RESPONSE = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-c\r\n"
    b"From: <sip:srs@example.com>;tag=l1\r\n"
    b"To: <sip:src@example.com>;tag=r1\r\n"
    b"Call-ID: bye-1\r\n"
    b"CSeq: 2 BYE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def parse(data: bytes, **kwargs: object) -> Request | Response:
    return parse_message(data, **kwargs)  # type: ignore[arg-type]


class RequestParseTests(SynchronousTestCase):
    def test_invite(self) -> None:
        message = parse(INVITE)
        assert isinstance(message, Request)
        message.validate()
        self.assertEqual(message.method, "INVITE")
        self.assertEqual(message.raw_uri, "sip:srs@192.0.2.10:5060;transport=udp")
        self.assertEqual(
            message.uri, SipURI("sip", "192.0.2.10", user="srs", port=5060, params=(("transport", "udp"),))
        )
        self.assertEqual(message.version, "SIP/2.0")
        self.assertEqual(message.body, b"v=0\r\n")
        self.assertEqual(message.call_id, "abc@192.0.2.1")
        self.assertEqual(message.cseq, CSeq(101, "INVITE"))
        self.assertEqual(message.from_.tag, "f1")
        self.assertEqual(message.from_.display_name, "SRC")
        self.assertIsNone(message.to.tag)
        self.assertEqual(message.max_forwards, 70)
        self.assertEqual(message.content_type, "application/sdp")
        self.assertEqual(
            message.vias,
            [
                Via("SIP/2.0", "UDP", "192.0.2.1", 5060, (("branch", "z9hG4bK-a"), ("rport", None))),
                Via("SIP/2.0", "UDP", "192.0.2.2", None, (("branch", "z9hG4bK-b"),)),
            ],
        )
        self.assertEqual(message.top_via.branch, "z9hG4bK-a")
        self.assertEqual([str(c.uri) for c in message.contacts], ["sip:src@192.0.2.1:5060"])
        self.assertEqual(message.record_routes, [])

    def test_compact_headers(self) -> None:
        data = (
            b"BYE sip:srs@h SIP/2.0\r\n"
            b"v: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n"
            b"f: <sip:a@b>;tag=1\r\n"
            b"t: <sip:c@d>;tag=2\r\n"
            b"i: cid\r\n"
            b"CSeq: 2 BYE\r\n"
            b"m: <sip:a@1.2.3.4>\r\n"
            b"k: siprec\r\n"
            b"s: hello\r\n"
            b"c: text/plain\r\n"
            b"l: 2\r\n"
            b"\r\n"
            b"hi"
        )
        message = parse(data)
        assert isinstance(message, Request)
        message.validate()
        self.assertEqual(message.call_id, "cid")
        self.assertEqual(message.to.tag, "2")
        self.assertEqual(message.headers.get("Subject"), "hello")
        self.assertEqual(message.headers.tokens("Supported"), ["siprec"])
        self.assertEqual(message.content_type, "text/plain")
        self.assertEqual(message.body, b"hi")
        self.assertEqual(message.top_via.transport, "TCP")
        self.assertEqual(len(message.contacts), 1)
        self.assertEqual(
            [name for name, _ in message.headers],
            ["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported", "Subject",
             "Content-Type", "Content-Length"],
        )

    def test_folded_lines(self) -> None:
        data = (
            b"OPTIONS sip:srs@h SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.1\r\n"
            b"  ;branch=z9hG4bK1\r\n"
            b"Subject: I know you're there,\r\n"
            b"     pick up the phone   \r\n"
            b"\tand talk to me!\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        message = parse(data)
        message.validate()
        self.assertEqual(
            message.headers.get("Subject"), "I know you're there, pick up the phone and talk to me!"
        )
        self.assertEqual(message.headers.get("Via"), "SIP/2.0/UDP 192.0.2.1 ;branch=z9hG4bK1")
        self.assertEqual(message.top_via.branch, "z9hG4bK1")

    def test_lf_only(self) -> None:
        head, body = INVITE.split(b"\r\n\r\n", 1)
        message = parse(head.replace(b"\r\n", b"\n") + b"\n\n" + body)
        assert isinstance(message, Request)
        message.validate()
        self.assertEqual(message.call_id, "abc@192.0.2.1")
        self.assertEqual(len(message.headers), 10)
        self.assertEqual(message.headers.get("Content-Type"), "application/sdp")
        # The body is not rewritten: its CRLF stays.
        self.assertEqual(message.body, b"v=0\r\n")

    def test_leading_crlf_ignored(self) -> None:
        message = parse(b"\r\n\r\n" + INVITE)
        self.assertIsInstance(message, Request)

    def test_utf8_display_names_round_trip(self) -> None:
        data = build_request(
            "OPTIONS", extra=[("Subject", "Grüße")]
        ).replace(b'<sip:src@example.com>', '"Jürgen Müller 日本" <sip:src@example.com>'.encode())
        message = parse(data)
        assert isinstance(message, Request)
        message.validate()
        self.assertEqual(message.from_.display_name, "Jürgen Müller 日本")
        self.assertEqual(message.headers.get("Subject"), "Grüße")
        again = parse(message.to_bytes())
        self.assertEqual(again.from_.display_name, "Jürgen Müller 日本")
        self.assertEqual(message.to_bytes(), data)

    def test_invalid_utf8_survives(self) -> None:
        data = build_request("OPTIONS", extra=[("X-Raw", "a")]).replace(b"X-Raw: a", b"X-Raw: \xff\xfe")
        message = parse(data)
        self.assertEqual(message.to_bytes(), data)

    def test_header_name_whitespace_before_colon(self) -> None:
        data = build_request("OPTIONS").replace(b"Call-ID:", b"Call-ID \t:")
        message = parse(data)
        self.assertEqual(message.call_id, "call-1@192.0.2.1")

    def test_tel_and_absolute_request_uri(self) -> None:
        self.assertEqual(request("OPTIONS", "tel:+15550100").uri, TelURI("+15550100"))
        self.assertEqual(
            request("OPTIONS", "http://example.com/").uri, AbsoluteURI("http", "http://example.com/")
        )

    def test_version_other_than_2_0_parses(self) -> None:
        message = parse(build_request("OPTIONS", version="SIP/3.0"))
        assert isinstance(message, Request)
        self.assertEqual(message.version, "SIP/3.0")
        self.assertEqual(parse(build_request("OPTIONS", version="sip/2.0")).version, "SIP/2.0")


class ResponseParseTests(SynchronousTestCase):
    def test_response(self) -> None:
        message = parse(RESPONSE)
        assert isinstance(message, Response)
        message.validate()
        self.assertEqual(message.status, 180)
        self.assertEqual(message.reason, "Ringing")
        self.assertEqual(message.version, "SIP/2.0")
        self.assertEqual(message.cseq, CSeq(2, "BYE"))
        self.assertEqual(message.body, b"")

    def test_reason_phrase_forms(self) -> None:
        for line, status, reason in (
            (b"SIP/2.0 200 OK", 200, "OK"),
            (b"SIP/2.0 200", 200, ""),
            (b"SIP/2.0 486 Busy  Here ", 486, "Busy  Here "),
            (b"SIP/2.0 699 \xc3\xa9t\xc3\xa9", 699, "\u00e9t\u00e9"),
        ):
            message = parse(RESPONSE.replace(b"SIP/2.0 180 Ringing", line))
            assert isinstance(message, Response)
            self.assertEqual((message.status, message.reason), (status, reason))

    def test_malformed_status_line(self) -> None:
        for line in (b"SIP/2.0 20 OK", b"SIP/2.0 099 x", b"SIP/2.0  200 OK", b"SIP/2.0 2000 OK", b"SIP/2 200 OK"):
            with self.assertRaises(BadRequest) as caught:
                parse(RESPONSE.replace(b"SIP/2.0 180 Ringing", line))
            self.assertIn("malformed status line", caught.exception.reason)


class ContentLengthTests(SynchronousTestCase):
    def test_datagram_longer_body_truncated(self) -> None:
        data = build_request("OPTIONS", body=b"abc") + b"TRAILING"
        self.assertEqual(parse(data).body, b"abc")

    def test_datagram_shorter_body_is_400(self) -> None:
        data = build_request("OPTIONS", body=b"abcdef")[:-2]
        with self.assertRaises(BadRequest) as caught:
            parse(data)
        self.assertEqual(caught.exception.code, 400)
        self.assertEqual(caught.exception.reason, "Content-Length 6 exceeds the 4 body bytes received")

    def test_datagram_missing_means_rest(self) -> None:
        data = build_request("OPTIONS", body=b"rest of it", content_length=False)
        self.assertNotIn(b"Content-Length", data)
        self.assertEqual(parse(data).body, b"rest of it")

    def test_stream_missing_means_none(self) -> None:
        data = build_request("OPTIONS", body=b"rest of it", content_length=False)
        self.assertEqual(parse(data, stream=True).body, b"")

    def test_stream_exact(self) -> None:
        data = build_request("OPTIONS", body=b"12345")
        self.assertEqual(parse(data, stream=True).body, b"12345")

    def test_compact_and_repeated_equal(self) -> None:
        data = build_request("OPTIONS", body=b"xy", extra=[("l", "2")])
        self.assertEqual(parse(data).body, b"xy")

    def test_conflicting(self) -> None:
        data = build_request("OPTIONS", body=b"xy", extra=[("l", "1")])
        with self.assertRaises(BadRequest) as caught:
            parse(data)
        self.assertEqual(caught.exception.reason, "conflicting Content-Length headers ['1', '2']")

    def test_malformed(self) -> None:
        for value in ("abc", "-1", "1.0", "\u00b2", ""):
            data = build_request("OPTIONS", content_length=False, extra=[("Content-Length", value)])
            with self.assertRaises(BadRequest) as caught:
                parse(data)
            self.assertEqual(caught.exception.reason, f"malformed Content-Length {value!r}")


class LimitTests(SynchronousTestCase):
    def test_size_limit(self) -> None:
        data = build_request("OPTIONS", body=b"x" * 200)
        limits = Limits(max_message_size=len(data) - 1)
        with self.assertRaises(MessageTooLarge) as caught:
            parse(data, limits=limits)
        self.assertEqual(caught.exception.code, 513)
        self.assertEqual(
            caught.exception.reason, f"message of {len(data)} bytes exceeds {len(data) - 1}"
        )
        self.assertIsInstance(caught.exception, BadRequest)
        self.assertEqual(parse(data, limits=Limits(max_message_size=len(data))).body, b"x" * 200)

    def test_header_count_limit(self) -> None:
        base = build_request("OPTIONS")
        count = len(base.split(b"\r\n\r\n")[0].split(b"\r\n")) - 1
        self.assertEqual(count, 7)
        self.assertIsInstance(parse(base, limits=Limits(max_headers=7)), Request)
        with self.assertRaises(BadRequest) as caught:
            parse(base, limits=Limits(max_headers=6))
        self.assertEqual(caught.exception.reason, "7 header lines exceed the limit of 6")

    def test_many_headers_default(self) -> None:
        extra = [(f"X-H{i}", "v") for i in range(200)]
        with self.assertRaises(BadRequest) as caught:
            parse(build_request("OPTIONS", extra=extra))
        self.assertIn("exceed the limit of 128", caught.exception.reason)


class ValidationTests(SynchronousTestCase):
    MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")

    def test_missing_mandatory_headers(self) -> None:
        for name in self.MANDATORY:
            lines = build_request("OPTIONS").split(b"\r\n")
            data = b"\r\n".join(line for line in lines if not line.startswith(name.encode() + b":"))
            message = parse(data)
            with self.assertRaises(BadRequest) as caught:
                message.validate()
            self.assertEqual(caught.exception.reason, f"missing {name} header", name)

    def test_missing_via_on_response(self) -> None:
        message = parse(RESPONSE.replace(b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-c\r\n", b""))
        with self.assertRaises(BadRequest) as caught:
            message.top_via  # noqa: B018
        self.assertEqual(caught.exception.reason, "missing Via header")

    def test_duplicate_from(self) -> None:
        message = parse(build_request("OPTIONS", extra=[("From", "<sip:x@y>;tag=2")]))
        with self.assertRaises(BadRequest) as caught:
            message.validate()
        self.assertEqual(caught.exception.reason, "more than one From header")

    def test_empty_or_spaced_call_id(self) -> None:
        for value, reason in (("", "missing Call-ID header"), ("a b", "malformed Call-ID 'a b'")):
            message = parse(build_request("OPTIONS", call_id=value))
            with self.assertRaises(BadRequest) as caught:
                message.validate()
            self.assertEqual(caught.exception.reason, reason)

    def test_bad_typed_headers_name_the_header(self) -> None:
        for kwargs, fragment in (
            ({"via": "SIP/2.0"}, "Via"),
            ({"cseq_method": "IN VITE"}, "CSeq"),
            ({"extra": [("Max-Forwards", "256")]}, "Max-Forwards"),
        ):
            data = build_request("OPTIONS", **kwargs)  # type: ignore[arg-type]
            if "extra" in kwargs:
                data = data.replace(b"Max-Forwards: 70\r\n", b"", 1)
            message = parse(data)
            with self.assertRaises(BadRequest) as caught:
                message.validate()
            self.assertIn(fragment, caught.exception.reason)

    def test_bad_from(self) -> None:
        message = parse(build_request("OPTIONS").replace(b"From: <sip:src@example.com>", b"From: <sip:src@"))
        with self.assertRaises(BadRequest) as caught:
            message.validate()
        self.assertIn("From", caught.exception.reason)

    def test_cseq_method_mismatch(self) -> None:
        message = parse(build_request("OPTIONS", cseq_method="INVITE"))
        with self.assertRaises(BadRequest) as caught:
            message.validate()
        self.assertEqual(
            caught.exception.reason, "CSeq method INVITE does not match request method OPTIONS"
        )

    def test_max_forwards_forms(self) -> None:
        self.assertEqual(request("OPTIONS").max_forwards, 70)
        data = build_request("OPTIONS").replace(b"Max-Forwards: 70\r\n", b"")
        self.assertIsNone(parse(data).max_forwards)  # type: ignore[union-attr]
        for value in ("-1", "x", "\u00b2"):
            bad = build_request("OPTIONS").replace(b"Max-Forwards: 70", f"Max-Forwards: {value}".encode())
            with self.assertRaises(BadRequest) as caught:
                parse(bad).validate()
            self.assertEqual(caught.exception.reason, f"malformed Max-Forwards {value!r}")


class BadStartLineTests(SynchronousTestCase):
    def replace_line(self, line: bytes) -> bytes:
        return build_request("OPTIONS").replace(b"OPTIONS sip:srs@192.0.2.10:5060 SIP/2.0", line, 1)

    def test_extra_spaces(self) -> None:
        for line in (
            b"OPTIONS  sip:srs@h SIP/2.0",
            b"OPTIONS sip:srs@h  SIP/2.0",
            b"OPTIONS sip:srs@h SIP/2.0 ",
            b" OPTIONS sip:srs@h SIP/2.0",
            b"OPTIONS\tsip:srs@h SIP/2.0",
        ):
            with self.assertRaises(BadRequest) as caught:
                parse(self.replace_line(line))
            self.assertIn("must be 'Method SP Request-URI SP SIP-Version'", caught.exception.reason)

    def test_bad_version(self) -> None:
        for version in (b"SIP/2", b"SIP/2.0a", b"SIP/x.y", b"XSIP/2.0"):
            with self.assertRaises(BadRequest) as caught:
                parse(self.replace_line(b"OPTIONS sip:srs@h " + version))
            self.assertEqual(caught.exception.reason, f"bad SIP version {version.decode()!r} in request line")

    def test_bad_method(self) -> None:
        with self.assertRaises(BadRequest) as caught:
            parse(self.replace_line(b"OPT<IONS sip:srs@h SIP/2.0"))
        self.assertEqual(caught.exception.reason, "bad method 'OPT<IONS' in request line")

    def test_bad_request_uri(self) -> None:
        with self.assertRaises(BadRequest) as caught:
            parse(self.replace_line(b"OPTIONS sip:srs@ SIP/2.0"))
        self.assertEqual(caught.exception.reason, "bad Request-URI: no host in 'sip:srs@'")

    def test_bad_header_lines(self) -> None:
        for extra, fragment in (
            (b"NoColonHere", "has no name or no ':'"),
            (b": value", "has no name or no ':'"),
            (b"Bad Name: x", "bad header name 'Bad Name'"),
        ):
            data = build_request("OPTIONS").replace(b"Max-Forwards: 70", extra)
            with self.assertRaises(BadRequest) as caught:
                parse(data)
            self.assertIn("line 3:", caught.exception.reason)
            self.assertIn(fragment, caught.exception.reason)

    def test_no_empty_line(self) -> None:
        with self.assertRaises(BadRequest) as caught:
            parse(b"OPTIONS sip:srs@h SIP/2.0\r\nVia: SIP/2.0/UDP h")
        self.assertEqual(caught.exception.reason, "message has no empty line ending the headers")


class NotSIPTests(SynchronousTestCase):
    def test_garbage(self) -> None:
        for data in (
            b"",
            b"\r\n\r\n",
            b"\x00\x01\x02\x03\xff" * 20,
            b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"hello world",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on a plain port
        ):
            with self.assertRaises(NotSIP):
                parse(data)

    def test_not_sip_is_not_bad_request(self) -> None:
        self.assertFalse(issubclass(NotSIP, BadRequest))


class SerializationTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        for data in (INVITE, RESPONSE, build_request("BYE", to_tag="t", cseq=2)):
            first = parse(data)
            serialized = first.to_bytes()
            again = parse(serialized)
            self.assertEqual(again, first)
            self.assertEqual(again.to_bytes(), serialized)

    def test_exact_bytes(self) -> None:
        self.assertEqual(parse(INVITE).to_bytes(), INVITE)
        self.assertEqual(parse(RESPONSE).to_bytes(), RESPONSE)

    def test_compact_forms_serialize_long(self) -> None:
        data = build_request("OPTIONS").replace(b"Call-ID:", b"i:").replace(b"Content-Length: 0", b"l: 0")
        out = parse(data).to_bytes()
        self.assertIn(b"\r\nCall-ID: call-1@192.0.2.1\r\n", out)
        self.assertTrue(out.endswith(b"\r\nContent-Length: 0\r\n\r\n"))
        self.assertNotIn(b"\r\nl:", out)

    def test_content_length_recomputed(self) -> None:
        message = parse(INVITE)
        message.body = b"v=0\r\no=x\r\n"
        out = message.to_bytes()
        self.assertIn(b"\r\nContent-Length: 10\r\n\r\nv=0\r\no=x\r\n", out)
        self.assertEqual(out.count(b"Content-Length"), 1)

    def test_folded_and_lf_serialize_as_crlf_lines(self) -> None:
        message = parse(
            b"OPTIONS sip:h SIP/2.0\nVia: SIP/2.0/UDP h\n ;branch=z9hG4bK1\nCall-ID: x\n\n"
        )
        self.assertEqual(
            message.to_bytes(),
            b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h ;branch=z9hG4bK1\r\nCall-ID: x\r\n"
            b"Content-Length: 0\r\n\r\n",
        )


class HeadEndTests(SynchronousTestCase):
    def test_head_end(self) -> None:
        self.assertEqual(head_end(b"A\r\n\r\nB"), (1, 5))
        self.assertEqual(head_end(b"A\n\nB"), (1, 3))
        self.assertEqual(head_end(b"A\r\n\r\nB\n\n"), (1, 5))
        self.assertEqual(head_end(b"A\n\nB\r\n\r\n"), (1, 3))
        self.assertIsNone(head_end(b"A\r\nB\r\n"))
        self.assertEqual(split_head(b"H\r\n\r\nbody"), (b"H", b"body"))
        self.assertIsNone(split_head(b"H\r\n"))


class MakeResponseTests(SynchronousTestCase):
    def setUp(self) -> None:
        data = build_request(
            "INVITE",
            via="SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1;received=192.0.2.99, SIP/2.0/TCP proxy;branch=z9hG4bK-p",
            extra=[("Via", "SIP/2.0/UDP far;branch=z9hG4bK-f"), ("Record-Route", "<sip:proxy;lr>"),
                   ("Subject", "s")],
        )
        message = parse(data)
        assert isinstance(message, Request)
        self.request = message

    def test_copies_headers(self) -> None:
        response = make_response(self.request, 486, "Busy Here", to_tag="mytag")
        self.assertEqual(response.status, 486)
        self.assertEqual(response.reason, "Busy Here")
        self.assertEqual(
            response.headers.get_raw("Via"),
            [
                "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1;received=192.0.2.99, SIP/2.0/TCP proxy;branch=z9hG4bK-p",
                "SIP/2.0/UDP far;branch=z9hG4bK-f",
            ],
        )
        self.assertEqual(response.headers.get("From"), "<sip:src@example.com>;tag=src-tag")
        self.assertEqual(response.headers.get("To"), "<sip:srs@example.com>;tag=mytag")
        self.assertEqual(response.headers.get("Call-ID"), "call-1@192.0.2.1")
        self.assertEqual(response.headers.get("CSeq"), "1 INVITE")
        self.assertIsNone(response.headers.get("Record-Route"))
        self.assertIsNone(response.headers.get("Subject"))
        self.assertIsNone(response.headers.get("Contact"))
        self.assertEqual(
            [name for name, _ in response.headers], ["Via", "Via", "From", "To", "Call-ID", "CSeq"]
        )
        response.validate()
        self.assertEqual(response.to.tag, "mytag")
        self.assertEqual(len(response.vias), 3)

    def test_no_tag_for_100(self) -> None:
        response = make_response(self.request, 100, "Trying", to_tag="mytag")
        self.assertEqual(response.headers.get("To"), "<sip:srs@example.com>")

    def test_no_tag_without_to_tag(self) -> None:
        response = make_response(self.request, 200, "OK")
        self.assertEqual(response.headers.get("To"), "<sip:srs@example.com>")

    def test_existing_tag_kept(self) -> None:
        tagged = parse(build_request("BYE", to_tag="theirs", cseq=3))
        assert isinstance(tagged, Request)
        response = make_response(tagged, 200, "OK", to_tag="other")
        self.assertEqual(response.headers.get("To"), "<sip:srs@example.com>;tag=theirs")
        self.assertEqual(response.headers.get_raw("To"), ["<sip:srs@example.com>;tag=theirs"])

    def test_extra_headers_and_body(self) -> None:
        response = make_response(
            self.request,
            200,
            "OK",
            to_tag="t",
            headers=[("Contact", "<sip:srs@h>"), ("Allow", "INVITE")],
            body=b"v=0\r\n",
            content_type="application/sdp",
        )
        self.assertEqual(
            [name for name, _ in response.headers],
            ["Via", "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Allow", "Content-Type"],
        )
        out = response.to_bytes()
        self.assertTrue(out.startswith(b"SIP/2.0 200 OK\r\n"))
        self.assertTrue(out.endswith(b"Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"))
        again = parse(out)
        assert isinstance(again, Response)
        self.assertEqual(again.body, b"v=0\r\n")
        self.assertEqual(again.to.tag, "t")
