"""The INVITEs real phones send for secured calls (tests/data/peers/), read by siprecd's parsers.

The files were captured on loopback from linphonec 5.1.65 and baresip 1.0.0 by
``python -m tests.e2e.capture_offers tests/data/peers``.  These tests pin down what each peer
offers (profile, crypto suites, DTLS setup role and where the fingerprint sits), so SRTP code
written against them knows the real shapes, and so a recapture that changes them is noticed.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from siprecd.sdp import SessionDescription, parse
from siprecd.sip.message import Request, parse_message

DIRECTORY = os.path.join(os.path.dirname(__file__), "data", "peers")


def offer(name: str) -> tuple[Request, SessionDescription]:
    with open(os.path.join(DIRECTORY, name), "rb") as handle:
        message = parse_message(handle.read())
    assert isinstance(message, Request), name
    return message, parse(message.body)


def suites(session: SessionDescription) -> list[str]:
    (media,) = session.media
    return [str(value).split()[1] for value in media.attribute_values("crypto")]


class PeerOfferTests(SynchronousTestCase):
    def test_every_capture_parses(self) -> None:
        names = sorted(n for n in os.listdir(DIRECTORY) if n.endswith(".sip"))
        self.assertEqual(len(names), 10)
        for name in names:
            request, session = offer(name)
            self.assertEqual(request.method, "INVITE", name)
            self.assertEqual(request.headers.get("content-type"), "application/sdp", name)
            self.assertEqual(len(session.media), 1, name)

    def test_linphonec_sdes(self) -> None:
        for name, expected in (
            ("linphonec-sdes-aes128-80-1.sip", ["AES_CM_128_HMAC_SHA1_80"]),
            ("linphonec-sdes-aes256-80-1.sip", ["AES_256_CM_HMAC_SHA1_80"]),
            (
                "linphonec-sdes-default-suites-1.sip",
                ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AES_256_CM_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32"],
            ),
        ):
            _, session = offer(name)
            self.assertEqual(session.media[0].proto, "RTP/SAVP", name)
            self.assertEqual(suites(session), expected, name)

    def test_linphonec_optional_sdes_falls_back_to_plain(self) -> None:
        """Not mandatory: a refused RTP/SAVP offer is followed by a new call offering RTP/AVP."""
        (_, first), (_, second) = offer("linphonec-sdes-optional-1.sip"), offer("linphonec-sdes-optional-2.sip")
        self.assertEqual((first.media[0].proto, len(suites(first))), ("RTP/SAVP", 4))
        self.assertEqual((second.media[0].proto, suites(second)), ("RTP/AVP", []))

    def test_baresip_sdes(self) -> None:
        for name, proto in (
            ("baresip-srtp-mand-1.sip", "RTP/SAVP"),
            ("baresip-srtp-mandf-1.sip", "RTP/SAVPF"),
            ("baresip-srtp-optional-1.sip", "RTP/AVP"),  # keys offered on a plain profile
        ):
            _, session = offer(name)
            self.assertEqual(session.media[0].proto, proto, name)
            self.assertEqual(suites(session), ["AES_CM_128_HMAC_SHA1_80"], name)

    def test_dtls_offers(self) -> None:
        """Both offer actpass and a SHA-256 fingerprint, no a=crypto, no ICE, no rtcp-mux here;
        linphonec puts them on the m-line, baresip at session level."""
        _, linphonec = offer("linphonec-dtls-1.sip")
        media = linphonec.media[0]
        self.assertEqual(media.proto, "UDP/TLS/RTP/SAVP")
        self.assertEqual(media.attribute("setup"), "actpass")
        self.assertTrue(str(media.attribute("fingerprint")).startswith("SHA-256 "))
        self.assertFalse(linphonec.has_attribute("fingerprint"))

        _, baresip = offer("baresip-dtls_srtp-1.sip")
        media = baresip.media[0]
        self.assertEqual(media.proto, "UDP/TLS/RTP/SAVPF")
        self.assertIsNone(media.attribute("fingerprint"))
        self.assertEqual(baresip.attribute("setup"), "actpass")
        self.assertTrue(str(baresip.attribute("fingerprint")).startswith("SHA-256 "))
        for session in (linphonec, baresip):
            (media,) = session.media
            for name in ("crypto", "ice-ufrag", "candidate", "rtcp-mux"):
                self.assertFalse(media.has_attribute(name), name)
