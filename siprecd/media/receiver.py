"""Reception on a stream's RTP and RTCP ports.

This counts what arrives, per stream, so a session knows whether media flows.  Decoding,
timelines and files are built on it by the media issue; until then no audio is written, and
session.json says so (``file`` is null).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.protocol import DatagramProtocol


@dataclass
class ReceptionCounters:
    packets: int = 0
    bytes: int = 0


class CountingReceiver(DatagramProtocol):
    noisy = False  # one per stream: do not log every start and stop
    def __init__(self) -> None:
        self.counters = ReceptionCounters()

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        counters = self.counters
        counters.packets += 1
        counters.bytes += len(datagram)
