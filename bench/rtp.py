"""RTP streams as the load generator sends them and the baseline receivers read them.

A stream's packets are a fixed 12-byte header template and one pre-built PCMU payload; only the
sequence number and timestamp change, so building a packet is one ``pack_into`` and a join.
SRTP (RFC 3711, AES_CM_128_HMAC_SHA1_80) protects with pylibsrtp under the key the generator
offered in ``a=crypto`` (RFC 4568).
"""

from __future__ import annotations

import base64
import hashlib
import struct

import pylibsrtp

PCMU = 0
PACKET_TIME = 0.02  # seconds of audio per packet
SAMPLES = 160  # PCMU samples (= bytes) per 20 ms packet
CLOCK_RATE = 8000
SUITE = "AES_CM_128_HMAC_SHA1_80"
KEY_LENGTH = 30  # master key (16) + master salt (14)

_HEADER = struct.Struct("!BBHII")
# A quiet tone rather than digital silence: a payload a codec or a silence detector must not skip.
PAYLOAD = bytes((0xFF if i % 8 < 4 else 0x7F) for i in range(SAMPLES))


def stream_key(seed: bytes) -> bytes:
    """A 30-byte SRTP master key and salt derived from ``seed`` (the direct-to-baseline mode needs
    sender and receiver to agree without signalling)."""
    return hashlib.sha256(b"siprecd-bench" + seed).digest()[:KEY_LENGTH]


def crypto_attribute(key: bytes, tag: int = 1) -> str:
    return f"a=crypto:{tag} {SUITE} inline:{base64.b64encode(key).decode()}"


class StreamSender:
    """One RTP stream: the next packet on each call of ``next_packet``."""

    __slots__ = ("ssrc", "seq", "timestamp", "srtp", "sent")

    def __init__(self, ssrc: int, *, seq: int = 0, timestamp: int = 0, key: bytes | None = None) -> None:
        self.ssrc = ssrc
        self.seq = seq & 0xFFFF
        self.timestamp = timestamp & 0xFFFFFFFF
        self.sent = 0
        self.srtp: pylibsrtp.Session | None = None
        if key is not None:
            policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
            self.srtp = pylibsrtp.Session(policy=policy)

    def next_packet(self) -> bytes:
        packet = _HEADER.pack(0x80, PCMU, self.seq, self.timestamp, self.ssrc) + PAYLOAD
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + SAMPLES) & 0xFFFFFFFF
        self.sent += 1
        if self.srtp is not None:
            return self.srtp.protect(packet)
        return packet


def parse_header(packet: bytes) -> tuple[int, int, int, int]:
    """(payload type, sequence number, timestamp, SSRC) of an RTP packet; ValueError if short."""
    if len(packet) < 12:
        raise ValueError(f"RTP packet of {len(packet)} bytes is shorter than its 12-byte header")
    first, second, seq, timestamp, ssrc = _HEADER.unpack_from(packet)
    return second & 0x7F, seq, timestamp, ssrc


class Jitter:
    """RFC 3550 §6.4.1 interarrival jitter of one source, in RTP timestamp units."""

    __slots__ = ("transit", "value")

    def __init__(self) -> None:
        self.transit: float | None = None
        self.value = 0.0

    def update(self, arrival: float, timestamp: int) -> None:
        transit = arrival * CLOCK_RATE - timestamp
        if self.transit is not None:
            d = abs(transit - self.transit)
            self.value += (d - self.value) / 16
        self.transit = transit

    @property
    def milliseconds(self) -> float:
        return self.value * 1000 / CLOCK_RATE
