"""One stream's packets turned into an exact, gapless timeline for the writer.

A :class:`Timeline` takes the RTP packets of one recorded stream, in arrival order, and produces
events in timeline order, all in RTP timestamp units (the stream's ``clock_rate``):

* audio: the :class:`~siprecd.media.rtp.RtpPacket` itself, with ``position``, ``duration`` and
  ``skip`` set (no second object per packet);
* :class:`Silence` for every stretch with no audio: loss, DTX, hold, CN, DTMF, a source change;
* :class:`~siprecd.media.dtmf.DtmfEvent` for each RFC 4733 event (reported beside the audio: the
  time it covers is silence on the audio timeline).

Audio and silence tile the timeline: each starts where the previous one ended (an audio packet
that overlaps its predecessor says so with ``skip``, the units to drop from its start).  So a
writer can append blindly, and several streams are aligned through :attr:`Timeline.anchor` (the
arrival time of the first placed packet) or :attr:`Timeline.ntp_mapping` (from an RTCP SR).

Design, in short (the reasons are next to the code):

* Reordering: a packet that comes in sequence is released at once; packets after a gap are held
  until the gap fills, until more than ``reorder_window`` packets are held, or until the oldest
  held one is ``max_delay`` seconds older than the newest arrival.  Then the missing packets are
  given up as lost and any of them arriving later is dropped as too late.
* Duration: ``duration_of(payload_type, payload)`` (from the codec module) gives each packet's
  duration; when it returns None (or is not given) the duration is learnt from the timestamp step
  between consecutive packets.  Silence between two packets is then exactly
  ``next.timestamp - (prev.timestamp + prev.duration)``, modulo 2^32.
* Timestamps are trusted while they agree with arrival times to within ``resync_tolerance``
  seconds; beyond that (a sender that reset its timestamps, or froze them over a hold) the packet
  is placed by its arrival time instead.  A new SSRC and a sequence restart are placed the same
  way: the silence between the old source's last packet and the new one's first is the wall-clock
  gap between them.
* A new SSRC takes over after ``min_sequential`` packets close in sequence (RFC 3550 A.1's
  probation) and once the current source has been quiet for ``source_switch_idle`` seconds, so
  stray or interleaved packets of another source cannot make the timeline flip between sources.

Nothing here reads a clock: arrival times come with the packets, so the tests are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple

from siprecd.media.dtmf import DtmfEvent, DtmfTracker, parse_telephone_event
from siprecd.media.rtcp import ntp_to_unix
from siprecd.media.rtp import RtpPacket
from siprecd.media.stats import MAX_DROPOUT, MAX_MISORDER, StreamCounters

_HALF = 0x80000000
_MASK32 = 0xFFFFFFFF
_INF = float("inf")
LOST_MEMORY = 256  # recently lost sequence numbers kept to tell "too late" from "duplicate"
CANDIDATE_LIMIT = 32  # packets of a would-be new source held while it proves itself
CANDIDATE_SOURCES = 4  # would-be sources tracked at once
PAYLOAD_TYPE_CN = 13


class Silence:
    """No audio for ``duration`` units from ``position``; ``reason`` is one of
    ``"loss"`` (packets never arrived), ``"gap"`` (DTX, hold, a source change or a timestamp
    jump), ``"cn"`` (RFC 3389 comfort noise), ``"dtmf"`` (RFC 4733 events instead of audio) or
    ``"start"`` (before the stream's first packet, relative to ``origin``)."""

    __slots__ = ("position", "duration", "reason")
    kind = "silence"

    def __init__(self, position: int, duration: int, reason: str) -> None:
        self.position = position
        self.duration = duration
        self.reason = reason

    def __repr__(self) -> str:
        return f"Silence({self.position}, {self.duration}, {self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Silence)
            and self.position == other.position
            and self.duration == other.duration
            and self.reason == other.reason
        )


Audio = RtpPacket  # audio events are the packets themselves, with position/duration/skip set
Event = RtpPacket | Silence | DtmfEvent
DurationOf = Callable[[int, bytes], "int | None"]
_NO_EVENTS: tuple[Event, ...] = ()


_SETS: dict[frozenset[int], frozenset[int]] = {}


def _shared_set(values: Collection[int]) -> frozenset[int]:
    """One frozenset object per distinct set of payload types, not three per stream (216
    bytes each; a few distinct sets ever: the offers' CN and telephone-event types)."""
    key = frozenset(values)
    if len(_SETS) > 256:  # a bound, whatever peers offer
        _SETS.clear()
    return _SETS.setdefault(key, key)


def _unknown_duration(payload_type: int, payload: bytes) -> None:
    return None


class Anchor(NamedTuple):
    """Where the stream's first placed packet sits in wall-clock time and on the timeline."""

    arrival: float
    rtp_timestamp: int
    position: int


class Timeline:
    """One stream's timeline; see the module docstring for the rules.

    ``clock_rate``: RTP timestamp units per second, shared by every payload type of the stream
    (true of telephony codecs: G.722 runs at 8000 too).  ``duration_of(pt, payload)``: a packet's
    duration in those units, None when unknown.  ``reorder_window``: packets held after a gap
    (0: none).  ``max_delay``: seconds a held packet waits for the gap before it (None: no limit).
    ``comfort_noise`` / ``telephone_event``: payload types of RFC 3389 CN and RFC 4733 events.
    ``origin``: a wall-clock time (e.g. the session's start) the timeline starts at, with
    Silence("start") up to the first packet; None starts it at the first packet.
    ``resync_tolerance``: seconds by which timestamps may disagree with arrival times before the
    packet is placed by arrival.  ``min_sequential`` / ``source_switch_idle``: what it takes for
    a new SSRC to take over.  ``counters``: shared with the receiver if it wants to add its own.
    """

    # Slots: 40 attributes are past what an instance dict shares its keys for (CPython keeps a
    # dict of its own per instance then): about 1.3 KiB per stream less (bench/README.md).
    __slots__ = (
        "_bad", "_begun", "_candidates", "_cn", "_dtmf", "_duration_of", "_end", "_finished",
        "_frame", "_guess_seq", "_guess_ts", "_held", "_highest_ext", "_last_arrival", "_lost",
        "_max_delay", "_min_sequential", "_next_ext", "_next_seq", "_ntp_mapping", "_origin",
        "_out", "_pending_until", "_pt", "_reason", "_ref_arrival", "_ref_pos", "_ref_ts",
        "_sender_report", "_special", "_ssrc", "_switch_idle", "_te", "_tolerance", "_window",
        "anchor", "clock_rate", "counters", "source",
    )

    def __init__(
        self,
        clock_rate: int,
        *,
        duration_of: DurationOf | None = None,
        reorder_window: int = 8,
        max_delay: float | None = 0.2,
        comfort_noise: Collection[int] = (PAYLOAD_TYPE_CN,),
        telephone_event: Collection[int] = (),
        origin: float | None = None,
        resync_tolerance: float = 1.0,
        min_sequential: int = 2,
        source_switch_idle: float = 0.1,
        counters: StreamCounters | None = None,
    ) -> None:
        self.clock_rate = clock_rate
        self.counters = counters if counters is not None else StreamCounters()
        self._duration_of: DurationOf = duration_of or _unknown_duration
        self._window = reorder_window
        self._max_delay = max_delay
        self._cn = _shared_set(comfort_noise)
        self._te = _shared_set(telephone_event)
        self._special = _shared_set(self._cn | self._te)
        self._origin = origin
        self._tolerance = resync_tolerance * clock_rate
        self._min_sequential = max(1, min_sequential)
        self._switch_idle = source_switch_idle
        self._out: list[Event] = []
        self._finished = False
        # The current source and its sequence state.
        self._ssrc: int | None = None
        self.source: int | None = None  # the current SSRC; unlike _ssrc, kept after finish()
        self._next_seq = 0
        self._held: dict[int, RtpPacket] = {}  # extended seq (relative) -> packet, after a gap
        self._next_ext = 0
        self._highest_ext = -1
        self._lost: dict[int, None] = {}
        # (first sequence number, counters.packets then) of the current sequence: the
        # MAX_MISORDER numbers before it are "too late" (a dict of them cost 7.7 KiB a stream).
        self._begun: tuple[int, int] | None = None
        self._bad: RtpPacket | None = None  # a lone packet far outside the window (A.1)
        # Packets of SSRCs that may take over, per SSRC (dict order: oldest first).
        self._candidates: dict[int, list[RtpPacket]] = {}
        self._last_arrival = 0.0
        # The timeline: where the last event ended, and why the next silence happens.
        self._end = 0
        self._reason: str | None = None
        self._pending_until = 0  # CN/DTMF known to cover the timeline up to here
        # The reference mapping RTP timestamps to positions: the last packet placed.
        self._ref_ts: int | None = None  # None: place the next packet by arrival time
        self._ref_pos = 0
        self._ref_arrival: float | None = None  # None: nothing placed yet
        self._pt: int | None = None
        self._frame = clock_rate // 50  # learnt duration when duration_of cannot tell
        self._guess_seq = -2
        self._guess_ts = 0
        self._dtmf = DtmfTracker(clock_rate, self._emit_dtmf)
        self.anchor: Anchor | None = None
        self._sender_report: tuple[int, int, int] | None = None
        self._ntp_mapping: tuple[float, int] | None = None

    # -- input -----------------------------------------------------------------------------

    def push(self, packet: RtpPacket, arrival: float) -> None:
        """Take one parsed (and decrypted) packet that arrived at ``arrival`` (seconds)."""
        packet.arrival = arrival
        counters = self.counters
        counters.packets += 1
        counters.bytes += len(packet.payload)
        if packet.ssrc != self._ssrc:
            self._other_source(packet)
            return
        self._last_arrival = arrival
        seq = packet.sequence
        if seq != self._next_seq or self._held:
            self._out_of_order(packet)
            return
        self._next_seq = (seq + 1) & 0xFFFF
        # The fast path, inline because it runs for nearly every packet: the same audio payload
        # type as before, its timestamp agreeing with its arrival time and exactly continuing
        # the timeline.  Anything else (first packet, CN, DTMF, codec change, gap, overlap,
        # jump) takes _release, which handles every case.
        pt = packet.payload_type
        ref_ts = self._ref_ts
        if pt != self._pt or ref_ts is None:
            self._release(packet)
            return
        duration = self._duration_of(pt, packet.payload)
        if duration is None:
            duration = self._guess(packet)
        ts = packet.timestamp
        delta = ((ts - ref_ts + _HALF) & _MASK32) - _HALF
        position = self._ref_pos + delta
        drift = delta - (arrival - self._ref_arrival) * self.clock_rate  # type: ignore[operator]
        if position != self._end or not -self._tolerance <= drift <= self._tolerance:
            self._place_audio(packet, duration)
            return
        self._ref_ts = ts
        self._ref_pos = position
        self._ref_arrival = arrival
        packet.position = position
        packet.duration = duration
        packet.skip = 0
        self._end = position + duration
        self._reason = None
        self._out.append(packet)

    def push_run(
        self,
        ssrc: int,
        payload_type: int,
        sequence: int,
        timestamp: int,
        payload: bytes,
        arrivals: Sequence[float],
        start: int,
        end: int,
    ) -> int:
        """Place a run (:func:`siprecd.media.runs.take_run`) of ``end - start`` packets in one
        step, exactly as :meth:`push` would place them one by one; returns how many it placed
        from the front (0: none; the caller pushes the rest one by one).

        ``payload`` is the first packet's (every packet of a run has that size; its duration
        must be the run's timestamp step: one unit per octet, which the caller vouches for by
        giving only codecs whose duration is their size).  ``arrivals[start:end]`` are the
        packets' arrival times.  Nothing is added to :meth:`drain`'s events: the run is audio
        from the old :attr:`position` to the new one, and the caller writes it itself.  Only
        what push's fast path would do is done here (same source, in sequence, nothing held,
        the audio payload type of before, timestamps agreeing with arrival times); the first
        packet that would leave that path ends the run.
        """
        if (
            ssrc != self._ssrc
            or sequence != self._next_seq
            or self._held
            or payload_type != self._pt
            or self._ref_ts is None
            or self._out
        ):
            return 0
        step = len(payload)
        if self._duration_of(payload_type, payload) != step:
            return 0
        ref_arrival: float = self._ref_arrival  # type: ignore[assignment]
        delta = ((timestamp - self._ref_ts + _HALF) & _MASK32) - _HALF
        if self._ref_pos + delta != self._end:
            return 0
        rate = self.clock_rate
        tolerance = self._tolerance
        low = -tolerance
        index = start
        # The per-packet drift check, in push's float operations so the outcome is the same.
        while index < end:
            arrival = arrivals[index]
            drift = delta - (arrival - ref_arrival) * rate
            if not low <= drift <= tolerance:
                break
            ref_arrival = arrival
            delta = step
            index += 1
        placed = index - start
        if not placed:
            return 0
        counters = self.counters
        counters.packets += placed
        counters.bytes += placed * step
        self._last_arrival = ref_arrival
        self._next_seq = (sequence + placed) & 0xFFFF
        self._ref_ts = (timestamp + (placed - 1) * step) & _MASK32
        self._ref_pos = self._end + (placed - 1) * step
        self._ref_arrival = ref_arrival
        self._end += placed * step
        self._reason = None
        return placed

    def finish(self) -> None:
        """End of the stream: release everything held, report an unfinished DTMF event and
        cover the time CN or DTMF is known to have lasted.  Later pushes are dropped."""
        if self._finished:
            return
        counters = self.counters
        # A source that started after the current one fell quiet takes over even if the
        # stream ends before the quiet lasted source_switch_idle; one sending alongside does not.
        for ssrc, candidates in list(self._candidates.items()):
            if self._ssrc is None or (
                len(candidates) >= self._min_sequential
                and candidates[0].arrival >= self._last_arrival
            ):
                self._switch(ssrc)
        for candidates in self._candidates.values():
            counters.foreign += len(candidates)
        self._candidates.clear()
        if self._bad is not None:
            counters.sequence_jumps += 1
            self._bad = None
        self._drain(_INF, True)
        self._dtmf.flush()
        self._fill(self._pending_until)
        self._finished = True
        self._ssrc = None  # every later packet takes the foreign path, which drops it

    def sender_report(self, ssrc: int, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """Record an RTCP SR's NTP <-> RTP pair for :attr:`ntp_mapping`."""
        self._sender_report = (ssrc, ntp_timestamp, rtp_timestamp)
        self._resolve_sender_report()

    # -- output ----------------------------------------------------------------------------

    def drain(self) -> Sequence[Event]:
        """The events produced since the last call, in timeline order (audio/silence tile the
        timeline; DTMF events carry their own position)."""
        out = self._out
        if not out:
            return _NO_EVENTS
        self._out = []
        return out

    @property
    def pending(self) -> int:
        return len(self._out)

    @property
    def position(self) -> int:
        """Where the timeline ends so far (RTP timestamp units from its start)."""
        return self._end

    @property
    def ntp_mapping(self) -> tuple[float, int] | None:
        """``(unix time from the sender's NTP clock, timeline position)`` from the latest SR of
        the current source, once a packet of that source has been placed."""
        self._resolve_sender_report()
        return self._ntp_mapping

    # -- sequence order ----------------------------------------------------------------------

    def _out_of_order(self, packet: RtpPacket) -> None:
        seq = packet.sequence
        d = ((seq - self._next_seq + 0x8000) & 0xFFFF) - 0x8000
        if d < 0:
            if d >= -MAX_MISORDER:
                if seq in self._lost or self._before_begin(seq):
                    self.counters.too_late += 1
                else:
                    self.counters.duplicates += 1
            else:
                self._jump(packet)
            return
        if d > MAX_DROPOUT:
            self._jump(packet)
            return
        held = self._held
        if not held:
            # Extended numbers only matter while something is held: restart them at 0.
            self._next_ext = 0
            self._highest_ext = -1
        ext = self._next_ext + d
        if ext in held:
            self.counters.duplicates += 1
            return
        if ext < self._highest_ext:
            self.counters.reordered += 1
        else:
            self._highest_ext = ext
        held[ext] = packet
        self._drain(packet.arrival, False)

    def _drain(self, now: float, force: bool) -> None:
        """Release held packets in order; give up on missing ones when forced or past limits."""
        held = self._held
        while held:
            ext = self._next_ext
            packet = held.pop(ext, None)
            if packet is not None:
                self._next_ext = ext + 1
                self._next_seq = (self._next_seq + 1) & 0xFFFF
                self._release(packet)
                continue
            if not force and len(held) <= self._window:
                max_delay = self._max_delay
                if max_delay is None or now - min(p.arrival for p in held.values()) <= max_delay:
                    return
            first = min(held)
            self._give_up(first - ext)
            self._next_ext = first

    def _give_up(self, missing: int) -> None:
        self.counters.lost += missing
        if self._reason is None:
            self._reason = "loss"
        lost = self._lost
        start = self._next_seq
        for i in range(max(0, missing - LOST_MEMORY), missing):
            lost[(start + i) & 0xFFFF] = None
        while len(lost) > LOST_MEMORY:
            del lost[next(iter(lost))]
        self._next_seq = (start + missing) & 0xFFFF

    def _begin(self, seq: int) -> None:
        """Start a sequence at ``seq`` (new source or restart); anything just before it that
        shows up late is too late, not a duplicate."""
        self._held.clear()
        self._next_seq = seq
        self._lost.clear()
        self._begun = (seq, self.counters.packets)

    def _before_begin(self, seq: int) -> bool:
        """``seq`` is one of the MAX_MISORDER numbers just before the sequence began, while the
        sequence has not come round to them again (half the number space: then they are new)."""
        if self._begun is None:
            return False
        first, packets_then = self._begun
        if self.counters.packets - packets_then > 0x8000:
            self._begun = None
            return False
        return 0 < ((first - seq) & 0xFFFF) <= MAX_MISORDER

    def _accept(self, packet: RtpPacket) -> None:
        if packet.sequence == self._next_seq and not self._held:
            self._next_seq = (packet.sequence + 1) & 0xFFFF
            self._release(packet)
        else:
            self._out_of_order(packet)

    def _jump(self, packet: RtpPacket) -> None:
        # RFC 3550 A.1: a far jump is believed only when the next packet follows it.
        bad = self._bad
        if bad is None or packet.sequence != (bad.sequence + 1) & 0xFFFF:
            if bad is not None:
                self.counters.sequence_jumps += 1
            self._bad = packet
            return
        self._bad = None
        self.counters.sequence_restarts += 1
        self._drain(_INF, True)
        self._ref_ts = None  # the timestamps probably restarted too: place by arrival
        self._begin(bad.sequence)
        self._accept(bad)
        self._accept(packet)

    # -- sources -----------------------------------------------------------------------------

    def _other_source(self, packet: RtpPacket) -> None:
        counters = self.counters
        if self._finished:
            counters.too_late += 1
            return
        ssrc = packet.ssrc
        sources = self._candidates
        candidates = sources.get(ssrc)
        if candidates is None:
            if len(sources) >= CANDIDATE_SOURCES:
                counters.foreign += len(sources.pop(next(iter(sources))))
            sources[ssrc] = candidates = [packet]
        else:
            d = ((packet.sequence - candidates[-1].sequence + 0x8000) & 0xFFFF) - 0x8000
            if d == 0:
                counters.duplicates += 1
                return
            if abs(d) <= self._window + 2:
                candidates.append(packet)
                if len(candidates) > CANDIDATE_LIMIT:
                    counters.foreign += 1
                    del candidates[0]
            else:
                counters.foreign += len(candidates)
                candidates[:] = [packet]
        if len(candidates) >= self._min_sequential and (
            self._ssrc is None or packet.arrival - self._last_arrival >= self._switch_idle
        ):
            self._switch(ssrc)

    def _switch(self, ssrc: int) -> None:
        candidates = self._candidates.pop(ssrc)
        if self._ssrc is not None:
            self._drain(_INF, True)
            self._dtmf.flush()
            self.counters.ssrc_changes += 1
            self._ref_ts = None  # the new source's timestamps mean nothing here: use arrival
            self._reason = None  # the silence before it is a source change ("gap")
            if self._bad is not None:
                self.counters.sequence_jumps += 1
                self._bad = None
        first = candidates[0].sequence
        lowest = min(((p.sequence - first + 0x8000) & 0xFFFF) - 0x8000 for p in candidates)
        self._ssrc = self.source = ssrc
        self._begin((first + lowest) & 0xFFFF)
        self._last_arrival = candidates[-1].arrival
        for packet in candidates:
            self._accept(packet)

    # -- placing packets on the timeline -------------------------------------------------------

    def _release(self, packet: RtpPacket) -> None:
        pt = packet.payload_type
        if pt in self._special:
            self._release_special(packet)
            return
        if pt != self._pt:
            if self._pt is not None:
                self.counters.payload_type_changes += 1
            self._pt = pt
        duration = self._duration_of(pt, packet.payload)
        if duration is None:
            duration = self._guess(packet)
        self._place_audio(packet, duration)

    def _place_audio(self, packet: RtpPacket, duration: int) -> None:
        position = self._place(packet.timestamp, packet.arrival)
        end = self._end
        if position == end:
            packet.skip = 0
        elif position > end:
            self._out.append(Silence(end, position - end, self._reason or "gap"))
            packet.skip = 0
        else:
            skip = end - position
            if skip >= duration:
                self.counters.overlaps += 1
                return
            packet.skip = skip
        packet.position = position
        packet.duration = duration
        self._end = position + duration
        self._reason = None
        self._out.append(packet)

    def _place(self, ts: int, arrival: float) -> int:
        """The position of timestamp ``ts`` sent about ``arrival``; moves the reference."""
        ref_ts = self._ref_ts
        ref_arrival = self._ref_arrival
        if ref_arrival is None:
            position = self._start(ts, arrival)
        elif ref_ts is None:
            position = self._ref_pos + round((arrival - ref_arrival) * self.clock_rate)
            if position < self._end:
                position = self._end
        else:
            delta = ((ts - ref_ts + _HALF) & _MASK32) - _HALF
            wall = (arrival - ref_arrival) * self.clock_rate
            if abs(delta - wall) <= self._tolerance:
                position = self._ref_pos + delta
            else:
                self.counters.timestamp_jumps += 1
                position = self._ref_pos + round(wall)
                if position < self._end:
                    position = self._end
        self._ref_ts = ts
        self._ref_pos = position
        self._ref_arrival = arrival
        return position

    def _start(self, ts: int, arrival: float) -> int:
        position = 0
        if self._origin is not None:
            position = max(0, round((arrival - self._origin) * self.clock_rate))
            if position:
                self._out.append(Silence(0, position, "start"))
                self._end = position
        self.anchor = Anchor(arrival, ts, position)
        return position

    def _release_special(self, packet: RtpPacket) -> None:
        counters = self.counters
        if packet.payload_type in self._te:
            counters.telephone_events += 1
            parsed = parse_telephone_event(packet.payload)
            if parsed is None:
                counters.malformed_events += 1
                return
            event, end, volume, duration = parsed
            # The packet's timestamp is the event's start, sent `duration` units ago.
            position = self._place(packet.timestamp, packet.arrival - duration / self.clock_rate)
            self._dtmf.feed(
                packet.timestamp,
                event,
                end,
                volume,
                duration,
                packet.marker,
                packet.arrival,
                position,
            )
            until = position + duration
            self._reason = "dtmf"
        else:
            counters.comfort_noise += 1
            until = self._place(packet.timestamp, packet.arrival)
            self._reason = "cn"
        if until > self._pending_until:
            self._pending_until = until

    def _guess(self, packet: RtpPacket) -> int:
        # Without a codec's word, a packet lasts as long as the timestamp step between the last
        # two consecutive packets (DTX gaps aside, which then count as audio, not silence).
        seq = packet.sequence
        ts = packet.timestamp
        if seq == (self._guess_seq + 1) & 0xFFFF:
            delta = ((ts - self._guess_ts + _HALF) & _MASK32) - _HALF
            if 0 < delta <= self.clock_rate // 4:
                self._frame = delta
        self._guess_seq = seq
        self._guess_ts = ts
        return self._frame

    def _fill(self, until: int) -> None:
        end = self._end
        if until > end:
            self._out.append(Silence(end, until - end, self._reason or "gap"))
            self._end = until
            self._reason = None

    def _emit_dtmf(self, event: DtmfEvent) -> None:
        self.counters.dtmf_events += 1
        self._out.append(event)

    def _resolve_sender_report(self) -> None:
        report = self._sender_report
        if report is None or self._ref_ts is None:
            return
        ssrc, ntp, rtp_ts = report
        if ssrc != self.source:
            return
        position = self._ref_pos + ((rtp_ts - self._ref_ts + _HALF) & _MASK32) - _HALF
        self._ntp_mapping = (ntp_to_unix(ntp), position)
        self._sender_report = None
