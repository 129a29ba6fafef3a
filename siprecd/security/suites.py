"""SRTP crypto suites (RFC 4568 §6.2, RFC 6188, RFC 7714) and DTLS-SRTP profiles (RFC 5764).

One table for every key exchange: SDES names the suites directly, DTLS-SRTP names a profile
that maps onto the same suite.  ``libsrtp_profile`` says which suites pylibsrtp runs; the
others (AES-256-CM) go through :mod:`siprecd.security.transform`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pylibsrtp

__all__ = ["DTLS_PROFILES", "SUITES", "Suite"]


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    key_length: int  # master key, bytes
    salt_length: int  # master salt, bytes
    rtp_tag: int  # SRTP authentication tag, bytes (AEAD: the GCM tag)
    rtcp_tag: int  # SRTCP authentication tag, bytes
    aead: bool
    libsrtp_profile: int | None  # pylibsrtp.Policy.SRTP_PROFILE_*, None: not in pylibsrtp

    @property
    def inline_length(self) -> int:
        """Bytes of key||salt in an SDES ``inline:`` parameter."""
        return self.key_length + self.salt_length


_P = pylibsrtp.Policy
SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("AES_CM_128_HMAC_SHA1_80", 16, 14, 10, 10, False, _P.SRTP_PROFILE_AES128_CM_SHA1_80),
        # RFC 4568 §6.2.2: the _32 suites shorten only the SRTP tag; SRTCP keeps 80 bits.
        Suite("AES_CM_128_HMAC_SHA1_32", 16, 14, 4, 10, False, _P.SRTP_PROFILE_AES128_CM_SHA1_32),
        Suite("AES_256_CM_HMAC_SHA1_80", 32, 14, 10, 10, False, None),
        Suite("AES_256_CM_HMAC_SHA1_32", 32, 14, 4, 10, False, None),
        Suite("AEAD_AES_128_GCM", 16, 12, 16, 16, True, _P.SRTP_PROFILE_AEAD_AES_128_GCM),
        Suite("AEAD_AES_256_GCM", 32, 12, 16, 16, True, _P.SRTP_PROFILE_AEAD_AES_256_GCM),
    )
}

DTLS_PROFILES: dict[str, str] = {
    "SRTP_AES128_CM_SHA1_80": "AES_CM_128_HMAC_SHA1_80",
    "SRTP_AES128_CM_SHA1_32": "AES_CM_128_HMAC_SHA1_32",
    "SRTP_AEAD_AES_128_GCM": "AEAD_AES_128_GCM",
    "SRTP_AEAD_AES_256_GCM": "AEAD_AES_256_GCM",
}
