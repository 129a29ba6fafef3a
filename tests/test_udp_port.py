"""MediaPort on the real reactor: one datagram per readiness, draining when datagrams queue."""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial import unittest

from siprecd.media.udp_port import MediaPort, dispatch_media_directly, listen_media_udp


class _Collect(DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        self.got.append((datagram, addr))
        if datagram == b"boom":
            raise ValueError("a protocol's error must not stop the port")


class MediaPortTests(unittest.TestCase):
    def setUp(self) -> None:
        self.protocol = _Collect()
        self.port = listen_media_udp(reactor, 0, self.protocol, "127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sender.close)
        self.address = ("127.0.0.1", self.port.getHost().port)

    def send(self, *datagrams: bytes) -> None:
        for datagram in datagrams:
            self.sender.sendto(datagram, self.address)  # on loopback: queued when sendto returns

    def test_real_reactor_gets_a_media_port(self) -> None:
        self.assertIsInstance(self.port, MediaPort)

    def test_one_datagram_per_read_then_drains_when_read_again_soon(self) -> None:
        self.send(b"a", b"b", b"c")
        self.port._last_read = -1.0  # long ago: a paced stream's read
        self.port.doRead()
        self.assertEqual([d for d, _ in self.protocol.got], [b"a"])
        self.port.doRead()  # read again at once: datagrams are queueing, drain them all
        self.assertEqual([d for d, _ in self.protocol.got], [b"a", b"b", b"c"])
        self.assertEqual(self.protocol.got[0][1], ("127.0.0.1", self.sender.getsockname()[1]))
        self.port.doRead()  # an empty socket (EAGAIN) is no error
        self.assertEqual(len(self.protocol.got), 3)

    def test_protocol_error_is_logged_and_reading_goes_on(self) -> None:
        self.send(b"boom", b"after")
        self.port.doRead()
        self.port.doRead()
        self.assertEqual([d for d, _ in self.protocol.got], [b"boom", b"after"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class DirectDispatchTests(unittest.TestCase):
    """dispatch_media_directly on an epoll reactor of the test's own (not the global one)."""

    def setUp(self) -> None:
        from twisted.internet.epollreactor import EPollReactor

        self.reactor = EPollReactor()
        self.addCleanup(self.reactor._poller.close)
        self.assertTrue(dispatch_media_directly(self.reactor))

    def test_media_and_other_ports_both_served(self) -> None:
        media, other = _Collect(), _Collect()
        media_port = listen_media_udp(self.reactor, 0, media, "127.0.0.1")
        other_port = self.reactor.listenUDP(0, other, interface="127.0.0.1")  # Twisted's own Port
        self.assertIsInstance(media_port, MediaPort)
        self.assertNotIsInstance(other_port, MediaPort)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.sendto(b"rtp", ("127.0.0.1", media_port.getHost().port))
        sender.sendto(b"sip", ("127.0.0.1", other_port.getHost().port))
        for _ in range(20):  # a few turns: each readiness is one event
            self.reactor.doIteration(0.05)
            if media.got and other.got:
                break
        self.assertEqual([d for d, _ in media.got], [b"rtp"])
        self.assertEqual([d for d, _ in other.got], [b"sip"])
        media_port.stopListening()
        other_port.stopListening()

    def test_other_reactors_left_alone(self) -> None:
        from twisted.internet.task import Clock

        self.assertFalse(dispatch_media_directly(Clock()))

    def test_epoll_reactor_without_the_private_attributes_left_alone(self) -> None:
        from twisted.internet.epollreactor import EPollReactor

        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        iteration = reactor.doIteration
        reactor.__dict__.pop("_poller")  # as a Twisted that renamed it would be (closed above)
        self.assertFalse(dispatch_media_directly(reactor))
        self.assertEqual(reactor.doIteration, iteration)
