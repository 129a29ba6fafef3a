"""SIPStack.receive: Via stamping, stateless errors, drops and counters; response routing."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.sip.message import Limits, Request, make_response, parse_message
from siprecd.sip.source import Source
from siprecd.sip.stack import SIPStack, stamp_via, stateless_error
from siprecd.sip.transport import Transports, response_destination

from .sipfakes import SRC_HOST, FakeApp, FakeConnection, FakeUDP, build_request, parse_response, request

UDP = Source("UDP", SRC_HOST, 5060)


class StackTestCase(SynchronousTestCase):
    limits = Limits()

    def setUp(self) -> None:
        self.clock = Clock()
        self.app = FakeApp()
        self.stack = SIPStack(self.clock, self.app, limits=self.limits)
        self.udp = FakeUDP()
        self.stack.transports.udp = self.udp  # type: ignore[assignment]

    def tearDown(self) -> None:
        self.stack.layer.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def status_lines(self) -> list[bytes]:
        return [data.split(b"\r\n", 1)[0] for data, _, _ in self.udp.sent]


class ViaStampingTests(StackTestCase):
    def top_via_of_response(self) -> str:
        value = self.udp.responses()[0].headers.get_raw("Via")[0]
        return value

    def test_received_added_when_host_differs(self) -> None:
        self.stack.receive(build_request("OPTIONS", via_host="pc.example.com"), Source("UDP", SRC_HOST, 5060))
        self.assertEqual(
            self.top_via_of_response(), "SIP/2.0/UDP pc.example.com:5060;branch=z9hG4bK-1;received=192.0.2.1"
        )
        # Sent to received, at the Via's port.
        self.assertEqual(self.udp.sent[0][1:], (SRC_HOST, 5060))

    def test_nothing_added_when_host_matches(self) -> None:
        self.stack.receive(build_request("OPTIONS"), Source("UDP", SRC_HOST, 5999))
        self.assertEqual(self.top_via_of_response(), "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1")
        self.assertEqual(self.udp.sent[0][1:], (SRC_HOST, 5060))  # no rport: the Via port

    def test_rport_filled_and_received_always_added(self) -> None:
        via = "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK-1"
        self.stack.receive(build_request("OPTIONS", via=via), Source("UDP", SRC_HOST, 6000))
        self.assertEqual(
            self.top_via_of_response(), "SIP/2.0/UDP 192.0.2.1:5060;rport=6000;branch=z9hG4bK-1;received=192.0.2.1"
        )
        self.assertEqual(self.udp.sent[0][1:], (SRC_HOST, 6000))

    def test_rport_behind_nat(self) -> None:
        via = "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-1;received=1.1.1.1;rport"
        self.stack.receive(build_request("OPTIONS", via=via), Source("UDP", "203.0.113.9", 40123))
        self.assertEqual(
            self.top_via_of_response(),
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-1;rport=40123;received=203.0.113.9",
        )
        self.assertEqual(self.udp.sent[0][1:], ("203.0.113.9", 40123))

    def test_only_the_top_via_of_a_combined_header_changes(self) -> None:
        via = "SIP/2.0/UDP pc.example.com;branch=z9hG4bK-1, SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-p"
        self.stack.receive(build_request("OPTIONS", via=via, extra=[("Via", "SIP/2.0/TCP x;branch=z9hG4bK-x")]), UDP)
        response = self.udp.responses()[0]
        self.assertEqual(
            response.headers.get_raw("Via"),
            [
                "SIP/2.0/UDP pc.example.com;branch=z9hG4bK-1;received=192.0.2.1, "
                "SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-p",
                "SIP/2.0/TCP x;branch=z9hG4bK-x",
            ],
        )
        self.assertEqual(self.udp.sent[0][1:], (SRC_HOST, 5060))

    def test_ipv6_source(self) -> None:
        req = request("OPTIONS", via="SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK-1")
        stamp_via(req, Source("UDP", "2001:db8::1", 5060))
        self.assertEqual(req.headers.get("Via"), "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK-1")
        stamp_via(req, Source("UDP", "2001:db8::2", 5060))
        self.assertEqual(req.headers.get("Via"), "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK-1;received=2001:db8::2")
        self.assertEqual(req.top_via.received, "2001:db8::2")

    def test_forged_received_replaced_even_when_host_matches(self) -> None:
        via = "SIP/2.0/UDP 192.0.2.1:5060;received=198.51.100.66;branch=z9hG4bK-1"
        self.stack.receive(build_request("OPTIONS", via=via), UDP)
        self.assertEqual(self.top_via_of_response(), "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1;received=192.0.2.1")
        self.assertEqual(self.udp.sent[0][1:], (SRC_HOST, 5060))

    def test_stale_received_replaced(self) -> None:
        req = request("OPTIONS", via="SIP/2.0/UDP host.example.com;received=9.9.9.9;branch=z9hG4bK-1")
        stamp_via(req, UDP)
        self.assertEqual(req.headers.get("Via"), "SIP/2.0/UDP host.example.com;branch=z9hG4bK-1;received=192.0.2.1")
        self.assertEqual(req.top_via.received, SRC_HOST)  # the cached parse was dropped


class StatelessErrorTests(StackTestCase):
    def test_broken_cseq_400_names_cseq(self) -> None:
        data = build_request("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE")
        self.stack.receive(data, UDP)
        self.assertEqual(self.status_lines(), [b"SIP/2.0 400 malformed CSeq 'one INVITE'"])
        response = self.udp.responses()[0]
        self.assertEqual(response.headers.get("CSeq"), "one INVITE")
        self.assertEqual(response.headers.get("Call-ID"), "call-1@192.0.2.1")
        self.assertEqual(response.headers.get("From"), "<sip:src@example.com>;tag=src-tag")
        self.assertRegex(response.headers.get("To"), r"^<sip:srs@example\.com>;tag=[0-9a-f]{16}$")
        self.assertEqual(response.headers.get("Via"), "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1")
        self.assertEqual(self.udp.sent[0][1:], (SRC_HOST, 5060))
        self.assertEqual(self.stack.counters["malformed"], 1)
        self.assertEqual(self.app.invites, [])
        self.assertEqual(len(self.stack.layer), 0)

    def test_non_ascii_digit_cseq_is_400_not_internal_error(self) -> None:
        data = build_request("OPTIONS").replace(b"CSeq: 1 OPTIONS", "CSeq: \u00b2 OPTIONS".encode())
        self.stack.receive(data, UDP)
        self.assertEqual(self.udp.statuses(), [400])
        self.assertEqual(self.stack.counters["internal_errors"], 0)

    def test_missing_header_400(self) -> None:
        data = build_request("OPTIONS").replace(b"Call-ID: call-1@192.0.2.1\r\n", b"")
        self.stack.receive(data, UDP)
        self.assertEqual(self.status_lines(), [b"SIP/2.0 400 missing Call-ID header"])

    def test_compact_headers_copied(self) -> None:
        data = (
            b"OPTIONS sip:srs@h SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-c\r\n"
            b"i: cid\r\nf: <sip:a@b>;tag=1\r\nt: <sip:c@d>\r\nCSeq: x\r\n\r\n"
        )
        self.stack.receive(data, UDP)
        response = self.udp.responses()[0]
        self.assertEqual(response.status, 400)
        self.assertEqual(response.headers.get("Call-ID"), "cid")
        self.assertEqual(response.top_via.branch, "z9hG4bK-c")

    def test_too_large_513(self) -> None:
        self.stack.limits = Limits(max_message_size=300)
        data = build_request("OPTIONS", body=b"x" * 400)
        self.stack.receive(data, UDP)
        self.assertEqual(self.status_lines(), [f"SIP/2.0 513 message of {len(data)} bytes exceeds 300".encode()])
        self.assertEqual(self.udp.responses()[0].call_id, "call-1@192.0.2.1")

    def test_over_connection(self) -> None:
        connection = FakeConnection()
        data = build_request("INVITE", transport="TCP").replace(b"CSeq: 1 INVITE", b"CSeq: 1")
        self.stack.receive(data, Source("TCP", SRC_HOST, 40000, connection))
        self.assertEqual(connection.statuses(), [400])
        self.assertTrue(connection.written[0].startswith(b"SIP/2.0 400 malformed CSeq '1'\r\n"))
        self.assertEqual(self.udp.sent, [])

    def test_malformed_ack_not_answered(self) -> None:
        data = build_request("ACK", to_tag="t").replace(b"CSeq: 1 ACK", b"CSeq: ACK")
        self.stack.receive(data, UDP)
        self.assertEqual(self.udp.sent, [])
        self.assertEqual(self.stack.counters["malformed"], 1)
        self.assertEqual(self.stack.counters["malformed_dropped"], 1)

    def test_malformed_response_not_answered(self) -> None:
        response = make_response(request("BYE", to_tag="t"), 200, "OK").to_bytes()
        self.stack.receive(response.replace(b"CSeq: 1 BYE", b"CSeq: BYE"), UDP)
        self.stack.receive(b"SIP/2.0 2000 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n", UDP)
        self.assertEqual(self.udp.sent, [])
        self.assertEqual(self.stack.counters["malformed"], 2)
        self.assertEqual(self.stack.counters["malformed_dropped"], 2)

    def test_request_without_via_not_answered(self) -> None:
        data = build_request("OPTIONS").replace(b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n", b"")
        self.stack.receive(data, UDP)
        self.assertEqual(self.udp.sent, [])
        self.assertEqual(self.stack.counters["malformed_dropped"], 1)

    def test_stateless_error_function(self) -> None:
        data = b"\r\nFOO sip:x SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK-s\nX: y\nCSeq: bad\n\nbody"
        out = stateless_error(data, 400, "bad thing")
        self.assertEqual(
            out,
            b"SIP/2.0 400 bad thing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-s\r\nCSeq: bad\r\n"
            b"Server: siprecd\r\nContent-Length: 0\r\n\r\n",
        )
        self.assertIsNone(stateless_error(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", 400, "x"))
        self.assertIsNone(stateless_error(b"ACK sip:x SIP/2.0\r\nVia: x\r\n\r\n", 400, "x"))


class DropTests(StackTestCase):
    def test_not_sip_counted(self) -> None:
        for data in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01", b"hello"):
            self.stack.receive(data, UDP)
        self.assertEqual(self.stack.counters["not_sip_dropped"], 3)
        self.assertEqual(self.udp.sent, [])
        self.assertEqual(self.stack.counters["malformed"], 0)

    def test_udp_keepalives_ignored(self) -> None:
        for data in (b"\r\n", b"\r\n\r\n", b"\x00", b" "):
            self.stack.receive(data, UDP)
        self.assertEqual(self.stack.counters["keepalives"], 4)
        self.assertEqual(self.udp.sent, [])
        self.assertEqual(self.stack.counters["not_sip_dropped"], 0)

    def test_counters(self) -> None:
        self.stack.receive(build_request("OPTIONS"), UDP)
        self.stack.receive(make_response(request("BYE", to_tag="t"), 200, "OK").to_bytes(), UDP)
        self.assertEqual(self.stack.counters["requests_received"], 1)
        self.assertEqual(self.stack.counters["responses_received"], 1)
        self.assertEqual(self.udp.statuses(), [200])  # a stray response is not answered

    def test_unexpected_error_is_logged_not_raised(self) -> None:
        def explode(request: Request, source: Source) -> None:
            raise KeyError("bug")

        self.stack.layer.request_received = explode  # type: ignore[method-assign]
        self.stack.receive(build_request("OPTIONS"), UDP)
        self.assertEqual(self.stack.counters["internal_errors"], 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_stream_message_without_content_length_has_no_body(self) -> None:
        connection = FakeConnection()
        data = build_request("OPTIONS", transport="TCP", content_length=False)
        self.stack.receive(data, Source("TCP", SRC_HOST, 40000, connection))
        self.assertEqual(connection.statuses(), [200])


class ResponseRoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.transports = Transports()
        self.udp = FakeUDP()
        self.transports.udp = self.udp  # type: ignore[assignment]

    def response(self, via: str) -> bytes:
        return make_response(request("OPTIONS", via=via), 200, "OK").to_bytes()

    def destination(self, via: str) -> tuple[str, int]:
        return response_destination(parse_response(self.response(via)))

    def test_destination_rules(self) -> None:
        self.assertEqual(self.destination("SIP/2.0/UDP h.example.com;branch=z9hG4bK1"), ("h.example.com", 5060))
        self.assertEqual(self.destination("SIP/2.0/TLS h.example.com;branch=z9hG4bK1"), ("h.example.com", 5061))
        self.assertEqual(self.destination("SIP/2.0/UDP h:5070;branch=z9hG4bK1"), ("h", 5070))
        self.assertEqual(self.destination("SIP/2.0/UDP h:5070;received=192.0.2.5;branch=z9hG4bK1"), ("192.0.2.5", 5070))
        self.assertEqual(
            self.destination("SIP/2.0/UDP h:5070;received=192.0.2.5;rport=6001;branch=z9hG4bK1"), ("192.0.2.5", 6001)
        )
        # A bare rport (never filled) falls back to the sent-by port.
        self.assertEqual(self.destination("SIP/2.0/UDP h:5070;rport;branch=z9hG4bK1"), ("h", 5070))
        self.assertEqual(
            self.destination("SIP/2.0/UDP h:5070;maddr=239.1.1.1;received=192.0.2.5;rport=6001;branch=z9hG4bK1"),
            ("239.1.1.1", 5070),
        )
        self.assertEqual(self.destination("SIP/2.0/UDP h;maddr=239.1.1.1;branch=z9hG4bK1"), ("239.1.1.1", 5060))

    def test_over_open_connection(self) -> None:
        connection = FakeConnection()
        data = self.response("SIP/2.0/TCP h:5070;received=192.0.2.5;branch=z9hG4bK1")
        self.transports.send_response(parse_response(data), Source("TCP", "192.0.2.5", 40000, connection))
        self.assertEqual(connection.written, [data])
        self.assertEqual(self.udp.sent, [])

    def test_udp_to_received_rport(self) -> None:
        data = self.response("SIP/2.0/UDP h:5070;received=192.0.2.5;rport=6001;branch=z9hG4bK1")
        self.transports.send_response(parse_response(data), Source("UDP", "192.0.2.5", 6001))
        self.assertEqual(self.udp.sent, [(data, "192.0.2.5", 6001)])

    def test_udp_maddr(self) -> None:
        data = self.response("SIP/2.0/UDP h:5070;maddr=239.1.1.1;received=192.0.2.5;branch=z9hG4bK1")
        self.transports.send_response(parse_response(data), Source("UDP", "192.0.2.5", 6001))
        self.assertEqual(self.udp.sent, [(data, "239.1.1.1", 5070)])

    def test_closed_connection_without_stream_transport_fails_counted(self) -> None:
        connection = FakeConnection(open=False)
        data = self.response("SIP/2.0/TCP h:5070;received=192.0.2.5;branch=z9hG4bK1")
        self.transports.send_response(parse_response(data), Source("TCP", "192.0.2.5", 40000, connection))
        self.assertEqual(connection.written, [])
        self.assertEqual(self.transports.send_failures, 1)

    def test_no_udp_transport(self) -> None:
        self.transports.udp = None
        data = self.response("SIP/2.0/UDP h;branch=z9hG4bK1")
        self.transports.send_response(parse_response(data), Source("UDP", "192.0.2.5", 5060))
        self.assertEqual(self.transports.send_failures, 1)

    def test_request_to_source(self) -> None:
        req = request("BYE", to_tag="t")
        self.transports.send_request(req, Source("UDP", "203.0.113.1", 5080))
        self.assertEqual(self.udp.sent, [(req.to_bytes(), "203.0.113.1", 5080)])
        connection = FakeConnection()
        self.transports.send_request(req, Source("TCP", "203.0.113.1", 5080, connection))
        self.assertEqual(connection.written, [req.to_bytes()])

    def test_end_to_end_through_stack(self) -> None:
        stack = SIPStack(Clock(), FakeApp())
        udp = FakeUDP()
        stack.transports.udp = udp  # type: ignore[assignment]
        via = "SIP/2.0/UDP 10.1.1.1:5060;rport;maddr=198.51.100.1;branch=z9hG4bK-m"
        stack.receive(build_request("OPTIONS", via=via), Source("UDP", "203.0.113.2", 7777))
        self.assertEqual([(host, port) for _, host, port in udp.sent], [("198.51.100.1", 5060)])
        parsed = parse_message(udp.sent[0][0])
        self.assertEqual(parsed.top_via.rport, "7777")
