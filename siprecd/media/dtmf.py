"""RFC 4733 telephone-events: from the packets of a stream to one report per key press.

A sender repeats an event's packets every few tens of milliseconds with the same RTP timestamp
(the event's start) and a growing duration, marks the first, sets the E bit on the last and sends
that last one three times.  Events longer than 0xFFFF timestamp units continue in segments with a
later timestamp (§2.5.1.3).  :class:`DtmfTracker` folds all of that into one :class:`DtmfEvent`,
reported when the end is seen or, when the end packets are lost, when the next event starts or the
stream finishes (``ended`` is then False).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

_PAYLOAD = struct.Struct("!BBH")  # event, E|R|volume, duration
DIGITS = "0123456789*#ABCD"  # event codes 0..15 (RFC 4733 §3.2)


class DtmfEvent:
    """One key press (or other telephone-event), as placed on the stream's timeline."""

    __slots__ = (
        "event",
        "volume",
        "rtp_timestamp",
        "arrival",
        "position",
        "duration",
        "clock_rate",
        "ended",
    )
    kind = "dtmf"

    def __init__(
        self,
        event: int,
        volume: int,
        rtp_timestamp: int,
        arrival: float,
        position: int,
        duration: int,
        clock_rate: int,
        ended: bool = False,
    ) -> None:
        self.event = event  # the code; digits are 0..15, others (RFC 4734 tones) by number
        self.volume = volume  # power level in -dBm0, 0..63
        self.rtp_timestamp = rtp_timestamp  # of the event's start
        self.arrival = arrival  # when its first packet arrived
        self.position = position  # of its start on the timeline, RTP timestamp units
        self.duration = duration  # RTP timestamp units
        self.clock_rate = clock_rate
        self.ended = ended  # an end packet was seen (False: cut short by loss or the call's end)

    @property
    def digit(self) -> str | None:
        return DIGITS[self.event] if self.event < 16 else None

    @property
    def duration_ms(self) -> float:
        return self.duration * 1000.0 / self.clock_rate

    def __repr__(self) -> str:
        return (
            f"DtmfEvent({self.digit or self.event!r}, ts={self.rtp_timestamp}, "
            f"position={self.position}, duration={self.duration}, ended={self.ended})"
        )


def parse_telephone_event(payload: bytes) -> tuple[int, bool, int, int] | None:
    """``(event, end, volume, duration)`` from the first 4 octets, None when shorter."""
    if len(payload) < 4:
        return None
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return event, bool(flags & 0x80), flags & 0x3F, duration


class DtmfTracker:
    """Folds telephone-event packets, fed in sequence order, into :class:`DtmfEvent` reports."""

    def __init__(self, clock_rate: int, emit: Callable[[DtmfEvent], None]) -> None:
        self.clock_rate = clock_rate
        self._emit = emit
        self._current: DtmfEvent | None = None
        self._segment_ts = 0  # timestamp of the current segment of a long event
        self._segment_base = 0  # duration of the segments before it
        self._ended: list[int] = []  # timestamps of recently ended events: their repeated ends

    def feed(
        self,
        rtp_timestamp: int,
        event: int,
        end: bool,
        volume: int,
        duration: int,
        marker: bool,
        arrival: float,
        position: int,
    ) -> None:
        current = self._current
        if current is not None and current.event == event:
            if rtp_timestamp == self._segment_ts:
                total = self._segment_base + duration
                if total > current.duration:
                    current.duration = total
                if end:
                    self._finish(current, True)
                return
            step = (rtp_timestamp - self._segment_ts) & 0xFFFFFFFF
            seen = current.duration - self._segment_base
            if not marker and seen <= step <= seen + self.clock_rate // 5:
                # A later segment of the same long event: unmarked, its timestamp moved on by
                # the previous segment's duration (§2.5.1.3); the slack covers lost updates.
                self._segment_base += step
                self._segment_ts = rtp_timestamp
                current.duration = max(current.duration, self._segment_base + duration)
                if end:
                    self._finish(current, True)
                return
        if rtp_timestamp in self._ended:
            return  # a repeated end packet of an event already reported
        if current is not None:
            self._finish(current, False)
        current = DtmfEvent(
            event, volume, rtp_timestamp, arrival, position, duration, self.clock_rate
        )
        self._segment_ts = rtp_timestamp
        self._segment_base = 0
        if end:
            self._finish(current, True)
        else:
            self._current = current

    def _finish(self, event: DtmfEvent, ended: bool) -> None:
        event.ended = ended
        self._current = None
        ended_list = self._ended
        ended_list.append(self._segment_ts)
        if len(ended_list) > 4:
            del ended_list[0]
        self._emit(event)

    def flush(self) -> None:
        """Report an event whose end never came (call ended, source changed)."""
        if self._current is not None:
            self._finish(self._current, False)

    @property
    def active(self) -> DtmfEvent | None:
        return self._current
