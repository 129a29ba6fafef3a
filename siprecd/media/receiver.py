"""Reception on one stream's RTP and RTCP ports (one DatagramProtocol each).

The RTP path per packet: latch check, header parse, RFC 3550 statistics, timeline push, and
a write only when the timeline released something.  No Deferreds, no logging, no per-packet
objects beyond the parsed packet.  RTCP: sender reports feed statistics (LSR/DLSR) and the
timeline's NTP mapping; receiver reports go back to the SRC on the session's periodic tick.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol

from siprecd.media.rtcp import Bye, SenderReport, build_receiver_report, parse_rtcp
from siprecd.media.rtp import MalformedPacket, parse_rtp
from siprecd.media.stats import StreamStats


@dataclass
class ReceptionCounters:
    """What the sockets saw before the timeline: the receiver's own reasons to drop."""

    datagrams: int = 0
    malformed: int = 0
    other_source: int = 0  # from an address other than the latched one
    before_recording: int = 0  # arrived before the stream's recorder was attached
    rtcp_packets: int = 0
    rtcp_malformed: int = 0
    rtcp_other_source: int = 0
    rtcp_sender_reports: int = 0
    rtcp_byes: int = 0
    receiver_reports_sent: int = 0


class StreamMedia:
    """Both sockets' protocols of one recorded stream and the state they share."""

    def __init__(self, clock: IReactorTime, *, latch_sdp_address: bool, ssrc: int, cname: str) -> None:
        self.clock = clock
        self.latch_sdp_address = latch_sdp_address
        self.ssrc = ssrc  # the SRS's own SSRC in its receiver reports
        self.cname = cname
        self.counters = ReceptionCounters()
        self.recorder: Any = None  # a StreamRecorder once the session's files exist
        self.stats: StreamStats | None = None
        self.expected: tuple[str, int] | None = None  # the SDP's address and RTP port
        self.rtp = RTPProtocol(self)
        self.rtcp = RTCPProtocol(self)

    def attach(self, recorder: Any, clock_rate: int) -> None:
        self.recorder = recorder
        self.stats = StreamStats(clock_rate)

    def expect(self, address: str | None, port: int | None) -> None:
        """The SDP's media address (new offer): latch again to the first packet after it."""
        expected = (address, port) if address and port else None
        if expected != self.expected:
            self.expected = expected
            self.rtp.source = None
            self.rtcp.peer = None

    def send_report(self) -> bool:
        """An RTCP receiver report to the SRC (RFC 3550 §6.4.2); False if there is nowhere to."""
        stats = self.stats
        if stats is None:
            return False
        peer = self.rtcp.peer
        if peer is None and self.rtp.source is not None and self.rtp.source[1] < 65535:
            # RFC 3550 §11: RTCP on RTP+1 (a NAT may map RTP to 65535: no port above it, and
            # sendto would raise OverflowError, not OSError).
            peer = (self.rtp.source[0], self.rtp.source[1] + 1)
        if peer is None or self.rtcp.transport is None:
            return False
        report = build_receiver_report(self.ssrc, stats.report_blocks(self.clock.seconds()), self.cname)
        try:
            self.rtcp.transport.write(report, peer)
        except OSError:
            return False
        self.counters.receiver_reports_sent += 1
        return True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": f"{self.rtp.source[0]}:{self.rtp.source[1]}" if self.rtp.source else None}
        out.update(vars(self.counters))
        if self.stats is not None:
            sources = []
            for ssrc, source in self.stats.sources.items():
                sources.append(
                    {
                        "ssrc": ssrc,
                        "received": source.received,
                        "expected": source.expected,
                        "lost": source.cumulative_lost,
                        "jitter_ms": round(source.jitter * 1000 / source.clock_rate, 3),
                    }
                )
            out["sources"] = sources
        return out


class RTPProtocol(DatagramProtocol):
    noisy = False

    def __init__(self, media: StreamMedia) -> None:
        self.media = media
        self.source: tuple[str, int] | None = None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        media = self.media
        counters = media.counters
        counters.datagrams += 1
        if addr != self.source:
            if self.source is not None:
                counters.other_source += 1
                return
            expected = media.expected
            if media.latch_sdp_address and expected is not None and addr[0] != expected[0]:
                counters.other_source += 1
                return
            if len(datagram) < 12 or datagram[0] & 0xC0 != 0x80:
                # Not RTP (nor RTCP): a stray datagram must not capture the stream's latch.
                counters.malformed += 1
                return
            self.source = addr  # symmetric RTP: latch to the first source
        if len(datagram) > 1 and 192 <= datagram[1] <= 223:
            media.rtcp.datagramReceived(datagram, addr)  # RTCP multiplexed on the RTP port
            return
        recorder = media.recorder
        if recorder is None:
            counters.before_recording += 1
            return
        try:
            packet = parse_rtp(datagram)
        except MalformedPacket:
            counters.malformed += 1
            return
        now = media.clock.seconds()
        media.stats.update(packet, now)  # type: ignore[union-attr]
        timeline = recorder.timeline
        timeline.push(packet, now)
        if timeline.pending:
            recorder.consume()


class RTCPProtocol(DatagramProtocol):
    noisy = False

    def __init__(self, media: StreamMedia) -> None:
        self.media = media
        self.peer: tuple[str, int] | None = None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        media = self.media
        counters = media.counters
        counters.rtcp_packets += 1
        source = media.rtp.source
        if source is not None and addr[0] != source[0]:
            # RTCP from another host than the latched media: reports and BYEs are not its to send.
            counters.rtcp_other_source += 1
            return
        try:
            packets = parse_rtcp(datagram)
        except MalformedPacket:
            counters.rtcp_malformed += 1  # e.g. unauthenticated junk: dropped quietly
            return
        if self.peer is None:
            self.peer = addr
        now = media.clock.seconds()
        for packet in packets:
            if isinstance(packet, SenderReport):
                counters.rtcp_sender_reports += 1
                if media.stats is not None:
                    media.stats.sender_report(packet.ssrc, packet.ntp_timestamp, now)
                if media.recorder is not None:
                    media.recorder.timeline.sender_report(packet.ssrc, packet.ntp_timestamp, packet.rtp_timestamp)
            elif isinstance(packet, Bye):
                counters.rtcp_byes += 1


def set_receive_buffer(port: Any, size: int) -> None:
    """SO_RCVBUF on a listening UDP port (bursts after a pause must not overflow it)."""
    if size > 0:
        port.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
