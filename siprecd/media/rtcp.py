"""RTCP (RFC 3550 §6.4-6.6): parsing compound packets, building the SRS's receiver reports.

The SRS only receives media, so it parses whatever the SRC sends (SR, RR, SDES, BYE; APP, XR and
the RFC 4585 feedback types are passed through as :class:`OtherRtcp` so nothing unknown can break
the parse) and builds one kind of compound packet: RR + SDES CNAME (§6.1), optionally + BYE.
RTCP arrives every few seconds per stream, so clarity wins over speed here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from siprecd.media.rtp import LENGTH, PADDING, SHORT, VERSION, MalformedPacket

SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204
RTPFB = 205
PSFB = 206
XR = 207

# SDES item types (RFC 3550 §6.5).
CNAME = 1
NAME = 2
EMAIL = 3
PHONE = 4
LOC = 5
TOOL = 6
NOTE = 7
PRIV = 8

_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IQIII")  # SSRC, NTP timestamp, RTP timestamp, packets, octets
_BLOCK = struct.Struct("!IIIIII")  # SSRC, fraction|cumulative lost, highest seq, jitter, LSR, DLSR
_WORD = struct.Struct("!I")

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1); ``cumulative_lost`` is signed."""

    ssrc: int
    fraction_lost: int  # 0..255, lost/expected in the last interval as a fixed point /256
    cumulative_lost: int  # -0x800000..0x7FFFFF; negative when duplicates outnumber losses
    highest_sequence: int  # extended: cycles << 16 | highest sequence number
    jitter: int  # interarrival jitter, RTP timestamp units
    lsr: int  # middle 32 bits of the last SR's NTP timestamp, 0 if none
    dlsr: int  # delay since that SR, 1/65536 s, 0 if none


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format: seconds since 1900 << 32 | fraction
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...]

    @property
    def ntp_middle(self) -> int:
        """The value a receiver echoes as LSR."""
        return ntp_middle(self.ntp_timestamp)

    @property
    def unix_time(self) -> float:
        return ntp_to_unix(self.ntp_timestamp)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...]


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...]  # (item type, value) in wire order; PRIV kept raw

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == CNAME:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class Sdes:
    chunks: tuple[SdesChunk, ...]


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: str | None


@dataclass(frozen=True, slots=True)
class OtherRtcp:
    """APP, XR, RTPFB, PSFB or a type we do not know: kept, not interpreted."""

    packet_type: int
    count: int  # the 5-bit field: a subtype or format for most of these
    body: bytes  # everything after the 4-byte header, padding removed


RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye | OtherRtcp


def ntp_to_unix(ntp: int) -> float:
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / 4294967296.0


def unix_to_ntp(seconds: float) -> int:
    whole = int(seconds // 1)
    fraction = int((seconds - whole) * 4294967296.0) & 0xFFFFFFFF
    return ((whole + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32 | fraction


def ntp_middle(ntp: int) -> int:
    return (ntp >> 16) & 0xFFFFFFFF


def _blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for i in range(count):
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(body, offset + 24 * i)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def _sdes(body: bytes, count: int) -> Sdes:
    chunks = []
    offset = 0
    n = len(body)
    for _ in range(count):
        if offset + 4 > n:
            raise MalformedPacket(LENGTH, "SDES chunk truncated")
        (ssrc,) = _WORD.unpack_from(body, offset)
        offset += 4
        items = []
        while True:
            if offset >= n:
                raise MalformedPacket(LENGTH, "SDES chunk without its terminating null item")
            kind = body[offset]
            if kind == 0:
                # The null item ends the list; the chunk is padded to the next 32-bit boundary.
                offset = (offset + 4) & ~3
                break
            if offset + 2 > n or offset + 2 + body[offset + 1] > n:
                raise MalformedPacket(LENGTH, "SDES item truncated")
            length = body[offset + 1]
            items.append((kind, bytes(body[offset + 2 : offset + 2 + length])))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return Sdes(tuple(chunks))


def _bye(body: bytes, count: int) -> Bye:
    if 4 * count > len(body):
        raise MalformedPacket(LENGTH, f"BYE with {count} SSRCs in {len(body)} bytes")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = None
    offset = 4 * count
    if offset < len(body):
        length = body[offset]
        if offset + 1 + length > len(body):
            raise MalformedPacket(LENGTH, "BYE reason truncated")
        reason = body[offset + 1 : offset + 1 + length].decode("utf-8", "replace")
    return Bye(ssrcs, reason)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet into its parts, in order.

    The §A.2 checks that protect the parser are enforced (version 2 on every part, lengths that
    add up exactly, padding only on the last part); the rule that a compound packet starts with
    SR or RR is not, because reduced-size RTCP (RFC 5506) is legal and harmless to read.
    """
    packets: list[RtcpPacket] = []
    n = len(data)
    if n < 4:
        raise MalformedPacket(SHORT, f"{n} bytes")
    offset = 0
    while offset < n:
        if offset + 4 > n:
            raise MalformedPacket(LENGTH, f"{n - offset} trailing bytes")
        b0, packet_type, words = _HEADER.unpack_from(data, offset)
        if b0 & 0xC0 != 0x80:
            raise MalformedPacket(VERSION, f"version {b0 >> 6} at offset {offset}")
        size = 4 * (words + 1)
        end = offset + size
        if end > n:
            raise MalformedPacket(LENGTH, f"part of {size} bytes at offset {offset} in {n}")
        if b0 & 0x20:
            pad = data[end - 1]
            if end != n or pad == 0 or pad > size - 4:
                raise MalformedPacket(PADDING, f"padding {pad} at offset {offset}")
            body = data[offset + 4 : end - pad]
        else:
            body = data[offset + 4 : end]
        count = b0 & 0x1F
        if packet_type == SR:
            if len(body) < 24 + 24 * count:
                raise MalformedPacket(LENGTH, f"SR with {count} blocks in {len(body)} bytes")
            ssrc, ntp, rtp_ts, packet_count, octet_count = _SENDER_INFO.unpack_from(body)
            packets.append(
                SenderReport(ssrc, ntp, rtp_ts, packet_count, octet_count, _blocks(body, 24, count))
            )
        elif packet_type == RR:
            if len(body) < 4 + 24 * count:
                raise MalformedPacket(LENGTH, f"RR with {count} blocks in {len(body)} bytes")
            (ssrc,) = _WORD.unpack_from(body)
            packets.append(ReceiverReport(ssrc, _blocks(body, 4, count)))
        elif packet_type == SDES:
            packets.append(_sdes(body, count))
        elif packet_type == BYE:
            packets.append(_bye(body, count))
        else:
            packets.append(OtherRtcp(packet_type, count, bytes(body)))
        offset = end
    return packets


def _header(count: int, packet_type: int, body_length: int) -> bytes:
    return _HEADER.pack(0x80 | count, packet_type, body_length // 4)


def build_report_block(block: ReportBlock) -> bytes:
    # §6.4.1: cumulative lost is a 24-bit two's-complement field, clamped rather than wrapped.
    lost = max(-0x800000, min(0x7FFFFF, block.cumulative_lost)) & 0xFFFFFF
    return _BLOCK.pack(
        block.ssrc,
        (block.fraction_lost & 0xFF) << 24 | lost,
        block.highest_sequence & 0xFFFFFFFF,
        block.jitter & 0xFFFFFFFF,
        block.lsr & 0xFFFFFFFF,
        block.dlsr & 0xFFFFFFFF,
    )


def build_rr(ssrc: int, blocks: Sequence[ReportBlock] = ()) -> bytes:
    """RR packet(s): at most 31 blocks fit one RR, further ones go in RRs that follow (§6.4)."""
    parts = []
    start = 0
    while True:
        chunk = blocks[start : start + 31]
        body = _WORD.pack(ssrc) + b"".join(build_report_block(b) for b in chunk)
        parts.append(_header(len(chunk), RR, len(body)) + body)
        start += 31
        if start >= len(blocks):
            return b"".join(parts)


def build_sdes(ssrc: int, cname: str) -> bytes:
    value = cname.encode("utf-8")
    if len(value) > 255:
        raise ValueError("CNAME longer than 255 octets")
    chunk = _WORD.pack(ssrc) + bytes([CNAME, len(value)]) + value
    # At least one null octet ends the item list, then pad to a 32-bit boundary.
    chunk += bytes(4 - len(chunk) % 4)
    return _header(1, SDES, len(chunk)) + chunk


def build_bye(ssrcs: Sequence[int], reason: str | None = None) -> bytes:
    if len(ssrcs) > 31:
        raise ValueError("at most 31 SSRCs in one BYE")
    body = b"".join(_WORD.pack(s) for s in ssrcs)
    if reason is not None:
        text = reason.encode("utf-8")[:255]
        body += bytes([len(text)]) + text
        body += bytes(-len(body) % 4)
    return _header(len(ssrcs), BYE, len(body)) + body


def build_receiver_report(
    ssrc: int, blocks: Sequence[ReportBlock], cname: str, *, bye: str | None = None
) -> bytes:
    """The SRS's compound RTCP packet (§6.1): RR, SDES with CNAME, and BYE when leaving.

    ``bye`` is the reason text ("" for a BYE without reason), or None for no BYE.
    """
    packet = build_rr(ssrc, blocks) + build_sdes(ssrc, cname)
    if bye is not None:
        packet += build_bye([ssrc], bye or None)
    return packet
