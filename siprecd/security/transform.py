"""The RFC 3711 SRTP/SRTCP transform with AES-CM and HMAC-SHA1, for AES-128 and AES-256 keys.

pylibsrtp runs the common suites; this module covers what it does not expose: the RFC 6188
AES_256_CM_HMAC_SHA1_* suites, SRTCP with 32-bit tags (sent by some peers for the _32 suites)
and the UNENCRYPTED_SRTP/SRTCP session parameters.  Built on ``cryptography``'s AES-CTR and
HMAC-SHA1; proven by the RFC 3711 B.2/B.3 and RFC 6188 vectors and by round trips against
pylibsrtp (tests/test_security_transform.py).

Keys are derived once (key derivation rate 0: RFC 4568 SDES with KDR other than 0 is refused
before it gets here).  ROC estimation follows RFC 3711 §3.3.1; replay protection keeps a
128-packet window per SSRC like libsrtp's default.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from hashlib import sha1

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from siprecd.security.replay import REPLAY_WINDOW, RTCP_INDEX_MASK as _RTCP_INDEX_MASK, RtpState as _RtpState
from siprecd.security.replay import (
    TransformError, accept_rtcp, accept_rtp, check_replay, check_roc, closest_roc, next_srtcp_index,
    receive_index, send_index,
)

__all__ = ["AESCMTransform", "TransformError", "derive", "estimate_index", "keystream", "rtp_header_length"]

_E_FLAG = 0x80000000


def keystream(key: bytes, iv: bytes, length: int) -> bytes:
    """AES in counter mode from the 128-bit block ``iv`` (RFC 3711 §4.1.1)."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(b"\0" * length) + encryptor.finalize()


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream[: len(data)], "big")).to_bytes(len(data), "big")


def derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 §4.3.1 with key_derivation_rate 0: the AES-CM PRF over key_id XOR salt."""
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return keystream(master_key, (x << 16).to_bytes(16, "big"), length)


def estimate_index(highest: int, seq: int) -> int:
    """RFC 3711 §3.3.1: the packet index of ``seq`` closest to the highest index ``highest``."""
    return max(closest_roc(highest >> 16, highest & 0xFFFF, seq), 0) << 16 | seq


def rtp_header_length(packet: bytes) -> int:
    """Fixed header, CSRCs and the header extension (RFC 3550 §5.3.1); raises if truncated."""
    if len(packet) < 12 or packet[0] >> 6 != 2:
        raise TransformError(f"not an RTP packet ({len(packet)} bytes)")
    length = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if len(packet) < length + 4:
            raise TransformError("RTP header extension truncated")
        length += 4 + 4 * struct.unpack_from("!H", packet, length + 2)[0]
    if len(packet) < length:
        raise TransformError("RTP header truncated")
    return length


@dataclass
class _Keys:
    cipher: bytes
    auth: bytes
    salt: int


class AESCMTransform:
    """One direction's SRTP and SRTCP crypto contexts for one master key (any SSRC)."""

    def __init__(
        self,
        master_key: bytes,
        master_salt: bytes,
        *,
        rtp_tag: int = 10,
        rtcp_tag: int = 10,
        encrypt_rtp: bool = True,
        encrypt_rtcp: bool = True,
        initial_roc: int = 0,
        received: dict[int, int] | None = None,
        srtcp_next: dict[int, int] | None = None,
    ) -> None:
        """``initial_roc``: the ROC an SSRC not seen yet starts from (a stream resumed past a
        wrap); ``received``: SSRC -> the highest SRTP index already authenticated (a context carried
        on after a restart: its ROC > 0 is where the estimation starts); ``srtcp_next``: SSRC ->
        the next SRTCP index to send (continuing above what the peer's replay list has seen)."""
        if len(master_key) not in (16, 32) or len(master_salt) != 14:
            raise ValueError("AES-CM needs a 16- or 32-byte master key and a 14-byte salt")
        n = len(master_key)
        self.rtp_keys = _Keys(derive(master_key, master_salt, 0, n), derive(master_key, master_salt, 1, 20),
                              int.from_bytes(derive(master_key, master_salt, 2, 14), "big"))
        self.rtcp_keys = _Keys(derive(master_key, master_salt, 3, n), derive(master_key, master_salt, 4, 20),
                               int.from_bytes(derive(master_key, master_salt, 5, 14), "big"))
        self.rtp_tag = rtp_tag
        self.rtcp_tag = rtcp_tag
        self.encrypt_rtp = encrypt_rtp
        self.encrypt_rtcp = encrypt_rtcp
        self.initial_roc = check_roc(initial_roc)
        self._rtp: dict[int, _RtpState] = {}  # receiver state per SSRC
        self._rtcp: dict[int, tuple[int, int]] = {}  # SSRC -> (highest index, window)
        self._send_rtp: dict[int, _RtpState] = {}
        self._send_rtcp: dict[int, int] = {}  # SSRC -> next SRTCP index
        for ssrc, index in (received or {}).items():
            self._rtp[ssrc] = _RtpState.at(index)
        for ssrc, index in (srtcp_next or {}).items():
            self._send_rtcp[ssrc] = index & _RTCP_INDEX_MASK

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _iv(salt: int, ssrc: int, index: int) -> bytes:
        return ((salt << 16) ^ (ssrc << 64) ^ (index << 16)).to_bytes(16, "big")

    @staticmethod
    def _tag(key: bytes, data: bytes, length: int) -> bytes:
        return hmac.new(key, data, sha1).digest()[:length]

    # --- SRTP ---------------------------------------------------------------------------------

    def protect_rtp(self, packet: bytes) -> bytes:
        header = rtp_header_length(packet)
        seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
        index = send_index(self._send_rtp, ssrc, seq, self.initial_roc)
        body = packet[header:]
        if self.encrypt_rtp:
            k = self.rtp_keys
            body = _xor(body, keystream(k.cipher, self._iv(k.salt, ssrc, index), len(body)))
        out = packet[:header] + body
        return out + self._tag(self.rtp_keys.auth, out + struct.pack("!I", index >> 16), self.rtp_tag)

    def unprotect_rtp(self, packet: bytes) -> bytes:
        header = rtp_header_length(packet)
        if len(packet) < header + self.rtp_tag:
            raise TransformError("SRTP packet shorter than its header and authentication tag")
        seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
        index = receive_index(self._rtp.get(ssrc), seq, self.initial_roc)
        roc = index >> 16
        authenticated, tag = packet[: len(packet) - self.rtp_tag], packet[len(packet) - self.rtp_tag:]
        if not hmac.compare_digest(self._tag(self.rtp_keys.auth, authenticated + struct.pack("!I", roc), self.rtp_tag), tag):
            raise TransformError("SRTP authentication failed")
        body = authenticated[header:]
        if self.encrypt_rtp:
            k = self.rtp_keys
            body = _xor(body, keystream(k.cipher, self._iv(k.salt, ssrc, index), len(body)))
        accept_rtp(self._rtp, ssrc, index)
        return authenticated[:header] + body

    # --- SRTCP --------------------------------------------------------------------------------

    def protect_rtcp(self, packet: bytes) -> bytes:
        if len(packet) < 8:
            raise TransformError("RTCP packet shorter than 8 bytes")
        ssrc = struct.unpack_from("!I", packet, 4)[0]
        index = next_srtcp_index(self._send_rtcp, ssrc)
        body = packet[8:]
        if self.encrypt_rtcp:
            k = self.rtcp_keys
            body = _xor(body, keystream(k.cipher, self._iv(k.salt, ssrc, index), len(body)))
        out = packet[:8] + body + struct.pack("!I", index | (_E_FLAG if self.encrypt_rtcp else 0))
        return out + self._tag(self.rtcp_keys.auth, out, self.rtcp_tag)

    def unprotect_rtcp(self, packet: bytes, tag_length: int | None = None) -> bytes:
        tag_length = self.rtcp_tag if tag_length is None else tag_length
        if len(packet) < 8 + 4 + tag_length:
            raise TransformError("SRTCP packet shorter than its header, index and tag")
        authenticated, tag = packet[: len(packet) - tag_length], packet[len(packet) - tag_length:]
        if not hmac.compare_digest(self._tag(self.rtcp_keys.auth, authenticated, tag_length), tag):
            raise TransformError("SRTCP authentication failed")
        word = struct.unpack_from("!I", authenticated, len(authenticated) - 4)[0]
        index = word & _RTCP_INDEX_MASK
        ssrc = struct.unpack_from("!I", packet, 4)[0]
        seen = self._rtcp.get(ssrc)
        if seen is not None:
            check_replay(index, *seen)
        body = authenticated[8:-4]
        if word & _E_FLAG:
            k = self.rtcp_keys
            body = _xor(body, keystream(k.cipher, self._iv(k.salt, ssrc, index), len(body)))
        accept_rtcp(self._rtcp, ssrc, index)
        return packet[:8] + body
