"""Reception statistics: RFC 3550 A.1 (sequence validity), A.3 (loss), A.8 (jitter), per source.

:class:`SourceStats` is what an RR reports about one SSRC; it follows the RFC's algorithms
literally (including probation: the first ``min_sequential - 1`` packets of a new source are not
counted, and duplicates count as received, so cumulative loss can go negative).
:class:`StreamStats` keeps one per SSRC heard on a stream.  :class:`StreamCounters` holds what the
timeline did with the packets (duplicates dropped, reordered, too late, source and codec changes);
they are separate because the RFC numbers describe the network and the counters describe the
recording.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from siprecd.media.rtcp import ReportBlock, ntp_middle
from siprecd.media.rtp import RtpPacket

RTP_SEQ_MOD = 1 << 16
MIN_SEQUENTIAL = 2
MAX_DROPOUT = 3000
MAX_MISORDER = 100


@dataclass(slots=True)
class StreamCounters:
    """What a :class:`~siprecd.media.timeline.Timeline` did with a stream's packets."""

    packets: int = 0  # every packet pushed, whatever became of it
    bytes: int = 0  # their payload octets
    duplicates: int = 0  # dropped: already received
    reordered: int = 0  # arrived after a later packet but in time to be placed
    too_late: int = 0  # dropped: its slot had already been given up as lost
    lost: int = 0  # sequence numbers given up on (never arrived in time)
    ssrc_changes: int = 0
    payload_type_changes: int = 0
    foreign: int = 0  # dropped: from an SSRC that did not (yet) take over the stream
    sequence_restarts: int = 0  # same SSRC, sequence numbers jumped (A.1 "bad_seq" confirmed)
    sequence_jumps: int = 0  # dropped: a lone packet far outside the sequence window
    timestamp_jumps: int = 0  # RTP timestamps disagreed with arrival times: re-anchored
    overlaps: int = 0  # audio dropped because its whole duration was already on the timeline
    comfort_noise: int = 0  # CN packets (RFC 3389)
    telephone_events: int = 0  # RFC 4733 packets
    dtmf_events: int = 0  # distinct events reported
    malformed_events: int = 0  # telephone-event payloads shorter than 4 octets

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class SourceStats:
    """One SSRC's sequence state, loss and jitter, updated once per packet."""

    __slots__ = (
        "ssrc",
        "clock_rate",
        "max_seq",
        "cycles",
        "base_seq",
        "bad_seq",
        "probation",
        "received",
        "expected_prior",
        "received_prior",
        "jitter",
        "_last_ts",
        "_last_arrival",
        "restarts",
        "last_sr_ntp",
        "last_sr_arrival",
        "_min_sequential",
        "_max_dropout",
        "_max_misorder",
        "_first",
    )

    def __init__(
        self,
        ssrc: int,
        clock_rate: int,
        *,
        min_sequential: int = MIN_SEQUENTIAL,
        max_dropout: int = MAX_DROPOUT,
        max_misorder: int = MAX_MISORDER,
    ) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._min_sequential = min_sequential
        self._max_dropout = max_dropout
        self._max_misorder = max_misorder
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.bad_seq = RTP_SEQ_MOD + 1  # cannot equal any sequence number
        self.probation = min_sequential
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0  # RTP timestamp units, A.8's estimator in floating point
        self._last_ts: int | None = None
        self._last_arrival = 0.0
        self.restarts = 0
        self.last_sr_ntp = 0  # full 64-bit NTP timestamp of the last SR, 0 if none
        self.last_sr_arrival = 0.0
        self._first = True

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update(self, seq: int, rtp_timestamp: int, arrival: float) -> bool:
        """A.1 ``update_seq`` then A.8 jitter; False when the packet is not (yet) valid."""
        if seq == (self.max_seq + 1) & 0xFFFF and not self.probation:
            # The next packet in order, as nearly all are: A.1 and A.8 inline.
            if not seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
            self.received += 1
            last = self._last_ts
            if last is not None:
                d = (arrival - self._last_arrival) * self.clock_rate - (
                    ((rtp_timestamp - last + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                )
                if d < 0:
                    d = -d
                self.jitter += (d - self.jitter) * 0.0625
            self._last_ts = rtp_timestamp
            self._last_arrival = arrival
            return True
        return self._update(seq, rtp_timestamp, arrival)

    def update_run(self, seq: int, rtp_timestamp: int, step: int, arrivals: Sequence[float], start: int, end: int) -> None:
        """``end - start`` packets with sequence numbers +1 and timestamps +``step`` from
        ``(seq, rtp_timestamp)``, arrived at ``arrivals[start:end]``: what as many
        :meth:`update` calls would leave, in one step where :meth:`update`'s fast path applies
        (the jitter still takes each arrival, in the same float operations)."""
        last = self._last_ts
        if self.probation or last is None or seq != (self.max_seq + 1) & 0xFFFF:
            for index in range(start, end):
                self.update((seq + index - start) & 0xFFFF, (rtp_timestamp + (index - start) * step) & 0xFFFFFFFF, arrivals[index])
            return
        count = end - start
        last_seq = seq + count - 1
        if last_seq > 0xFFFF:
            self.cycles += RTP_SEQ_MOD  # the run crossed sequence number 0
            last_seq &= 0xFFFF
        elif not seq:
            self.cycles += RTP_SEQ_MOD
        self.max_seq = last_seq
        self.received += count
        rate = self.clock_rate
        jitter = self.jitter
        previous = self._last_arrival
        delta = ((rtp_timestamp - last + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        for index in range(start, end):
            arrival = arrivals[index]
            d = (arrival - previous) * rate - delta
            if d < 0:
                d = -d
            jitter += (d - jitter) * 0.0625
            previous = arrival
            delta = step
        self.jitter = jitter
        self._last_ts = (rtp_timestamp + (count - 1) * step) & 0xFFFFFFFF
        self._last_arrival = previous

    def _update(self, seq: int, rtp_timestamp: int, arrival: float) -> bool:
        if self.probation:
            if self._first:
                # A.1: a new source starts with max_seq = seq - 1 and full probation.
                self._first = False
                self.max_seq = (seq - 1) & 0xFFFF
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    self._jitter(rtp_timestamp, arrival)
                    return True
            else:
                self.probation = self._min_sequential - 1
                self.max_seq = seq
            return False
        udelta = (seq - self.max_seq) & 0xFFFF
        if udelta < self._max_dropout:
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD  # wrapped
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - self._max_misorder:
            if seq == self.bad_seq:
                # Two sequential packets after a big jump: the sender restarted its sequence.
                self._init_seq(seq)
                self.restarts += 1
                self._last_ts = None
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: a duplicate or a reordered packet, counted as received (A.3).
        self.received += 1
        self._jitter(rtp_timestamp, arrival)
        return True

    def _jitter(self, ts: int, arrival: float) -> None:
        # A.8 with arrival in seconds: D = (Rj - Ri) - (Sj - Si) in timestamp units, the RTP
        # difference taken modulo 2^32 so the wrap does not read as a 2^32 jump.
        last = self._last_ts
        if last is not None:
            d = (arrival - self._last_arrival) * self.clock_rate - (
                ((ts - last + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            )
            if d < 0:
                d = -d
            self.jitter += (d - self.jitter) * 0.0625  # the 1/16 gain
        self._last_ts = ts
        self._last_arrival = arrival

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.probation:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """Expected minus received, negative with duplicates; not clamped (the RR clamps)."""
        return self.expected - self.received

    def sender_report(self, ntp_timestamp: int, arrival: float) -> None:
        """Remember the source's latest SR for the LSR/DLSR of our next report block."""
        self.last_sr_ntp = ntp_timestamp
        self.last_sr_arrival = arrival

    def report_block(self, now: float) -> ReportBlock:
        """A.3: the block for an RR sent at ``now``; starts a new interval for fraction lost."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = (lost_interval << 8) // expected_interval
        if self.last_sr_ntp:
            lsr = ntp_middle(self.last_sr_ntp)
            dlsr = max(0, int((now - self.last_sr_arrival) * 65536))
        else:
            lsr = dlsr = 0
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=self.cumulative_lost,
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=lsr,
            dlsr=dlsr,
        )


class StreamStats:
    """The :class:`SourceStats` of every SSRC heard on one stream (at most ``max_sources``)."""

    def __init__(self, clock_rate: int, *, max_sources: int = 8) -> None:
        self.clock_rate = clock_rate
        self.max_sources = max_sources
        self.sources: dict[int, SourceStats] = {}
        self._current: SourceStats | None = None
        self._reported: dict[int, int] = {}  # ssrc -> `received` at the last report

    def update(self, packet: RtpPacket, arrival: float) -> bool:
        current = self._current
        if current is None or current.ssrc != packet.ssrc:
            current = self._source(packet.ssrc)
        return current.update(packet.sequence, packet.timestamp, arrival)

    def update_run(self, ssrc: int, seq: int, rtp_timestamp: int, step: int, arrivals: Sequence[float], start: int, end: int) -> None:
        """:meth:`update` for each packet of a run (see :meth:`SourceStats.update_run`)."""
        current = self._current
        if current is None or current.ssrc != ssrc:
            current = self._source(ssrc)
        current.update_run(seq, rtp_timestamp, step, arrivals, start, end)

    def _source(self, ssrc: int) -> SourceStats:
        sources = self.sources
        source = sources.pop(ssrc, None)
        if source is None:
            source = SourceStats(ssrc, self.clock_rate)
            if len(sources) >= self.max_sources:
                # A stream does not have many sources; a flood of SSRCs must not grow memory.
                oldest = next(iter(sources))
                del sources[oldest]
                self._reported.pop(oldest, None)
        sources[ssrc] = source  # reinserted: the dict's order is least recently switched to
        self._current = source
        return source

    def sender_report(self, ssrc: int, ntp_timestamp: int, arrival: float) -> None:
        source = self.sources.get(ssrc)
        if source is not None:
            source.sender_report(ntp_timestamp, arrival)

    def report_blocks(self, now: float) -> list[ReportBlock]:
        """Blocks for the sources that sent valid packets since the last report (§6.4: only
        those), at most 31, the most recently active last."""
        blocks = []
        for ssrc, source in self.sources.items():
            if self._reported.get(ssrc) != source.received and not source.probation:
                self._reported[ssrc] = source.received
                blocks.append(source.report_block(now))
        return blocks[-31:]
