"""UDP, TCP and TLS transports: thin protocols that hand ``(bytes, Source)`` to one SIP stack.

Responses are routed per RFC 3261 §18.2.2 and RFC 3581: over the connection the request came on
while it is open, otherwise to the top Via's ``received``/``rport`` (or ``maddr``/sent-by).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Protocol as TypingProtocol

from OpenSSL import SSL
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from siprecd.sip.framing import Frame, FramingError, KeepAlive, StreamFramer
from siprecd.sip.message import Limits, Request, Response
from siprecd.sip.source import Source

log = Logger()

DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}


class Receiver(TypingProtocol):
    def receive(self, data: bytes, source: Source) -> None: ...


class UDPTransport(DatagramProtocol):
    noisy = False
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        self.receiver.receive(datagram, Source("UDP", addr[0], addr[1]))

    def send(self, data: bytes, host: str, port: int) -> None:
        if self.transport is None:
            log.warn("UDP transport is closed; dropping a message to {host}:{port}", host=host, port=port)
            return
        try:
            self.transport.write(data, (host, port))
        except OSError as error:
            log.warn("UDP send to {host}:{port} failed: {error}", host=host, port=port, error=error)


class StreamProtocol(Protocol):
    """One TCP or TLS connection: frames messages and answers CRLF keep-alives."""

    def __init__(self, factory: StreamFactory) -> None:
        self.factory = factory
        self.framer = StreamFramer(factory.limits)
        self.source: Source | None = None
        self._open = False

    @property
    def open(self) -> bool:
        return self._open

    def connectionMade(self) -> None:  # noqa: N802
        peer = self.transport.getPeer()
        self.source = Source(self.factory.transport_name, peer.host, peer.port, self)
        self._open = True
        self.factory.connection_made(self)

    def connectionLost(self, reason: Failure = None) -> None:  # noqa: N802
        self._open = False
        if reason is not None and reason.check(SSL.Error):
            # A refused client certificate or a failed handshake: the operator needs to see it.
            self.factory.tls_failures += 1
            log.warn(
                "TLS connection from {source} failed: {error}",
                source=self.source,
                error=reason.getErrorMessage(),
            )
        self.factory.connection_lost(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        assert self.source is not None
        for event in self.framer.feed(data):
            if isinstance(event, Frame):
                self.factory.receiver.receive(event.data, self.source)
            elif isinstance(event, KeepAlive):
                self.transport.write(b"\r\n")
            elif isinstance(event, FramingError):
                log.warn("closing {source}: {reason}", source=self.source, reason=event.reason)
                self.factory.framing_errors += 1
                self.transport.loseConnection()
                return

    def write_message(self, data: bytes) -> None:
        if self._open:
            self.transport.write(data)


class StreamFactory(Factory):
    protocol = StreamProtocol
    noisy = False

    def __init__(
        self,
        transport_name: str,
        receiver: Receiver,
        limits: Limits,
        max_connections: int,
    ) -> None:
        self.transport_name = transport_name
        self.receiver = receiver
        self.limits = limits
        self.max_connections = max_connections
        self.connections: dict[tuple[str, int], StreamProtocol] = {}
        self.framing_errors = 0
        self.tls_failures = 0
        self.refused_connections = 0

    def buildProtocol(self, addr: object) -> StreamProtocol | None:  # noqa: N802
        if len(self.connections) >= self.max_connections:
            self.refused_connections += 1
            log.warn(
                "refusing {transport} connection from {addr}: {count} connections open",
                transport=self.transport_name,
                addr=addr,
                count=len(self.connections),
            )
            return None
        return StreamProtocol(self)

    def connection_made(self, connection: StreamProtocol) -> None:
        assert connection.source is not None
        self.connections[(connection.source.host, connection.source.port)] = connection

    def connection_lost(self, connection: StreamProtocol) -> None:
        assert connection.source is not None
        key = (connection.source.host, connection.source.port)
        if self.connections.get(key) is connection:
            del self.connections[key]

    def close_all(self) -> None:
        for connection in list(self.connections.values()):
            connection.transport.loseConnection()


def response_destination(response: Response) -> tuple[str, int]:
    """RFC 3261 §18.2.2 with RFC 3581: where a response goes when not over a connection."""
    via = response.top_via
    default = DEFAULT_PORTS.get(via.transport, 5060)
    if via.maddr:
        return via.maddr, via.port or default
    host = via.received or via.host
    if via.rport:
        return host, int(via.rport)
    return host, via.port or default


class Transports:
    """The sending half of the transports (the transaction layer's ``Sender``)."""

    def __init__(
        self,
        connect: Callable[[str, str, int, StreamFactory], Deferred[StreamProtocol]] | None = None,
    ) -> None:
        self.udp: UDPTransport | None = None
        self.streams: dict[str, StreamFactory] = {}
        self._connect = connect
        self.send_failures = 0

    def send_response(self, response: Response, source: Source) -> None:
        data = response.to_bytes()
        if source.connection is not None and source.connection.open:
            source.connection.write_message(data)
            return
        host, port = response_destination(response)
        self._send(data, source.transport, host, port)

    def send_request(self, request: Request, source: Source) -> None:
        data = request.to_bytes()
        if source.connection is not None and source.connection.open:
            source.connection.write_message(data)
            return
        self._send(data, source.transport, source.host, source.port)

    def send_to(self, data: bytes, transport: str, host: str, port: int) -> None:
        """Bytes to an address: a connection open to it, or a new one (the workers' parent)."""
        self._send(data, transport, host, port)

    def _send(self, data: bytes, transport: str, host: str, port: int) -> None:
        if transport == "UDP":
            if self.udp is None:
                self._failed(f"no UDP transport to reach {host}:{port}")
                return
            self.udp.send(data, host, port)
            return
        factory = self.streams.get(transport)
        if factory is None:
            self._failed(f"no {transport} transport to reach {host}:{port}")
            return
        existing = factory.connections.get((host, port))
        if existing is not None and existing.open:
            existing.write_message(data)
            return
        if self._connect is None:
            self._failed(f"{transport} connection to {host}:{port} is closed")
            return
        connecting = maybeDeferred(self._connect, transport, host, port, factory)

        def connected(connection: StreamProtocol) -> None:
            connection.write_message(data)

        def failed(failure: Failure) -> None:
            self._failed(f"cannot connect over {transport} to {host}:{port}: {failure.getErrorMessage()}")

        connecting.addCallbacks(connected, failed)

    def _failed(self, reason: str) -> None:
        self.send_failures += 1
        log.warn("send failed: {reason}", reason=reason)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def stream_connector(
    reactor: IReactorTCP, tls_options: object | None
) -> Callable[[str, str, int, StreamFactory], Deferred[StreamProtocol]]:
    """Outbound TCP/TLS connections for responses and requests whose connection has gone."""

    def connect(transport: str, host: str, port: int, factory: StreamFactory) -> Deferred[StreamProtocol]:
        if transport == "TLS":
            if tls_options is None:
                raise ValueError("TLS is not configured")
            endpoint = endpoints.SSL4ClientEndpoint(reactor, host, port, tls_options)
        else:
            endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port)
        return endpoint.connect(factory)

    return connect
