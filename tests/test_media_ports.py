"""PortAllocator on the real reactor: what Twisted's UDP ports do that a fake reactor does not."""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.trial import unittest

from siprecd.media.ports import PortAllocator
from siprecd.media.receiver import StreamMedia


class RealReactorTests(unittest.TestCase):
    def test_rtcp_port_taken_by_another_process(self) -> None:
        # A real udp.Port detaches its protocol only on the next reactor turn after
        # stopListening: binding the RTP port first and then finding the RTCP port taken must
        # not leave the RTP protocol unusable for the next pair (it was an AssertionError, 500).
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", 0))
        odd = blocker.getsockname()[1]
        if odd % 2 == 0:
            blocker.close()
            blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(blocker.close)
            odd += 1
            try:
                blocker.bind(("127.0.0.1", odd))
            except OSError:
                raise unittest.SkipTest(f"port {odd} is in use") from None
        allocator = PortAllocator(reactor, "127.0.0.1", odd - 1, odd + 4)
        media = StreamMedia(reactor, latch_sdp_address=False, ssrc=1, cname="test")
        pair = allocator.allocate(media.rtp, media.rtcp)
        self.assertEqual((pair.rtp_port, pair.rtcp_port), (odd + 1, odd + 2))
        self.assertIs(media.rtp.transport, pair.rtp)
        self.assertIs(media.rtcp.transport, pair.rtcp)
        return gatherResults([pair.rtp.stopListening(), pair.rtcp.stopListening()])
