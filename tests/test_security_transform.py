"""The RFC 3711/6188 AES-CM transform and the SRTP contexts, against vectors and pylibsrtp.

Vectors: RFC 3711 B.2 (keystream), B.3 (key derivation), RFC 6188 §7 (AES-256 keystream and
key derivation) and one AES_CM_128_HMAC_SHA1_80 packet produced by libsrtp.  Round trips: the
Python transform protects, pylibsrtp unprotects and the other way round, byte for byte equal,
for the suites both have; AES-256-CM and 32-bit SRTCP tags go through the Python path only.
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
from siprecd.security.srtp import InboundKeyRing, InboundSRTP, OutboundSRTCP, OutboundSRTP, SRTPError
from siprecd.security.suites import DTLS_PROFILES, SUITES
from siprecd.security.transform import REPLAY_WINDOW, AESCMTransform, TransformError, derive, keystream

VECTORS = Path(__file__).parent / "data" / "srtp-vectors"


def vector(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())


def rtp(seq: int, ssrc: int = 0xCAFEBABE, payload: bytes = b"\xab" * 160, **kw: Any) -> bytes:
    return build_rtp(0, seq & 0xFFFF, 160 * seq & 0xFFFFFFFF, ssrc, payload, **kw)


def material(suite: str) -> tuple[bytes, bytes]:
    s = SUITES[suite]
    return os.urandom(s.key_length), os.urandom(s.salt_length)


class VectorTests(SynchronousTestCase):
    def test_rfc3711_b2_keystream(self) -> None:
        v = vector("rfc3711_B2_aes_cm_keystream.json")
        key = bytes.fromhex(v["session_key"])
        first = bytes.fromhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")
        stream = keystream(key, first, (0xFF01 + 1) * 16)  # blocks up to counter 0xFF01
        for iv, expected in v["keystream"].items():
            block = int(iv[-4:], 16)
            self.assertEqual(stream[block * 16 : block * 16 + 16].hex().upper(), expected, iv)

    def test_rfc3711_b3_key_derivation(self) -> None:
        v = vector("rfc3711_B3_kdf.json")
        key, salt = bytes.fromhex(v["master_key"]), bytes.fromhex(v["master_salt"])
        self.assertEqual(derive(key, salt, 0, 16).hex().upper(), v["label_0x00_cipher_key"])
        self.assertEqual(derive(key, salt, 2, 14).hex().upper(), v["label_0x02_cipher_salt"])
        self.assertEqual(derive(key, salt, 1, 94).hex().upper(), v["label_0x01_auth_key_94_bytes"])

    def test_rfc6188_aes256(self) -> None:
        v = vector("rfc6188_aes256.json")
        k = v["keystream_test"]
        self.assertEqual(
            keystream(bytes.fromhex(k["session_key"]), bytes.fromhex(k["iv"]), 48).hex(), k["keystream_first_3_blocks"]
        )
        d = v["kdf_test"]
        key, salt = bytes.fromhex(d["master_key"]), bytes.fromhex(d["master_salt"])
        self.assertEqual(derive(key, salt, 0, 32).hex(), d["label_0x00_cipher_key"])
        self.assertEqual(derive(key, salt, 2, 14).hex(), d["label_0x02_cipher_salt"])
        self.assertEqual(derive(key, salt, 1, 20).hex(), d["label_0x01_auth_key"])

    def test_libsrtp_packet(self) -> None:
        v = vector("srtp_aes_cm_128_80_end_to_end.json")
        key, salt = bytes.fromhex(v["master_key"]), bytes.fromhex(v["master_salt"])
        plain, protected = bytes.fromhex(v["rtp_plaintext"]), bytes.fromhex(v["srtp_protected"])
        self.assertEqual(AESCMTransform(key, salt).protect_rtp(plain), protected)
        self.assertEqual(AESCMTransform(key, salt).unprotect_rtp(protected), plain)
        self.assertEqual(InboundSRTP("AES_CM_128_HMAC_SHA1_80", key, salt).unprotect_rtp(protected), plain)


class AgainstLibsrtpTests(SynchronousTestCase):
    """The Python transform and pylibsrtp agree byte for byte where both exist."""

    def libsrtp(self, suite: str, key: bytes, salt: bytes, outbound: bool) -> pylibsrtp.Session:
        policy = pylibsrtp.Policy(
            key=key + salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=SUITES[suite].libsrtp_profile,
        )
        return pylibsrtp.Session(policy)

    def test_both_directions_over_a_rollover(self) -> None:
        for suite in ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"):
            key, salt = material(suite)
            s = SUITES[suite]
            ours_out = AESCMTransform(key, salt, rtp_tag=s.rtp_tag, rtcp_tag=s.rtcp_tag)
            ours_in = AESCMTransform(key, salt, rtp_tag=s.rtp_tag, rtcp_tag=s.rtcp_tag)
            lib_out, lib_in = self.libsrtp(suite, key, salt, True), self.libsrtp(suite, key, salt, False)
            for seq in range(65530, 65546):  # the sequence number wraps: the ROC becomes 1
                packet = rtp(seq, payload=os.urandom(100))
                protected = ours_out.protect_rtp(packet)
                self.assertEqual(protected, lib_out.protect(packet), f"{suite} seq {seq}")
                self.assertEqual(lib_in.unprotect(protected), packet)
                self.assertEqual(ours_in.unprotect_rtp(protected), packet)
            for _ in range(3):
                report = build_receiver_report(0x1234, [], "x")
                protected = ours_out.protect_rtcp(report)
                self.assertEqual(protected, lib_out.protect_rtcp(report), suite)
                self.assertEqual(lib_in.unprotect_rtcp(protected), report)
                self.assertEqual(ours_in.unprotect_rtcp(protected), report)

    def test_header_extension_and_csrcs(self) -> None:
        key, salt = material("AES_CM_128_HMAC_SHA1_80")
        packet = bytearray(rtp(7, payload=b"\x01" * 20))
        packet[0] |= 0x11  # X bit and one CSRC
        packet[12:12] = b"\x00\x00\x00\x05" + b"\xbe\xde\x00\x01" + b"\x10\xaa\x00\x00"
        packet = bytes(packet)
        lib = self.libsrtp("AES_CM_128_HMAC_SHA1_80", key, salt, True)
        self.assertEqual(AESCMTransform(key, salt).protect_rtp(packet), lib.protect(packet))


class TransformTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.key, self.salt = material("AES_256_CM_HMAC_SHA1_80")
        self.sender = AESCMTransform(self.key, self.salt)
        self.receiver = AESCMTransform(self.key, self.salt)

    def test_replay_and_window(self) -> None:
        packets = [self.sender.protect_rtp(rtp(seq)) for seq in range(200)]
        self.receiver.unprotect_rtp(packets[150])
        self.receiver.unprotect_rtp(packets[149])  # late but inside the window: fine
        self.assertRaises(TransformError, self.receiver.unprotect_rtp, packets[149])  # replayed
        self.assertRaises(TransformError, self.receiver.unprotect_rtp, packets[150])
        self.assertRaises(TransformError, self.receiver.unprotect_rtp, packets[150 - REPLAY_WINDOW])  # too old
        self.receiver.unprotect_rtp(packets[151])

    def test_tampered_and_truncated(self) -> None:
        protected = bytearray(self.sender.protect_rtp(rtp(1)))
        protected[20] ^= 1
        self.assertRaises(TransformError, self.receiver.unprotect_rtp, bytes(protected))
        self.assertRaises(TransformError, self.receiver.unprotect_rtp, bytes(protected[:15]))
        self.assertRaises(TransformError, self.receiver.unprotect_rtp, b"\x00" * 40)  # not RTP
        self.assertRaises(TransformError, self.receiver.unprotect_rtcp, b"\x80\xc9\x00\x01")

    def test_rollover_both_ways(self) -> None:
        for seq in list(range(65500, 65536)) + list(range(0, 40)):
            self.assertEqual(self.receiver.unprotect_rtp(self.sender.protect_rtp(rtp(seq))), rtp(seq))
        # A packet from before the wrap, reordered after it, still finds ROC 0.
        late = AESCMTransform(self.key, self.salt)
        before = [late.protect_rtp(rtp(seq)) for seq in (65534, 65535, 0, 1)]
        receiver = AESCMTransform(self.key, self.salt)
        for index in (0, 2, 3, 1):
            receiver.unprotect_rtp(before[index])

    def test_srtcp_e_flag_and_index(self) -> None:
        report = build_receiver_report(0x99, [], "siprecd")
        first, second = self.sender.protect_rtcp(report), self.sender.protect_rtcp(report)
        for protected, index in ((first, 1), (second, 2)):
            word = struct.unpack_from("!I", protected, len(protected) - 14)[0]
            self.assertEqual((word >> 31, word & 0x7FFFFFFF), (1, index))
            self.assertNotEqual(protected[8:len(report)], report[8:])  # encrypted
        self.assertEqual(self.receiver.unprotect_rtcp(second), report)
        self.assertEqual(self.receiver.unprotect_rtcp(first), report)  # older, inside the window
        self.assertRaises(TransformError, self.receiver.unprotect_rtcp, first)  # replayed

    def test_unencrypted(self) -> None:
        sender = AESCMTransform(self.key, self.salt, encrypt_rtp=False, encrypt_rtcp=False)
        receiver = AESCMTransform(self.key, self.salt, encrypt_rtp=False, encrypt_rtcp=False)
        packet = rtp(5)
        protected = sender.protect_rtp(packet)
        self.assertEqual(protected[: len(packet)], packet)  # authenticated, not encrypted
        self.assertEqual(receiver.unprotect_rtp(protected), packet)
        report = build_receiver_report(1, [], "x")
        protected = sender.protect_rtcp(report)
        self.assertEqual(protected[len(report)] >> 7, 0)  # E flag clear
        self.assertEqual(receiver.unprotect_rtcp(protected), report)


class ContextTests(SynchronousTestCase):
    def test_every_suite_round_trips(self) -> None:
        for suite in SUITES:
            key, salt = material(suite)
            sender, receiver = OutboundSRTP(suite, key, salt), InboundSRTP(suite, key, salt)
            for seq in range(5):
                protected = sender.protect_rtp(rtp(seq))
                self.assertEqual(len(protected), len(rtp(seq)) + SUITES[suite].rtp_tag, suite)
                self.assertEqual(receiver.unprotect_rtp(protected), rtp(seq), suite)
            report = build_receiver_report(3, [], "x")
            self.assertEqual(receiver.unprotect_rtcp(sender.protect_rtcp(report)), report, suite)
            self.assertRaises(SRTPError, receiver.unprotect_rtp, sender.protect_rtp(rtp(9))[:-1] + b"\0")
            self.assertRaises(SRTPError, receiver.unprotect_rtcp, report)  # unauthenticated RTCP

    def test_inbound_libsrtp_contexts_share_one_packet_buffer(self) -> None:
        # One C packet buffer per thread instead of 1.5 KiB per libsrtp session; packets of
        # different sessions interleaved (and a failure between them) leave nothing behind.
        pairs = []
        for suite in ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"):
            key, salt = material(suite)
            pairs.append((OutboundSRTP(suite, key, salt), InboundSRTP(suite, key, salt)))
        buffers = {id(receiver._context._libsrtp._cdata) for _, receiver in pairs}
        self.assertEqual(len(buffers), 1)
        self.assertNotEqual(id(pairs[0][0]._context._libsrtp._cdata), buffers.pop())  # outbound: its own
        for seq in range(4):
            for n, (sender, receiver) in enumerate(pairs):
                packet = build_rtp(0, seq, seq * 160, 0x1000 + n, bytes([n]) * (100 + 20 * n))
                self.assertEqual(receiver.unprotect_rtp(sender.protect_rtp(packet)), packet)
                stray = build_rtp(0, seq, seq * 160, 0x3000 + 16 * seq + n, b"\xff" * 60)
                self.assertRaises(SRTPError, pairs[n - 1][1].unprotect_rtp, sender.protect_rtp(stray))
                report = build_receiver_report(0x2000 + n, [], "x")
                self.assertEqual(receiver.unprotect_rtcp(sender.protect_rtcp(report)), report)

    def test_receiver_reports_protected_without_libsrtp_are_read_by_libsrtp(self) -> None:
        """OutboundSRTCP (one report per rtcp_interval) uses the Python transform for AES-CM
        suites, sparing a libsrtp session per stream; a libsrtp receiver still reads it."""
        for suite in SUITES:
            key, salt = material(suite)
            outbound, receiver = OutboundSRTCP(suite, key, salt), InboundSRTP(suite, key, salt)
            self.assertEqual(outbound._context._libsrtp is None, not SUITES[suite].aead, suite)
            for n in range(3):
                report = build_receiver_report(7, [], "x")
                self.assertEqual(receiver.unprotect_rtcp(outbound.protect_rtcp(report)), report, f"{suite} #{n}")
        key, salt = material("AES_CM_128_HMAC_SHA1_80")
        libsrtp = pylibsrtp.Session(pylibsrtp.Policy(
            key=key + salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
        report = build_receiver_report(8, [], "x")
        self.assertEqual(libsrtp.unprotect_rtcp(OutboundSRTCP("AES_CM_128_HMAC_SHA1_80", key, salt).protect_rtcp(report)), report)

    def test_srtcp_tags_of_the_32_suites(self) -> None:
        """80-bit SRTCP tags (RFC 4568) and 32-bit ones (some peers), in any order."""
        for suite in ("AES_CM_128_HMAC_SHA1_32", "AES_256_CM_HMAC_SHA1_32"):
            key, salt = material(suite)
            receiver = InboundSRTP(suite, key, salt)
            long_tags = OutboundSRTCP(suite, key, salt)
            short_tags = AESCMTransform(key, salt, rtp_tag=4, rtcp_tag=4)
            for n, sender in enumerate([long_tags, short_tags, short_tags, long_tags, short_tags]):
                report = build_receiver_report(n, [], "x")  # one SSRC each: own replay state
                protected = sender.protect_rtcp(report)
                self.assertEqual(len(protected), len(report) + 4 + (10 if sender is long_tags else 4))
                self.assertEqual(receiver.unprotect_rtcp(protected), report, f"{suite} #{n}")
        key, salt = material("AES_CM_128_HMAC_SHA1_80")
        short = AESCMTransform(key, salt, rtp_tag=4, rtcp_tag=4).protect_rtcp(build_receiver_report(1, [], "x"))
        self.assertRaises(SRTPError, InboundSRTP("AES_CM_128_HMAC_SHA1_80", key, salt).unprotect_rtcp, short)

    def test_mki_and_key_ring(self) -> None:
        suite = "AES_CM_128_HMAC_SHA1_80"
        (k1, s1), (k2, s2) = material(suite), material(suite)
        ring = InboundKeyRing([InboundSRTP(suite, k1, s1, mki=b"\x01"), InboundSRTP(suite, k2, s2, mki=b"\x02")])
        one, two = OutboundSRTP(suite, k1, s1, mki=b"\x01"), OutboundSRTP(suite, k2, s2, mki=b"\x02")
        self.assertEqual(ring.unprotect_rtp(one.protect_rtp(rtp(1))), rtp(1))
        self.assertEqual(ring.unprotect_rtp(two.protect_rtp(rtp(2))), rtp(2))
        self.assertRaises(SRTPError, ring.unprotect_rtp, OutboundSRTP(suite, k1, s1, mki=b"\x03").protect_rtp(rtp(3)))
        single = InboundSRTP(suite, k1, s1, mki=b"\x01")
        self.assertEqual(single.unprotect_rtp(one.protect_rtp(rtp(4))), rtp(4))
        self.assertRaises(SRTPError, single.unprotect_rtp, OutboundSRTP(suite, k1, s1).protect_rtp(rtp(5)))

    def test_bad_keys_and_names(self) -> None:
        self.assertRaises(ValueError, InboundSRTP, "AES_CM_128_HMAC_SHA1_80", b"\0" * 15, b"\0" * 14)
        self.assertRaises(ValueError, InboundSRTP, "NULL_HMAC_SHA1_80", b"\0" * 16, b"\0" * 14)
        self.assertRaises(ValueError, InboundSRTP, "AEAD_AES_128_GCM", b"\0" * 16, b"\0" * 12, encrypt_rtp=False)

    def test_tables(self) -> None:
        self.assertTrue(set(DTLS_PROFILES.values()) <= set(SUITES))
        self.assertEqual({n: (s.inline_length, s.rtp_tag, s.rtcp_tag) for n, s in SUITES.items()}, {
            "AES_CM_128_HMAC_SHA1_80": (30, 10, 10), "AES_CM_128_HMAC_SHA1_32": (30, 4, 10),
            "AES_256_CM_HMAC_SHA1_80": (46, 10, 10), "AES_256_CM_HMAC_SHA1_32": (46, 4, 10),
            "AEAD_AES_128_GCM": (28, 16, 16), "AEAD_AES_256_GCM": (44, 16, 16),
        })
        from siprecd.config import DEFAULT_SUITES

        self.assertEqual(set(DEFAULT_SUITES), set(SUITES))
