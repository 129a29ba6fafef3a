"""MIME bodies: parse_body and parse_multipart (RFC 2046, sloppy SRC dialects)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from siprecd.errors import BadRequest
from siprecd.sip.headers import Headers
from siprecd.sip.multipart import (
    BodyPart,
    MultipartError,
    content_type_param,
    parse_body,
    parse_multipart,
)

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
XML = b'<?xml version="1.0" encoding="UTF-8"?>\r\n<recording xmlns="urn:ietf:params:xml:ns:recording:1"/>\r\n'

BODY = (
    b"--foobar\r\n"
    b"Content-Type: application/sdp\r\n"
    b"\r\n" + SDP + b"\r\n"
    b"--foobar\r\n"
    b"Content-Type: application/rs-metadata+xml\r\n"
    b"Content-Disposition: recording-session\r\n"
    b"\r\n" + XML + b"\r\n"
    b"--foobar--\r\n"
)


class ParseBodyTests(SynchronousTestCase):
    def test_no_content_type(self) -> None:
        self.assertEqual(parse_body(None, b""), [])
        self.assertEqual(parse_body(None, b"x"), [BodyPart(Headers(), b"x")])
        self.assertEqual(parse_body(None, b"x")[0].content_type, "text/plain")

    def test_single_part(self) -> None:
        parts = parse_body("Application/SDP ; x=1", SDP)
        self.assertEqual(len(parts), 1)
        self.assertEqual(parts[0].content_type, "application/sdp")
        self.assertEqual(parts[0].body, SDP)
        self.assertEqual(parts[0].headers.get("Content-Type"), "Application/SDP ; x=1")
        self.assertIsNone(parts[0].disposition)

    def test_multipart_via_parse_body(self) -> None:
        parts = parse_body("Multipart/Mixed;boundary=foobar", BODY)
        self.assertEqual([p.content_type for p in parts], ["application/sdp", "application/rs-metadata+xml"])


class MultipartTests(SynchronousTestCase):
    def test_two_parts_with_headers(self) -> None:
        parts = parse_multipart("multipart/mixed;boundary=foobar", BODY)
        self.assertEqual(len(parts), 2)
        self.assertEqual(parts[0].headers, Headers([("Content-Type", "application/sdp")]))
        self.assertEqual(parts[0].body, SDP)
        self.assertEqual(
            list(parts[1].headers),
            [("Content-Type", "application/rs-metadata+xml"), ("Content-Disposition", "recording-session")],
        )
        self.assertEqual(parts[1].disposition, "recording-session")
        self.assertEqual(parts[1].body, XML)

    def test_quoted_boundary(self) -> None:
        parts = parse_multipart('multipart/mixed; boundary="foobar"', BODY)
        self.assertEqual([p.body for p in parts], [SDP, XML])

    def test_boundary_with_specials(self) -> None:
        boundary = "----=_Part 0.1+x"
        body = BODY.replace(b"foobar", boundary.encode())
        parts = parse_multipart(f'multipart/mixed;boundary="{boundary}"', body)
        self.assertEqual([p.body for p in parts], [SDP, XML])

    def test_lf_only(self) -> None:
        body = BODY.replace(b"\r\n", b"\n")
        parts = parse_multipart("multipart/mixed;boundary=foobar", body)
        self.assertEqual([p.content_type for p in parts], ["application/sdp", "application/rs-metadata+xml"])
        self.assertEqual(parts[0].body, SDP.replace(b"\r\n", b"\n"))
        self.assertEqual(parts[1].body, XML.replace(b"\r\n", b"\n"))

    def test_headers_without_space_after_colon(self) -> None:
        body = BODY.replace(b"Content-Type: ", b"Content-Type:").replace(
            b"Content-Disposition: ", b"content-disposition:"
        )
        parts = parse_multipart("multipart/mixed;boundary=foobar", body)
        self.assertEqual(parts[0].headers.get("Content-Type"), "application/sdp")
        self.assertEqual(parts[1].headers.get("Content-Disposition"), "recording-session")

    def test_metadata_first_and_third_part(self) -> None:
        body = (
            b"--b\r\nContent-Type: application/rs-metadata\r\n\r\n" + XML + b"\r\n"
            b"--b\r\nContent-Type: application/sdp\r\n\r\n" + SDP + b"\r\n"
            b"--b\r\nContent-Type: application/x-vendor\r\n\r\nvendor\r\n"
            b"--b--"
        )
        parts = parse_multipart("multipart/mixed;boundary=b", body)
        self.assertEqual(
            [(p.content_type, p.body) for p in parts],
            [("application/rs-metadata", XML), ("application/sdp", SDP), ("application/x-vendor", b"vendor")],
        )

    def test_preamble_and_epilogue(self) -> None:
        body = b"This is a preamble.\r\n--foobar-not\r\n" + BODY + b"This is the epilogue.\r\n--foobar\r\nnot a part"
        parts = parse_multipart("multipart/mixed;boundary=foobar", body)
        self.assertEqual([p.body for p in parts], [SDP, XML])

    def test_missing_close_delimiter(self) -> None:
        body = BODY[: BODY.index(b"--foobar--")]
        parts = parse_multipart("multipart/mixed;boundary=foobar", body)
        self.assertEqual(len(parts), 2)
        self.assertEqual(parts[0].body, SDP)
        # Without a close delimiter the last part runs to the end of the body.
        self.assertEqual(parts[1].body, XML + b"\r\n")

    def test_close_delimiter_at_end_without_newline(self) -> None:
        parts = parse_multipart("multipart/mixed;boundary=foobar", BODY.rstrip(b"\r\n"))
        self.assertEqual([p.body for p in parts], [SDP, XML])

    def test_transport_padding(self) -> None:
        body = BODY.replace(b"--foobar\r\n", b"--foobar  \t\r\n").replace(b"--foobar--\r\n", b"--foobar-- \r\n")
        parts = parse_multipart("multipart/mixed;boundary=foobar", body)
        self.assertEqual([p.body for p in parts], [SDP, XML])

    def test_part_without_headers(self) -> None:
        body = b"--x\r\n\r\nplain\r\n--x--\r\n"
        parts = parse_multipart("multipart/mixed;boundary=x", body)
        self.assertEqual(parts, [BodyPart(Headers(), b"plain")])
        self.assertEqual(parts[0].content_type, "text/plain")

    def test_folded_part_header(self) -> None:
        body = b"--x\r\nContent-Type: application/sdp;\r\n  charset=utf-8\r\n\r\nv=0\r\n--x--"
        parts = parse_multipart("multipart/mixed;boundary=x", body)
        self.assertEqual(parts[0].headers.get("Content-Type"), "application/sdp; charset=utf-8")
        self.assertEqual(parts[0].content_type, "application/sdp")

    def test_whitespace_before_xml_kept(self) -> None:
        body = b"--x\r\nContent-Type: application/rs-metadata+xml\r\n\r\n  \r\n<?xml?>\r\n--x--"
        parts = parse_multipart("multipart/mixed;boundary=x", body)
        self.assertEqual(parts[0].body, b"  \r\n<?xml?>")

    def test_boundary_prefix_inside_part_is_not_a_delimiter(self) -> None:
        body = b"--x\r\nContent-Type: text/plain\r\n\r\nline\r\n--xy\r\n-- x\r\n--x--\r\n"
        parts = parse_multipart("multipart/mixed;boundary=x", body)
        self.assertEqual(parts[0].body, b"line\r\n--xy\r\n-- x")

    def test_errors(self) -> None:
        for content_type, body, reason in (
            ("multipart/mixed", BODY, "multipart Content-Type 'multipart/mixed' has no boundary parameter"),
            ("multipart/mixed;boundary=", BODY, "multipart Content-Type 'multipart/mixed;boundary=' has no boundary parameter"),
            ('multipart/mixed;boundary=""', BODY, "has no boundary parameter"),
            ("multipart/mixed;boundary=other", BODY, "multipart body has no delimiter line '--other'"),
            ("multipart/mixed;boundary=foobar", b"--foobar--\r\n", "multipart body has no parts"),
            ("multipart/mixed;boundary=" + "b" * 201, BODY, "multipart boundary is longer than 200 characters"),
            ("multipart/mixed;boundary=x", b"--x\r\nBad Header: y\r\n\r\nz", "part 1: header line 'Bad Header: y'"),
            ("multipart/mixed;boundary=x", b"--x\r\nno colon\r\n\r\nz", "part 1: header line 'no colon'"),
        ):
            with self.assertRaises(MultipartError) as caught:
                parse_multipart(content_type, body)
            self.assertIn(reason, caught.exception.reason)
            self.assertIsInstance(caught.exception, BadRequest)
            self.assertEqual(caught.exception.code, 400)

    def test_non_ascii_boundary_is_a_multipart_error(self) -> None:
        # Headers are decoded with surrogateescape; a boundary must never raise anything but
        # MultipartError (which the core turns into a 400).
        for boundary in ("\u20ac", "b\udcff"):
            with self.assertRaises(MultipartError):
                parse_multipart(f"multipart/mixed;boundary={boundary}", b"no parts here")
        body = "--\u00e9\r\n\r\nx\r\n--\u00e9--".encode()
        self.assertEqual(parse_multipart("multipart/mixed;boundary=\u00e9", body)[0].body, b"x")

    def test_content_type_param(self) -> None:
        self.assertEqual(content_type_param('multipart/mixed; BOUNDARY="a b"; x=y', "boundary"), "a b")
        self.assertEqual(content_type_param("multipart/mixed;x=y", "x"), "y")
        self.assertIsNone(content_type_param("multipart/mixed", "boundary"))
        self.assertIsNone(content_type_param("multipart/mixed;boundary", "boundary"))


class FoldedPartHeaderTests(SynchronousTestCase):
    def test_folded_line_joins_only_its_own_field(self) -> None:
        body = (
            b"--b\r\nX-Note: one\r\nX-Note: two\r\n  continued\r\n"
            b"Content-Type: application/sdp\r\n\r\nv=0\r\n--b--\r\n"
        )
        (part,) = parse_multipart("multipart/mixed;boundary=b", body)
        self.assertEqual(part.headers.get_raw("X-Note"), ["one", "two continued"])
        self.assertEqual(part.content_type, "application/sdp")
