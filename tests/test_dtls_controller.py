"""DTLS-SRTP through the SIPREC controller: answers, the handshake on the RTP port, keys into
the stream, re-INVITEs that keep or renew the association, and the 488s (RFC 5763/5764).

The SRC's DTLS side is a real OpenSSL endpoint fed through the stream's RTP protocol, on the
same MemoryReactorClock as everything else.
"""

from __future__ import annotations

import struct
from typing import Any

import pylibsrtp
from twisted.trial.unittest import SynchronousTestCase

from siprecd.security.certificate import generate_certificate
from siprecd.security.dtls import DTLSContext, DTLSEndpoint, DTLSRole, SRTPKeys
from siprecd.security.dtls_method import AwaitingKeys
from siprecd.security.srtp import InboundSRTP
from siprecd.security.suites import DTLS_PROFILES, SUITES
from tests.test_dtls_stream import exchange
from tests.test_siprec_controller import Call, ControllerTestCase, audio, sdp_offer

MEDIA = ("198.51.100.7", 30000)  # where the SRC's media comes from (the offer's c= and port)
TLS_ID = "src-tls-id-0123456789ab"


class Writer:
    """The RTP socket's transport: what the SRS sends (DTLS datagrams) and to where."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


class SRCPeer:
    def __init__(self, test: SynchronousTestCase, role: DTLSRole) -> None:
        self.test = test
        self.certificate = generate_certificate()
        self.role = role
        self.outbox: list[bytes] = []
        self.keys: list[SRTPKeys] = []
        self.failures: list[str] = []
        self.endpoint: DTLSEndpoint | None = None

    def mline(self, setup: str = "actpass", tls_id: str = TLS_ID, label: str = "a", extra: str = "") -> str:
        line = audio(MEDIA[1], label, formats="0").replace("RTP/AVP", "UDP/TLS/RTP/SAVP")
        return line + f"a=setup:{setup}\na=fingerprint:{self.certificate.fingerprint()}\na=tls-id:{tls_id}\n" + extra

    def connect(self, answer_fingerprint: str, reactor: Any) -> None:
        from siprecd.security.certificate import parse_fingerprint

        self.endpoint = DTLSEndpoint(
            DTLSContext(self.certificate), role=self.role, remote_fingerprints=[parse_fingerprint(answer_fingerprint)],
            send=self.outbox.append, clock=reactor, on_keys=self.keys.append, on_failure=self.failures.append,
        )
        self.endpoint.start()


def srtp_session(keys: SRTPKeys, *, inbound: bool = False, own: bool = True) -> pylibsrtp.Session:
    """libsrtp with the SRC's own write key (what it sends), or the SRS's (what it receives)."""
    key = keys.local_key + keys.local_salt if own else keys.remote_key + keys.remote_salt
    kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=SUITES[DTLS_PROFILES[keys.profile]].libsrtp_profile))


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xABCDEF01) + b"\xd5" * 160


class DTLSControllerTests(ControllerTestCase):
    def stream_media(self, call: Call, index: int = 0) -> Any:
        [session] = [s for s in self.controller.sessions.values() if s.call_id == call.call_id]
        return session.streams[index].media

    def handshake(self, call: Call, peer: SRCPeer, fingerprint: str, writer: Writer) -> None:
        media = self.stream_media(call)
        if peer.endpoint is None:
            peer.connect(fingerprint, self.reactor)
        exchange(self, writer.sent, peer, lambda data: media.rtp.datagramReceived(data, MEDIA), MEDIA,
                 turn=lambda: self.reactor.advance(0))

    def start_call(self, peer: SRCPeer, setup: str = "actpass", extra: str = "") -> tuple[Call, Any, Writer]:
        call = Call(self)
        response = call.setup(sdp_offer(peer.mline(setup, extra=extra)))
        [m] = self.answer(response).media
        writer = Writer()
        self.stream_media(call).rtp.transport = writer  # the fake reactor's ports write nowhere
        return call, m, writer

    def test_srs_active_records_srtp_after_the_handshake(self) -> None:
        peer = SRCPeer(self, DTLSRole.PASSIVE)
        call, m, writer = self.start_call(peer)
        self.assertEqual(m.proto, "UDP/TLS/RTP/SAVP")
        self.assertEqual(m.attribute("setup"), "active")
        ours = self.controller.security.methods["dtls-srtp"].settings.context.fingerprint()
        self.assertEqual(m.attribute("fingerprint"), str(ours))
        self.assertNotEqual(m.attribute("tls-id"), TLS_ID)
        media = self.stream_media(call)
        self.assertIsInstance(media.inbound, AwaitingKeys)
        # Plain RTP before the keys: dropped and counted, never recorded, never latched.
        media.rtp.datagramReceived(rtp(1), MEDIA)
        self.assertEqual(media.counters.srtp_auth_failures, 1)
        self.assertIsNone(media.rtp.source)
        # STUN keep-alives (linphone sends them on both ports) are no forged SRTP, nor DTLS.
        binding = bytes.fromhex("0001 0000 2112a442") + bytes(12)
        media.rtp.datagramReceived(binding, MEDIA)
        media.rtcp.datagramReceived(binding, (MEDIA[0], MEDIA[1] + 1))
        self.assertEqual((media.counters.malformed, media.counters.rtcp_malformed), (1, 1))
        self.assertEqual((media.counters.srtp_auth_failures, media.counters.srtcp_auth_failures), (1, 0))
        self.assertEqual(media.counters.dtls_datagrams, 0)
        self.assertEqual(writer.sent, [])  # the ClientHello waits for the answer to go out

        self.handshake(call, peer, m.attribute("fingerprint"), writer)
        [keys] = peer.keys
        self.assertIsInstance(media.inbound, InboundSRTP)
        self.assertEqual(media.counters.rekeys, 0)
        # session.json on disk already says so, before any further SIP event.
        on_disk = self.session(call)["streams"][0]["stream_security"]
        self.assertEqual((on_disk["dtls"]["state"], on_disk["dtls"]["profile"]), ("connected", keys.profile))
        session = srtp_session(keys)
        for seq in range(2, 12):
            media.rtp.datagramReceived(session.protect(rtp(seq)), MEDIA)
        self.assertEqual(media.rtp.source, MEDIA)
        self.assertEqual(media.recorder.counters.packets, 10)

        # Same fingerprint, tls-id and setup: the association, keys and answer stay.
        endpoint = media.dtls.endpoint
        response = call.reinvite(sdp_offer(peer.mline(), version=2))
        [m2] = self.answer(response).media
        self.assertIs(media.dtls.endpoint, endpoint)
        self.assertEqual((m2.attribute("setup"), m2.attribute("tls-id")), ("active", m.attribute("tls-id")))

        self.bye(call)
        document = self.session(call)
        security = document["streams"][0]["stream_security"]
        self.assertEqual(security["method"], "dtls-srtp")
        self.assertEqual(security["suite"], {"SRTP_AEAD_AES_256_GCM": "AEAD_AES_256_GCM"}.get(keys.profile, "AES_CM_128_HMAC_SHA1_80"))
        self.assertEqual((security["dtls"]["role"], security["dtls"]["state"]), ("active", "closed"))
        self.assertEqual(self.controller.security.sessions["dtls-srtp", security["suite"]], 1)
        peer.endpoint.close()
        self.assert_quiet()

    def test_rtcp_mux(self) -> None:
        peer = SRCPeer(self, DTLSRole.ACTIVE)
        call, m, writer = self.start_call(peer, "active", extra="a=rtcp-mux\n")
        self.assertTrue(m.has_attribute("rtcp-mux"))
        self.handshake(call, peer, m.attribute("fingerprint"), writer)
        self.assertIsNone(self.stream_media(call).dtls_rtcp)  # one association for both
        [keys] = peer.keys
        media = self.stream_media(call)
        session = srtp_session(keys)
        media.rtp.datagramReceived(session.protect(rtp(1)), MEDIA)
        # A sender report, SRTCP-protected with the peer's key, on the RTP port.
        report = struct.pack("!BBHIIIIII", 0x80, 200, 6, 0xABCDEF01, 1, 2, 160, 1, 160)
        media.rtp.datagramReceived(session.protect_rtcp(report), MEDIA)
        self.assertEqual(media.counters.rtcp_sender_reports, 1)
        self.assertEqual(media.counters.srtcp_auth_failures, 0)
        # The SRS's receiver report leaves from the RTP port, to the media source, protected.
        writer.sent.clear()
        self.assertTrue(media.send_report())
        [(data, addr)] = writer.sent
        self.assertEqual(addr, MEDIA)
        inbound = srtp_session(keys, inbound=True, own=False)
        self.assertEqual(inbound.unprotect_rtcp(data)[1], 201)
        self.bye(call)
        peer.endpoint.close()
        self.assert_quiet()

    def test_rtcp_port_has_its_own_association(self) -> None:
        # Without rtcp-mux the peer runs a second handshake on the RTCP port (RFC 5764 §4.1.2);
        # its keys, not the RTP association's, protect the RTCP sent there.
        peer, rtcp_peer = SRCPeer(self, DTLSRole.ACTIVE), SRCPeer(self, DTLSRole.ACTIVE)
        rtcp_peer.certificate = peer.certificate  # one SRC, one certificate, two components
        call, m, writer = self.start_call(peer, "active")
        media = self.stream_media(call)
        rtcp_writer = Writer()
        media.rtcp.transport = rtcp_writer
        self.handshake(call, peer, m.attribute("fingerprint"), writer)
        rtcp_source = (MEDIA[0], MEDIA[1] + 1)
        rtcp_peer.connect(m.attribute("fingerprint"), self.reactor)
        exchange(self, rtcp_writer.sent, rtcp_peer, lambda data: media.rtcp.datagramReceived(data, rtcp_source), rtcp_source)
        [rtp_keys], [rtcp_keys] = peer.keys, rtcp_peer.keys
        self.assertNotEqual(rtp_keys.local_key, rtcp_keys.local_key)
        report = struct.pack("!BBHIIIIII", 0x80, 200, 6, 0xABCDEF01, 1, 2, 160, 1, 160)
        media.rtp.datagramReceived(srtp_session(rtp_keys).protect(rtp(1)), MEDIA)
        media.rtcp.datagramReceived(srtp_session(rtp_keys).protect_rtcp(report), rtcp_source)
        self.assertEqual((media.counters.rtcp_sender_reports, media.counters.srtcp_auth_failures), (0, 1))
        media.rtcp.datagramReceived(srtp_session(rtcp_keys).protect_rtcp(report), rtcp_source)
        self.assertEqual(media.counters.rtcp_sender_reports, 1)
        # The receiver report goes out on the RTCP port under the RTCP association's key.
        rtcp_writer.sent.clear()
        self.assertTrue(media.send_report())
        [(data, addr)] = rtcp_writer.sent
        self.assertEqual(addr, rtcp_source)
        self.assertEqual(srtp_session(rtcp_keys, inbound=True, own=False).unprotect_rtcp(data)[1], 201)
        self.bye(call)
        security = self.session(call)["streams"][0]["stream_security"]
        self.assertEqual((security["dtls"]["handshakes"], security["dtls_rtcp"]["handshakes"]), (1, 1))
        dtls = self.controller.security.methods["dtls-srtp"]
        self.assertEqual(sorted(dtls.handshakes), [("completed", "passive", rtp_keys.profile, "rtcp"),
                                                   ("completed", "passive", rtp_keys.profile, "rtp")])
        peer.endpoint.close()
        rtcp_peer.endpoint.close()
        self.assert_quiet()

    def test_new_tls_id_means_a_new_handshake(self) -> None:
        peer = SRCPeer(self, DTLSRole.ACTIVE)
        call, m, writer = self.start_call(peer, "active")
        self.assertEqual(m.attribute("setup"), "passive")
        self.handshake(call, peer, m.attribute("fingerprint"), writer)
        media = self.stream_media(call)
        first = media.inbound
        self.assertIsInstance(first, InboundSRTP)
        old = media.dtls.endpoint
        call.reinvite(sdp_offer(peer.mline("active", tls_id="src-tls-id-second-000000"), version=2))
        self.assertIsNot(media.dtls.endpoint, old)
        self.assertIs(media.inbound, first)  # the old keys work until the new handshake is done
        peer.endpoint.close()
        peer.endpoint = None
        peer.keys.clear()
        self.handshake(call, peer, m.attribute("fingerprint"), writer)
        self.assertIsNot(media.inbound, first)
        self.assertEqual(media.counters.rekeys, 1)
        self.bye(call)
        peer.endpoint.close()
        self.assert_quiet()

    def test_handshake_timeout_is_reported(self) -> None:
        peer = SRCPeer(self, DTLSRole.PASSIVE)
        call, m, writer = self.start_call(peer)
        self.reactor.advance(0)
        self.reactor.advance(self.config.security.dtls_handshake_timeout + 1)
        dtls = self.controller.security.methods["dtls-srtp"]
        # Both components: the RTP port's association and the RTCP port's (no rtcp-mux).
        self.assertEqual(dtls.handshakes, {("failed", "active", "", "rtp"): 1, ("failed", "active", "", "rtcp"): 1})
        self.bye(call)
        state = self.session(call)["streams"][0]["stream_security"]["dtls"]
        self.assertIn("did not complete within 30 s", state["failure"])
        self.assert_quiet()

    def test_offer_without_fingerprint_is_refused(self) -> None:
        peer = SRCPeer(self, DTLSRole.PASSIVE)
        line = "\n".join(x for x in peer.mline().split("\n") if not x.startswith("a=fingerprint")) + "\n"
        response = Call(self).invite(sdp_offer(line))
        self.assert_warning(response, 488, "no a=fingerprint")
        self.assert_nothing_bound()

    def test_bad_setup_is_refused(self) -> None:
        peer = SRCPeer(self, DTLSRole.PASSIVE)
        response = Call(self).invite(sdp_offer(peer.mline("sideways")))
        self.assert_warning(response, 488, "a=setup:sideways is not one of")

    def test_fingerprint_on_plain_rtp_records_plain(self) -> None:
        # A fingerprint on RTP/AVP is no DTLS-SRTP offer the answer could accept; under
        # srtp = optional the stream is recorded as plain RTP.
        peer = SRCPeer(self, DTLSRole.PASSIVE)
        call = Call(self)
        [m] = self.answer(call.setup(sdp_offer(peer.mline().replace("UDP/TLS/RTP/SAVP", "RTP/AVP")))).media
        self.assertEqual((m.proto, m.attribute("fingerprint"), m.attribute("setup")), ("RTP/AVP", None, None))
        self.assertEqual(self.session(call)["streams"][0]["stream_security"]["method"], None)
        self.bye(call)


class PassiveConfigTests(ControllerTestCase):
    environment = {"SIPRECD_SECURITY_DTLS_SETUP": "passive"}

    def test_answers(self) -> None:
        peer = SRCPeer(self, DTLSRole.PASSIVE)
        for offered, answered in (("actpass", "passive"), ("active", "passive"), ("passive", "active"), ("holdconn", "holdconn")):
            call = Call(self)
            [m] = self.answer(call.setup(sdp_offer(peer.mline(offered)))).media
            self.assertEqual(m.attribute("setup"), answered, offered)
            self.bye(call)
        self.assert_quiet()


class SDESOnlyTests(ControllerTestCase):
    environment = {"SIPRECD_SECURITY_KEY_EXCHANGE": "sdes"}

    def test_dtls_not_allowed(self) -> None:
        peer = SRCPeer(self, DTLSRole.PASSIVE)
        response = Call(self).invite(sdp_offer(peer.mline()))
        self.assert_warning(response, 488, "DTLS-SRTP is not allowed by [security] key_exchange")
        self.assert_nothing_bound()
