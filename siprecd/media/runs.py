"""Runs of clean RTP packets: what a batch of queued datagrams can take in one step.

A stream queues its (decrypted) datagrams and hands them to the recording a few at a time
(``[media] packet_batch``).  Most of them are a *run*: consecutive packets of one source with
nothing to decide per packet, which the statistics, the timeline and the writer can each take
in one step.  :func:`take_run` finds how far one reaches; everything it leaves out goes through
the per-packet path unchanged.  Pure functions over bytes: no state, no clock.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["EXTENDED", "PLAIN", "queueable", "payload_offset", "take_run"]

_FIXED = struct.Struct("!BBHII")
_WORDS = struct.Struct("!H")
#: First octet of a plain RTP packet: version 2, no padding, no extension, no CSRC.
PLAIN = 0x80
#: The same with a header extension (RFC 3550 §5.3.1; RFC 8285's audio level, say).
EXTENDED = 0x90


def payload_offset(datagram: bytes) -> int | None:
    """Where the payload of a plain or extended packet starts (12, or after the extension);
    None for anything else (padding, CSRCs, another version, too short: what the queue does
    not hold, since only for these is the parse known not to fail)."""
    size = len(datagram)
    if size < 12:
        return None
    first = datagram[0]
    if first == PLAIN:
        return 12
    if first != EXTENDED or size < 16:
        return None
    offset = 16 + 4 * _WORDS.unpack_from(datagram, 14)[0]
    return offset if offset <= size else None


def queueable(datagram: bytes) -> bool:
    """A packet :func:`payload_offset` places: what a stream may queue."""
    return payload_offset(datagram) is not None


def take_run(datagrams: Sequence[bytes], start: int, end: int) -> int:
    """The end (exclusive) of the run of ``datagrams[start:end]`` that begins at ``start``.

    A run: packets (see :func:`payload_offset`) of one SSRC and payload type, without the
    marker bit, all of the same size with the payload at the same offset (the same extension
    length, whatever it holds), sequence numbers +1 and timestamps + the payload size each
    (modulo 2^16 and 2^32): one timestamp unit per payload octet, as G.711 has, so consecutive
    packets tile the timeline exactly.  Returns ``start + 1`` when the packet at ``start``
    starts no run (marker, odd header) or the next one breaks it: whatever a run leaves out is
    the per-packet path's to take.
    """
    first = datagrams[start]
    offset = payload_offset(first)
    if offset is None:
        return start + 1
    size = len(first)
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(first)
    if b1 & 0x80:
        return start + 1
    step = size - offset
    words = first[14:16] if b0 == EXTENDED else b""
    unpack = _FIXED.unpack_from
    index = start + 1
    while index < end:
        datagram = datagrams[index]
        if len(datagram) != size:
            break
        c0, c1, c_seq, c_ts, c_ssrc = unpack(datagram)
        seq = (seq + 1) & 0xFFFF
        ts = (ts + step) & 0xFFFFFFFF
        if c0 != b0 or c1 != b1 or c_seq != seq or c_ts != ts or c_ssrc != ssrc:
            break
        if words and datagram[14:16] != words:
            break
        index += 1
    return index
