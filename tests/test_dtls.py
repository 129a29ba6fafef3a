"""DTLS-SRTP endpoints: two real OpenSSL endpoints in-process over fake transports."""

from __future__ import annotations

import struct
import time

import pylibsrtp
from twisted.internet.task import Clock
from twisted.trial import unittest

from siprecd.security.certificate import generate_certificate
from siprecd.security.suites import DTLS_PROFILES, SUITES
from siprecd.security.dtls import (
    DTLSContext,
    DTLSEndpoint,
    DTLSRole,
    SRTPKeys,
    pack_datagrams,
    split_keying_material,
)

class Side:
    """One endpoint, what it sent, and how it ended."""

    def __init__(self, role: DTLSRole, clock: Clock, profiles: tuple[str, ...] | None = None) -> None:
        self.certificate = generate_certificate()
        self.context = DTLSContext(self.certificate, *(() if profiles is None else (profiles,)))
        self.role = role
        self.clock = clock
        self.outbox: list[bytes] = []
        self.keys: list[SRTPKeys] = []
        self.failures: list[str] = []
        self.endpoint: DTLSEndpoint | None = None

    def connect(self, peer: Side, *, fingerprints=None, timeout: float = 30.0) -> DTLSEndpoint:
        self.endpoint = DTLSEndpoint(
            self.context,
            role=self.role,
            remote_fingerprints=fingerprints if fingerprints is not None else [peer.certificate.fingerprint()],
            send=self.outbox.append,
            clock=self.clock,
            on_keys=self.keys.append,
            on_failure=self.failures.append,
            handshake_timeout=timeout,
        )
        return self.endpoint


def deliver(src: Side, dst: Side, *, drop: bool = False) -> int:
    """Move everything ``src`` sent to ``dst`` (or lose it); how many datagrams there were."""
    count = len(src.outbox)
    datagrams, src.outbox[:] = list(src.outbox), []
    if not drop:
        for datagram in datagrams:
            assert dst.endpoint is not None
            dst.endpoint.datagram_received(datagram)
    return count


def run(a: Side, b: Side, rounds: int = 10) -> None:
    for _ in range(rounds):
        if not (a.outbox or b.outbox):
            return
        deliver(a, b)
        deliver(b, a)


def wait_for_openssl_timer(side: Side) -> None:
    """Run ``side``'s clock until it retransmits.  OpenSSL gates each retransmission on its
    own wall clock as well as ours, so real time has to pass too (about a second the first
    time); both clocks move in small steps together."""
    assert side.endpoint is not None
    before = side.endpoint.retransmissions
    for _ in range(40):
        time.sleep(0.1)
        side.clock.advance(0.1)
        if side.endpoint.retransmissions > before:
            return
    raise AssertionError("no retransmission within 4 s")


def rtp_packet(seq: int, ssrc: int = 0x1234ABCD) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + bytes(range(160))


def assert_keys_work(test: unittest.TestCase, sender: SRTPKeys, receiver: SRTPKeys) -> None:
    """What the sender protects with its own write key, the receiver unprotects with the
    peer key it was given: RTP and RTCP, with libsrtp (pylibsrtp) on both sides."""
    profile = SUITES[DTLS_PROFILES[sender.profile]].libsrtp_profile
    out = pylibsrtp.Session(
        policy=pylibsrtp.Policy(
            key=sender.local_key + sender.local_salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=profile,
        )
    )
    inbound = pylibsrtp.Session(
        policy=pylibsrtp.Policy(
            key=receiver.remote_key + receiver.remote_salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=profile,
        )
    )
    for seq in (1, 2, 3):
        plain = rtp_packet(seq)
        protected = out.protect(plain)
        test.assertNotEqual(protected[12:], plain[12:])
        test.assertEqual(inbound.unprotect(protected), plain)
    rtcp = struct.pack("!BBHI", 0x80, 201, 1, 0x1234ABCD)
    test.assertEqual(inbound.unprotect_rtcp(out.protect_rtcp(rtcp)), rtcp)


class HandshakeTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.active = Side(DTLSRole.ACTIVE, self.clock)
        self.passive = Side(DTLSRole.PASSIVE, self.clock)

    def tearDown(self) -> None:
        for side in (self.active, self.passive):
            if side.endpoint is not None:
                side.endpoint.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def connect(self, **kwargs) -> None:
        self.active.connect(self.passive, **kwargs.get("active", {}))
        self.passive.connect(self.active, **kwargs.get("passive", {}))
        self.passive.endpoint.start()
        self.active.endpoint.start()

    def test_handshake_exports_keys_split_by_role(self) -> None:
        self.connect()
        run(self.active, self.passive)
        self.assertEqual((self.active.failures, self.passive.failures), ([], []))
        [a], [p] = self.active.keys, self.passive.keys
        self.assertEqual(a.profile, "SRTP_AES128_CM_SHA1_80")
        self.assertEqual(p.profile, a.profile)
        # Each side decrypts with the other's write key, and the two directions differ.
        self.assertEqual(a.remote_key, p.local_key)
        self.assertEqual(a.remote_salt, p.local_salt)
        self.assertEqual(a.local_key, p.remote_key)
        self.assertNotEqual(a.local_key, a.remote_key)
        assert_keys_work(self, p, a)  # the SRS active: it decrypts what the passive peer sends
        assert_keys_work(self, a, p)  # the SRS passive
        self.assertEqual(self.active.endpoint.state, "connected")
        self.assertEqual(self.passive.endpoint.state, "connected")
        # Keys never show in a repr (and so never in a log line).
        self.assertNotIn(a.remote_key.hex(), repr(a))
        self.assertNotIn(repr(a.remote_key), repr(a))

    def test_every_profile(self) -> None:
        for profile, (key_len, salt_len) in (
            ("SRTP_AES128_CM_SHA1_32", (16, 14)),
            ("SRTP_AEAD_AES_128_GCM", (16, 12)),
            ("SRTP_AEAD_AES_256_GCM", (32, 12)),
        ):
            clock = Clock()
            active = Side(DTLSRole.ACTIVE, clock, (profile,))
            passive = Side(DTLSRole.PASSIVE, clock, (profile, "SRTP_AES128_CM_SHA1_80"))
            active.connect(passive)
            passive.connect(active)
            active.endpoint.start()
            run(active, passive)
            [a], [p] = active.keys, passive.keys
            self.assertEqual((a.profile, p.profile), (profile, profile))
            self.assertEqual((len(a.remote_key), len(a.remote_salt)), (key_len, salt_len))
            assert_keys_work(self, p, a)
            active.endpoint.close()
            passive.endpoint.close()
            self.assertEqual(clock.getDelayedCalls(), [])

    def test_no_common_profile_fails_with_reason(self) -> None:
        clock = Clock()
        active = Side(DTLSRole.ACTIVE, clock, ("SRTP_AEAD_AES_256_GCM",))
        passive = Side(DTLSRole.PASSIVE, clock, ("SRTP_AES128_CM_SHA1_32",))
        active.connect(passive)
        passive.connect(active)
        active.endpoint.start()
        run(active, passive)
        self.assertEqual(active.keys, [])
        self.assertTrue(active.failures, "the active side must report the failure")
        self.assertIn("SRTP profile", active.failures[0] + (passive.failures or [""])[0])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lost_client_hello_is_retransmitted(self) -> None:
        self.connect()
        self.assertEqual(deliver(self.active, self.passive, drop=True), 1)
        self.assertEqual(self.passive.outbox, [])
        wait_for_openssl_timer(self.active)
        self.assertGreaterEqual(self.active.endpoint.retransmissions, 1)
        self.assertTrue(self.active.outbox, "ClientHello not retransmitted")
        run(self.active, self.passive)
        self.assertEqual(len(self.active.keys), 1)
        self.assertEqual(len(self.passive.keys), 1)
        assert_keys_work(self, self.passive.keys[0], self.active.keys[0])

    def test_lost_server_flight_is_retransmitted(self) -> None:
        self.connect()
        deliver(self.active, self.passive)  # ClientHello arrives
        self.assertGreater(deliver(self.passive, self.active, drop=True), 0)  # ServerHello... lost
        wait_for_openssl_timer(self.active)
        self.assertTrue(self.active.outbox, "client did not retransmit after a lost server flight")
        run(self.active, self.passive)
        self.assertEqual(len(self.active.keys), 1)
        self.assertEqual(len(self.passive.keys), 1)

    def test_lost_final_flight_is_answered_after_the_handshake(self) -> None:
        # The passive side finishes on the client's Finished; its own CCS/Finished is lost, so
        # the client retransmits and the already connected server must answer again.
        self.connect()
        deliver(self.active, self.passive)
        deliver(self.passive, self.active)
        deliver(self.active, self.passive)
        self.assertEqual(len(self.passive.keys), 1)
        deliver(self.passive, self.active, drop=True)
        self.assertEqual(self.active.keys, [])
        wait_for_openssl_timer(self.active)
        self.assertTrue(self.active.outbox)
        run(self.active, self.passive)
        self.assertEqual(len(self.active.keys), 1)
        self.assertEqual(len(self.passive.keys), 1)
        assert_keys_work(self, self.passive.keys[0], self.active.keys[0])

    def test_fingerprint_mismatch_refused(self) -> None:
        stranger = generate_certificate()
        self.connect(active={"fingerprints": [stranger.fingerprint()]})
        run(self.active, self.passive)
        self.assertEqual(self.active.keys, [])
        [reason] = self.active.failures
        self.assertIn("matches none", reason)
        self.assertIn(str(self.passive.certificate.fingerprint()), reason)
        self.assertEqual(self.active.endpoint.state, "failed")
        # The alert told the passive side, which must not have keys either.
        self.assertEqual(self.passive.keys, [])

    def test_passive_side_checks_the_client_certificate(self) -> None:
        stranger = generate_certificate()
        self.connect(passive={"fingerprints": [stranger.fingerprint("sha-512")]})
        run(self.active, self.passive)
        self.assertEqual(self.passive.keys, [])
        self.assertIn("matches none", self.passive.failures[0])
        self.assertEqual(self.active.keys, [])

    def test_any_offered_hash_is_accepted(self) -> None:
        fingerprints = [generate_certificate().fingerprint(), self.passive.certificate.fingerprint("sha-384")]
        self.connect(active={"fingerprints": fingerprints}, passive={"fingerprints": [self.active.certificate.fingerprint("sha-1")]})
        run(self.active, self.passive)
        self.assertEqual((len(self.active.keys), len(self.passive.keys)), (1, 1))

    def test_handshake_that_never_completes_times_out(self) -> None:
        self.connect(active={"timeout": 10.0})
        # Nothing the active side sends ever arrives; run its retransmission timer on the fake
        # clock (OpenSSL's own timer lags, which must not make it spin or crash).
        for _ in range(20):
            deliver(self.active, self.passive, drop=True)
            self.clock.advance(1.0)
        [reason] = self.active.failures
        self.assertIn("did not complete within 10 s", reason)
        self.assertIn("active", reason)
        self.assertEqual(self.active.endpoint.state, "failed")
        self.active.endpoint.datagram_received(b"\x16\xfe\xfd" + b"\x00" * 20)  # ignored now
        self.assertEqual(len(self.active.failures), 1)

    def test_passive_side_never_contacted_times_out(self) -> None:
        self.passive.connect(self.active, timeout=5.0)
        self.passive.endpoint.start()
        self.clock.advance(5.0)
        self.assertIn("did not complete within 5 s", self.passive.failures[0])

    def test_garbage_is_reported_not_raised(self) -> None:
        self.connect()
        self.passive.endpoint.datagram_received(b"\x16\xfe\xfd" + b"\xff" * 40)
        self.passive.endpoint.datagram_received(b"\x17" * 3)
        # Garbage alone does not complete or crash anything; a real handshake still can.
        run(self.active, self.passive)
        self.assertEqual(len(self.active.keys) + len(self.active.failures), 1)

    def test_close_notify_from_peer(self) -> None:
        self.connect()
        run(self.active, self.passive)
        self.active.endpoint.close()
        deliver(self.active, self.passive)
        self.assertEqual(self.passive.endpoint.state, "closed")


class FlightPackingTests(unittest.TestCase):
    def record(self, length: int) -> bytes:
        return b"\x16\xfe\xfd" + b"\x00" * 8 + length.to_bytes(2, "big") + b"x" * length

    def test_records_never_split_and_datagrams_fit(self) -> None:
        records = [self.record(n) for n in (100, 500, 700, 90, 1150)]
        datagrams = pack_datagrams(b"".join(records), 1200)
        self.assertEqual(b"".join(datagrams), b"".join(records))
        self.assertEqual([len(d) for d in datagrams], [113 + 513, 713 + 103, 1163])
        self.assertTrue(all(len(d) <= 1200 for d in datagrams))

    def test_split_keying_material_by_role(self) -> None:
        material = bytes(range(60))  # AES128_CM: 16-byte keys, 14-byte salts
        active = split_keying_material(material, "SRTP_AES128_CM_SHA1_80", DTLSRole.ACTIVE)
        passive = split_keying_material(material, "SRTP_AES128_CM_SHA1_80", DTLSRole.PASSIVE)
        self.assertEqual(active.local_key, material[0:16])  # client write key
        self.assertEqual(active.remote_key, material[16:32])  # server write key
        self.assertEqual(active.local_salt, material[32:46])
        self.assertEqual(active.remote_salt, material[46:60])
        self.assertEqual((passive.remote_key, passive.local_key), (active.local_key, active.remote_key))
        with self.assertRaises(ValueError):
            split_keying_material(material[:-1], "SRTP_AES128_CM_SHA1_80", DTLSRole.ACTIVE)
