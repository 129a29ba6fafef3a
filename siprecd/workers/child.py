"""A worker of ``[service] workers = N``: the whole recorder, with SIP through its parent's sockets.

The worker runs the service :func:`siprecd.service.make_service` builds, with three differences:
its SIP stack receives from and sends through the relay socket to the parent instead of binding
public sockets (:class:`RelayTransports`); the parent's rate-limit verdict replaces its own
(:class:`ParentVerdict`: only the parent sees every message of a source); its web server listens
on an ephemeral loopback port that it reports, with its pid, once it is up (calls resumed).
Its share of the work (port slice, state file, active index, node id) is :func:`worker_config`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from siprecd.config import Config
from siprecd.sip.message import Request, Response
from siprecd.sip.ratelimit import RateLimiter
from siprecd.sip.source import Source
from siprecd.sip.transport import Receiver, Transports, response_destination
from siprecd.workers.relay import Closed, FrameDecoder, Hello, Inbound, Outbound, RelayError, encode

log = Logger()

# The worker's end of the socketpair to its parent (mapped with spawnProcess's childFDs).  A
# stream socket rather than pipes: Twisted reads a socket 64 KiB per wake-up, a pipe 8 KiB (a
# few INVITEs), and under full media load a wake-up comes only every few milliseconds.
RELAY_FD = 3
FLUSH_TIMEOUT = 5.0  # seconds a stopping worker waits for its last frames to reach the parent


@dataclass(frozen=True)
class WorkerRole:
    """What the parent tells a worker on its command line (``--worker``)."""

    index: int
    count: int
    # The parent's bound SIP addresses by transport: Via and Contact name them, as before.
    addresses: dict[str, tuple[str, int]]

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "count": self.count, "addresses": self.addresses})

    @classmethod
    def from_json(cls, text: str) -> WorkerRole:
        value = json.loads(text)
        addresses = {str(t): (str(h), int(p)) for t, (h, p) in value["addresses"].items()}
        role = cls(int(value["index"]), int(value["count"]), addresses)
        if not 0 <= role.index < role.count:
            raise ValueError(f"worker index {role.index} is not below the count {role.count}")
        return role


def port_slice(port_min: int, port_max: int, index: int, count: int) -> tuple[int, int]:
    """Worker ``index``'s disjoint share of the RTP/RTCP pairs in ``[port_min, port_max]``."""
    pairs = (port_max - port_min + 1) // 2
    first, last = pairs * index // count, pairs * (index + 1) // count
    return port_min + 2 * first, port_min + 2 * last - 1


def worker_config(config: Config, index: int) -> Config:
    """The configuration worker ``index`` runs with: everything as configured but its media
    port slice, and its index (which names its state file, active index and node id)."""
    media = config.media
    low, high = port_slice(media.port_min, media.port_max, index, config.service.workers)
    return dataclasses.replace(
        config, media=dataclasses.replace(media, port_min=low, port_max=high), worker_index=index
    )


class ParentVerdict(RateLimiter):
    """The parent's rate-limit decision for the message being handled.

    The parent sees every message of every source, each worker only its share: a per-worker
    bucket would let a source through N times the rate.  The parent spends the token; the
    worker's SIP core still builds the 503 (Retry-After, counters) as it always has.
    """

    def __init__(self, clock: Any, rate: float, burst: float) -> None:
        super().__init__(clock, rate, burst)
        self.verdict = True

    def allow(self, source: str) -> bool:
        return self.verdict


class RelayedConnection:
    """A TCP/TLS connection of the parent's, as the worker's SIP stack sees it."""

    def __init__(self, relay: WorkerRelay, conn_id: int, transport: str, host: str, port: int) -> None:
        self.relay = relay
        self.conn_id = conn_id
        self.transport = transport
        self.host = host
        self.port = port
        self._open = True

    @property
    def open(self) -> bool:
        return self._open

    def closed(self) -> None:
        self._open = False

    def write_message(self, data: bytes) -> None:
        if self._open:
            self.relay.send(Outbound(self.transport, self.host, self.port, self.conn_id, data))


class RelayedUDP:
    """Stands for the parent's UDP socket (the stack's stateless 400s use it)."""

    def __init__(self, relay: WorkerRelay) -> None:
        self.relay = relay

    def send(self, data: bytes, host: str, port: int) -> None:
        self.relay.send(Outbound("UDP", host, port, 0, data))


def _conn_id(source: Source) -> int:
    connection = source.connection
    return connection.conn_id if isinstance(connection, RelayedConnection) and connection.open else 0


class RelayTransports(Transports):
    """Everything the worker sends goes to the parent, which sends it from its public socket:
    over the connection the message came on while the parent has it open, otherwise to the
    address (opening a connection for TCP/TLS) exactly as :class:`Transports` would."""

    def __init__(self, relay: WorkerRelay) -> None:
        super().__init__(None)
        self.relay = relay
        self.udp = RelayedUDP(relay)  # type: ignore[assignment]

    def send_response(self, response: Response, source: Source) -> None:
        host, port = response_destination(response)
        self.relay.send(Outbound(source.transport, host, port, _conn_id(source), response.to_bytes()))

    def send_request(self, request: Request, source: Source) -> None:
        self.relay.send(Outbound(source.transport, source.host, source.port, _conn_id(source), request.to_bytes()))

    def _send(self, data: bytes, transport: str, host: str, port: int) -> None:
        self.relay.send(Outbound(transport, host, port, 0, data))


class WorkerRelay(Protocol):
    """The worker's end of the relay: frames from the parent into the SIP stack, and back."""

    def __init__(self, on_parent_lost: Callable[[], None]) -> None:
        self.decoder = FrameDecoder()
        self.receiver: Receiver | None = None
        self.verdict: ParentVerdict | None = None
        self.connections: dict[int, RelayedConnection] = {}
        self.on_parent_lost = on_parent_lost
        self.connected = False
        self.stopping = False  # our own stop: the socket closes with the reactor, not the parent
        self._closed: list[defer.Deferred[None]] = []
        self.dropped = 0  # frames not sent: the socket was not open

    def attach(self, receiver: Receiver, verdict: ParentVerdict) -> None:
        self.receiver = receiver
        self.verdict = verdict

    def connectionMade(self) -> None:  # noqa: N802
        self.connected = True

    def send(self, frame: Outbound | Hello) -> None:
        if not self.connected or self.transport is None:
            self.dropped += 1
            log.warn("relay to the parent is closed; dropping a {kind}", kind=type(frame).__name__)
            return
        self.transport.write(encode(frame))

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        try:
            frames = self.decoder.feed(data)
        except RelayError as error:
            log.critical("relay from the parent is corrupt ({error}): stopping", error=error)
            self.transport.loseConnection()
            return
        for frame in frames:
            try:
                self._handle(frame)
            except Exception:
                log.failure("handling a relayed {kind}", kind=type(frame).__name__)

    def _handle(self, frame: object) -> None:
        if isinstance(frame, Inbound):
            if self.receiver is None or self.verdict is None:
                return
            connection = None
            if frame.conn_id:
                connection = self.connections.get(frame.conn_id)
                if connection is None:
                    connection = RelayedConnection(self, frame.conn_id, frame.transport, frame.host, frame.port)
                    self.connections[frame.conn_id] = connection
            self.verdict.verdict = frame.rate_ok
            try:
                self.receiver.receive(frame.data, Source(frame.transport, frame.host, frame.port, connection))
            finally:
                self.verdict.verdict = True
        elif isinstance(frame, Closed):
            connection = self.connections.pop(frame.conn_id, None)
            if connection is not None:
                connection.closed()
        else:
            log.warn("unexpected frame from the parent: {frame!r}", frame=frame)

    def when_closed(self) -> defer.Deferred[None]:
        waiting: defer.Deferred[None] = defer.Deferred()
        if self.connected:
            self._closed.append(waiting)
        else:
            waiting.callback(None)
        return waiting

    def connectionLost(self, reason: Failure = None) -> None:  # noqa: N802
        was = self.connected
        self.connected = False
        for connection in self.connections.values():
            connection.closed()
        waiting, self._closed = self._closed, []
        for deferred in waiting:
            deferred.callback(None)
        if was and not self.stopping:
            self.on_parent_lost()


class One(Factory):
    """Hands out one given protocol (for ``adoptStreamConnection``)."""

    def __init__(self, protocol: Protocol) -> None:
        self.one = protocol

    def buildProtocol(self, addr: object) -> Protocol:  # noqa: N802
        return self.one


class RelayService(Service):
    """Opens the socket to the parent (the worker's stand-in for the SIP listeners)."""

    def __init__(self, reactor: Any, relay: WorkerRelay, role: WorkerRole, fd: int = RELAY_FD) -> None:
        self.reactor = reactor
        self.relay = relay
        self.role = role
        self.fd = fd
        self.connection: Any = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        # Reload is the parent's (TLS and rate limits live there): a SIGHUP sent to the whole
        # group (systemctl kill -s HUP, a closed terminal) must not end a worker.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.set_blocking(self.fd, False)
        self.connection = self.reactor.adoptStreamConnection(self.fd, socket.AF_UNIX, One(self.relay))
        os.close(self.fd)  # adopted as a duplicate

    def stopService(self) -> defer.Deferred[None] | None:  # noqa: N802
        # Stopped after the drain: from here the socket closes because we stop.  What the drain
        # sent last (the 200 to a BYE) may still be in the transport's buffer, and the reactor's
        # shutdown drops buffers: close it cleanly (buffer flushed) and wait for that.
        super().stopService()
        self.relay.stopping = True
        if not self.relay.connected or self.relay.transport is None:
            return None
        closed = self.relay.when_closed()
        self.relay.transport.loseConnection()
        timeout = self.reactor.callLater(FLUSH_TIMEOUT, closed.cancel)
        closed.addBoth(lambda result: timeout.cancel() if timeout.active() else None)
        return closed

    def unbound(self) -> str | None:
        """Readiness: the socket to the parent is open."""
        return None if self.relay.connected else "no relay to the parent process"


class LoopbackWeb(Service):
    """The worker's web server on an ephemeral 127.0.0.1 port (the parent's web side reads it)."""

    def __init__(self, reactor: Any, site: Any) -> None:
        self.reactor = reactor
        self.site = site
        self.port: IListeningPort | None = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.port = self.reactor.listenTCP(0, self.site, interface="127.0.0.1")

    @property
    def port_number(self) -> int:
        return self.port.getHost().port if self.port is not None else 0

    def stopService(self) -> Any:  # noqa: N802
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


class HelloService(Service):
    """Started last: tells the parent the worker is up (its stored calls resumed)."""

    def __init__(self, relay: WorkerRelay, web: LoopbackWeb | None) -> None:
        self.relay = relay
        self.web = web

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.relay.send(Hello(os.getpid(), self.web.port_number if self.web is not None else 0))


@dataclass
class WorkerSide:
    """What :func:`siprecd.service.make_service` needs to build a worker instead of a server."""

    reactor: Any
    role: WorkerRole
    relay: WorkerRelay

    def __post_init__(self) -> None:
        self.transports = RelayTransports(self.relay)
        self.service = RelayService(self.reactor, self.relay, self.role)
        self.web: LoopbackWeb | None = None

    def verdict(self, config: Config) -> ParentVerdict:
        return ParentVerdict(self.reactor, config.sip.rate_limit, config.sip.rate_burst)

    def web_service(self, site: Any) -> LoopbackWeb:
        self.web = LoopbackWeb(self.reactor, site)
        return self.web

    def hello(self) -> HelloService:
        return HelloService(self.relay, self.web)
