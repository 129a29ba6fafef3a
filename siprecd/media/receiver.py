"""Reception on one stream's RTP and RTCP ports (one DatagramProtocol each).

The RTP path per packet: latch check, header parse, RFC 3550 statistics, timeline push, and
a write only when the timeline released something.  No Deferreds, no logging, no per-packet
objects beyond the parsed packet.  RTCP: sender reports feed statistics (LSR/DLSR) and the
timeline's NTP mapping; receiver reports go back to the SRC on the session's periodic tick.

Secured streams (:meth:`StreamMedia.secure`): every datagram is unprotected before it is
parsed, and before it may capture the latch; what does not authenticate is dropped and counted
(``srtp_auth_failures``, ``srtcp_auth_failures``), never logged per packet.  Receiver reports
leave SRTCP-protected with the SRS's own key.

Both ports demultiplex by the first byte (RFC 7983) before anything else: DTLS goes to the
stream's DTLS-SRTP association(s) (:mod:`siprecd.security.dtls_stream`); anything else that
is not RTP/RTCP (STUN keep-alives, say) is dropped as malformed.  The RTP path pays one
comparison for it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol

from siprecd.media.demux import DTLS, classify
from siprecd.media.rtcp import Bye, SenderReport, build_receiver_report, parse_rtcp
from siprecd.media.rtp import MalformedPacket, parse_rtp
from siprecd.media.runs import queueable
from siprecd.media.stats import StreamStats
from siprecd.security.carried import Carried, carried_counters
from siprecd.security.srtp import DIRECT_ERRORS, SRTPError
from siprecd.security.transform import estimate_index


class Inbound(Protocol):
    """An InboundSRTP, an InboundKeyRing, or DTLS-SRTP's context: anything that unprotects."""

    def unprotect_rtp(self, packet: bytes) -> bytes: ...

    def unprotect_rtcp(self, packet: bytes) -> bytes: ...


class Outbound(Protocol):
    def protect_rtcp(self, packet: bytes) -> bytes: ...


@dataclass(slots=True)  # slots: one object fewer touched per packet (no instance dict)
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
    srtp_auth_failures: int = 0  # SRTP that did not authenticate (or replayed): dropped
    srtcp_auth_failures: int = 0  # unauthenticated or forged RTCP on a secured stream: dropped
    srtp_old_key: int = 0  # packets accepted under the previous key during a rekey's grace
    rekeys: int = 0
    dtls_datagrams: int = 0  # DTLS (RFC 7983 first byte 20-63) on the RTP or RTCP port


class StreamMedia:
    """Both sockets' protocols of one recorded stream and the state they share."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        latch_sdp_address: bool,
        ssrc: int,
        cname: str,
        rekey_grace: float = 0.0,
        log_fields: dict[str, Any] | None = None,
        changed: Callable[[], None] = lambda: None,
        security: Any = None,
    ) -> None:
        self.clock = clock
        # The SecurityPolicy: exports and restores this stream's agreement for the state store.
        self.security = security
        self.carried: Carried | None = None  # the counters a restored agreement started from
        self.changed = changed  # state worth a session.json rewrite changed (keys arrived, say)
        self.log_fields = dict(log_fields or {})  # session_id, call_id for the stream's log events
        self.dtls: Any = None  # security.dtls_stream.StreamDTLS on a DTLS-SRTP stream
        # Without rtcp-mux, DTLS-SRTP keys RTCP by a second association on the RTCP port
        # (RFC 5764 §4.1.2): its StreamDTLS and the SRTCP contexts it makes.
        self.dtls_rtcp: Any = None
        self.rtcp_inbound: Inbound | None = None
        self.rtcp_outbound: Outbound | None = None
        self.rtcp_mux = False  # the answer accepted a=rtcp-mux: reports leave from the RTP port
        self.rekey_grace = rekey_grace
        self.inbound: Inbound | None = None
        # The inbound context's pylibsrtp unprotect when the receiver may call it straight
        # (InboundSRTP.direct_unprotect), else None: unprotect() then takes every packet.
        self.direct_unprotect: Callable[[bytes], bytes] | None = None
        self.outbound: Outbound | None = None
        self.negotiated: Any = None  # the key exchange's agreement (security.policy.Negotiated)
        self._previous: Inbound | None = None  # the replaced key, during its grace period
        self._grace_call: IDelayedCall | None = None
        self.latch_sdp_address = latch_sdp_address
        self.ssrc = ssrc  # the SRS's own SSRC in its receiver reports
        self.cname = cname
        self.counters = ReceptionCounters()
        self.recorder: Any = None  # a StreamRecorder once the session's files exist
        # The recorder's queue, its arrival times and its batch, held here too so that the
        # packet path touches one object fewer (1,000 streams' objects do not stay in cache).
        self.queue: list[bytes] | None = None
        self.arrivals: list[float] = []
        self.batch = 1
        self._stats: StreamStats | None = None
        self.expected: tuple[str, int] | None = None  # the SDP's address and RTP port
        self.rtp = RTPProtocol(self)
        self.rtcp = RTCPProtocol(self)

    def attach(self, recorder: Any, clock_rate: int) -> None:
        self.recorder = recorder
        self._stats = StreamStats(clock_rate)
        self.queue = None
        if recorder is not None:
            recorder.stats = self._stats
            self.queue, self.arrivals, self.batch = recorder.queue, recorder.arrivals, recorder.batch

    @property
    def stats(self) -> StreamStats | None:
        """The stream's RTP statistics, packets still queued for the recording included."""
        if self.recorder is not None:
            self.recorder.settle()
        return self._stats

    @stats.setter
    def stats(self, stats: StreamStats | None) -> None:
        self._stats = stats

    def secure(self, inbound: Inbound | None, outbound: Outbound | None) -> None:
        """Install the stream's SRTP contexts, or replace them (a rekey: a new key, new context).

        The replaced inbound context keeps working for ``rekey_grace`` seconds for packets
        still in flight under the old key.  Installing the same objects again changes nothing.
        """
        if inbound is self.inbound and outbound is self.outbound:
            return
        self._end_grace()
        # DTLS-SRTP's placeholder before the first handshake is no key to rekey from.
        if self.inbound is not None and inbound is not self.inbound and not getattr(self.inbound, "awaiting_keys", False):
            self.counters.rekeys += 1
            if self.rekey_grace > 0:
                self._previous = self.inbound
                self._grace_call = self.clock.callLater(self.rekey_grace, self._end_grace)
        self.inbound = inbound
        self.direct_unprotect = getattr(inbound, "direct_unprotect", None)
        self.outbound = outbound

    def security_state(self) -> dict[str, Any] | None:
        """What rebuilds this stream's SRTP contexts after a restart or on another node (key
        material: the state layer seals it); None for plain RTP or before DTLS has keys."""
        if self.security is None or self.negotiated is None:
            return None
        state: dict[str, Any] | None = self.security.export(self)
        return state

    def restore_security(self, state: dict[str, Any], *, indices: dict[str, Any] | None = None, how: str = "restart") -> Any:
        """Carry on from :meth:`security_state`'s dict (and the last positions' ``indices``):
        the contexts are rebuilt, their ROC and SRTCP index continued; returns the agreement."""
        if self.security is None:
            raise ValueError("SRTP state given to a stream without a security policy")
        self.carried = carried_counters(state, indices, how)
        return self.security.restore(state, self.carried, self)

    def srtp_indices(self) -> dict[str, Any] | None:
        """For the periodic positions (cheap, plain: on the wire anyway): the highest SRTP
        index per SSRC the stream authenticated, and the last SRTCP index of its own reports."""
        if self.inbound is None:
            return None
        base = self.carried.received if self.carried is not None else {}
        received = {str(ssrc): index for ssrc, index in base.items()}
        if self.stats is not None:
            for ssrc, source in self.stats.sources.items():
                if source.probation:
                    continue  # not a valid source yet (RFC 3550 A.1): nothing to count from
                # RFC 3550's cycles count the rollovers since the first packet (ROC 0 then);
                # a restored stream's first packet sits where the stored index says.
                start = estimate_index(base[ssrc], source.base_seq) if ssrc in base else source.base_seq
                received[str(ssrc)] = max(received.get(str(ssrc), 0), start + source.cycles + source.max_seq - source.base_seq)
        return {"received": received, "srtcp_last": getattr(self._report_outbound(), "last_index", 0)}

    def _report_outbound(self) -> Outbound | None:
        """The context the receiver reports are protected with (DTLS without rtcp-mux: the
        RTCP port's own association's)."""
        return self.outbound if self.rtcp_mux or self.rtcp_outbound is None else self.rtcp_outbound

    def secure_rtcp(self, inbound: Inbound | None, outbound: Outbound | None) -> None:
        """SRTCP contexts of their own for the RTCP port (None: RTCP uses :meth:`secure`'s)."""
        self.rtcp_inbound = inbound
        self.rtcp_outbound = outbound

    def _end_grace(self) -> None:
        if self._grace_call is not None and self._grace_call.active():
            self._grace_call.cancel()
        self._grace_call = None
        self._previous = None

    def close(self) -> None:
        """The stream ends: no timer of its own may outlive it."""
        self._end_grace()
        for dtls in (self.dtls, self.dtls_rtcp):
            if dtls is not None:
                dtls.close()

    def dtls_received(self, datagram: bytes, addr: tuple[str, int], *, rtcp: bool = False) -> None:
        """A DTLS datagram (RFC 7983) on the RTP port, or on the RTCP port (``rtcp``)."""
        self.counters.dtls_datagrams += 1
        dtls = self.dtls_rtcp if rtcp else self.dtls
        expected = self.expected
        if dtls is None or (self.latch_sdp_address and expected is not None and addr[0] != expected[0]):
            self.counters.other_source += 1
            return
        dtls.datagram_received(datagram, addr)

    def unprotect(self, datagram: bytes, rtcp: bool) -> bytes | None:
        """The plaintext of a secured datagram, or None (counted) when it does not authenticate."""
        inbound = self.rtcp_inbound if rtcp and self.rtcp_inbound is not None else self.inbound
        assert inbound is not None
        try:
            return inbound.unprotect_rtcp(datagram) if rtcp else inbound.unprotect_rtp(datagram)
        except SRTPError:
            return self.not_unprotected(datagram, rtcp)

    def not_unprotected(self, datagram: bytes, rtcp: bool) -> bytes | None:
        """The current context refused the datagram: the replaced key's plaintext during its
        grace period, else None (counted)."""
        previous = self._previous
        if previous is not None:
            try:
                plain = previous.unprotect_rtcp(datagram) if rtcp else previous.unprotect_rtp(datagram)
            except SRTPError:
                pass
            else:
                self.counters.srtp_old_key += 1
                return plain
        if rtcp:
            self.counters.srtcp_auth_failures += 1
        else:
            self.counters.srtp_auth_failures += 1
        return None

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
        transport = self.rtcp.transport
        peer = self.rtcp.peer
        if self.rtcp_mux:
            # RFC 5761: RTCP shares the RTP 5-tuple (DTLS-SRTP keys are bound to it too).
            transport, peer = self.rtp.transport, self.rtp.source
        elif peer is None and self.rtp.source is not None and self.rtp.source[1] < 65535:
            # RFC 3550 §11: RTCP on RTP+1 (a NAT may map RTP to 65535: no port above it, and
            # sendto would raise OverflowError, not OSError).
            peer = (self.rtp.source[0], self.rtp.source[1] + 1)
        if peer is None or transport is None:
            return False
        report = build_receiver_report(self.ssrc, stats.report_blocks(self.clock.seconds()), self.cname)
        try:
            outbound = self._report_outbound()
            if outbound is not None:
                report = outbound.protect_rtcp(report)
            transport.write(report, peer)
        except (OSError, SRTPError):
            return False
        self.counters.receiver_reports_sent += 1
        return True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": f"{self.rtp.source[0]}:{self.rtp.source[1]}" if self.rtp.source else None}
        out.update(asdict(self.counters))
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
        if datagram and datagram[0] < 64 and classify(datagram) == DTLS:
            media.dtls_received(datagram, addr)  # DTLS-SRTP shares the RTP port (RFC 5764 §5.1.2)
            return
        latch = False
        if addr != self.source:
            if self.source is not None:
                counters.other_source += 1
                return
            expected = media.expected
            if media.latch_sdp_address and expected is not None and addr[0] != expected[0]:
                counters.other_source += 1
                return
            if len(datagram) < 12 or not _is_rtp_or_rtcp(datagram):
                # Not RTP (nor RTCP): a stray datagram must not capture the stream's latch.
                counters.malformed += 1
                return
            latch = True  # symmetric RTP: latch to the first source (once it authenticates)
        elif not datagram or datagram[0] & 0xC0 != 0x80:  # inline: the per-packet path
            # RFC 7983: STUN (first byte 0-3), DTLS (20-63), ... are not media: dropped as such,
            # never counted as SRTP authentication failures.
            counters.malformed += 1
            return
        if len(datagram) > 1 and 192 <= datagram[1] <= 223:
            # RTCP multiplexed on the RTP port
            if media.rtcp.handle(datagram, addr) and latch:
                self.source = addr
            return
        if media.inbound is not None:
            direct = media.direct_unprotect
            if direct is not None:
                try:
                    datagram = direct(datagram)
                except DIRECT_ERRORS:
                    plain = media.not_unprotected(datagram, rtcp=False)
                    if plain is None:
                        return  # forged, replayed or under an unknown key: it must not latch either
                    datagram = plain
            else:
                plain = media.unprotect(datagram, rtcp=False)
                if plain is None:
                    return  # forged, replayed or under an unknown key: it must not latch either
                datagram = plain
        if latch:
            self.source = addr
        recorder = media.recorder
        if recorder is None:
            counters.before_recording += 1
            return
        queue = media.queue
        if queue is not None:
            if len(datagram) >= 12 and (datagram[0] == 0x80 or queueable(datagram)):  # 0x80: PLAIN
                # A header whose parse cannot fail (plain, or with an extension: inline for
                # the plain one): queued for the recording's settle(), which takes runs of
                # such packets in one step ([media] packet_batch).
                queue.append(datagram)
                media.arrivals.append(media.clock.seconds())
                if len(queue) >= media.batch:
                    recorder.settle()
                return
            if queue:
                recorder.settle()  # what came before this packet is taken before it
        try:
            packet = parse_rtp(datagram)
        except MalformedPacket:
            counters.malformed += 1
            return
        now = media.clock.seconds()
        media._stats.update(packet, now)  # type: ignore[union-attr]
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
        if datagram and datagram[0] < 64 and classify(datagram) == DTLS:
            self.media.dtls_received(datagram, addr, rtcp=True)
            return
        self.handle(datagram, addr)

    def handle(self, datagram: bytes, addr: tuple[str, int]) -> bool:
        """Take one RTCP datagram; False when it was dropped."""
        media = self.media
        counters = media.counters
        counters.rtcp_packets += 1
        source = media.rtp.source
        if source is not None and addr[0] != source[0]:
            # RTCP from another host than the latched media: reports and BYEs are not its to send.
            counters.rtcp_other_source += 1
            return False
        if not _is_rtp_or_rtcp(datagram):
            counters.rtcp_malformed += 1  # STUN keepalives (linphone sends them here), junk
            return False
        if media.inbound is not None:
            plain = media.unprotect(datagram, rtcp=True)
            if plain is None:
                return False  # unauthenticated RTCP (some peers send it): dropped quietly
            datagram = plain
        try:
            packets = parse_rtcp(datagram)
        except MalformedPacket:
            counters.rtcp_malformed += 1  # e.g. unauthenticated junk: dropped quietly
            return False
        if self.peer is None:
            self.peer = addr
        if media.recorder is not None:
            media.recorder.settle()  # an SR maps the timeline as it stands on its arrival
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
        return True


def _is_rtp_or_rtcp(datagram: bytes) -> bool:
    """RTP version 2 in the first two bits (RFC 7983: first byte 128-191)."""
    return bool(datagram) and datagram[0] & 0xC0 == 0x80


def set_receive_buffer(port: Any, size: int) -> None:
    """SO_RCVBUF on a listening UDP port (bursts after a pause must not overflow it)."""
    if size > 0:
        port.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
