"""SRTP in SIPREC calls through the controller: SDES answers, policy 488s, rekeying, reports.

Packets are fed to each stream's RTP/RTCP protocol as the sockets would; the clock is the
test reactor's, so the rekey grace period runs on it.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from siprecd.media.rtcp import parse_rtcp
from siprecd.media.rtp import build_rtp
from siprecd.security.sdes import parse_crypto
from siprecd.security.srtp import InboundSRTP, OutboundSRTP
from tests.test_media_receiver import FakeDatagramTransport
from tests.test_siprec_controller import Call, ControllerTestCase, audio, sdp_offer

MEDIA_SOURCE = ("198.51.100.7", 10000)
SUITE = "AES_CM_128_HMAC_SHA1_80"


def crypto(key: bytes, suite: str = SUITE, tag: int = 1, params: str = "") -> str:
    return f"a=crypto:{tag} {suite} inline:{base64.b64encode(key).decode()}{' ' + params if params else ''}\n"


def savp(port: int, label: str, *lines: str, proto: str = "RTP/SAVP") -> str:
    return audio(port, label, extra="".join(lines)).replace("RTP/AVP", proto, 1)


def sender(key: bytes, suite: str = SUITE) -> OutboundSRTP:
    return OutboundSRTP(suite, key[:16], key[16:])


class SDESCallTests(ControllerTestCase):
    # Batch 1: packets reach the statistics as they arrive, where parsed() spies on them
    # (SRTP with batches: tests/test_runs.py).
    environment = {"SIPRECD_SECURITY_REKEY_GRACE": "2", "SIPRECD_MEDIA_PACKET_BATCH": "1"}

    def media(self, index: int = 0) -> Any:
        call = next(iter(self.controller.calls.values()))
        return call.streams.current[index].media

    def parsed(self, media: Any) -> list[int]:
        """Sequence numbers of the packets that get past unprotect into the statistics."""
        seen: list[int] = []
        update = media.stats.update

        def spy(packet: Any, now: float) -> None:
            seen.append(packet.sequence)
            update(packet, now)

        media.stats.update = spy
        return seen

    def answered_key(self, response: Any, index: int = 0) -> tuple[int, str, bytes]:
        values = self.answer(response).media[index].attribute_values("crypto")
        self.assertEqual(len(values), 1)
        line = parse_crypto(values[0] or "")
        return line.tag, line.suite, line.keys[0].key + line.keys[0].salt

    def test_sdes_call_records_srtp_and_protects_its_reports(self) -> None:
        key = os.urandom(30)
        call = Call(self)
        response = call.setup(sdp_offer(savp(10000, "1", crypto(key, tag=3))))
        tag, suite, ours = self.answered_key(response)
        self.assertEqual((tag, suite), (3, SUITE))
        self.assertNotEqual(ours, key)
        self.assertEqual(self.answer(response).media[0].proto, "RTP/SAVP")
        stream = self.session(call)["streams"][0]
        self.assertEqual(stream["stream_security"], {"method": "sdes", "suite": SUITE, "tag": 3, "keys_offered": 1})
        self.assertNotIn(base64.b64encode(key).decode(), str(self.session(call)))
        # The SDP files keep the a=crypto lines for audit, without the keys.
        for name in ("sdp-0001-offer.sdp", "sdp-0002-answer.sdp"):
            with open(os.path.join(self.session_dir(call), name), "rb") as handle:
                kept = handle.read()
            self.assertIn(b" AES_CM_128_HMAC_SHA1_80 inline:REDACTED", kept, name)
            self.assertNotIn(base64.b64encode(key), kept)
            self.assertNotIn(base64.b64encode(ours), kept)

        media = self.media()
        parsed = self.parsed(media)
        protect = sender(key)
        forged = build_rtp(0, 1, 160, 0x1234, b"\xff" * 160) + b"\x00" * 10
        media.rtp.datagramReceived(forged, MEDIA_SOURCE)
        self.assertIsNone(media.rtp.source)  # a forged packet does not capture the latch
        for seq in range(1, 6):
            media.rtp.datagramReceived(protect.protect_rtp(build_rtp(0, seq, 160 * seq, 0x1234, b"\xff" * 160)), MEDIA_SOURCE)
        self.assertEqual(media.rtp.source, MEDIA_SOURCE)
        self.assertEqual(parsed, [1, 2, 3, 4, 5])
        self.assertEqual(media.counters.srtp_auth_failures, 1)
        # Plain RTCP on a secured stream is dropped and counted, quietly.
        media.rtcp.datagramReceived(b"\x80\xc9\x00\x01\x00\x00\x12\x34", (MEDIA_SOURCE[0], 10001))
        self.assertEqual(media.counters.srtcp_auth_failures, 1)
        # The SRS's receiver report leaves under the key of its answer.
        media.rtcp.transport = transport = FakeDatagramTransport()
        self.assertTrue(media.send_report())
        (report, _), = transport.written
        plain = InboundSRTP(SUITE, ours[:16], ours[16:]).unprotect_rtcp(report)
        self.assertEqual(parse_rtcp(plain)[0].ssrc, media.ssrc)
        self.bye(call)
        self.assertEqual(self.session(call)["streams"][0]["reception"]["srtp_auth_failures"], 1)
        self.assert_quiet()

    def test_rekeying(self) -> None:
        old_key, new_key = os.urandom(30), os.urandom(30)
        call = Call(self)
        first = call.setup(sdp_offer(savp(10000, "1", crypto(old_key))))
        media = self.media()
        parsed = self.parsed(media)
        inbound = media.inbound
        old = sender(old_key)
        media.rtp.datagramReceived(old.protect_rtp(build_rtp(0, 1, 160, 7, b"\xff" * 160)), MEDIA_SOURCE)

        # The same key again (a session refresh): same context, same answer key, counters kept.
        again = call.reinvite(sdp_offer(savp(10000, "1", crypto(old_key)), version=2))
        self.assertEqual(again.status, 200)
        self.assertEqual(self.answered_key(again), self.answered_key(first))
        self.assertIs(media.inbound, inbound)
        self.assertEqual(media.counters.rekeys, 0)
        self.assertEqual(dict(self.controller.security.sessions), {("sdes", SUITE): 1})

        # A new key: a new context and a new SRS key; the old one works for the grace period.
        rekeyed = call.reinvite(sdp_offer(savp(10000, "1", crypto(new_key)), version=3))
        self.assertEqual(rekeyed.status, 200)
        self.assertNotEqual(self.answered_key(rekeyed)[2], self.answered_key(first)[2])
        self.assertIsNot(media.inbound, inbound)
        self.assertEqual(media.counters.rekeys, 1)
        new = sender(new_key)
        media.rtp.datagramReceived(new.protect_rtp(build_rtp(0, 3, 480, 7, b"\xff" * 160)), MEDIA_SOURCE)
        media.rtp.datagramReceived(old.protect_rtp(build_rtp(0, 2, 320, 7, b"\xff" * 160)), MEDIA_SOURCE)
        self.assertEqual((media.counters.srtp_old_key, media.counters.srtp_auth_failures), (1, 0))
        self.reactor.advance(2)
        media.rtp.datagramReceived(old.protect_rtp(build_rtp(0, 4, 640, 7, b"\xff" * 160)), MEDIA_SOURCE)
        self.assertEqual((media.counters.srtp_old_key, media.counters.srtp_auth_failures), (1, 1))
        self.assertEqual(parsed, [1, 3, 2])
        self.assertEqual(dict(self.controller.security.sessions), {("sdes", SUITE): 2})
        self.assertEqual(self.session(call)["streams"][0]["reception"]["rekeys"], 1)

        # An UPDATE rekeys the same way; a rekey in flight when the call ends leaves no timer.
        updated = call.request("UPDATE", sdp_offer(savp(10000, "1", crypto(old_key)), version=4), "application/sdp")
        self.assertEqual(updated.status, 200)
        self.assertEqual(media.counters.rekeys, 2)
        self.bye(call)
        self.assert_quiet()

    def test_several_suites_and_mki(self) -> None:
        k1, k2 = os.urandom(46), os.urandom(46)
        line = (f"a=crypto:2 AES_256_CM_HMAC_SHA1_32 inline:{base64.b64encode(k1).decode()}|2^31|1:2;"
                f"inline:{base64.b64encode(k2).decode()}|2^31|2:2\n")
        call = Call(self)
        response = call.setup(sdp_offer(savp(10000, "a", line)))
        self.assertEqual(self.answered_key(response)[:2], (2, "AES_256_CM_HMAC_SHA1_32"))
        self.assertEqual(self.session(call)["streams"][0]["stream_security"], {
            "method": "sdes", "suite": "AES_256_CM_HMAC_SHA1_32", "tag": 2, "keys_offered": 2,
            "mki_length": 2, "lifetime": 2**31})
        media = self.media()
        parsed = self.parsed(media)
        for n, (key, mki) in enumerate(((k1, b"\x00\x01"), (k2, b"\x00\x02"))):
            out = OutboundSRTP("AES_256_CM_HMAC_SHA1_32", key[:32], key[32:], mki=mki)
            media.rtp.datagramReceived(out.protect_rtp(build_rtp(0, n, 160 * n, 9, b"\xff" * 160)), MEDIA_SOURCE)
        self.assertEqual((parsed, media.counters.srtp_auth_failures), ([0, 1], 0))
        self.bye(call)


class PolicyCallTests(ControllerTestCase):
    def refused(self, offer: bytes, warning: str) -> None:
        call = Call(self)
        self.assert_warning(call.invite(offer), 488, warning)
        call.ack()

    def test_required_refuses_plain_offers(self) -> None:
        self.start(SIPRECD_SECURITY_SRTP="required")
        self.refused(sdp_offer(audio(10000, "1")),
                     "m-line 1/1 (audio, label '1'): plain RTP refused: [security] srtp = required")
        # A mixed offer under required: the plain m-line gets port 0, the secured one is recorded.
        call = Call(self)
        response = call.setup(sdp_offer(audio(10000, "plain"), savp(10002, "secret", crypto(os.urandom(30)))))
        self.assertEqual([(m.proto, m.port > 0) for m in self.answer(response).media],
                         [("RTP/AVP", False), ("RTP/SAVP", True)])
        self.bye(call)
        self.assert_nothing_bound()

    def test_off_refuses_savp_and_ignores_best_effort_crypto(self) -> None:
        self.start(SIPRECD_SECURITY_SRTP="off")
        self.refused(sdp_offer(savp(10000, "1", crypto(os.urandom(30)))),
                     "secured media (RTP/SAVP) refused: [security] srtp = off")
        call = Call(self)
        response = call.setup(sdp_offer(audio(10000, "1", extra=crypto(os.urandom(30)))))
        self.assertEqual(self.answer(response).media[0].attribute_values("crypto"), [])
        self.assertEqual(self.session(call)["streams"][0]["stream_security"], {"method": None, "suite": None})
        self.bye(call)

    def test_nothing_acceptable_and_dtls_only(self) -> None:
        self.start(SIPRECD_SECURITY_SUITES="AEAD_AES_256_GCM")
        self.refused(sdp_offer(savp(10000, "1", crypto(os.urandom(30)))),
                     "suite AES_CM_128_HMAC_SHA1_80 is not allowed by [security] suites")
        dtls = savp(10000, "1", "a=setup:actpass\n", proto="UDP/TLS/RTP/SAVP")
        self.refused(sdp_offer(dtls, session_attrs="a=fingerprint:sha-256 AB:CD\n"),
                     "DTLS-SRTP: a=fingerprint unusable: sha-256 fingerprint has 2 bytes, expected 32")
        self.assert_nothing_bound()
