"""The per-stream RTP/RTCP protocols: latching, RTCP-mux demux, statistics, receiver reports."""

from __future__ import annotations

import struct

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.media.receiver import StreamMedia
from siprecd.media.rtcp import (
    Bye,
    ReceiverReport,
    Sdes,
    build_bye,
    build_receiver_report,
    ntp_middle,
    parse_rtcp,
    unix_to_ntp,
)
from siprecd.media.rtp import build_rtp
from siprecd.media.timeline import Timeline

SRC = ("192.0.2.10", 40000)
STRANGER = ("198.51.100.7", 40000)
OUR_SSRC = 0x5EC0DE01
THEIR_SSRC = 0x11223344
PAYLOAD = bytes([0xFF]) * 160  # 20 ms of G.711 mu-law silence


class FakeDatagramTransport:
    """Records ``write(data, addr)`` calls; ``error`` makes the next writes raise it."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.error: Exception | None = None

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.error is not None:
            raise self.error
        self.written.append((data, addr))


class FakeRecorder:
    """What the receiver needs of a StreamRecorder: a timeline, consume() and settle(); no
    queue (``[media] packet_batch = 1``: every packet taken on arrival)."""

    queue = None
    arrivals: list = []
    batch = 1

    def __init__(self) -> None:
        self.timeline = Timeline(8000, duration_of=lambda pt, payload: len(payload), origin=None)
        self.events: list = []
        self.consumed = 0
        self.stats = None

    def settle(self) -> None:
        pass

    def consume(self) -> None:
        self.consumed += 1
        self.events.extend(self.timeline.drain())


def rtp(seq: int, ssrc: int = THEIR_SSRC, pt: int = 0) -> bytes:
    return build_rtp(pt, seq, seq * 160, ssrc, PAYLOAD)


def sender_report(ssrc: int, ntp: int, rtp_timestamp: int) -> bytes:
    # RFC 3550 §6.4.1: header (V=2, RC=0, PT=200, length 6 words), then the sender info.
    return struct.pack("!BBHIQIII", 0x80, 200, 6, ssrc, ntp, rtp_timestamp, 10, 1600)


class ReceiverTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.media = self.make_media()

    def make_media(self, *, latch_sdp_address: bool = False, attach: bool = True) -> StreamMedia:
        media = StreamMedia(self.clock, latch_sdp_address=latch_sdp_address, ssrc=OUR_SSRC, cname="siprecd-test")
        self.rtp_transport = FakeDatagramTransport()
        self.rtcp_transport = FakeDatagramTransport()
        media.rtp.makeConnection(self.rtp_transport)
        media.rtcp.makeConnection(self.rtcp_transport)
        if attach:
            self.recorder = FakeRecorder()
            media.attach(self.recorder, 8000)
        return media

    def send(self, data: bytes, addr: tuple[str, int] = SRC, media: StreamMedia | None = None) -> None:
        (media or self.media).rtp.datagramReceived(data, addr)

    def send_stream(self, count: int, addr: tuple[str, int] = SRC, first: int = 1) -> None:
        for seq in range(first, first + count):
            self.send(rtp(seq), addr)
            self.clock.advance(0.02)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LatchingTests(ReceiverTestCase):
    def test_latches_to_first_source_and_drops_others(self) -> None:
        self.send_stream(3)
        self.send(rtp(4, ssrc=0x99), STRANGER)
        self.send(rtp(5, ssrc=0x99), (SRC[0], SRC[1] + 2))  # same host, other port: another source
        self.send_stream(2, first=4)
        counters = self.media.counters
        self.assertEqual(self.media.rtp.source, SRC)
        self.assertEqual(counters.datagrams, 7)
        self.assertEqual(counters.other_source, 2)
        self.assertEqual(self.recorder.timeline.counters.packets, 5)
        self.assertEqual(self.recorder.timeline.counters.foreign, 0)
        self.assertEqual(self.media.to_json()["source"], f"{SRC[0]}:{SRC[1]}")

    def test_released_audio_is_consumed(self) -> None:
        self.send_stream(4)
        audio = [e for e in self.recorder.events if e.kind == "audio"]
        self.assertEqual([p.sequence for p in audio], [1, 2, 3, 4])
        self.assertEqual(sum(p.duration for p in audio), 4 * 160)

    def test_latch_sdp_refuses_other_address(self) -> None:
        media = self.make_media(latch_sdp_address=True)
        media.expect(SRC[0], SRC[1])
        self.send(rtp(1, ssrc=0x99), STRANGER, media)
        self.assertIsNone(media.rtp.source)
        self.assertEqual(media.counters.other_source, 1)
        # The SDP's host from another port (NAT, a port the SDP did not say) is accepted.
        self.send(rtp(1), (SRC[0], 50000), media)
        self.assertEqual(media.rtp.source, (SRC[0], 50000))

    def test_latch_first_ignores_sdp_address(self) -> None:
        self.media.expect(SRC[0], SRC[1])
        self.send(rtp(1), STRANGER)
        self.assertEqual(self.media.rtp.source, STRANGER)

    def test_expect_new_address_relatches(self) -> None:
        self.media.expect(SRC[0], SRC[1])
        self.send_stream(2)
        self.media.rtcp.datagramReceived(sender_report(THEIR_SSRC, 1, 2), (SRC[0], SRC[1] + 1))
        self.assertEqual(self.media.rtcp.peer, (SRC[0], SRC[1] + 1))
        # The same SDP address again (a re-offer that changed nothing): the latch stays.
        self.media.expect(SRC[0], SRC[1])
        self.send(rtp(3), STRANGER)
        self.assertEqual(self.media.rtp.source, SRC)
        self.assertEqual(self.media.counters.other_source, 1)
        # A new address: the next packet latches again, the old source is now the stranger.
        self.media.expect(STRANGER[0], STRANGER[1])
        self.assertIsNone(self.media.rtp.source)
        self.assertIsNone(self.media.rtcp.peer)
        self.send(rtp(4), STRANGER)
        self.send(rtp(5), SRC)
        self.assertEqual(self.media.rtp.source, STRANGER)
        self.assertEqual(self.media.counters.other_source, 2)

    def test_junk_does_not_latch(self) -> None:
        # A stray datagram (port scan, a STUN probe) must not capture the stream.
        self.send(b"\x00\x01\x00\x00junk", STRANGER)
        self.send(b"", STRANGER)
        self.assertIsNone(self.media.rtp.source)
        self.send_stream(2)
        self.assertEqual(self.media.rtp.source, SRC)
        self.assertEqual(self.media.counters.other_source, 0)
        self.assertEqual(self.media.counters.malformed, 2)

    def test_before_recording_counted(self) -> None:
        media = self.make_media(attach=False)
        self.send(rtp(1), SRC, media)
        self.assertEqual(media.counters.before_recording, 1)
        self.assertFalse(media.send_report())  # no statistics yet


class MalformedTests(ReceiverTestCase):
    def test_malformed_rtp_counted(self) -> None:
        self.send_stream(1)
        self.send(b"\x80\x00\x00")  # shorter than the fixed header
        self.send(b"\x40" + rtp(2)[1:])  # version 1
        self.send(b"\x8f" + rtp(3)[1:20])  # 15 CSRCs announced in 20 bytes
        self.assertEqual(self.media.counters.malformed, 3)
        padded = bytearray(rtp(4))
        padded[0] |= 0x20  # P bit with a count octet larger than the packet
        padded[-1] = 250
        self.send(bytes(padded))
        self.assertEqual(self.media.counters.malformed, 4)
        self.assertEqual(self.recorder.timeline.counters.packets, 1)
        self.assertEqual(self.media.counters.other_source, 0)


class RtcpTests(ReceiverTestCase):
    def test_rtcp_mux_goes_to_rtcp(self) -> None:
        self.send_stream(2)
        self.send(sender_report(THEIR_SSRC, unix_to_ntp(self.clock.seconds()), 320))
        self.assertEqual(self.media.counters.rtcp_packets, 1)
        self.assertEqual(self.media.counters.rtcp_sender_reports, 1)
        self.assertEqual(self.media.counters.malformed, 0)
        self.assertEqual(self.recorder.timeline.counters.packets, 2)  # not pushed as RTP
        self.assertEqual(self.media.rtcp.peer, SRC)

    def test_rtcp_mux_from_other_source_dropped(self) -> None:
        self.send_stream(2)
        self.send(sender_report(THEIR_SSRC, 1, 2), STRANGER)
        self.assertEqual(self.media.counters.rtcp_packets, 0)
        self.assertEqual(self.media.counters.other_source, 1)

    def test_sender_report_gives_lsr_and_dlsr(self) -> None:
        self.send_stream(5)
        ntp = unix_to_ntp(self.clock.seconds() - 0.25)
        self.media.rtcp.datagramReceived(sender_report(THEIR_SSRC, ntp, 800), (SRC[0], SRC[1] + 1))
        self.assertEqual(self.media.counters.rtcp_sender_reports, 1)
        self.clock.advance(1.5)
        self.assertTrue(self.media.send_report())
        [(data, addr)] = self.rtcp_transport.written
        self.assertEqual(addr, (SRC[0], SRC[1] + 1))
        rr, sdes = parse_rtcp(data)
        assert isinstance(rr, ReceiverReport)
        self.assertEqual(rr.ssrc, OUR_SSRC)
        [block] = rr.reports
        self.assertEqual(block.ssrc, THEIR_SSRC)
        self.assertEqual(block.lsr, ntp_middle(ntp))
        self.assertEqual(block.dlsr, int(1.5 * 65536))
        self.assertEqual(block.highest_sequence, 5)
        self.assertEqual(block.cumulative_lost, 0)
        # The timeline got the NTP <-> RTP pair.
        self.assertIsNotNone(self.recorder.timeline.ntp_mapping)

    def test_sender_report_of_unknown_ssrc_ignored(self) -> None:
        self.send_stream(3)
        self.media.rtcp.datagramReceived(sender_report(0x77, 12345 << 32, 0), (SRC[0], SRC[1] + 1))
        self.media.send_report()
        [(data, _)] = self.rtcp_transport.written
        [block] = parse_rtcp(data)[0].reports
        self.assertEqual((block.lsr, block.dlsr), (0, 0))

    def test_bye_counted(self) -> None:
        self.media.rtcp.datagramReceived(
            build_receiver_report(THEIR_SSRC, [], "src@example", bye="hanging up"), (SRC[0], SRC[1] + 1)
        )
        self.media.rtcp.datagramReceived(build_bye([THEIR_SSRC]), (SRC[0], SRC[1] + 1))
        self.assertEqual(self.media.counters.rtcp_byes, 2)
        self.assertEqual(self.media.counters.rtcp_packets, 2)

    def test_malformed_rtcp_counted_quietly(self) -> None:
        self.media.rtcp.datagramReceived(b"\x80\xc9\x00\x05" + bytes(4), STRANGER)  # length lies
        self.media.rtcp.datagramReceived(b"\x00", STRANGER)
        self.assertEqual(self.media.counters.rtcp_malformed, 2)
        self.assertIsNone(self.media.rtcp.peer)  # junk does not choose where RRs go


class ReportTests(ReceiverTestCase):
    def test_report_to_rtp_source_plus_one(self) -> None:
        self.send_stream(3)
        self.assertTrue(self.media.send_report())
        [(data, addr)] = self.rtcp_transport.written
        self.assertEqual(addr, (SRC[0], SRC[1] + 1))
        self.assertEqual(self.rtp_transport.written, [])
        packets = parse_rtcp(data)
        self.assertEqual([type(p) for p in packets], [ReceiverReport, Sdes])
        rr, sdes = packets
        self.assertEqual(rr.ssrc, OUR_SSRC)
        self.assertEqual(len(rr.reports), 1)
        self.assertEqual(sdes.chunks[0].ssrc, OUR_SSRC)
        self.assertEqual(sdes.chunks[0].cname, "siprecd-test")
        self.assertEqual(self.media.counters.receiver_reports_sent, 1)

    def test_report_to_rtcp_peer(self) -> None:
        self.send_stream(3)
        peer = (self.media.rtp.source[0], 41001)  # type: ignore[index]
        self.media.rtcp.datagramReceived(build_receiver_report(THEIR_SSRC, [], "src"), peer)
        self.assertTrue(self.media.send_report())
        self.assertEqual(self.rtcp_transport.written[0][1], peer)

    def test_rtcp_from_another_host_than_the_media_is_dropped(self) -> None:
        self.send_stream(3)
        self.media.rtcp.datagramReceived(build_receiver_report(THEIR_SSRC, [], "x"), ("192.0.2.99", 41001))
        self.assertEqual(self.media.counters.rtcp_other_source, 1)
        self.assertIsNone(self.media.rtcp.peer)

    def test_report_without_new_packets_has_no_blocks(self) -> None:
        self.send_stream(3)
        self.media.send_report()
        self.media.send_report()
        second = parse_rtcp(self.rtcp_transport.written[1][0])
        self.assertEqual(second[0].reports, ())
        self.assertIsInstance(second[1], Sdes)

    def test_no_report_without_peer(self) -> None:
        self.assertFalse(self.media.send_report())
        self.assertEqual(self.rtcp_transport.written, [])
        self.assertEqual(self.media.counters.receiver_reports_sent, 0)

    def test_no_report_to_port_above_65535(self) -> None:
        # A NAT mapped the SRC's RTP to the last port: RTP+1 does not exist.
        self.send_stream(2, addr=(SRC[0], 65535))
        self.assertFalse(self.media.send_report())
        self.assertEqual(self.rtcp_transport.written, [])

    def test_no_report_without_transport(self) -> None:
        self.send_stream(2)
        self.media.rtcp.transport = None
        self.assertFalse(self.media.send_report())

    def test_report_write_error_is_false(self) -> None:
        self.send_stream(2)
        self.rtcp_transport.error = OSError(101, "Network is unreachable")
        self.assertFalse(self.media.send_report())
        self.assertEqual(self.media.counters.receiver_reports_sent, 0)

    def test_to_json_has_source_statistics(self) -> None:
        self.send_stream(3)
        self.send_stream(2, first=5)  # 4 lost
        [source] = self.media.to_json()["sources"]
        self.assertEqual(source["ssrc"], THEIR_SSRC)
        self.assertEqual(source["lost"], 1)
        self.assertEqual(source["expected"], 5)  # RFC 3550 A.1: the first packet is probation



class SecuredReceptionTests(ReceiverTestCase):
    """StreamMedia.secure: unprotect before parsing and latching, drops counted, rekey grace."""

    def contexts(self, suite: str = "AES_CM_128_HMAC_SHA1_80") -> tuple[object, object, bytes]:
        import os

        from siprecd.security.srtp import InboundSRTP, OutboundSRTP

        key = os.urandom(30)
        return InboundSRTP(suite, key[:16], key[16:]), OutboundSRTP(suite, key[:16], key[16:]), key

    def test_rtcp_mux_and_plain_rtcp_on_a_secured_stream(self) -> None:
        inbound, sender, _ = self.contexts()
        self.media.secure(inbound, None)
        report = sender_report(THEIR_SSRC, unix_to_ntp(1_700_000_000), 0)
        self.media.rtp.datagramReceived(report, SRC)  # plain RTCP, multiplexed: dropped, no latch
        self.assertEqual((self.media.counters.srtcp_auth_failures, self.media.rtp.source), (1, None))
        self.media.rtp.datagramReceived(sender.protect_rtcp(report), SRC)
        self.assertEqual((self.media.counters.rtcp_sender_reports, self.media.rtp.source), (1, SRC))
        self.media.rtp.datagramReceived(sender.protect_rtp(rtp(1)), SRC)
        self.assertEqual(self.media.stats.sources[THEIR_SSRC].max_seq, 1)
        self.media.rtp.datagramReceived(rtp(2), SRC)  # plain RTP on a secured stream
        self.assertEqual(self.media.counters.srtp_auth_failures, 1)

    def test_rekey_grace_on_the_clock_and_going_plain(self) -> None:
        first, old, _ = self.contexts()
        second, new, _ = self.contexts()
        self.media.rekey_grace = 1.0
        self.media.secure(first, None)
        self.media.secure(first, None)  # the same context again: nothing changes
        self.assertEqual(self.media.counters.rekeys, 0)
        self.media.secure(second, None)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.media.rtp.datagramReceived(old.protect_rtp(rtp(1)), SRC)
        self.media.rtp.datagramReceived(new.protect_rtp(rtp(2)), SRC)
        self.assertEqual((self.media.counters.srtp_old_key, self.media.counters.srtp_auth_failures), (1, 0))
        self.clock.advance(1.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.media.rtp.datagramReceived(old.protect_rtp(rtp(3)), SRC)
        self.assertEqual(self.media.counters.srtp_auth_failures, 1)
        # A re-offer without SRTP: plain packets are parsed again; close() leaves no timer.
        self.media.secure(None, None)
        self.media.rtp.datagramReceived(rtp(4), SRC)
        self.assertEqual(self.media.stats.sources[THEIR_SSRC].max_seq, 4)
        self.media.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stun_is_not_an_authentication_failure(self) -> None:
        """linphonec sends STUN binding requests to the RTCP port (and ICE peers to RTP)."""
        inbound, sender, _ = self.contexts()
        self.media.secure(inbound, None)
        stun = bytes.fromhex("000100002112a442b2dbaf4e35c4e0f79607bdfa")
        self.media.rtcp.datagramReceived(stun, (SRC[0], SRC[1] + 1))
        self.media.rtp.datagramReceived(stun, SRC)  # before the latch
        self.media.rtp.datagramReceived(sender.protect_rtp(rtp(1)), SRC)
        self.media.rtp.datagramReceived(stun, SRC)  # after it
        self.media.rtp.datagramReceived(b"", SRC)
        counters = self.media.counters
        self.assertEqual((counters.srtp_auth_failures, counters.srtcp_auth_failures), (0, 0))
        self.assertEqual((counters.malformed, counters.rtcp_malformed), (3, 1))
        self.assertEqual(self.media.rtp.source, SRC)
