"""What the SRTP transforms share: packet indices and replay windows (RFC 3711 §3.3).

The AES-CM transform (:mod:`siprecd.security.transform`) and the AEAD-GCM one
(:mod:`siprecd.security.gcm`) differ only in their ciphers; the SRTP index a packet gets (ROC
estimation, §3.3.1), the SRTCP index a sender uses, and the 128-packet replay window per SSRC
(§3.3.2, libsrtp's default) are one piece of logic here, over the same per-SSRC dicts both keep.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "REPLAY_WINDOW",
    "RTCP_INDEX_MASK",
    "RtpState",
    "TransformError",
    "accept_rtcp",
    "accept_rtp",
    "advance",
    "check_replay",
    "check_roc",
    "closest_roc",
    "next_srtcp_index",
    "receive_index",
    "send_index",
]

REPLAY_WINDOW = 128
RTCP_INDEX_MASK = 0x7FFFFFFF


class TransformError(Exception):
    """Authentication failed, a replay, or a packet too short for its header and tag."""


@dataclass
class RtpState:
    roc: int
    highest: int  # s_l: the highest sequence number authenticated (sent, for a sender)
    window: int  # bit n set: index (highest index - n) was received

    @classmethod
    def at(cls, index: int) -> RtpState:
        """A receiver that has authenticated ``index`` (a context carried on after a restart)."""
        return cls(index >> 16, index & 0xFFFF, 1)


def check_roc(roc: int) -> int:
    """``roc`` itself if it is a 32-bit rollover counter; ValueError otherwise."""
    if not 0 <= roc <= 0xFFFFFFFF:
        raise ValueError(f"initial_roc {roc} is not a 32-bit rollover counter")
    return roc


def closest_roc(roc: int, s_l: int, seq: int) -> int:
    """RFC 3711 §3.3.1: the ROC that puts ``seq`` closest to s_l (-1: before the first wrap)."""
    if s_l < 0x8000:
        if seq - s_l > 0x8000:
            return roc - 1
    elif s_l - 0x8000 > seq:
        return roc + 1
    return roc


def send_index(states: dict[int, RtpState], ssrc: int, seq: int, first_roc: int = 0) -> int:
    """The index a sender gives ``seq``: its ROC goes up when the sequence number wraps."""
    state = states.get(ssrc)
    if state is None:
        state = states[ssrc] = RtpState(first_roc, seq, 0)
    elif seq < state.highest and state.highest - seq > 0x8000:
        state.roc += 1
    state.highest = seq
    return (state.roc << 16) | seq


def receive_index(state: RtpState | None, seq: int, first_roc: int = 0) -> int:
    """RFC 3711 §3.3.1: the index closest to s_l, checked against the replay window.

    ``first_roc``: the ROC taken for an SSRC not heard yet (0 unless a stream is resumed).
    Raises :class:`TransformError` for a replay or a packet older than the window.
    """
    if state is None:
        return (first_roc << 16) | seq
    roc = closest_roc(state.roc, state.highest, seq)
    if roc < 0:
        raise TransformError("SRTP packet from before the first rollover")
    index = (roc << 16) | seq
    check_replay(index, (state.roc << 16) | state.highest, state.window)
    return index


def accept_rtp(states: dict[int, RtpState], ssrc: int, index: int) -> None:
    """Record an authenticated SRTP index (only after authentication: forgeries move nothing)."""
    state = states.get(ssrc)
    if state is None:
        states[ssrc] = RtpState.at(index)
        return
    highest, window = advance(index, (state.roc << 16) | state.highest, state.window)
    state.roc, state.highest, state.window = highest >> 16, highest & 0xFFFF, window


def next_srtcp_index(counters: dict[int, int], ssrc: int) -> int:
    """The SRTCP index to send next under ``ssrc``: from 1, like libsrtp."""
    index = counters.get(ssrc, 1)
    counters[ssrc] = (index + 1) & RTCP_INDEX_MASK
    return index


def accept_rtcp(seen: dict[int, tuple[int, int]], ssrc: int, index: int) -> None:
    """Record an authenticated SRTCP index; ``check_replay(index, *seen[ssrc])`` came first."""
    previous = seen.get(ssrc)
    seen[ssrc] = (index, 1) if previous is None else advance(index, *previous)


def check_replay(index: int, highest: int, window: int) -> None:
    if index > highest:
        return
    delta = highest - index
    if delta >= REPLAY_WINDOW:
        raise TransformError("SRTP packet too old (outside the replay window)")
    if window >> delta & 1:
        raise TransformError("SRTP packet replayed")


def advance(index: int, highest: int, window: int) -> tuple[int, int]:
    mask = (1 << REPLAY_WINDOW) - 1
    if index > highest:
        return index, ((window << (index - highest)) | 1) & mask
    return highest, window | (1 << (highest - index))
