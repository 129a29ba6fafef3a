"""UDPTransport, StreamProtocol/StreamFactory and Transports over fake Twisted transports."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from siprecd.sip.message import Limits, make_response
from siprecd.sip.source import Source
from siprecd.sip.stack import SIPStack
from siprecd.sip.transport import StreamFactory, StreamProtocol, Transports, UDPTransport, is_ip_literal

from .sipfakes import FakeApp, build_request, parse_response, request

OPTIONS = build_request("OPTIONS", transport="TCP")


class RecordingReceiver:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, Source]] = []

    def receive(self, data: bytes, source: Source) -> None:
        self.received.append((data, source))


class FailingDatagramTransport(FakeDatagramTransport):
    def write(self, packet: bytes, addr: object = None) -> None:
        raise OSError(101, "Network is unreachable")


class UDPTransportTests(SynchronousTestCase):
    def test_datagram_to_receiver(self) -> None:
        receiver = RecordingReceiver()
        protocol = UDPTransport(receiver)
        protocol.makeConnection(FakeDatagramTransport())
        protocol.datagramReceived(OPTIONS, ("192.0.2.1", 5062))
        [(data, source)] = receiver.received
        self.assertEqual(data, OPTIONS)
        self.assertEqual((source.transport, source.host, source.port, source.connection), ("UDP", "192.0.2.1", 5062, None))
        self.assertFalse(source.reliable)
        self.assertEqual(str(source), "udp:192.0.2.1:5062")

    def test_send(self) -> None:
        transport = FakeDatagramTransport()
        protocol = UDPTransport(RecordingReceiver())
        protocol.makeConnection(transport)
        protocol.send(b"x", "192.0.2.9", 5060)
        self.assertEqual(transport.written, [(b"x", ("192.0.2.9", 5060))])

    def test_send_without_transport_or_failing(self) -> None:
        protocol = UDPTransport(RecordingReceiver())
        protocol.send(b"x", "192.0.2.9", 5060)  # not listening: logged, not raised
        protocol.makeConnection(FailingDatagramTransport())
        protocol.send(b"x", "192.0.2.9", 5060)  # OSError: logged, not raised

    def test_udp_through_stack(self) -> None:
        clock = Clock()
        stack = SIPStack(clock, FakeApp())
        transport = FakeDatagramTransport()
        stack.transports.udp = UDPTransport(stack)
        stack.transports.udp.makeConnection(transport)
        stack.transports.udp.datagramReceived(build_request("OPTIONS"), ("192.0.2.1", 5060))
        [(data, addr)] = transport.written
        self.assertEqual(addr, ("192.0.2.1", 5060))
        self.assertEqual(parse_response(data).status, 200)
        stack.layer.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class StreamTestCase(SynchronousTestCase):
    limits = Limits()
    max_connections = 10

    def setUp(self) -> None:
        self.receiver = RecordingReceiver()
        self.factory = StreamFactory("TCP", self.receiver, self.limits, self.max_connections)

    def connect(self, port: int = 40000) -> tuple[StreamProtocol, StringTransport]:
        peer = IPv4Address("TCP", "192.0.2.1", port)
        protocol = self.factory.buildProtocol(peer)
        assert protocol is not None
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport


class StreamProtocolTests(StreamTestCase):
    def test_connection_registered(self) -> None:
        protocol, _ = self.connect()
        self.assertTrue(protocol.open)
        source = protocol.source
        assert source is not None
        self.assertEqual((source.transport, source.host, source.port), ("TCP", "192.0.2.1", 40000))
        self.assertIs(source.connection, protocol)
        self.assertTrue(source.reliable)
        self.assertFalse(source.secure)
        self.assertEqual(self.factory.connections, {("192.0.2.1", 40000): protocol})
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(protocol.open)
        self.assertEqual(self.factory.connections, {})
        self.assertEqual(self.factory.tls_failures, 0)

    def test_one_byte_at_a_time(self) -> None:
        protocol, transport = self.connect()
        data = build_request("INVITE", transport="TCP", body=b"v=0\r\n", content_type="application/sdp",
                             extra=[("X-After", "1")])
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
            if i < len(data) - 1:
                self.assertEqual(self.receiver.received, [])
        [(received, source)] = self.receiver.received
        self.assertEqual(received, data)
        self.assertIs(source, protocol.source)
        self.assertIs(source.connection, protocol)
        self.assertEqual(transport.value(), b"")

    def test_two_messages_in_one_read(self) -> None:
        protocol, _ = self.connect()
        protocol.dataReceived(OPTIONS + b"\r\n" + OPTIONS)
        self.assertEqual([d for d, _ in self.receiver.received], [OPTIONS, OPTIONS])

    def test_keepalive_answered(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(transport.value(), b"\r\n")
        transport.clear()
        for byte in b"\r\n\r\n":
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(transport.value(), b"\r\n")
        transport.clear()
        protocol.dataReceived(b"\r\n\r\n\r\n\r\n")  # two pings, two pongs
        self.assertEqual(transport.value(), b"\r\n\r\n")
        self.assertEqual(self.receiver.received, [])
        self.assertFalse(transport.disconnecting)

    def test_write_message(self) -> None:
        protocol, transport = self.connect()
        protocol.write_message(b"SIP/2.0 200 OK\r\n\r\n")
        self.assertEqual(transport.value(), b"SIP/2.0 200 OK\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        protocol.write_message(b"more")
        self.assertEqual(transport.value(), b"SIP/2.0 200 OK\r\n\r\n")


class OversizeTests(StreamTestCase):
    limits = Limits(max_message_size=200)

    def test_oversize_closes_connection(self) -> None:
        protocol, transport = self.connect()
        data = build_request("INVITE", transport="TCP", body=b"x" * 300)
        protocol.dataReceived(data[:100])
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(data[100:])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.framing_errors, 1)
        self.assertEqual(self.receiver.received, [])
        protocol.dataReceived(OPTIONS)  # nothing more is framed on a failed stream
        self.assertEqual(self.receiver.received, [])
        self.assertEqual(self.factory.framing_errors, 1)

    def test_endless_headers_close_connection(self) -> None:
        protocol, transport = self.connect()
        for _ in range(300):
            protocol.dataReceived(b"a")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.framing_errors, 1)


class MaxConnectionsTests(StreamTestCase):
    max_connections = 2

    def test_refuses_beyond_limit(self) -> None:
        first, _ = self.connect(40000)
        self.connect(40001)
        self.assertIsNone(self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 40002)))
        self.assertEqual(self.factory.refused_connections, 1)
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 40003)))
        self.assertEqual(self.factory.refused_connections, 1)

    def test_close_all(self) -> None:
        _, one = self.connect(40000)
        _, two = self.connect(40001)
        self.factory.close_all()
        self.assertTrue(one.disconnecting and two.disconnecting)


class StreamThroughStackTests(SynchronousTestCase):
    def test_options_byte_by_byte_answered_on_the_connection(self) -> None:
        clock = Clock()
        stack = SIPStack(clock, FakeApp())
        factory = StreamFactory("TCP", stack, Limits(), 10)
        stack.transports.streams["TCP"] = factory
        peer = IPv4Address("TCP", "192.0.2.1", 40000)
        protocol = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        data = build_request("OPTIONS", transport="TCP") + b"\r\n\r\n"
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
        reply, pong = transport.value().rsplit(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", transport.value()[-2:]
        self.assertEqual(parse_response(reply).status, 200)
        self.assertEqual(pong, b"\r\n")
        self.assertEqual(stack.counters["requests_received"], 1)
        self.assertEqual(clock.getDelayedCalls(), [])  # TCP: timer J is zero
        # A malformed request on the stream gets its 400 over the same connection.
        transport.clear()
        protocol.dataReceived(build_request("OPTIONS", transport="TCP").replace(b"CSeq: 1 OPTIONS", b"CSeq: x"))
        self.assertEqual(parse_response(transport.value()).status, 400)


class TransportsStreamSendTests(StreamTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.connected: list[tuple[str, str, int]] = []

    def test_existing_connection_reused(self) -> None:
        transports = Transports()
        transports.streams["TCP"] = self.factory
        _, transport = self.connect(5060)
        req = request("BYE", to_tag="t", transport="TCP")
        transports.send_request(req, Source("TCP", "192.0.2.1", 5060))
        self.assertEqual(transport.value(), req.to_bytes())

    def test_new_connection(self) -> None:
        made: list[StringTransport] = []

        def connect(name: str, host: str, port: int, factory: StreamFactory):  # type: ignore[no-untyped-def]
            self.connected.append((name, host, port))
            protocol, transport = self.connect(port)
            made.append(transport)
            return succeed(protocol)

        transports = Transports(connect)
        transports.streams["TCP"] = self.factory
        response = make_response(request("OPTIONS", via="SIP/2.0/TCP 192.0.2.1:5090;branch=z9hG4bK1"), 200, "OK")
        # The request's connection has closed: RFC 3261 §18.2.2 opens one to the sent-by.
        transports.send_response(response, Source("TCP", "192.0.2.1", 40000, _Closed()))
        self.assertEqual(self.connected, [("TCP", "192.0.2.1", 5090)])
        self.assertEqual(made[0].value(), response.to_bytes())
        # The next message reuses that connection.
        transports.send_response(response, Source("TCP", "192.0.2.1", 40000))
        self.assertEqual(self.connected, [("TCP", "192.0.2.1", 5090)])
        self.assertEqual(made[0].value(), response.to_bytes() * 2)

    def test_connect_failure_counted(self) -> None:
        def connect(name: str, host: str, port: int, factory: StreamFactory):  # type: ignore[no-untyped-def]
            return fail(ConnectionRefusedError())

        transports = Transports(connect)
        transports.streams["TCP"] = self.factory
        transports.send_request(request("BYE", to_tag="t"), Source("TCP", "192.0.2.7", 5060))
        self.assertEqual(transports.send_failures, 1)

    def test_unknown_stream_transport(self) -> None:
        transports = Transports()
        transports.send_request(request("BYE", to_tag="t"), Source("TLS", "192.0.2.7", 5061))
        self.assertEqual(transports.send_failures, 1)

    def test_is_ip_literal(self) -> None:
        self.assertTrue(is_ip_literal("192.0.2.1"))
        self.assertTrue(is_ip_literal("[2001:db8::1]"))
        self.assertFalse(is_ip_literal("example.com"))


class _Closed:
    open = False

    def write_message(self, data: bytes) -> None:
        raise AssertionError("written to a closed connection")
