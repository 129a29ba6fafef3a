"""RTP/RTCP port pairs from ``[media] port_min..port_max``: even RTP, odd RTCP, bound on allocation.

A rotating cursor spreads allocations over the range so a port just released is not handed out
again at once (late packets of an ended call must not land in a new one).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from siprecd.errors import ServiceUnavailable
from siprecd.media.receiver import set_receive_buffer
from siprecd.media.udp_port import listen_media_udp

log = Logger()

#: Whether a UDP port could be bound on an interface right now: ``probe(interface, port)``.
PortProbe = Callable[[str, int], bool]


class NoPortsAvailable(ServiceUnavailable):
    """Every RTP/RTCP pair of the range is in use or cannot be bound."""


@dataclass
class PortPair:
    rtp_port: int
    rtcp_port: int
    rtp: IListeningPort
    rtcp: IListeningPort


class PortAllocator:
    def __init__(
        self,
        reactor: IReactorUDP,
        interface: str,
        port_min: int,
        port_max: int,
        retry_after: int = 10,
        receive_buffer: int = 0,
        probe: PortProbe | None = None,
    ) -> None:
        self._reactor = reactor
        # Injected so that a fake reactor's tests consult the fake's ports, not the machine's.
        self._probe: PortProbe = bindable if probe is None else probe
        self._interface = interface
        self._first = port_min + (port_min % 2)
        self._pairs = max(0, (port_max - self._first + 1) // 2)
        self._cursor = 0
        self._in_use: set[int] = set()
        self._retry_after = retry_after
        self._receive_buffer = receive_buffer

    @property
    def capacity(self) -> int:
        return self._pairs

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self, rtp: DatagramProtocol, rtcp: DatagramProtocol) -> PortPair:
        for _ in range(self._pairs):
            port = self._first + 2 * self._cursor
            self._cursor = (self._cursor + 1) % self._pairs
            if port in self._in_use:
                continue
            pair = self._bind(port, rtp, rtcp)
            if pair is not None:
                self._in_use.add(port)
                return pair
        raise NoPortsAvailable(
            f"no free RTP/RTCP port pair in {self._first}..{self._first + 2 * self._pairs - 1}",
            retry_after=self._retry_after,
        )

    def allocate_at(self, port: int, rtp: DatagramProtocol, rtcp: DatagramProtocol) -> PortPair:
        """Bind the given pair again (a session resumed after a restart keeps its ports: the SRC
        goes on sending to them)."""
        if port in self._in_use or port % 2 or not self._first <= port < self._first + 2 * self._pairs:
            raise NoPortsAvailable(f"RTP port {port} is in use or outside the configured range")
        pair = self._bind(port, rtp, rtcp)
        if pair is None:
            raise NoPortsAvailable(f"RTP/RTCP ports {port}/{port + 1} cannot be bound again")
        self._in_use.add(port)
        return pair

    def _bind(self, port: int, rtp: DatagramProtocol, rtcp: DatagramProtocol) -> PortPair | None:
        # A port Twisted stops listening on lets go of its protocol only on the reactor's next
        # turn, so the RTP protocol of a pair whose RTCP port turns out to be taken could not be
        # bound to the next pair now (AssertionError in makeConnection).  Check the RTCP port
        # first, with a plain socket: then only a race with another process can get there.
        if not self._probe(self._interface, port + 1):
            return None
        try:
            rtp_port = listen_media_udp(self._reactor, port, rtp, self._interface)
        except CannotListenError:
            return None  # taken by another process: skip it
        try:
            rtcp_port = listen_media_udp(self._reactor, port + 1, rtcp, self._interface)
        except CannotListenError:
            rtp_port.stopListening()
            if getattr(rtp, "transport", None) is not None:
                # That race: this stream's protocols cannot be bound again before the next
                # turn of the reactor.  Refuse this allocation (503, retry) rather than fail.
                raise NoPortsAvailable(
                    f"RTCP port {port + 1} was taken while binding", retry_after=self._retry_after
                ) from None
            return None
        if self._receive_buffer:
            set_receive_buffer(rtp_port, self._receive_buffer)
            set_receive_buffer(rtcp_port, self._receive_buffer)
        return PortPair(port, port + 1, rtp_port, rtcp_port)

    def release(self, pair: PortPair) -> None:
        for port in (pair.rtp, pair.rtcp):
            try:
                port.stopListening()
            except Exception:
                log.failure("closing UDP port {port}", port=pair.rtp_port)
        self._in_use.discard(pair.rtp_port)


def bindable(interface: str, port: int) -> bool:
    """The real probe: whether a UDP socket can be bound to ``interface:port`` right now."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((interface, port))
    except OSError:
        return False
    return True
