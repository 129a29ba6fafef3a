"""RTP packets (RFC 3550 §5.1): parsing the fixed header, building packets, demultiplexing.

Everything here runs once per received packet, so it is written for the interpreter: one
precompiled ``Struct.unpack_from`` for the fixed header, a fast path for the common packet (no
padding, no extension, no CSRC), and no work for fields a recorder never reads.  Malformed packets
raise :class:`MalformedPacket`, whose ``reason`` is a short constant the receiver can count by;
exceptions cost more than a return, but only bad packets pay it and the good path stays free of
result checks.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

RTP_VERSION = 2

_FIXED = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
_EXTENSION = struct.Struct("!HH")  # profile-defined, length in 32-bit words
_WORD = struct.Struct("!I")
_NO_CSRCS: tuple[int, ...] = ()


class MalformedPacket(ValueError):
    """An RTP or RTCP packet that cannot be used; ``reason`` is one of a few short constants."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# The reasons, so receivers can pre-create their counters.
SHORT = "short"
VERSION = "version"
PADDING = "padding"
EXTENSION = "extension"
LENGTH = "length"


class RtpPacket:
    """One RTP packet; also the timeline's *audio* event (no second object per packet).

    The parser sets the header fields and ``payload``.  :class:`~siprecd.media.timeline.Timeline`
    sets ``arrival`` when the packet is pushed and, for audio it releases, ``position`` and
    ``duration`` (RTP timestamp units on the stream's timeline) and ``skip`` (units at the start of
    this packet that overlap the previous one and must be dropped; almost always 0).  Those four
    slots are unset until then: reading them earlier raises ``AttributeError`` on purpose.
    """

    __slots__ = (
        "payload_type",
        "marker",
        "sequence",
        "timestamp",
        "ssrc",
        "payload",
        "csrcs",
        "arrival",
        "position",
        "duration",
        "skip",
    )
    kind = "audio"

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    csrcs: tuple[int, ...]
    arrival: float
    position: int
    duration: int
    skip: int

    def __init__(
        self,
        payload_type: int,
        marker: bool,
        sequence: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
        csrcs: tuple[int, ...] = _NO_CSRCS,
    ) -> None:
        self.payload_type = payload_type
        self.marker = marker
        self.sequence = sequence
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.csrcs = csrcs

    def __repr__(self) -> str:
        return (
            f"RtpPacket(pt={self.payload_type}, m={int(self.marker)}, seq={self.sequence}, "
            f"ts={self.timestamp}, ssrc={self.ssrc:#010x}, {len(self.payload)} bytes)"
        )


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet; raise :class:`MalformedPacket` when it cannot be used.

    The payload is a ``bytes`` slice: it is as cheap as a memoryview for voice-sized payloads and,
    unlike a view, does not pin the whole datagram or surprise a caller that hashes or stores it.
    """
    n = len(data)
    if n < 12:
        raise MalformedPacket(SHORT, f"{n} bytes")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
    if b0 & 0xC0 != 0x80:
        raise MalformedPacket(VERSION, f"version {b0 >> 6}")
    if not b0 & 0x3F:
        return RtpPacket(b1 & 0x7F, b1 > 0x7F, seq, ts, ssrc, data[12:])
    cc = b0 & 0x0F
    offset = 12 + 4 * cc
    if offset > n:
        raise MalformedPacket(SHORT, f"{cc} CSRCs in {n} bytes")
    csrcs = struct.unpack_from(f"!{cc}I", data, 12) if cc else _NO_CSRCS
    if b0 & 0x10:
        # RFC 3550 §5.3.1: 4-byte header whose length counts 32-bit words after it.
        if offset + 4 > n:
            raise MalformedPacket(EXTENSION, "header extension truncated")
        _profile, words = _EXTENSION.unpack_from(data, offset)
        offset += 4 + 4 * words
        if offset > n:
            raise MalformedPacket(EXTENSION, f"extension of {words} words in {n} bytes")
    end = n
    if b0 & 0x20:
        # The last octet counts the padding, itself included, so 0 is as invalid as too many.
        pad = data[-1]
        if pad == 0 or pad > n - offset:
            raise MalformedPacket(PADDING, f"padding {pad} with {n - offset} bytes after header")
        end = n - pad
    return RtpPacket(b1 & 0x7F, b1 > 0x7F, seq, ts, ssrc, data[offset:end], csrcs)


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes = b"",
    *,
    marker: bool = False,
    csrcs: Sequence[int] = (),
    extension: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> bytes:
    """Serialize an RTP packet (for tests, benchmarks and tools; the SRS itself never sends RTP).

    ``extension`` is ``(profile, data)`` with ``len(data)`` a multiple of 4; ``padding`` is the
    total number of padding octets including the count octet.
    """
    if len(csrcs) > 15:
        raise ValueError("at most 15 CSRCs")
    b0 = 0x80 | len(csrcs)
    parts = [b""]
    if extension is not None:
        profile, ext = extension
        if len(ext) % 4:
            raise ValueError("extension data must be whole 32-bit words")
        b0 |= 0x10
        parts.append(_EXTENSION.pack(profile, len(ext) // 4) + ext)
    parts.append(payload)
    if padding:
        if not 1 <= padding <= 255:
            raise ValueError("padding must be 1..255 octets")
        b0 |= 0x20
        parts.append(bytes(padding - 1) + bytes([padding]))
    header = _FIXED.pack(
        b0,
        (0x80 if marker else 0) | payload_type,
        sequence & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc,
    )
    parts[0] = header + b"".join(_WORD.pack(c) for c in csrcs)
    return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: on a muxed port, a second octet of 192..223 (RTP PT 64..95 with the marker
    bit) is RTCP.  SR=200..XR=207 and the feedback types fall inside; RTP must not use 64..95."""
    return len(data) > 1 and 192 <= data[1] <= 223


def classify(data: bytes) -> str:
    """RFC 7983 §7: what the first octet says a packet on a media port is.

    Returns ``"stun"``, ``"zrtp"``, ``"dtls"``, ``"turn"``, ``"rtp"`` (RTP or RTCP: tell them
    apart with :func:`is_rtcp`) or ``"unknown"``.
    """
    if not data:
        return "unknown"
    b = data[0]
    if 128 <= b <= 191:
        return "rtp"
    if b <= 3:
        return "stun"
    if 20 <= b <= 63:
        return "dtls"
    if 16 <= b <= 19:
        return "zrtp"
    if 64 <= b <= 79:
        return "turn"
    return "unknown"
