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
from typing import NamedTuple

__all__ = ["PLAIN", "RunStart", "is_plain", "run_start", "take_run"]

_FIXED = struct.Struct("!BBHII")
#: First octet of a plain RTP packet: version 2, no padding, no extension, no CSRC.  Only such
#: packets are queued raw (their parse cannot fail); anything else is taken at once.
PLAIN = 0x80


class RunStart(NamedTuple):
    """The header of a run's first packet."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload_size: int


def is_plain(datagram: bytes) -> bool:
    """A version-2 packet with the bare 12-octet header (what the queue holds)."""
    return len(datagram) >= 12 and datagram[0] == PLAIN


def run_start(datagram: bytes) -> RunStart:
    """The fields a run needs from a plain packet (see :func:`is_plain`)."""
    _b0, b1, seq, ts, ssrc = _FIXED.unpack_from(datagram)
    return RunStart(b1, seq, ts, ssrc, len(datagram) - 12)


def take_run(datagrams: Sequence[bytes], start: int, end: int) -> int:
    """The end (exclusive) of the run of ``datagrams[start:end]`` that begins at ``start``.

    A run: plain packets (see :func:`is_plain`) of one SSRC and payload type, without the
    marker bit, all with the same payload size, sequence numbers +1 and timestamps + the
    payload size each (modulo 2^16 and 2^32): one timestamp unit per payload octet, as G.711
    has, so consecutive packets tile the timeline exactly.  Returns ``start + 1`` when the
    packet at ``start`` starts no run (marker, odd header) or the next one breaks it:
    whatever a run leaves out is the per-packet path's to take.
    """
    first = datagrams[start]
    size = len(first)
    if size < 12:
        return start + 1
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(first)
    if b0 != PLAIN or b1 & 0x80:
        return start + 1
    step = size - 12
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
        index += 1
    return index
