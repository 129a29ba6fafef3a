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

__all__ = ["AESCMTransform", "TransformError", "derive", "keystream", "rtp_header_length"]

REPLAY_WINDOW = 128
_RTCP_INDEX_MASK = 0x7FFFFFFF
_E_FLAG = 0x80000000


class TransformError(Exception):
    """Authentication failed, a replay, or a packet too short for its header and tag."""


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


@dataclass
class _RtpState:
    roc: int
    highest: int  # s_l: the highest sequence number authenticated
    window: int  # bit n set: index (highest index - n) was received


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
    ) -> None:
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
        self._rtp: dict[int, _RtpState] = {}  # receiver state per SSRC
        self._rtcp: dict[int, tuple[int, int]] = {}  # SSRC -> (highest index, window)
        self._send_rtp: dict[int, _RtpState] = {}
        self._send_rtcp: dict[int, int] = {}  # SSRC -> next SRTCP index

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
        state = self._send_rtp.get(ssrc)
        if state is None:
            state = self._send_rtp[ssrc] = _RtpState(0, seq, 0)
        elif seq < state.highest and state.highest - seq > 0x8000:
            state.roc += 1  # the sequence number wrapped
        state.highest = seq
        index = (state.roc << 16) | seq
        body = packet[header:]
        if self.encrypt_rtp:
            k = self.rtp_keys
            body = _xor(body, keystream(k.cipher, self._iv(k.salt, ssrc, index), len(body)))
        out = packet[:header] + body
        return out + self._tag(self.rtp_keys.auth, out + struct.pack("!I", state.roc), self.rtp_tag)

    def unprotect_rtp(self, packet: bytes) -> bytes:
        header = rtp_header_length(packet)
        if len(packet) < header + self.rtp_tag:
            raise TransformError("SRTP packet shorter than its header and authentication tag")
        seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
        state = self._rtp.get(ssrc)
        roc = state.roc if state is not None else 0
        if state is not None:
            # RFC 3711 §3.3.1: the ROC that puts this sequence number closest to s_l.
            if state.highest < 0x8000:
                if seq - state.highest > 0x8000:
                    roc -= 1
            elif state.highest - 0x8000 > seq:
                roc += 1
            if roc < 0:
                raise TransformError("SRTP packet from before the first rollover")
        index = (roc << 16) | seq
        if state is not None:
            self._check_replay(index, (state.roc << 16) | state.highest, state.window)
        authenticated, tag = packet[: len(packet) - self.rtp_tag], packet[len(packet) - self.rtp_tag:]
        if not hmac.compare_digest(self._tag(self.rtp_keys.auth, authenticated + struct.pack("!I", roc), self.rtp_tag), tag):
            raise TransformError("SRTP authentication failed")
        body = authenticated[header:]
        if self.encrypt_rtp:
            k = self.rtp_keys
            body = _xor(body, keystream(k.cipher, self._iv(k.salt, ssrc, index), len(body)))
        if state is None:
            self._rtp[ssrc] = _RtpState(roc, seq, 1)
        else:
            highest, window = self._advance(index, (state.roc << 16) | state.highest, state.window)
            state.roc, state.highest, state.window = highest >> 16, highest & 0xFFFF, window
        return authenticated[:header] + body

    # --- SRTCP --------------------------------------------------------------------------------

    def protect_rtcp(self, packet: bytes) -> bytes:
        if len(packet) < 8:
            raise TransformError("RTCP packet shorter than 8 bytes")
        ssrc = struct.unpack_from("!I", packet, 4)[0]
        index = self._send_rtcp.get(ssrc, 1)  # from 1, like libsrtp
        self._send_rtcp[ssrc] = (index + 1) & _RTCP_INDEX_MASK
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
            self._check_replay(index, *seen)
        body = authenticated[8:-4]
        if word & _E_FLAG:
            k = self.rtcp_keys
            body = _xor(body, keystream(k.cipher, self._iv(k.salt, ssrc, index), len(body)))
        self._rtcp[ssrc] = (index, 1) if seen is None else self._advance(index, *seen)
        return packet[:8] + body

    # --- replay window (RFC 3711 §3.3.2) -------------------------------------------------------

    @staticmethod
    def _check_replay(index: int, highest: int, window: int) -> None:
        if index > highest:
            return
        delta = highest - index
        if delta >= REPLAY_WINDOW:
            raise TransformError("SRTP packet too old (outside the replay window)")
        if window >> delta & 1:
            raise TransformError("SRTP packet replayed")

    @staticmethod
    def _advance(index: int, highest: int, window: int) -> tuple[int, int]:
        mask = (1 << REPLAY_WINDOW) - 1
        if index > highest:
            return index, ((window << (index - highest)) | 1) & mask
        return highest, window | (1 << (highest - index))
