"""RFC 7983 first-byte demultiplexing of what arrives on one media port.

With DTLS-SRTP, the RTP port also carries the DTLS handshake (and STUN, with ICE), so the
receiver looks at the first byte before parsing anything (RFC 7983 §7).
"""

from __future__ import annotations

__all__ = ["DTLS", "RTP", "STUN", "TURN_CHANNEL", "ZRTP", "classify"]

STUN = "stun"
ZRTP = "zrtp"
DTLS = "dtls"
TURN_CHANNEL = "turn-channel"
RTP = "rtp"  # RTP or RTCP; RFC 5761 tells them apart by the payload type byte

# RFC 7983 §7 ranges, inclusive.
_RANGES: tuple[tuple[int, int, str], ...] = (
    (0, 3, STUN),
    (16, 19, ZRTP),
    (20, 63, DTLS),
    (64, 79, TURN_CHANNEL),
    (128, 191, RTP),
)
_TABLE: list[str | None] = [None] * 256
for _low, _high, _kind in _RANGES:
    for _byte in range(_low, _high + 1):
        _TABLE[_byte] = _kind


def classify(datagram: bytes) -> str | None:
    """What a datagram is by its first byte; None for empty or unassigned ranges (drop it)."""
    if not datagram:
        return None
    return _TABLE[datagram[0]]

