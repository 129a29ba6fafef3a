"""DTLS-SRTP in SDP, certificates and fingerprints, and RFC 7983 demultiplexing."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial.unittest import SynchronousTestCase

from siprecd.media.demux import DTLS, RTP, STUN, TURN_CHANNEL, ZRTP, classify
from siprecd.sdp import SDPError, parse
from siprecd.security.certificate import (
    CertificateError,
    FingerprintMismatch,
    check_fingerprints,
    generate_certificate,
    load_certificate,
    parse_fingerprint,
)
from siprecd.security.dtls import DTLSRole
from siprecd.security.dtls_sdp import (
    answer_attributes,
    association_identity,
    choose_role,
    is_dtls_offer,
    parse_dtls_offer,
    plan_answer,
)
from tests.certs import make_test_pki

FP256 = "sha-256 " + ":".join(["AB"] * 32)
FP1 = "SHA-1 " + ":".join(["0f"] * 20)


def sdp(media_attributes: str, session_attributes: str = "", proto: str = "UDP/TLS/RTP/SAVP") -> bytes:
    text = (
        "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        + session_attributes
        + f"m=audio 4000 {proto} 0\r\n"
        + media_attributes
    )
    return text.encode()


class FingerprintTests(SynchronousTestCase):
    def test_parse_every_accepted_hash(self) -> None:
        for name, size in (("sha-1", 20), ("sha-256", 32), ("sha-384", 48), ("sha-512", 64)):
            value = f"{name.upper()} " + ":".join(["a5"] * size)
            fingerprint = parse_fingerprint(value)
            self.assertEqual((fingerprint.hash_name, fingerprint.digest), (name, b"\xa5" * size))
            self.assertEqual(str(fingerprint), f"{name} " + ":".join(["A5"] * size))

    def test_bad_fingerprints_say_what_is_wrong(self) -> None:
        for value, expected in (
            ("md5 " + ":".join(["00"] * 16), "hash 'md5' not supported"),
            ("sha-256 AB:CD", "has 2 bytes, expected 32"),
            ("sha-256 ABCD:EF", "not colon-separated hex pairs"),
            ("sha-256 ZZ:" + ":".join(["00"] * 31), "not colon-separated hex pairs"),
        ):
            with self.assertRaises(ValueError) as raised:
                parse_fingerprint(value)
            self.assertIn(expected, str(raised.exception))

    def test_generated_certificate_is_p256_self_signed(self) -> None:
        certificate = generate_certificate()
        self.assertIsInstance(certificate.private_key, ec.EllipticCurvePrivateKey)
        self.assertEqual(certificate.private_key.curve.name, "secp256r1")
        self.assertEqual(certificate.certificate.issuer, certificate.certificate.subject)
        check_fingerprints(certificate.certificate, [certificate.fingerprint("sha-1")])
        other = generate_certificate()
        with self.assertRaises(FingerprintMismatch) as raised:
            check_fingerprints(certificate.certificate, [other.fingerprint()])
        self.assertIn(str(certificate.fingerprint()), str(raised.exception))
        with self.assertRaises(FingerprintMismatch):
            check_fingerprints(certificate.certificate, [])

    def test_load_configured_certificate(self) -> None:
        pki = make_test_pki(self.mktemp())
        with open(pki.server_cert, "rb") as cert, open(pki.server_key, "rb") as key:
            cert_pem, key_pem = cert.read(), key.read()
        loaded = load_certificate(cert_pem, key_pem, where="[security] dtls_certificate")
        self.assertEqual(loaded.fingerprint().hash_name, "sha-256")
        with open(pki.client_key, "rb") as other:
            with self.assertRaises(CertificateError) as raised:
                load_certificate(cert_pem, other.read(), where="[security] dtls_certificate")
        self.assertIn("does not match the certificate", str(raised.exception))
        with self.assertRaises(CertificateError) as raised:
            load_certificate(b"junk", key_pem, where="[security] dtls_certificate /x.pem")
        self.assertIn("/x.pem: not a PEM certificate", str(raised.exception))
        with self.assertRaises(CertificateError) as raised:
            load_certificate(cert_pem, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", where="k")
        self.assertIn("private key unusable", str(raised.exception))
        self.assertNotIn("AAAA", str(raised.exception))


class OfferTests(SynchronousTestCase):
    def offer(self, *args: str, **kwargs: str):
        session = parse(sdp(*args, **kwargs))
        return session.media[0], session

    def test_media_level_attributes(self) -> None:
        m, session = self.offer(f"a=setup:actpass\r\na=fingerprint:{FP256}\r\na=fingerprint:{FP1}\r\na=tls-id:abcdefghijklmnopqrstuv\r\n")
        self.assertTrue(is_dtls_offer(m, session))
        offer = parse_dtls_offer(m, session, index=0)
        self.assertEqual(offer.setup, "actpass")
        self.assertEqual([f.hash_name for f in offer.fingerprints], ["sha-256", "sha-1"])
        self.assertEqual(offer.tls_id, "abcdefghijklmnopqrstuv")

    def test_session_level_fingerprint_and_setup(self) -> None:
        m, session = self.offer("", f"a=fingerprint:{FP256}\r\na=setup:PASSIVE\r\n", proto="UDP/TLS/RTP/SAVPF")
        offer = parse_dtls_offer(m, session)
        self.assertEqual((offer.setup, offer.tls_id), ("passive", None))
        self.assertEqual(len(offer.fingerprints), 1)

    def test_media_level_wins_over_session_level(self) -> None:
        m, session = self.offer(f"a=fingerprint:{FP1}\r\na=setup:active\r\n", f"a=fingerprint:{FP256}\r\na=setup:passive\r\n")
        offer = parse_dtls_offer(m, session)
        self.assertEqual(([f.hash_name for f in offer.fingerprints], offer.setup), (["sha-1"], "active"))

    def test_missing_setup_means_active(self) -> None:
        m, session = self.offer(f"a=fingerprint:{FP256}\r\n")
        self.assertEqual(parse_dtls_offer(m, session).setup, "active")

    def test_unknown_hash_beside_a_known_one_is_skipped(self) -> None:
        m, session = self.offer(f"a=fingerprint:md2 00:11\r\na=fingerprint:{FP256}\r\n")
        self.assertEqual([f.hash_name for f in parse_dtls_offer(m, session).fingerprints], ["sha-256"])

    def test_errors_name_the_m_line(self) -> None:
        for attributes, expected in (
            ("a=setup:actpass\r\n", "m-line 2: DTLS-SRTP offer has no a=fingerprint"),
            ("a=fingerprint:md5 00:11\r\n", "m-line 2: a=fingerprint unusable: fingerprint hash 'md5'"),
            (f"a=fingerprint:{FP256}\r\na=setup:both\r\n", "m-line 2: a=setup:both is not one of"),
            (f"a=fingerprint:{FP256}\r\na=tls-id:\r\n", "m-line 2: a=tls-id is empty"),
        ):
            m, session = self.offer(attributes)
            with self.assertRaises(SDPError) as raised:
                parse_dtls_offer(m, session, index=1)
            self.assertIn(expected, str(raised.exception))

    def test_which_offers_are_dtls(self) -> None:
        self.assertFalse(is_dtls_offer(*self.offer("", proto="RTP/AVP")))
        self.assertFalse(is_dtls_offer(*self.offer("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n", proto="RTP/SAVP")))
        self.assertTrue(is_dtls_offer(*self.offer(f"a=fingerprint:{FP256}\r\n", proto="RTP/SAVP")))
        self.assertTrue(is_dtls_offer(*self.offer("", proto="UDP/TLS/RTP/SAVPF")))


class AnswerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ours = generate_certificate().fingerprint()

    def offer(self, attributes: str):
        session = parse(sdp(attributes))
        return parse_dtls_offer(session.media[0], session)

    def test_roles(self) -> None:
        self.assertIs(choose_role("actpass", DTLSRole.ACTIVE), DTLSRole.ACTIVE)
        self.assertIs(choose_role("actpass", DTLSRole.PASSIVE), DTLSRole.PASSIVE)
        self.assertIs(choose_role("active", DTLSRole.ACTIVE), DTLSRole.PASSIVE)
        self.assertIs(choose_role("passive", DTLSRole.PASSIVE), DTLSRole.ACTIVE)
        self.assertIsNone(choose_role("holdconn", DTLSRole.ACTIVE))

    def test_answer_attributes(self) -> None:
        offer = self.offer(f"a=fingerprint:{FP256}\r\na=setup:actpass\r\na=tls-id:abcdefghijklmnopqrstuv\r\n")
        answer = plan_answer(offer, preferred=DTLSRole.ACTIVE, fingerprint=self.ours)
        attributes = dict(answer_attributes(answer))
        self.assertEqual(attributes["setup"], "active")
        self.assertEqual(attributes["fingerprint"], str(self.ours))
        self.assertTrue(str(attributes["fingerprint"]).startswith("sha-256 "))
        self.assertGreaterEqual(len(attributes["tls-id"] or ""), 20)
        self.assertNotEqual(attributes["tls-id"], "abcdefghijklmnopqrstuv")
        # No tls-id offered: none answered.
        plain = plan_answer(self.offer(f"a=fingerprint:{FP256}\r\n"), preferred=DTLSRole.ACTIVE, fingerprint=self.ours)
        self.assertNotIn("tls-id", dict(answer_attributes(plain)))
        self.assertEqual(plain.setup, "passive")  # the offer (no a=setup) is active

    def test_reinvite_keeps_or_renews_the_association(self) -> None:
        base = f"a=fingerprint:{FP256}\r\na=tls-id:abcdefghijklmnopqrstuv\r\n"
        first = association_identity(self.offer(base + "a=setup:actpass\r\n"), DTLSRole.ACTIVE)
        self.assertEqual(first, association_identity(self.offer(base + "a=setup:actpass\r\n"), DTLSRole.ACTIVE))
        # The peer now says passive: the SRS stays active, the association stays.
        self.assertEqual(first, association_identity(self.offer(base + "a=setup:passive\r\n"), DTLSRole.ACTIVE))
        for changed in (
            f"a=fingerprint:{FP1}\r\na=setup:actpass\r\na=tls-id:abcdefghijklmnopqrstuv\r\n",  # new certificate
            f"a=fingerprint:{FP256}\r\na=setup:actpass\r\na=tls-id:zzzzzzzzzzzzzzzzzzzzzz\r\n",  # new tls-id
            base + "a=setup:active\r\n",  # forces the SRS passive
        ):
            self.assertNotEqual(first, association_identity(self.offer(changed), DTLSRole.ACTIVE), changed)

    def test_holdconn(self) -> None:
        answer = plan_answer(self.offer(f"a=fingerprint:{FP256}\r\na=setup:holdconn\r\n"), preferred=DTLSRole.ACTIVE, fingerprint=self.ours)
        self.assertEqual((answer.role, answer.setup), (None, "holdconn"))


class DemuxTests(SynchronousTestCase):
    def test_rfc7983_ranges(self) -> None:
        expected = {0: STUN, 3: STUN, 4: None, 16: ZRTP, 19: ZRTP, 20: DTLS, 22: DTLS, 63: DTLS,
                    64: TURN_CHANNEL, 79: TURN_CHANNEL, 80: None, 127: None, 128: RTP, 0x80: RTP,
                    191: RTP, 192: None, 255: None}
        for byte, kind in expected.items():
            self.assertEqual(classify(bytes([byte]) + b"rest"), kind, byte)
        self.assertIsNone(classify(b""))

