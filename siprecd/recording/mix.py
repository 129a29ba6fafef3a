"""Two mono PCM timelines -> one stereo recording (a participant per channel) and/or a mono mix.

The two sides may have different rates (G.711 at 8 kHz and G.722 at 16 kHz, say): the lower
one is resampled to the higher with ``audioop.ratecv`` (state kept per side, so chunked input
resamples exactly like one long input).  Each side is appended as its timeline produces PCM;
output is emitted as soon as both sides cover the same sample positions, so memory stays at
the lag between the two sides.

Alignment is by sample position: the n-th output frame holds the n-th sample of each side.
Both timelines are expected to start at the same instant and to fill their own gaps with
silence.  If one side is more than ``max_lag`` seconds behind at a ``flush()`` (its timeline
stalled, or it never started), the mixer pads it with silence to keep going and drops the same
amount of that side's input when it arrives later, so positions stay aligned.  Only at a flush:
so the mix does not depend on how the sides' PCM was cut into appends (a stream taking its
packets in batches writes the same mix as one taking them one by one); between flushes the side
that is ahead holds its PCM.  ``finish()`` pads the shorter side at the end.

Mono mixdown is the sum of both sides with clipping to 16 bits (``audioop.add``).
"""

from __future__ import annotations

import sys
import warnings
from typing import Protocol

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["PCMSink", "Mixer", "interleave", "mixdown"]

_BIG_ENDIAN = sys.byteorder == "big"


class PCMSink(Protocol):
    def write(self, pcm: bytes) -> None: ...


def _native(pcm: bytes) -> bytes:
    # audioop works in native byte order; our PCM is little-endian.
    return audioop.byteswap(pcm, 2) if _BIG_ENDIAN else pcm


def interleave(left: bytes, right: bytes) -> bytes:
    """Two mono 16-bit LE fragments of equal length -> one stereo fragment (L, R, L, R...)."""
    # Extended-slice byte copies: about twice as fast as audioop.tostereo + add.
    stereo = bytearray(2 * len(left))
    stereo[0::4] = left[0::2]
    stereo[1::4] = left[1::2]
    stereo[2::4] = right[0::2]
    stereo[3::4] = right[1::2]
    return bytes(stereo)


def mixdown(left: bytes, right: bytes) -> bytes:
    """Sum of two mono 16-bit LE fragments of equal length, clipped to 16 bits."""
    return _native(audioop.add(_native(left), _native(right), 2))


class _Side:
    __slots__ = ("rate", "state", "pending", "debt", "samples_in")

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.state = None  # audioop.ratecv state
        self.pending = bytearray()  # output-rate PCM not yet emitted
        self.debt = 0  # output bytes already padded with silence, to drop from future input
        self.samples_in = 0


class Mixer:
    """Streams two mono sides (channel 0 = left, 1 = right) into ``stereo`` and/or ``mono`` sinks.

    Sinks are anything with ``write(bytes)``, e.g. a :class:`~siprecd.recording.wav.WavWriter`
    opened at :attr:`output_rate` with 2 (stereo) or 1 (mono) channels.  The mixer does not
    finalize its sinks.  Errors from a sink's ``write`` propagate to the caller of ``append``.
    """

    def __init__(
        self,
        left_rate: int,
        right_rate: int,
        *,
        stereo: PCMSink | None = None,
        mono: PCMSink | None = None,
        max_lag: float = 1.0,
        batch: float = 0.0,
    ) -> None:
        if stereo is None and mono is None:
            raise ValueError("a Mixer needs a stereo or a mono sink")
        self.output_rate = max(left_rate, right_rate)
        self._sides = (_Side(left_rate), _Side(right_rate))
        self._stereo = stereo
        self._mono = mono
        self._max_lag_bytes = max(2, int(max_lag * self.output_rate)) * 2
        # Emitting every 20 ms packet cost ~10% of the media path's CPU (bench/README.md):
        # with a batch, append emits once both sides hold that much, and flush() the rest.
        self._batch_bytes = int(batch * self.output_rate) * 2
        #: Output frames emitted so far.
        self.frames = 0
        #: Frames of silence inserted because a side lagged by more than max_lag (per side).
        self.padded = [0, 0]
        self.finished = False

    def append(self, channel: int, pcm: bytes) -> None:
        """Add mono 16-bit LE PCM at that side's own rate; emits what both sides now cover."""
        if self.finished:
            raise ValueError("append after finish")
        if len(pcm) % 2:
            raise ValueError("PCM must be whole 16-bit samples")
        side = self._sides[channel]
        side.samples_in += len(pcm) // 2
        if side.rate != self.output_rate:
            converted, side.state = audioop.ratecv(
                _native(pcm), 2, 1, side.rate, self.output_rate, side.state
            )
            pcm = _native(converted)
        if side.debt:
            dropped = min(side.debt, len(pcm))
            side.debt -= dropped
            pcm = pcm[dropped:]
        pending = side.pending
        pending += pcm
        other = self._sides[1 - channel]
        batch = self._batch_bytes
        if len(pending) >= batch and len(other.pending) >= batch:
            self._emit()

    def flush(self) -> None:
        """Pad a side that lags by more than ``max_lag``, then emit everything both sides cover
        (before the sinks are flushed)."""
        if self.finished:
            return
        for channel in (0, 1):
            ahead, behind = self._sides[channel], self._sides[1 - channel]
            lag = len(ahead.pending) - len(behind.pending)
            if lag > self._max_lag_bytes:
                # The other side has stalled: give it silence up to max_lag/2 behind us.
                padding = lag - self._max_lag_bytes // 2
                padding -= padding % 2
                behind.pending += bytes(padding)
                behind.debt += padding
                self.padded[1 - channel] += padding // 2
        self._emit()

    def finish(self) -> None:
        """Pad the shorter side with silence and emit everything; idempotent."""
        if self.finished:
            return
        left, right = self._sides
        longer = max(len(left.pending), len(right.pending))
        for side in self._sides:
            side.pending += bytes(longer - len(side.pending))
        self._emit()
        self.finished = True

    def _emit(self, at_least: int = 0) -> None:
        left, right = self._sides
        size = min(len(left.pending), len(right.pending))
        if not size or size < at_least:
            return
        left_pcm = bytes(left.pending[:size])
        right_pcm = bytes(right.pending[:size])
        del left.pending[:size]
        del right.pending[:size]
        self.frames += size // 2
        if self._stereo is not None:
            self._stereo.write(interleave(left_pcm, right_pcm))
        if self._mono is not None:
            self._mono.write(mixdown(left_pcm, right_pcm))
