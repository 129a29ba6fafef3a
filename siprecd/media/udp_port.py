"""The RTP/RTCP ports' UDP listener: Twisted's ``udp.Port`` with a cheaper read for paced media.

Twisted's ``Port.doRead`` reads until the socket is empty, so every readiness ends with a
``recvfrom`` that fails with EAGAIN: a system call and a raised and caught exception, about
0.75 us on this machine, for the one datagram a 20 ms media stream has ready at a time (about a
tenth of siprecd's CPU per packet, ``bench/README.md``).  :class:`MediaPort` reads one datagram
per readiness instead: epoll is level-triggered, so anything left in the socket is reported
again at the next poll.  A port that is read again soon after its last read (a burst, or a
backlog while the process is behind) drains its socket as Twisted's does, so a loaded process
does not pay a poll per datagram exactly when it can least afford it.

Everything else (binding, ``write``, ``stopListening``, IListeningPort) is ``udp.Port``'s.

:func:`dispatch_media_directly` goes one step further on the epoll reactor: Twisted wraps every
readiness in ``log.callWithLogger`` (a logging context dict copied and pushed per event, about
1.3 us per datagram measured here), which buys nothing for media ports, whose protocols log
nothing per packet.  Their events go straight to ``_doReadOrWrite`` (which still catches and
logs a failing read and disconnects the port, as before); every other selectable keeps
Twisted's dispatch.
"""

from __future__ import annotations

import errno
import socket
import time
import types
from typing import Any

from twisted.internet import udp
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.python import log

#: A read this soon after the port's previous one (seconds) means datagrams are queueing: drain.
#: Media is paced at 10-60 ms per stream, so a steady stream never reads this close together.
DRAIN_WITHIN = 0.004

_monotonic = time.monotonic
_IGNORE = udp._sockErrReadIgnore  # EAGAIN, EINTR, ... : nothing (more) to read
_REFUSED = udp._sockErrReadRefuse


class MediaPort(udp.Port):
    """A ``udp.Port`` that reads one datagram per readiness unless datagrams are queueing."""

    _last_read = -1.0

    def doRead(self) -> None:  # noqa: N802 - Twisted's name
        now = _monotonic()
        draining = now - self._last_read < DRAIN_WITHIN
        self._last_read = now
        recvfrom = self.socket.recvfrom
        size = self.maxPacketSize
        v6 = self.addressFamily == socket.AF_INET6
        read = 0
        while True:
            try:
                data, addr = recvfrom(size)
            except OSError as error:
                if error.args[0] in _REFUSED and self._connectedAddr:
                    self.protocol.connectionRefused()
                elif error.args[0] not in _IGNORE and error.args[0] not in _REFUSED:
                    raise
                return
            if v6:
                addr = addr[:2]  # as udp.Port: (host, port) without flow and scope ids
            try:
                self.protocol.datagramReceived(data, addr)
            except BaseException:
                log.err()
            read += len(data)
            if not draining or read >= self.maxThroughput:
                return


def listen_media_udp(reactor: IReactorUDP, port: int, protocol: DatagramProtocol, interface: str) -> Any:
    """``reactor.listenUDP`` with a :class:`MediaPort` on a real (posix) reactor; a test's
    fake reactor keeps its own ``listenUDP``."""
    from twisted.internet.posixbase import PosixReactorBase  # noqa: PLC0415 - not on every platform

    if not isinstance(reactor, PosixReactorBase):
        return reactor.listenUDP(port, protocol, interface=interface)
    listening = MediaPort(port, protocol, interface, reactor=reactor)
    listening.startListening()
    return listening


def _poll_media_directly(reactor: Any, timeout: float | None) -> None:
    """EPollReactor.doPoll (Twisted 26.10) with MediaPort events dispatched without a context."""
    if timeout is None:
        timeout = -1  # wait indefinitely
    try:
        events = reactor._poller.poll(timeout, len(reactor._selectables))
    except OSError as error:
        if error.errno == errno.EINTR:
            return
        raise
    do_read_or_write = reactor._doReadOrWrite
    selectables = reactor._selectables
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        if selectable.__class__ is MediaPort:
            do_read_or_write(selectable, fd, event)
        else:
            log.callWithLogger(selectable, do_read_or_write, selectable, fd, event)


def dispatch_media_directly(reactor: Any) -> bool:
    """Install :func:`_poll_media_directly` as ``reactor``'s iteration if it is Twisted's epoll
    reactor (the default on Linux); False, and nothing changed, for any other reactor."""
    from twisted.internet.epollreactor import EPollReactor  # noqa: PLC0415 - Linux only

    if not isinstance(reactor, EPollReactor):
        return False
    # The replacement leans on the epoll reactor's private attributes: a Twisted that no
    # longer has them keeps its own dispatch rather than fail at the first poll.
    if not all(hasattr(reactor, name) for name in ("_poller", "_selectables", "_doReadOrWrite")):
        return False
    reactor.doIteration = reactor.doPoll = types.MethodType(_poll_media_directly, reactor)
    return True
