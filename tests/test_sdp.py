"""Tests for siprecd.sdp: parsing, serializing and answering SIPREC offers."""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from siprecd.errors import NotAcceptableHere
from siprecd.sdp import (
    MAX_SDP_BYTES,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    Rtcp,
    RtpMap,
    SDPError,
    SessionDescription,
    StreamChoice,
    Timing,
    build_answer,
    parse,
    plan_streams,
    serialize,
)

# Resolved at import: trial runs tests from _trial_temp, where a relative __file__ breaks.
CORPUS = Path(__file__).resolve().parent / "data" / "corpus"
PREFERENCE = ["PCMU", "PCMA", "G722", "opus"]
SRS = "192.0.2.10"


def corpus_sdps(name: str) -> list[bytes]:
    """The SDP bodies in a corpus file (LF endings, as stored).

    Sample files hold several SDPs split by ``__split_here__``; offers are multipart SIP bodies,
    from which the SDP is the text from ``v=0`` up to the next ``--boundary`` line.
    """
    text = (CORPUS / name).read_text()
    if "__split_here__" in text:
        return [part.strip("\n").encode() + b"\n" for part in text.split("__split_here__\n")]
    start = text.index("v=0")
    end = re.compile(r"^--", re.M).search(text, start)
    return [text[start : end.start() if end else len(text)].encode()]


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def sdp(*lines: str, eol: str = "\r\n") -> bytes:
    return (eol.join(lines) + eol).encode()


HEAD = ("v=0", "o=- 1 1 IN IP4 198.51.100.1", "s=-", "c=IN IP4 198.51.100.1", "t=0 0")


def offer(*media_lines: str, head: tuple[str, ...] = HEAD) -> SessionDescription:
    return parse(sdp(*head, *media_lines))


def answer(
    offered: SessionDescription,
    preference: list[str] = PREFERENCE,
    **kwargs: object,
) -> tuple[SessionDescription, list[StreamChoice]]:
    """Answer with ports 30000, 30002, ... for every m-line the plan accepts."""
    plan = plan_streams(offered, codec_preference=preference,
                        record_video=bool(kwargs.get("record_video", False)))
    ports = [30000 + 2 * c.index if c.accepted else None for c in plan]
    return build_answer(
        offered,
        address=str(kwargs.pop("address", SRS)),
        ports=ports,
        codec_preference=preference,
        origin_session_id=42,
        origin_version=7,
        **kwargs,  # type: ignore[arg-type]
    )


# file -> per SDP -> per m-line: (label, offered port, answered direction, codec, pt, event pt)
CORPUS_EXPECTED: dict[str, list[list[tuple[str | None, int, str, str, int, int | None]]]] = {
    "acme-siprec-offer.txt": [[
        ("16777227", 20106, "recvonly", "PCMU", 0, None),
        ("16777228", 20110, "recvonly", "PCMU", 0, None),
    ]],
    "broadworks-offer-2.txt": [[
        ("10", 38606, "recvonly", "PCMA", 8, 97),
        ("20", 35744, "recvonly", "PCMA", 8, 97),
    ]],
    "broadworks-offer.txt": [[("1", 22294, "recvonly", "PCMU", 0, 101)]],
    "cisco-siprec-offer.txt": [[
        ("1", 10292, "recvonly", "PCMU", 0, 101),
        ("2", 10294, "recvonly", "PCMU", 0, 101),
    ]],
    "connectel-offer.txt": [[
        ("1", 35011, "recvonly", "PCMU", 0, 101),
        ("2", 35012, "recvonly", "PCMU", 0, 101),
    ]],
    "connectel-offer2.txt": [[
        ("1", 35011, "recvonly", "PCMU", 0, 101),
        ("2", 35012, "recvonly", "PCMU", 0, 101),
    ]],
    "connectel-offer3.txt": [[
        ("1", 35011, "recvonly", "PCMU", 0, 101),
        ("2", 35012, "recvonly", "PCMU", 0, 101),
    ]],
    "inactive-sdp-offer.txt": [[
        ("1", 19254, "inactive", "PCMU", 0, 101),
        ("2", 19236, "inactive", "PCMU", 0, 101),
    ]],
    "non-siprec-payload.txt": [[("1", 10292, "recvonly", "PCMU", 0, 101)]],
    "procomm-siprec-offer.txt": [[
        ("a_leg", 12654, "recvonly", "PCMA", 8, None),
        ("b_leg", 12686, "recvonly", "PCMA", 8, None),
    ]],
    "sample-sdp2.txt": [
        [("1", 35003, "recvonly", "PCMU", 0, 101)],
        [("2", 48926, "recvonly", "PCMU", 0, None)],
    ],
    "sample-sdp3.txt": [
        [(None, 22820, "recvonly", "PCMA", 8, 101)],
        [(None, 19640, "inactive", "PCMA", 8, 101)],
    ],
    "sample-sdps.txt": [
        [("1", 48932, "recvonly", "PCMU", 0, None)],
        [("2", 48926, "recvonly", "PCMU", 0, None)],
    ],
    "sonus-siprec-offer.txt": [[
        ("1", 48932, "recvonly", "PCMU", 0, None),
        ("2", 48926, "recvonly", "PCMU", 0, None),
    ]],
}


class CorpusTests(SynchronousTestCase):
    """Every SDP that real SRCs sent parses, round-trips and gets the expected answer."""

    def test_every_corpus_file_is_covered(self) -> None:
        files = sorted(p.name for p in CORPUS.glob("*.txt"))
        self.assertEqual(files, sorted(CORPUS_EXPECTED),
                         "a corpus .txt file without expectations: add it to CORPUS_EXPECTED")

    def test_lf_and_crlf_parse_identically(self) -> None:
        for name in CORPUS_EXPECTED:
            for body in corpus_sdps(name):
                self.assertNotIn(b"\r", body)
                self.assertEqual(parse(crlf(body)), parse(body), name)

    def test_round_trip(self) -> None:
        for name in CORPUS_EXPECTED:
            for body in corpus_sdps(name):
                for data in (body, crlf(body)):
                    parsed = parse(data)
                    wire = serialize(parsed)
                    self.assertEqual(parse(wire), parsed, name)
                    self.assertEqual(serialize(parse(wire)), wire, name)
                    self.assertNotIn(b"\n", wire.replace(b"\r\n", b""), name)

    def test_answers(self) -> None:
        for name, expected_sdps in CORPUS_EXPECTED.items():
            bodies = corpus_sdps(name)
            self.assertEqual(len(bodies), len(expected_sdps), name)
            for body, expected in zip(bodies, expected_sdps):
                offered = parse(crlf(body))
                self.assertEqual([m.port for m in offered.media], [e[1] for e in expected], name)
                result, choices = answer(offered)
                self.assertEqual(
                    [(c.label, c.direction, c.codec, c.payload_type, c.telephone_event_pt)
                     for c in choices],
                    [(e[0], e[2], e[3], e[4], e[5]) for e in expected],
                    name,
                )
                self.assertTrue(all(c.accepted and c.reason is None for c in choices), name)
                self.assertEqual(len(result.media), len(offered.media), name)
                for i, (m, e) in enumerate(zip(result.media, expected)):
                    self.assertEqual(m.port, 30000 + 2 * i, name)
                    self.assertEqual(m.label, e[0], name)
                    self.assertEqual(m.own_direction, e[2], name)
                    self.assertEqual(m.connection, Connection("IN", "IP4", SRS), name)
                    self.assertEqual(m.formats, [str(e[4])] + ([str(e[5])] if e[5] else []))
                self.assertEqual(parse(serialize(result)), result, name)

    def test_cisco_offer_fields(self) -> None:
        parsed = parse(crlf(corpus_sdps("cisco-siprec-offer.txt")[0]))
        self.assertEqual(parsed.version, 0)
        self.assertEqual(
            parsed.origin,
            Origin("CiscoSystemsSIP-GW-UserAgent", "1247", "9367", "IN", "IP4", "172.31.93.236"),
        )
        self.assertEqual(parsed.name, "SIP Call")
        self.assertEqual(parsed.connections, [Connection("IN", "IP4", "172.31.93.236")])
        self.assertEqual(parsed.timing, [Timing(0, 0)])
        self.assertEqual(parsed.attributes, [])
        first = parsed.media[0]
        self.assertEqual(
            (first.media, first.port, first.port_count, first.proto, first.formats),
            ("audio", 10292, 1, "RTP/AVP", ["0", "101"]),
        )
        self.assertEqual(
            first.attributes,
            [("rtpmap", "0 PCMU/8000"), ("rtpmap", "101 telephone-event/8000"),
             ("fmtp", "101 0-16"), ("ptime", "20"), ("sendonly", None), ("label", "1")],
        )
        self.assertEqual(first.rtpmaps, {"0": RtpMap("PCMU", 8000),
                                         "101": RtpMap("telephone-event", 8000)})
        self.assertEqual(first.fmtp, {"101": "0-16"})
        self.assertEqual(first.ptime, 20)
        self.assertEqual(first.direction(parsed), "sendonly")
        self.assertEqual(first.connection_address(parsed), "172.31.93.236")
        self.assertFalse(first.on_hold(parsed))
        self.assertIsNone(first.rtcp)

    def test_cisco_answer_bytes(self) -> None:
        result, _ = answer(parse(corpus_sdps("cisco-siprec-offer.txt")[0]))
        self.assertEqual(
            serialize(result),
            sdp(
                "v=0", "o=siprecd 42 7 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0",
                "m=audio 30000 RTP/AVP 0 101", "c=IN IP4 192.0.2.10", "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=ptime:20",
                "a=label:1", "a=recvonly",
                "m=audio 30002 RTP/AVP 0 101", "c=IN IP4 192.0.2.10", "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=ptime:20",
                "a=label:2", "a=recvonly",
            ),
        )

    def test_sample_sdp2_out_of_order_lines(self) -> None:
        # t= before c=, b= lines between a= lines, a=rtcp with an address, ICE attributes.
        parsed = parse(corpus_sdps("sample-sdp2.txt")[0])
        self.assertEqual(parsed.connection, Connection("IN", "IP4", "127.0.0.1"))
        m = parsed.media[0]
        self.assertEqual(m.bandwidths, [Bandwidth("AS", 84), Bandwidth("TIAS", 64000)])
        self.assertEqual(m.rtcp, Rtcp(60552, "IN", "IP4", "192.168.1.224"))
        self.assertEqual(m.attribute("X-nat"), "0")
        self.assertEqual(
            m.attribute_values("candidate"),
            ["Hc0a801e0 1 UDP 2130706431 192.168.1.224 60550 typ host",
             "Hc0a801e0 2 UDP 2130706430 192.168.1.224 60552 typ host"],
        )
        self.assertEqual(m.connection_address(parsed), "127.0.0.1")
        self.assertEqual(
            serialize(parsed).split(b"\r\n")[:6],
            [b"v=0", b"o=- 1548422731 0 IN IP4 0.0.0.0", b"s=-", b"c=IN IP4 127.0.0.1",
             b"t=0 0", b"m=audio 35003 RTP/AVP 8 0 101"],
        )

    def test_connectel_without_c_and_t(self) -> None:
        parsed = parse(corpus_sdps("connectel-offer.txt")[0])
        self.assertEqual(parsed.timing, [])
        self.assertEqual(parsed.connections, [])
        self.assertIsNone(parsed.media[0].connection_address(parsed))
        self.assertFalse(parsed.media[0].on_hold(parsed))
        self.assertEqual(parsed.media[0].attribute("maxptime"), "150")
        self.assertEqual(list(parsed.media[0].rtpmaps),
                         ["0", "8", "3", "101"])

    def test_procomm_unknown_direction_attribute_kept(self) -> None:
        m = parse(corpus_sdps("procomm-siprec-offer.txt")[0]).media[0]
        self.assertEqual(m.attributes[1], ("direction", "both"))
        self.assertEqual(m.own_direction, "sendonly")

    def test_trailing_whitespace_stripped(self) -> None:
        m = parse(corpus_sdps("sample-sdp3.txt")[0]).media[0]
        self.assertEqual(m.attribute("ptime"), "20")
        self.assertIsNone(m.label)


class ParseTests(SynchronousTestCase):

    def test_blank_lines_and_mixed_endings(self) -> None:
        data = (b"\r\n\nv=0\no=- 1 2 IN IP4 10.0.0.1 \r\n\r\ns=x\t\nt=0 0\n\n\n"
                b"m=audio 4000 RTP/AVP 0\r\n")
        parsed = parse(data)
        self.assertEqual(parsed.origin.sess_version, "2")
        self.assertEqual(parsed.name, "x")
        self.assertEqual([m.port for m in parsed.media], [4000])

    def test_static_payload_types_without_rtpmap(self) -> None:
        m = offer("m=audio 4000 RTP/AVP 0 3 4 8 9 13 18 96").media[0]
        self.assertEqual(
            m.rtpmaps,
            {"0": RtpMap("PCMU", 8000), "3": RtpMap("GSM", 8000), "4": RtpMap("G723", 8000),
             "8": RtpMap("PCMA", 8000), "9": RtpMap("G722", 8000), "13": RtpMap("CN", 8000),
             "18": RtpMap("G729", 8000)},
        )

    def test_rtpmap_overrides_static_and_bad_rtpmap_ignored(self) -> None:
        m = offer(
            "m=audio 4000 RTP/AVP 0 111 97 98 300",
            "a=rtpmap:0 PCMU/16000",
            "a=rtpmap:111 opus/48000/2",
            "a=rtpmap:97 broken",
            "a=rtpmap:98 L16/x",
            "a=rtpmap:99 PCMA/8000",
            "a=rtpmap:300 PCMA/8000",
        ).media[0]
        self.assertEqual(m.rtpmaps, {"0": RtpMap("PCMU", 16000), "111": RtpMap("opus", 48000, 2)})
        self.assertEqual(str(m.rtpmaps["111"]), "opus/48000/2")

    def test_non_rtp_media_has_no_rtpmaps(self) -> None:
        m = offer("m=application 9 UDP/BFCP *").media[0]
        self.assertEqual((m.proto, m.formats, m.rtpmaps), ("UDP/BFCP", ["*"], {}))

    def test_fmtp(self) -> None:
        m = offer("m=audio 4000 RTP/AVP 111 101", "a=fmtp:111 minptime=10;useinbandfec=1",
                  "a=fmtp:101 0-15", "a=fmtp:101 0-16").media[0]
        self.assertEqual(m.fmtp, {"111": "minptime=10;useinbandfec=1", "101": "0-15"})

    def test_direction_inheritance(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0", "m=audio 4002 RTP/AVP 0", "a=inactive",
                       head=HEAD + ("a=sendonly",))
        self.assertEqual(parsed.own_direction, "sendonly")
        self.assertEqual([m.direction(parsed) for m in parsed.media], ["sendonly", "inactive"])
        plain = offer("m=audio 4000 RTP/AVP 0")
        self.assertIsNone(plain.media[0].own_direction)
        self.assertEqual(plain.media[0].direction(plain), "sendrecv")

    def test_label_absent_empty_and_arbitrary(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0", "m=audio 4002 RTP/AVP 0", "a=label:",
                       "m=audio 4004 RTP/AVP 0", "a=label:caller leg #1: ünï")
        self.assertEqual([m.label for m in parsed.media], [None, "", "caller leg #1: ünï"])
        self.assertEqual(parse(serialize(parsed)), parsed)

    def test_hold_by_connection_address(self) -> None:
        parsed = offer(
            "m=audio 4000 RTP/AVP 0",
            "m=audio 4002 RTP/AVP 0", "c=IN IP4 198.51.100.9",
            "m=audio 4004 RTP/AVP 0", "c=IN IP6 ::",
            head=("v=0", "o=- 1 1 IN IP4 198.51.100.1", "s=-", "c=IN IP4 0.0.0.0", "t=0 0"),
        )
        self.assertEqual([m.connection_address(parsed) for m in parsed.media],
                         ["0.0.0.0", "198.51.100.9", "::"])
        self.assertEqual([m.on_hold(parsed) for m in parsed.media], [True, False, True])

    def test_multiple_connection_lines(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0", "c=IN IP4 198.51.100.7",
                       "c=IN IP4 198.51.100.8")
        m = parsed.media[0]
        self.assertEqual([c.address for c in m.connections], ["198.51.100.7", "198.51.100.8"])
        self.assertEqual(m.connection_address(parsed), "198.51.100.7")
        self.assertEqual(parse(serialize(parsed)), parsed)

    def test_multicast_connection_and_port_count(self) -> None:
        parsed = offer("m=video 5000/2 RTP/AVP 96", "c=IN IP4 233.252.0.1/127/3",
                       "c=IN IP6 ff15::101/2")
        m = parsed.media[0]
        self.assertEqual(m.port_count, 2)
        self.assertEqual(m.connections, [Connection("IN", "IP4", "233.252.0.1", 127, 3),
                                         Connection("IN", "IP6", "ff15::101", None, 2)])
        self.assertIn(b"m=video 5000/2 RTP/AVP 96\r\nc=IN IP4 233.252.0.1/127/3\r\n"
                      b"c=IN IP6 ff15::101/2\r\n", serialize(parsed))

    def test_ptime_and_rtcp_variants(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0", "a=ptime:20.0", "a=rtcp:4001",
                       "m=audio 4002 RTP/AVP 0", "a=ptime:x", "a=rtcp:nope",
                       "m=audio 4004 RTP/AVP 0")
        self.assertEqual([m.ptime for m in parsed.media], [20, None, None])
        self.assertEqual([m.rtcp for m in parsed.media], [Rtcp(4001), None, None])

    def test_port_zero_and_mixed_profiles(self) -> None:
        parsed = offer("m=audio 0 RTP/AVP 0", "m=audio 4002 RTP/SAVP 0",
                       "m=video 4004 RTP/AVPF 96", "m=application 4006 UDP/BFCP *")
        self.assertEqual([(m.media, m.port, m.proto) for m in parsed.media],
                         [("audio", 0, "RTP/AVP"), ("audio", 4002, "RTP/SAVP"),
                          ("video", 4004, "RTP/AVPF"), ("application", 4006, "UDP/BFCP")])

    def test_all_optional_lines_round_trip_in_canonical_order(self) -> None:
        # Every line type, session lines in reverse order, an unknown type letter.
        data = sdp(
            "v=0", "t=0 0", "r=7d 1h 0 25h", "z=2882844526 -1h", "k=clear:abc", "a=tool:x",
            "b=CT:128", "c=IN IP4 198.51.100.1", "p=+1 555 0100", "e=ops@example.com",
            "u=http://example.com/", "i=info", "s=Name", "o=- 1 1 IN IP4 198.51.100.1",
            "x=unknown type is ignored",
            "m=audio 4000 RTP/AVP 0", "a=label:1", "b=AS:64", "c=IN IP4 198.51.100.2",
            "k=prompt", "i=leg",
        )
        parsed = parse(data)
        self.assertEqual(parsed.timing, [Timing(0, 0, ["7d 1h 0 25h"])])
        self.assertEqual(
            serialize(parsed),
            sdp("v=0", "o=- 1 1 IN IP4 198.51.100.1", "s=Name", "i=info",
                "u=http://example.com/", "e=ops@example.com", "p=+1 555 0100",
                "c=IN IP4 198.51.100.1", "b=CT:128", "t=0 0", "r=7d 1h 0 25h",
                "z=2882844526 -1h", "k=clear:abc", "a=tool:x",
                "m=audio 4000 RTP/AVP 0", "i=leg", "c=IN IP4 198.51.100.2", "b=AS:64",
                "k=prompt", "a=label:1"),
        )
        self.assertEqual(parse(serialize(parsed)), parsed)

    def test_missing_session_name(self) -> None:
        parsed = parse(sdp("v=0", "o=- 1 1 IN IP4 198.51.100.1", "t=0 0"))
        self.assertEqual((parsed.name, parsed.media), ("", []))
        self.assertEqual(serialize(parsed),
                         sdp("v=0", "o=- 1 1 IN IP4 198.51.100.1", "s= ", "t=0 0"))
        self.assertEqual(parse(serialize(parsed)), parsed)

    def test_latin1_line_decoded(self) -> None:
        data = sdp("v=0", "o=- 1 1 IN IP4 198.51.100.1", "s=x", "t=0 0",
                   "m=audio 4000 RTP/AVP 0").replace(b"s=x", b"s=T\xe9l\xe9")
        parsed = parse(data)
        self.assertEqual(parsed.name, "Télé")
        self.assertIn("s=Télé\r\n".encode(), serialize(parsed))
        self.assertEqual(parse(serialize(parsed)), parsed)

    def test_serialize_refuses_line_injection(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0")
        parsed.media[0].attributes.append(("label", "1\r\na=sendrecv"))
        exc = self.assertRaises(ValueError, serialize, parsed)
        self.assertEqual(str(exc), "SDP field contains CR, LF or NUL: 'a=label:1\\r\\na=sendrecv'")


class ParseErrorTests(SynchronousTestCase):
    """Each malformed input is refused with a 488 whose Warning says what and where."""

    def assertSDPError(self, data: bytes, message: str) -> None:
        exc = self.assertRaises(SDPError, parse, data)
        self.assertEqual(exc.warning, message)
        self.assertEqual(str(exc), message)

    def test_is_488_with_warning(self) -> None:
        exc = self.assertRaises(SDPError, parse, b"")
        self.assertIsInstance(exc, NotAcceptableHere)
        self.assertEqual(exc.code, 488)
        self.assertEqual(exc.headers, [("Warning", '399 siprecd "SDP body is empty"')])

    def test_empty(self) -> None:
        self.assertSDPError(b"", "SDP body is empty")
        self.assertSDPError(b" \r\n\n\t\n", "SDP body is empty")

    def test_must_start_with_version(self) -> None:
        self.assertSDPError(sdp(*HEAD[1:], "v=0"),
                            "line 1: SDP must start with 'v=0', got 'o=- 1 1 IN IP4 198.51.100.1'")
        self.assertSDPError(b"\n\nv=1\n", "line 3: unsupported SDP version '1' (only v=0 exists)")

    def test_short_m_line(self) -> None:
        self.assertSDPError(sdp(*HEAD, "m=audio 4000 RTP/AVP 0", "a=sendonly", "m=audio"),
                            "line 8: m= line needs 'media port proto fmt...', got 'm=audio'")
        self.assertSDPError(sdp(*HEAD, "m=audio 4000 RTP/AVP"),
                            "line 6: m= line needs 'media port proto fmt...', "
                            "got 'm=audio 4000 RTP/AVP'")

    def test_bad_ports(self) -> None:
        self.assertSDPError(sdp(*HEAD, "m=audio abc RTP/AVP 0"),
                            "line 6: m= port must be a number from 0 to 65535, got 'abc'")
        self.assertSDPError(sdp(*HEAD, "m=audio 65536 RTP/AVP 0"),
                            "line 6: m= port must be a number from 0 to 65535, got '65536'")
        self.assertSDPError(sdp(*HEAD, "m=audio -1 RTP/AVP 0"),
                            "line 6: m= port must be a number from 0 to 65535, got '-1'")
        self.assertSDPError(sdp(*HEAD, "m=audio 4000/0 RTP/AVP 0"),
                            "line 6: m= port count must be a positive number, got '0'")

    def test_bad_origin(self) -> None:
        self.assertSDPError(sdp("v=0", "o=- 1 IN IP4 198.51.100.1", "s=-"),
                            "line 2: o= line needs 'username sess-id sess-version nettype "
                            "addrtype address', got 'o=- 1 IN IP4 198.51.100.1'")
        self.assertSDPError(sdp("v=0", "o=- 1 v2 IN IP4 198.51.100.1"),
                            "line 2: o= sess-version must be digits, got 'v2'")
        self.assertSDPError(sdp("v=0", "s=-", "t=0 0"), "SDP has no o= line")
        self.assertSDPError(sdp(*HEAD, "o=- 2 2 IN IP4 198.51.100.1"), "line 6: second o= line")
        self.assertSDPError(sdp(*HEAD, "v=0"),
                            "line 6: second v= line (two SDP bodies glued together?)")

    def test_bad_connection(self) -> None:
        self.assertSDPError(sdp(*HEAD, "m=audio 4000 RTP/AVP 0", "c=IN IP4"),
                            "line 7: c= line needs 'nettype addrtype address', got 'c=IN IP4'")
        self.assertSDPError(sdp("v=0", "c=IN IP4 233.252.0.1/x"),
                            "line 2: c= address has a malformed suffix in "
                            "'c=IN IP4 233.252.0.1/x'")
        self.assertSDPError(sdp("v=0", "c=IN IP6 ff15::1/2/3"),
                            "line 2: c= address has a malformed suffix in 'c=IN IP6 ff15::1/2/3'")

    def test_bad_bandwidth_and_timing(self) -> None:
        self.assertSDPError(sdp(*HEAD, "b=AS"),
                            "line 6: b= line needs 'bwtype:bandwidth', got 'b=AS'")
        self.assertSDPError(sdp("v=0", "t=now"),
                            "line 2: t= line needs 'start-time stop-time', got 't=now'")
        self.assertSDPError(sdp("v=0", "r=7d 1h 0"), "line 2: r= line must follow a t= line")

    def test_session_line_inside_media(self) -> None:
        self.assertSDPError(
            sdp(*HEAD, "m=audio 4000 RTP/AVP 0", "a=sendonly", "t=0 0"),
            "line 8: t= is a session-level line but appears in the m= section that starts "
            "on line 6",
        )

    def test_not_a_type_value_line(self) -> None:
        self.assertSDPError(sdp(*HEAD, "garbage here"),
                            "line 6: expected '<type>=<value>', got 'garbage here'")
        long_line = "x" * 200
        self.assertSDPError(sdp(*HEAD, long_line),
                            f"line 6: expected '<type>=<value>', got '{'x' * 80}...'")

    def test_size_limit(self) -> None:
        body = sdp(*HEAD, "m=audio 4000 RTP/AVP 0")
        exact = body + b"\n" * (MAX_SDP_BYTES - len(body))
        self.assertEqual(len(parse(exact).media), 1)
        self.assertSDPError(exact + b"\n", "SDP is 65537 bytes, over the 65536-byte limit")

    def test_media_count_limit(self) -> None:
        lines = [f"m=audio {4000 + 2 * i} RTP/AVP 0" for i in range(64)]
        self.assertEqual(len(parse(sdp(*HEAD, *lines)).media), 64)
        self.assertSDPError(sdp(*HEAD, *lines, "m=audio 5000 RTP/AVP 0"),
                            "line 70: more than 64 m= lines")


class PlanTests(SynchronousTestCase):

    def test_codec_preference_order_honoured(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 8 0 9")
        for preference, expected in (
            (["PCMU", "PCMA"], ("PCMU", 0)),
            (["PCMA", "PCMU"], ("PCMA", 8)),
            (["g722", "pcmu"], ("G722", 9)),
            (["opus", "G729", "pcma"], ("PCMA", 8)),
        ):
            [choice] = plan_streams(parsed, codec_preference=preference)
            self.assertEqual((choice.codec, choice.payload_type), expected, preference)
            self.assertEqual((choice.clock_rate, choice.channels), (8000, 1))

    def test_preference_with_clock_rate(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 96 97", "a=rtpmap:96 L16/8000",
                       "a=rtpmap:97 L16/16000")
        [choice] = plan_streams(parsed, codec_preference=["L16/16000"])
        self.assertEqual((choice.payload_type, choice.clock_rate), (97, 16000))
        self.assertRaises(ValueError, plan_streams, parsed, codec_preference=["L16/fast"])

    def test_only_g729_is_refused(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 18", "a=rtpmap:18 G729/8000", "a=label:1")
        exc = self.assertRaises(SDPError, plan_streams, parsed, codec_preference=PREFERENCE)
        self.assertEqual(exc.warning, "nothing to record: m-line 1/1 (audio, label '1'): "
                                      "no acceptable codec (offered: G729/8000)")
        self.assertEqual(exc.code, 488)

    def test_telephone_event_is_not_a_codec(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 101 96", "a=rtpmap:101 telephone-event/8000")
        exc = self.assertRaises(SDPError, plan_streams, parsed,
                                codec_preference=["telephone-event", "PCMU"])
        self.assertEqual(exc.warning, "nothing to record: m-line 1/1 (audio): "
                                      "no acceptable codec (offered: telephone-event/8000, 96)")

    def test_telephone_event_at_codec_clock_rate(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 111 9 101 102", "a=rtpmap:111 opus/48000/2",
                       "a=rtpmap:101 telephone-event/8000", "a=rtpmap:102 telephone-event/48000")
        [wide] = plan_streams(parsed, codec_preference=["opus"])
        self.assertEqual((wide.codec, wide.payload_type, wide.clock_rate, wide.channels,
                          wide.telephone_event_pt), ("opus", 111, 48000, 2, 102))
        [narrow] = plan_streams(parsed, codec_preference=["G722"])
        self.assertEqual((narrow.codec, narrow.clock_rate, narrow.telephone_event_pt),
                         ("G722", 8000, 101))
        only_wide = offer("m=audio 4000 RTP/AVP 0 102", "a=rtpmap:102 telephone-event/48000")
        [none] = plan_streams(only_wide, codec_preference=PREFERENCE)
        self.assertIsNone(none.telephone_event_pt)

    def test_reasons_per_m_line(self) -> None:
        parsed = offer(
            "m=audio 4000 RTP/AVP 0", "a=label:ok",
            "m=audio 0 RTP/AVP 0", "a=label:off",
            "m=video 4004 RTP/AVP 96", "a=rtpmap:96 H264/90000",
            "m=application 4006 UDP/BFCP *",
            "m=audio 4008 RTP/SAVP 0",
            "m=audio 4010 RTP/AVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xxxx",
            "m=audio 4012 UDP/TLS/RTP/SAVPF 0",
            "m=audio 4014 TCP/RTP/AVP 0",
            "m=audio 4016 RTP/AVP 18",
        )
        plan = plan_streams(parsed, codec_preference=PREFERENCE)
        self.assertEqual(
            [(c.index, c.accepted, c.reason) for c in plan],
            [(0, True, None),
             (1, False, "offered with port 0 (stream disabled)"),
             (2, False, "video not recorded"),
             (3, False, "application not recorded"),
             (4, False, "secured media (SRTP) refused: no [security] policy given"),
             (5, False, "secured media (SRTP) refused: no [security] policy given"),
             (6, False, "secured media (SRTP) refused: no [security] policy given"),
             (7, False, "transport 'TCP/RTP/AVP' not supported"),
             (8, False, "no acceptable codec (offered: G729/8000)")],
        )
        self.assertEqual([c.label for c in plan[:2]], ["ok", "off"])
        self.assertTrue(all(c.port is None for c in plan))
        self.assertEqual([c.direction for c in plan[1:]], ["inactive"] * 8)

    def test_session_level_fingerprint_means_secured(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0", head=HEAD + ("a=fingerprint:sha-256 AB:CD",))
        exc = self.assertRaises(SDPError, plan_streams, parsed, codec_preference=PREFERENCE)
        self.assertEqual(exc.warning, "nothing to record: m-line 1/1 (audio): "
                                      "secured media (SRTP) refused: no [security] policy given")

    def test_all_secured_offer_refused_with_every_reason(self) -> None:
        parsed = offer("m=audio 4000 RTP/SAVP 0", "a=label:1", "m=video 4002 RTP/SAVP 96")
        exc = self.assertRaises(SDPError, plan_streams, parsed, codec_preference=PREFERENCE)
        self.assertEqual(exc.warning,
                         "nothing to record: m-line 1/2 (audio, label '1'): secured media (SRTP) "
                         "refused: no [security] policy given; m-line 2/2 (video): video not recorded")

    def test_video_recorded_when_asked(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0", "m=video 4002 RTP/AVP 96",
                       "a=rtpmap:96 H264/90000")
        plan = plan_streams(parsed, codec_preference=["PCMU", "H264"], record_video=True)
        self.assertEqual([(c.accepted, c.codec, c.clock_rate) for c in plan],
                         [(True, "PCMU", 8000), (True, "H264", 90000)])

    def test_inactive_and_on_hold_are_recordable(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0", "a=inactive",
                       "m=audio 4002 RTP/AVP 0", "c=IN IP4 0.0.0.0",
                       "m=audio 4004 RTP/AVP 0", "a=recvonly",
                       "m=audio 4006 RTP/AVP 0", "a=sendrecv")
        plan = plan_streams(parsed, codec_preference=PREFERENCE)
        self.assertEqual(
            [(c.accepted, c.offered_direction, c.direction, c.on_hold) for c in plan],
            [(True, "inactive", "inactive", False), (True, "sendrecv", "recvonly", True),
             (True, "recvonly", "inactive", False), (True, "sendrecv", "recvonly", False)],
        )

    def test_no_m_lines_is_legal(self) -> None:
        self.assertEqual(plan_streams(offer(), codec_preference=PREFERENCE), [])


class AnswerTests(SynchronousTestCase):

    def test_zero_m_lines(self) -> None:
        result, choices = answer(offer())
        self.assertEqual(choices, [])
        self.assertEqual(serialize(result),
                         sdp("v=0", "o=siprecd 42 7 IN IP4 192.0.2.10", "s=-", "t=0 0"))

    def test_origin_version_and_username(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0")
        for version in (1, 2, 18446744073709551616):
            result, _ = build_answer(parsed, address=SRS, ports=[30000],
                                     codec_preference=PREFERENCE, origin_session_id=900,
                                     origin_version=version, username="srs-1")
            self.assertEqual(result.origin,
                             Origin("srs-1", "900", str(version), "IN", "IP4", SRS))
            self.assertEqual((result.name, result.timing), ("-", [Timing(0, 0)]))

    def test_ipv6_address(self) -> None:
        result, _ = answer(offer("m=audio 4000 RTP/AVP 0"), address="2001:db8::10")
        self.assertEqual(result.origin.addrtype, "IP6")
        self.assertEqual(result.media[0].connection, Connection("IN", "IP6", "2001:db8::10"))
        self.assertIn(b"\r\nc=IN IP6 2001:db8::10\r\n", serialize(result))

    def test_mixed_avp_and_savp(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 8 0", "a=label:plain", "a=sendonly",
                       "m=audio 4002 RTP/SAVP 0 8", "a=label:secret", "a=sendonly",
                       "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xxxx")
        result, choices = answer(parsed)
        self.assertEqual(serialize(result), sdp(
            "v=0", "o=siprecd 42 7 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0",
            "m=audio 30000 RTP/AVP 0", "c=IN IP4 192.0.2.10", "a=rtpmap:0 PCMU/8000",
            "a=label:plain", "a=recvonly",
            "m=audio 0 RTP/SAVP 0",
        ))
        self.assertEqual([(c.accepted, c.port, c.label, c.reason) for c in choices],
                         [(True, 30000, "plain", None),
                          (False, 0, "secret", "secured media (SRTP) refused: no [security] policy given")])

    def test_video_rejected_with_port_zero(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0", "a=label:1",
                       "m=video 4002 RTP/AVPF 96 97", "a=rtpmap:96 VP8/90000", "a=label:2",
                       "m=application 4004 UDP/BFCP *")
        result, choices = answer(parsed)
        self.assertEqual(
            [(m.media, m.port, m.proto, m.formats, m.attributes, m.connections)
             for m in result.media[1:]],
            [("video", 0, "RTP/AVPF", ["96"], [], []),
             ("application", 0, "UDP/BFCP", ["*"], [], [])],
        )
        self.assertEqual([(c.media_type, c.accepted, c.reason, c.direction) for c in choices],
                         [("audio", True, None, "recvonly"),
                          ("video", False, "video not recorded", "inactive"),
                          ("application", False, "application not recorded", "inactive")])

    def test_hold_by_address_and_inactive(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0", "c=IN IP4 0.0.0.0", "a=sendonly", "a=label:1",
                       "m=audio 4002 RTP/AVP 0", "a=inactive", "a=label:2")
        result, choices = answer(parsed)
        self.assertEqual([m.port for m in result.media], [30000, 30002])
        self.assertEqual([m.own_direction for m in result.media], ["recvonly", "inactive"])
        self.assertEqual([(c.on_hold, c.direction) for c in choices],
                         [(True, "recvonly"), (False, "inactive")])

    def test_offerer_payload_numbers_and_fmtp_kept(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 111 0 96 101", "a=rtpmap:111 OPUS/48000/2",
                       "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:96 telephone-event/48000",
                       "a=fmtp:96 0-15", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16",
                       "a=ptime:30", "a=maxptime:60")
        result, [choice] = answer(parsed, preference=["opus", "PCMU"], announce_rtcp=True)
        m = result.media[0]
        self.assertEqual(m.formats, ["111", "96"])
        self.assertEqual(m.attributes, [
            ("rtpmap", "111 OPUS/48000/2"), ("fmtp", "111 minptime=10;useinbandfec=1"),
            ("rtpmap", "96 telephone-event/48000"), ("fmtp", "96 0-15"),
            ("ptime", "30"), ("rtcp", "30001"), ("recvonly", None),
        ])
        self.assertEqual((choice.codec, choice.payload_type, choice.telephone_event_pt),
                         ("OPUS", 111, 96))

    def test_port_none_means_not_recorded(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0", "m=audio 4002 RTP/AVP 8")
        result, choices = build_answer(parsed, address=SRS, ports=[None, 30002],
                                       codec_preference=PREFERENCE, origin_session_id=1,
                                       origin_version=1)
        self.assertEqual([(m.port, m.formats) for m in result.media],
                         [(0, ["0"]), (30002, ["8"])])
        self.assertEqual(choices[0], StreamChoice(
            index=0, media_type="audio", label=None, accepted=False, direction="inactive",
            offered_direction="sendrecv", on_hold=False, reason="no port allocated", port=0))
        self.assertEqual(choices[1], StreamChoice(
            index=1, media_type="audio", label=None, accepted=True, direction="recvonly",
            offered_direction="sendrecv", on_hold=False, payload_type=8, codec="PCMA",
            clock_rate=8000, channels=1, port=30002))

    def test_caller_mistakes(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0", "m=video 4002 RTP/AVP 96")
        kwargs = dict(codec_preference=PREFERENCE, origin_session_id=1, origin_version=1)
        cases = [
            (dict(address=SRS, ports=[30000]), "1 ports given for 2 offered m-lines"),
            (dict(address=SRS, ports=[30000, 30002]),
             "port given for m-line 1, not recorded: video not recorded"),
            (dict(address=SRS, ports=[65535, None]),
             "RTP port for m-line 0 must be 1-65534, got 65535"),
            (dict(address="srs.example.com", ports=[30000, None]),
             "SRS media address must be an IP address, got 'srs.example.com'"),
            (dict(address=SRS, ports=[30000, None], username="two words"),
             "o= username must be one non-empty token, got 'two words'"),
        ]
        for extra, message in cases:
            exc = self.assertRaises(ValueError, build_answer, parsed, **kwargs, **extra)
            self.assertEqual(str(exc), message)

    def test_nothing_recordable_raises_from_build_answer(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 18")
        exc = self.assertRaises(SDPError, build_answer, parsed, address=SRS, ports=[None],
                                codec_preference=PREFERENCE, origin_session_id=1,
                                origin_version=1)
        self.assertEqual(exc.warning, "nothing to record: m-line 1/1 (audio): "
                                      "no acceptable codec (offered: G729/8000)")

    def test_answer_round_trips(self) -> None:
        parsed = offer("m=audio 4000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000",
                       "a=label:x y", "m=video 4002 RTP/AVP 96")
        result, _ = answer(parsed, announce_rtcp=True)
        self.assertEqual(parse(serialize(result)), result)
        self.assertIsInstance(result.media[0], MediaDescription)
