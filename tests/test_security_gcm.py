"""The RFC 7714 AEAD-GCM transform: the RFC's vectors, pylibsrtp both ways, replay, resumption.

Vectors: RFC 7714 §16 (SRTP, AES-128 and AES-256) and §17 (SRTCP encrypted and
authentication-only) with session keys, plus the IVs.  Round trips: master keys through
the RFC 7714 §11 key derivation, protected here and unprotected by libsrtp (pylibsrtp's GCM
profiles) and the other way round, byte for byte, across a sequence-number rollover.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pylibsrtp
from twisted.trial.unittest import SynchronousTestCase

from siprecd.media.rtcp import build_receiver_report
from siprecd.media.rtp import build_rtp
from siprecd.security.gcm import AESGCMTransform, SessionKeys, rtcp_iv, rtp_iv, session_keys
from siprecd.security.replay import REPLAY_WINDOW, TransformError
from siprecd.security.srtp import InboundSRTP, OutboundSRTP, SRTPError
from siprecd.security.suites import SUITES

VECTORS = json.loads((Path(__file__).parent / "data" / "srtp-vectors" / "rfc7714_aead_gcm.json").read_text())
GCM_SUITES = ("AEAD_AES_128_GCM", "AEAD_AES_256_GCM")


def h(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name])


def vector_transform(bits: str, **options: Any) -> AESGCMTransform:
    key, salt = h(f"session_key_{bits}"), h("session_salt")
    return AESGCMTransform.from_session_keys(SessionKeys(key, salt, key, salt), **options)


def rtp(seq: int, ssrc: int = 0xCAFEBABE, payload: bytes = b"\xab" * 160, **kw: Any) -> bytes:
    return build_rtp(0, seq & 0xFFFF, 160 * seq & 0xFFFFFFFF, ssrc, payload, **kw)


def material(suite: str) -> tuple[bytes, bytes]:
    s = SUITES[suite]
    return os.urandom(s.key_length), os.urandom(s.salt_length)


def libsrtp(suite: str, key: bytes, salt: bytes, outbound: bool) -> pylibsrtp.Session:
    ssrc_type = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(
        pylibsrtp.Policy(key=key + salt, ssrc_type=ssrc_type, srtp_profile=SUITES[suite].libsrtp_profile)
    )


class RFC7714VectorTests(SynchronousTestCase):
    def test_ivs(self) -> None:
        salt = h("session_salt")
        packet = h("rtp_plaintext")
        seq, ssrc = struct.unpack_from("!HxxxxI", packet, 2)
        self.assertEqual(rtp_iv(salt, ssrc, VECTORS["rtp_roc"], seq).hex(), VECTORS["rtp_iv_expected"])
        report = h("rtcp_plaintext")
        ssrc = struct.unpack_from("!I", report, 4)[0]
        self.assertEqual(rtcp_iv(salt, ssrc, VECTORS["srtcp_index"]).hex(), VECTORS["srtcp_iv_expected"])

    def test_srtp_128_and_256(self) -> None:
        for bits in ("128", "256"):
            protected = h(f"srtp_{bits}_protected")
            self.assertEqual(vector_transform(bits).protect_rtp(h("rtp_plaintext")), protected, bits)
            self.assertEqual(vector_transform(bits).unprotect_rtp(protected), h("rtp_plaintext"), bits)

    def test_srtcp_encrypted_and_authentication_only(self) -> None:
        index = VECTORS["srtcp_index"]
        ssrc = struct.unpack_from("!I", h("rtcp_plaintext"), 4)[0]
        for bits in ("128", "256"):
            for name, encrypt in ((f"srtcp_{bits}_encrypted", True), (f"srtcp_{bits}_auth_only", False)):
                sender = vector_transform(bits, srtcp_next={ssrc: index}, encrypt_rtcp=encrypt)
                self.assertEqual(sender.protect_rtcp(h("rtcp_plaintext")), h(name), name)
                # A receiver honours the packet's own (authenticated) E flag.
                self.assertEqual(vector_transform(bits).unprotect_rtcp(h(name)), h("rtcp_plaintext"), name)

    def test_vectors_tampered(self) -> None:
        for name in ("srtp_128_protected", "srtp_256_protected"):
            for position in (1, 13, -1):  # header (AAD), ciphertext, tag
                packet = bytearray(h(name))
                packet[position] ^= 0x01
                self.assertRaises(TransformError, vector_transform(name[5:8]).unprotect_rtp, bytes(packet))
        for name in ("srtcp_128_encrypted", "srtcp_128_auth_only", "srtcp_256_encrypted", "srtcp_256_auth_only"):
            for position in (5, 20, -6, -1, -4):  # header, body, tag, index, E flag
                packet = bytearray(h(name))
                packet[position] ^= 0x80 if position == -4 else 0x01
                self.assertRaises(TransformError, vector_transform(name[6:9]).unprotect_rtcp, bytes(packet))

    def test_key_derivation_is_libsrtps(self) -> None:
        """RFC 7714 §11 on a master key: the session keys under which libsrtp protected a packet."""
        for suite in GCM_SUITES:
            key, salt = material(suite)
            derived = session_keys(key, salt)
            self.assertEqual((len(derived.rtp_key), len(derived.rtp_salt)), (len(key), 12))
            packet = rtp(100)
            self.assertEqual(
                AESGCMTransform.from_session_keys(derived).protect_rtp(packet),
                libsrtp(suite, key, salt, True).protect(packet),
            )
            self.assertNotIn(key.hex(), repr(derived))


class AgainstLibsrtpTests(SynchronousTestCase):
    """Master keys, both directions, byte for byte, across the rollover (ROC 0 -> 1)."""

    def test_srtp_both_directions_over_a_rollover(self) -> None:
        for suite in GCM_SUITES:
            key, salt = material(suite)
            ours_out, ours_in = AESGCMTransform(key, salt), AESGCMTransform(key, salt)
            lib_out, lib_in = libsrtp(suite, key, salt, True), libsrtp(suite, key, salt, False)
            for seq in range(65530, 65546):
                packet = rtp(seq, payload=os.urandom(100))
                protected = ours_out.protect_rtp(packet)
                self.assertEqual(protected, lib_out.protect(packet), f"{suite} seq {seq}")
                self.assertEqual(lib_in.unprotect(protected), packet)
                self.assertEqual(ours_in.unprotect_rtp(protected), packet)
            self.assertEqual(ours_in._rtp[0xCAFEBABE].roc, 1)

    def test_libsrtp_protects_we_unprotect(self) -> None:
        """Independent direction: only libsrtp protects, and we decrypt, with CSRCs and an extension."""
        for suite in GCM_SUITES:
            key, salt = material(suite)
            lib_out, ours_in = libsrtp(suite, key, salt, True), InboundSRTP(suite, key, salt, initial_roc=0)
            self.assertFalse(ours_in.on_libsrtp)
            for seq in range(65534, 65540):
                packet = rtp(seq, payload=os.urandom(33), csrcs=[7, 8], extension=(0xBEDE, b"\x10\xaa\x00\x00"))
                self.assertEqual(ours_in.unprotect_rtp(lib_out.protect(packet)), packet, suite)

    def test_srtcp_both_directions(self) -> None:
        for suite in GCM_SUITES:
            key, salt = material(suite)
            ours_out, ours_in = AESGCMTransform(key, salt), AESGCMTransform(key, salt)
            lib_out, lib_in = libsrtp(suite, key, salt, True), libsrtp(suite, key, salt, False)
            for n in range(3):
                report = build_receiver_report(0x1234, [], f"siprecd-{n}")
                protected = ours_out.protect_rtcp(report)
                self.assertEqual(protected, lib_out.protect_rtcp(report), suite)
                self.assertEqual(struct.unpack_from("!I", protected, len(protected) - 4)[0], 0x80000000 | (n + 1))
                self.assertEqual(lib_in.unprotect_rtcp(protected), report)
                self.assertEqual(ours_in.unprotect_rtcp(protected), report)


class TransformTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.key, self.salt = material("AEAD_AES_256_GCM")
        self.sender = AESGCMTransform(self.key, self.salt)
        self.receiver = AESGCMTransform(self.key, self.salt)

    def test_replay_and_window(self) -> None:
        packets = [self.sender.protect_rtp(rtp(seq)) for seq in range(200)]
        self.receiver.unprotect_rtp(packets[150])
        self.receiver.unprotect_rtp(packets[149])  # late, inside the window
        self.assertRaises(TransformError, self.receiver.unprotect_rtp, packets[149])
        self.assertRaises(TransformError, self.receiver.unprotect_rtp, packets[150])
        self.assertRaises(TransformError, self.receiver.unprotect_rtp, packets[150 - REPLAY_WINDOW])  # too old
        self.receiver.unprotect_rtp(packets[151])
        reports = [self.sender.protect_rtcp(build_receiver_report(5, [], "x")) for _ in range(3)]
        self.receiver.unprotect_rtcp(reports[2])
        self.receiver.unprotect_rtcp(reports[0])
        self.assertRaises(TransformError, self.receiver.unprotect_rtcp, reports[0])
        self.assertRaises(TransformError, self.receiver.unprotect_rtcp, reports[2])

    def test_forgery_moves_no_state(self) -> None:
        """A forged packet far ahead must not advance the window (and lock out the real stream)."""
        forged = bytearray(self.sender.protect_rtp(rtp(30000)))
        forged[-1] ^= 1
        self.receiver.unprotect_rtp(self.sender.protect_rtp(rtp(1)))
        self.assertRaises(TransformError, self.receiver.unprotect_rtp, bytes(forged))
        self.assertEqual(self.receiver.unprotect_rtp(self.sender.protect_rtp(rtp(2))), rtp(2))

    def test_tampered_and_truncated(self) -> None:
        protected = self.sender.protect_rtp(rtp(1))
        for cut in (11, 12, 12 + 15, len(protected) - 1):
            self.assertRaises(TransformError, self.receiver.unprotect_rtp, protected[:cut])
        self.assertRaises(TransformError, self.receiver.unprotect_rtp, b"\x00" * 40)  # not RTP
        self.assertRaises(TransformError, self.receiver.unprotect_rtcp, b"\x80\xc9\x00\x01" * 6)
        self.assertRaises(TransformError, self.receiver.unprotect_rtcp, b"\x80\xc9\x00\x01")
        self.assertRaises(TransformError, self.sender.protect_rtcp, b"\x80\xc9\x00")
        other = AESGCMTransform(*material("AEAD_AES_256_GCM"))
        self.assertRaises(TransformError, other.unprotect_rtp, protected)  # another key
        self.assertEqual(self.receiver.unprotect_rtp(protected), rtp(1))  # the real one still passes

    def test_reordered_across_the_wrap(self) -> None:
        before = [self.sender.protect_rtp(rtp(seq)) for seq in (65534, 65535, 0, 1)]
        for index in (0, 2, 3, 1):  # 65535 arrives after the wrap: still ROC 0
            self.receiver.unprotect_rtp(before[index])
        self.assertEqual(self.receiver._rtp[0xCAFEBABE].roc, 1)

    def test_bad_keys(self) -> None:
        self.assertRaises(ValueError, AESGCMTransform, b"\0" * 16, b"\0" * 14)
        self.assertRaises(ValueError, AESGCMTransform, b"\0" * 24, b"\0" * 12)
        self.assertRaises(ValueError, AESGCMTransform, b"\0" * 16, b"\0" * 12, initial_roc=-1)
        self.assertRaises(ValueError, AESGCMTransform, b"\0" * 16, b"\0" * 12, initial_roc=1 << 32)
        self.assertRaises(ValueError, AESGCMTransform, b"\0" * 16, b"\0" * 12, received={1: 1 << 48})
        self.assertRaises(ValueError, InboundSRTP, "AES_256_CM_HMAC_SHA1_80", b"\0" * 32, b"\0" * 14, initial_roc=-1)


class ResumeTests(SynchronousTestCase):
    """A stream past its first rollover, resumed by a fresh context (after a restart)."""

    def libsrtp_past_rollovers(self, suite: str, key: bytes, salt: bytes, rollovers: int) -> tuple[pylibsrtp.Session, int]:
        """A libsrtp sender that has sent ``rollovers`` full cycles: its ROC is ``rollovers``."""
        sender = libsrtp(suite, key, salt, True)
        for seq in range(0, rollovers * 65536, 97):  # gaps well under 2^15: libsrtp sees each wrap
            sender.protect(rtp(seq, payload=b""))
        return sender, rollovers * 65536

    def test_initial_roc_resumes_libsrtp_stream(self) -> None:
        for suite in GCM_SUITES:
            key, salt = material(suite)
            sender, next_index = self.libsrtp_past_rollovers(suite, key, salt, 2)
            later = [sender.protect(rtp(next_index + n)) for n in range(5)]  # ROC 2, seq 0..4
            fresh = InboundSRTP(suite, key, salt)  # the default: libsrtp, ROC 0
            self.assertTrue(fresh.on_libsrtp)
            self.assertRaises(SRTPError, fresh.unprotect_rtp, later[0])
            resumed = InboundSRTP(suite, key, salt, initial_roc=2)
            self.assertFalse(resumed.on_libsrtp)
            for n, packet in enumerate(later):
                self.assertEqual(resumed.unprotect_rtp(packet), rtp(next_index + n), suite)
            self.assertRaises(SRTPError, resumed.unprotect_rtp, later[4])  # replay still caught

    def test_initial_roc_with_sequence_about_to_wrap(self) -> None:
        """ROC 1 given, the stream near 65535: the next wrap takes it to ROC 2."""
        key, salt = material("AEAD_AES_128_GCM")
        sender = AESGCMTransform(key, salt, initial_roc=1)
        receiver = AESGCMTransform(key, salt, initial_roc=1)
        lib_in = libsrtp("AEAD_AES_128_GCM", key, salt, False)
        for seq in range(65533, 65540):
            protected = sender.protect_rtp(rtp(seq))
            self.assertEqual(receiver.unprotect_rtp(protected), rtp(seq))
            self.assertRaises(pylibsrtp.Error, lib_in.unprotect, protected)  # libsrtp assumes ROC 0
        self.assertEqual(receiver._rtp[0xCAFEBABE].roc, 2)

    def test_received_highest_index(self) -> None:
        """Per-SSRC highest index (what a state store keeps): estimation and replay start there."""
        key, salt = material("AEAD_AES_256_GCM")
        sender = AESGCMTransform(key, salt, initial_roc=3)
        packets = {seq: sender.protect_rtp(rtp(seq)) for seq in (65500, 65535, 2)}
        receiver = AESGCMTransform(key, salt, received={0xCAFEBABE: 3 << 16 | 65535})
        self.assertRaises(TransformError, receiver.unprotect_rtp, packets[65535])  # already seen
        self.assertEqual(receiver.unprotect_rtp(packets[2]), rtp(2))  # after the wrap: ROC 4
        self.assertEqual(receiver.unprotect_rtp(packets[65500]), rtp(65500))  # late, ROC 3, in the window
        self.assertEqual(receiver._rtp[0xCAFEBABE].roc, 4)
        # Without the carried index the same receiver would take ROC 0 and fail.
        self.assertRaises(TransformError, AESGCMTransform(key, salt).unprotect_rtp, packets[2])

    def test_every_suite_takes_the_python_path_with_a_roc(self) -> None:
        for suite in SUITES:
            key, salt = material(suite)
            resumed = InboundSRTP(suite, key, salt, initial_roc=1)
            self.assertFalse(resumed.on_libsrtp, suite)
            if SUITES[suite].libsrtp_profile is not None:
                self.assertTrue(InboundSRTP(suite, key, salt).on_libsrtp, suite)
            sender = libsrtp(suite, key, salt, True) if SUITES[suite].libsrtp_profile else None
            if sender is None:
                continue  # AES-256-CM: no libsrtp sender to put at ROC 1 (covered by the transform tests)
            for seq in range(0, 65536, 211):
                sender.protect(rtp(seq, payload=b""))
            sender.protect(rtp(65535, payload=b""))
            packet = rtp(65536 + 3)
            self.assertEqual(resumed.unprotect_rtp(sender.protect(packet)), packet, suite)

    def test_srtp_module_round_trip_and_mki(self) -> None:
        for suite in GCM_SUITES:
            key, salt = material(suite)
            sender = OutboundSRTP(suite, key, salt, mki=b"\x07")
            receiver = InboundSRTP(suite, key, salt, mki=b"\x07", initial_roc=0)
            for seq in range(3):
                protected = sender.protect_rtp(rtp(seq))
                # RFC 7714 §8 as libsrtp writes it: the MKI follows the AEAD tag, at the very end.
                self.assertEqual(protected[-1:], b"\x07")
                self.assertEqual(AESGCMTransform(key, salt).unprotect_rtp(protected[:-1]), rtp(seq))
                self.assertEqual(receiver.unprotect_rtp(protected), rtp(seq))
            report = build_receiver_report(9, [], "x")
            protected = sender.protect_rtcp(report)
            self.assertEqual(receiver.unprotect_rtcp(protected + b"\x07"), report)
            self.assertRaises(SRTPError, receiver.unprotect_rtcp, protected + b"\x08")
