"""The RFC 7714 AEAD_AES_128_GCM / AEAD_AES_256_GCM SRTP and SRTCP transform.

pylibsrtp runs the GCM suites on the fast path, but pylibsrtp 1.0 cannot be told a rollover
counter: a GCM stream resumed after a restart with ROC > 0 never authenticates there.  This
transform takes an initial ROC (or the highest index per SSRC) and is otherwise byte for byte
libsrtp's: proven by the RFC 7714 §16/§17 vectors and by round trips against pylibsrtp's GCM
profiles (tests/test_security_gcm.py).  Built on ``cryptography``'s AESGCM (16-byte tags).

Layouts (RFC 7714 §8, §9; MKIs are stripped by the caller, siprecd.security.srtp):
SRTP ``header || AES-GCM(payload) || tag``, the header (CSRCs, extension) as AAD;
SRTCP ``header(8) || AES-GCM(rest) || tag || E||index``, AAD ``header(8) || E||index``, or
with E clear (authentication only) ``packet || tag || index``, AAD the whole packet and index.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from siprecd.security.replay import (
    RTCP_INDEX_MASK,
    RtpState,
    TransformError,
    accept_rtcp,
    accept_rtp,
    check_replay,
    check_roc,
    next_srtcp_index,
    receive_index,
    send_index,
)
from siprecd.security.transform import derive, rtp_header_length

__all__ = ["AESGCMTransform", "SessionKeys", "rtcp_iv", "rtp_iv", "session_keys"]

TAG = 16
_E_FLAG = 0x80000000


@dataclass(frozen=True)
class SessionKeys:
    """One direction's session keys and 96-bit salts (RFC 7714 §11)."""

    rtp_key: bytes
    rtp_salt: bytes
    rtcp_key: bytes
    rtcp_salt: bytes

    def __repr__(self) -> str:  # key material never reaches a log through a repr
        return f"SessionKeys(<{len(self.rtp_key) * 8}-bit keys>)"


def session_keys(master_key: bytes, master_salt: bytes) -> SessionKeys:
    """RFC 7714 §11: the RFC 3711 AES-CM PRF, labels 0x00/0x02 (SRTP) and 0x03/0x05 (SRTCP).

    The 96-bit master salt sits in the PRF's 112-bit salt field followed by 16 zero bits, as
    libsrtp does (checked against pylibsrtp in the tests).
    """
    if len(master_key) not in (16, 32) or len(master_salt) != 12:
        raise ValueError(
            f"AEAD-GCM needs a 16- or 32-byte master key and a 12-byte salt, got {len(master_key)} and {len(master_salt)}"
        )
    salt, n = master_salt + b"\0\0", len(master_key)
    return SessionKeys(
        derive(master_key, salt, 0, n), derive(master_key, salt, 2, 12),
        derive(master_key, salt, 3, n), derive(master_key, salt, 5, 12),
    )


def rtp_iv(salt: bytes, ssrc: int, roc: int, seq: int) -> bytes:
    """RFC 7714 §8.1: (00 00 || SSRC || ROC || SEQ) XOR salt."""
    return ((ssrc << 48 | roc << 16 | seq) ^ int.from_bytes(salt, "big")).to_bytes(12, "big")


def rtcp_iv(salt: bytes, ssrc: int, index: int) -> bytes:
    """RFC 7714 §9.1: (00 00 || SSRC || 00 00 || 0 || SRTCP index) XOR salt."""
    return ((ssrc << 48 | index) ^ int.from_bytes(salt, "big")).to_bytes(12, "big")


class AESGCMTransform:
    """One direction's SRTP and SRTCP AEAD contexts for one master key (any SSRC).

    ``initial_roc``: the ROC an SSRC not seen yet starts from (sending and receiving).
    ``received``: SSRC -> the highest SRTP index already authenticated (a receiver carried on).
    ``srtcp_next``: SSRC -> the next SRTCP index to send.  ``encrypt_rtcp`` False sends SRTCP
    with the E flag clear (RFC 7714 §9.2); a receiver honours each packet's authenticated E flag.
    """

    def __init__(
        self,
        master_key: bytes,
        master_salt: bytes,
        *,
        initial_roc: int = 0,
        received: Mapping[int, int] | None = None,
        srtcp_next: Mapping[int, int] | None = None,
        encrypt_rtcp: bool = True,
    ) -> None:
        self._start(session_keys(master_key, master_salt), initial_roc, received, srtcp_next, encrypt_rtcp)

    @classmethod
    def from_session_keys(
        cls,
        keys: SessionKeys,
        *,
        initial_roc: int = 0,
        received: Mapping[int, int] | None = None,
        srtcp_next: Mapping[int, int] | None = None,
        encrypt_rtcp: bool = True,
    ) -> AESGCMTransform:
        """No key derivation: what RFC 7714's test vectors give."""
        transform = cls.__new__(cls)
        transform._start(keys, initial_roc, received, srtcp_next, encrypt_rtcp)
        return transform

    def _start(
        self,
        keys: SessionKeys,
        initial_roc: int,
        received: Mapping[int, int] | None,
        srtcp_next: Mapping[int, int] | None,
        encrypt_rtcp: bool,
    ) -> None:
        for ssrc, index in (received or {}).items():
            if not 0 <= index < 1 << 48:
                raise ValueError(f"highest index {index} for SSRC {ssrc:#010x} is not a 48-bit SRTP index")
        self._rtp_aead, self._rtp_salt = AESGCM(keys.rtp_key), keys.rtp_salt
        self._rtcp_aead, self._rtcp_salt = AESGCM(keys.rtcp_key), keys.rtcp_salt
        self.initial_roc = check_roc(initial_roc)
        self.encrypt_rtcp = encrypt_rtcp
        self._rtp: dict[int, RtpState] = {ssrc: RtpState.at(index) for ssrc, index in (received or {}).items()}
        self._rtcp: dict[int, tuple[int, int]] = {}  # SSRC -> (highest index, window)
        self._send_rtp: dict[int, RtpState] = {}
        self._send_rtcp: dict[int, int] = {ssrc: index & RTCP_INDEX_MASK for ssrc, index in (srtcp_next or {}).items()}

    # --- SRTP ---------------------------------------------------------------------------------

    def protect_rtp(self, packet: bytes) -> bytes:
        header = rtp_header_length(packet)
        seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
        index = send_index(self._send_rtp, ssrc, seq, self.initial_roc)
        iv = rtp_iv(self._rtp_salt, ssrc, index >> 16, seq)
        return packet[:header] + self._rtp_aead.encrypt(iv, packet[header:], packet[:header])

    def unprotect_rtp(self, packet: bytes) -> bytes:
        header = rtp_header_length(packet)
        if len(packet) < header + TAG:
            raise TransformError("SRTP packet shorter than its header and AEAD tag")
        seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
        index = receive_index(self._rtp.get(ssrc), seq, self.initial_roc)
        try:
            payload = self._rtp_aead.decrypt(rtp_iv(self._rtp_salt, ssrc, index >> 16, seq), packet[header:], packet[:header])
        except InvalidTag:
            raise TransformError("SRTP authentication failed (AEAD tag)") from None
        accept_rtp(self._rtp, ssrc, index)
        return packet[:header] + payload

    # --- SRTCP --------------------------------------------------------------------------------

    def protect_rtcp(self, packet: bytes) -> bytes:
        if len(packet) < 8:
            raise TransformError("RTCP packet shorter than 8 bytes")
        ssrc = struct.unpack_from("!I", packet, 4)[0]
        index = next_srtcp_index(self._send_rtcp, ssrc)
        iv = rtcp_iv(self._rtcp_salt, ssrc, index)
        if self.encrypt_rtcp:
            trailer = struct.pack("!I", index | _E_FLAG)
            return packet[:8] + self._rtcp_aead.encrypt(iv, packet[8:], packet[:8] + trailer) + trailer
        trailer = struct.pack("!I", index)
        return packet + self._rtcp_aead.encrypt(iv, b"", packet + trailer) + trailer

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        if len(packet) < 8 + TAG + 4:
            raise TransformError("SRTCP packet shorter than its header, AEAD tag and index")
        word = struct.unpack_from("!I", packet, len(packet) - 4)[0]
        trailer, index = packet[-4:], word & RTCP_INDEX_MASK
        ssrc = struct.unpack_from("!I", packet, 4)[0]
        seen = self._rtcp.get(ssrc)
        if seen is not None:
            check_replay(index, *seen)
        iv = rtcp_iv(self._rtcp_salt, ssrc, index)
        try:
            if word & _E_FLAG:
                plain = packet[:8] + self._rtcp_aead.decrypt(iv, packet[8:-4], packet[:8] + trailer)
            else:
                plain = packet[: -4 - TAG]
                self._rtcp_aead.decrypt(iv, packet[-4 - TAG:-4], plain + trailer)
        except InvalidTag:
            raise TransformError("SRTCP authentication failed (AEAD tag)") from None
        accept_rtcp(self._rtcp, ssrc, index)
        return plain
