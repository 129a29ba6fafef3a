"""One stream's recording: timeline events -> decoded PCM (or Opus passthrough) -> its file.

A :class:`StreamRecorder` owns the stream's :class:`~siprecd.media.timeline.Timeline`, its
decoders (one per payload type, created from the negotiated codec) and its writer.  Every file
of a session starts at the session's start (the timeline's origin), so the legs of a call line
up by sample position.  Write errors are kept, not raised into the packet path: the controller
polls :attr:`failed` and ends the session cleanly.

With ``[media] packet_batch`` above 1 a G.711 stream's receiver queues its packets here and
:meth:`StreamRecorder.settle` takes them: runs of consecutive packets in one step each for the
statistics, the timeline and the file, anything else one by one; the result is what taking
every packet on arrival gives (``tests/test_runs.py``).
"""

from __future__ import annotations

import re
import struct
import sys
import warnings
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from siprecd.crypto.at_rest import AtRest
from siprecd.media.codecs import Decoder, decoder_for, duration_of
from siprecd.media.dtmf import DtmfEvent
from siprecd.media.rtp import RtpPacket, parse_rtp
from siprecd.media.runs import payload_offset, take_run
from siprecd.media.stats import StreamCounters, StreamStats
from siprecd.media.timeline import Silence, Timeline
from siprecd.recording.oggopus import OggOpusWriter
from siprecd.recording.wav import RecordingWriteError, WavWriter
from siprecd.sdp import StreamChoice

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

log = Logger()

_ZEROS = bytes(65536)
_BIG_ENDIAN = sys.byteorder == "big"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_FIXED = struct.Struct("!BBHII")


def segment_name(name: str, segment: int) -> str:
    """``x.wav`` for the first segment, ``x.seg<N>.wav`` for the ones a resumed session adds."""
    if segment <= 1:
        return name
    stem, dot, extension = name.rpartition(".")
    return f"{stem}.seg{segment}.{extension}" if dot else f"{name}.seg{segment}"


def stream_file_name(index: int, label: str | None, extension: str, segment: int = 1) -> str:
    """``stream-<m-line>-<label>.<ext>``: unique within the session whatever the label holds."""
    safe = _UNSAFE.sub("_", label or "")[:48].strip("._")
    return segment_name(f"stream-{index + 1}{'-' + safe if safe else ''}.{extension}", segment)


def write_silence(write: Callable[[bytes], None], size: int) -> None:
    """Zero PCM in bounded pieces (a long hold is megabytes of it)."""
    while size > 0:
        piece = min(size, len(_ZEROS))
        write(_ZEROS[:piece])
        size -= piece


class StreamRecorder:
    def __init__(
        self,
        directory: str,
        choice: StreamChoice,
        *,
        origin: float,
        reorder_window: int,
        max_delay: float,
        chunk_size: int,
        opus_passthrough: bool,
        pcm_sink: Callable[[bytes], None] | None = None,
        at_rest: AtRest | None = None,
        segment: int = 1,
        batch: int = 1,
    ) -> None:
        assert choice.codec is not None and choice.clock_rate is not None and choice.payload_type is not None
        self.choice = choice
        self.codec = choice.codec  # the first codec: the file's (a re-offer may change choice)
        self._counters = StreamCounters()
        # [media] packet_batch: the receiver queues datagrams (decrypted, replay-checked) here
        # and settle() takes them, runs in one step; None: every packet at once (batch 1, or a
        # codec without the G.711 fast path below, which has no runs to take).
        self.batch = batch
        self.queue: list[bytes] | None = None
        self.arrivals: list[float] = []
        self.stats: StreamStats | None = None  # the stream's RTP statistics (StreamMedia.attach)
        self.events: list[dict[str, Any]] = []
        self.failed: RecordingWriteError | None = None
        self.pcm_sink = pcm_sink
        self._decoders: dict[int, Decoder] = {}
        self._rate_states: dict[int, Any] = {}  # audioop.ratecv state per resampled payload type
        self.passthrough = opus_passthrough and choice.codec.lower() == "opus"
        decoder = self._add_decoder(choice)
        self.rate = decoder.output_rate
        # consume()'s fast path: (payload type, audioop converter) of the file's G.711 payload
        # type; the converter's PCM is native order, so only where that is little-endian.
        self._fast: tuple[int | None, Callable[[bytes, int], bytes] | None] = (None, None)
        convert = getattr(decoder, "convert", None)
        if convert is not None and not _BIG_ENDIAN and not self.passthrough:
            self._fast = (choice.payload_type, convert)
            if batch > 1:
                self.queue = []
        self._per_unit = decoder.samples_per_timestamp_unit
        telephone = (choice.telephone_event_pt,) if choice.telephone_event_pt is not None else ()
        self.timeline = Timeline(
            choice.clock_rate,
            duration_of=duration_of(self._decoders),
            reorder_window=reorder_window,
            max_delay=max_delay,
            telephone_event=telephone,
            origin=origin,
            counters=self._counters,
        )
        extension = "opus" if self.passthrough else "wav"
        self.file = stream_file_name(choice.index, choice.label, extension, segment)
        open_file = None
        if at_rest is not None:
            self.file = at_rest.audio_name(self.file)
            open_file = at_rest.open_audio()
        path = f"{directory}/{self.file}"
        self.writer: WavWriter | OggOpusWriter
        if self.passthrough:
            # Config refuses passthrough with encryption: the Ogg writer patches pages in place.
            self.writer = OggOpusWriter(path, chunk_size=chunk_size)
        else:
            self.writer = WavWriter(path, sample_rate=self.rate, chunk_size=chunk_size, open_file=open_file)

    def _add_decoder(self, choice: StreamChoice) -> Decoder:
        assert choice.codec is not None and choice.clock_rate is not None and choice.payload_type is not None
        decoder = decoder_for(choice.codec, choice.clock_rate, choice.channels or 1)
        if decoder is None:
            # The SDP layer only chooses supported codecs; reaching this is a programming error.
            raise ValueError(f"no decoder for {choice.codec}/{choice.clock_rate}")
        self._decoders[choice.payload_type] = decoder
        return decoder

    @property
    def counters(self) -> StreamCounters:
        """What the timeline did with the stream's packets, queued ones included."""
        self.settle()
        return self._counters

    def renegotiated(self, choice: StreamChoice) -> None:
        """A re-offer kept this stream (same label): the codec may have changed."""
        self.settle()  # what came before the re-offer is the old offer's (hold, codec change)
        self.choice = choice
        if (
            choice.payload_type is not None
            and choice.payload_type not in self._decoders
            and choice.codec
            # The timeline counts in the first codec's clock: another clock's packets cannot be
            # placed on it (they stay unknown: silence, never noise).
            and choice.clock_rate == self.timeline.clock_rate
        ):
            self._add_decoder(choice)

    # --- the packet path -------------------------------------------------------------------

    def settle(self) -> None:
        """Take every queued packet: runs (:func:`~siprecd.media.runs.take_run`) in one step,
        anything else one by one exactly as it would have been taken on arrival.

        Called when the queue holds ``batch`` packets and whenever state or time matters:
        counter and statistics reads, RTCP, the flush tick, a re-offer, the stream's end.
        """
        if not self.queue:
            return
        # Copied, then emptied in place: the stream's receiver appends to these very lists.
        queue, arrivals = self.queue[:], self.arrivals[:]
        self.queue.clear()
        self.arrivals.clear()
        count = len(queue)
        fast_pt = self._fast[0]
        index = 0
        while index < count:
            end = take_run(queue, index, count)
            while index < end:
                if end - index > 1 and queue[index][1] == fast_pt:
                    placed = self._run(queue, arrivals, index, end)
                    if placed:
                        index += placed
                        continue
                self.take(parse_rtp(queue[index]), arrivals[index])  # queued: its parse cannot fail
                index += 1

    def take(self, packet: RtpPacket, arrival: float) -> None:
        """One packet on its own (what the receiver does itself when the batch is 1)."""
        stats = self.stats
        if stats is not None:
            stats.update(packet, arrival)
        timeline = self.timeline
        timeline.push(packet, arrival)
        if timeline.pending:
            self.consume()

    def _run(self, queue: list[bytes], arrivals: list[float], start: int, end: int) -> int:
        """Statistics, timeline and file take the run ``queue[start:end]`` (the file's own
        G.711) in one step each; returns how many packets the timeline placed from its front."""
        first = queue[start]
        _b0, payload_type, seq, ts, ssrc = _FIXED.unpack_from(first)
        offset: int = payload_offset(first)  # type: ignore[assignment]  # queued: not None
        payload = first[offset:]
        timeline = self.timeline
        if timeline.pending:
            self.consume()
        placed = timeline.push_run(ssrc, payload_type, seq, ts, payload, arrivals, start, end)
        if not placed:
            return 0
        stats = self.stats
        if stats is not None:
            stats.update_run(ssrc, seq, ts, len(payload), arrivals, start, start + placed)
        if self.failed is not None:
            return placed
        if placed > 1:
            payload = b"".join([datagram[offset:] for datagram in queue[start:start + placed]])
        pcm = self._fast[1](payload, 2)  # type: ignore[misc]
        try:
            self.writer.write(pcm)
            if self.pcm_sink is not None:
                self.pcm_sink(pcm)
        except RecordingWriteError as error:
            self.failed = error
            log.error("writing {file} failed: {error}", file=self.writer.path, error=error)
        return placed

    def consume(self) -> None:
        """Write what the timeline released since the last call."""
        if self.failed is not None:
            self.timeline.drain()
            return
        fast_pt, fast_decode = self._fast
        write = self.writer.write
        sink = self.pcm_sink
        try:
            for event in self.timeline.drain():
                kind = event.kind
                if kind == "audio":
                    payload = event.payload  # type: ignore[union-attr]
                    if (
                        event.payload_type == fast_pt  # type: ignore[union-attr]
                        and not event.skip  # type: ignore[union-attr]
                        and len(payload) == event.duration
                    ):
                        # Nearly every packet: the file's own G.711, one sample per byte and
                        # per timestamp unit, nothing to trim or pad (what _audio would check).
                        pcm = fast_decode(payload, 2)
                        write(pcm)
                        if sink is not None:
                            sink(pcm)
                    else:
                        self._audio(event)  # type: ignore[arg-type]
                elif kind == "silence":
                    self._silence(event.duration)  # type: ignore[union-attr]
                else:
                    self._dtmf(event)  # type: ignore[arg-type]
        except RecordingWriteError as error:
            self.failed = error
            log.error(
                "writing {file} failed: {error}", file=self.writer.path, error=error
            )

    def _audio(self, packet: Any) -> None:
        decoder = self._decoders.get(packet.payload_type)
        if decoder is None or (self.passthrough and decoder.encoding != "OPUS"):
            # A payload type that was not negotiated: its time is silence, never noise.
            self._silence(packet.duration - packet.skip)
            return
        if self.passthrough:
            self.writer.write(packet.payload)  # type: ignore[arg-type]
            return
        pcm = decoder.decode(packet.payload)
        if packet.skip:
            pcm = pcm[packet.skip * decoder.samples_per_timestamp_unit * 2:]
        if decoder.output_rate != self.rate:
            # A re-offer changed the codec (PCMU <-> G.722): the file keeps its rate.
            native = audioop.byteswap(pcm, 2) if _BIG_ENDIAN else pcm  # audioop: native order
            native, self._rate_states[packet.payload_type] = audioop.ratecv(
                native, 2, 1, decoder.output_rate, self.rate, self._rate_states.get(packet.payload_type)
            )
            pcm = audioop.byteswap(native, 2) if _BIG_ENDIAN else native
        expected = (packet.duration - packet.skip) * self._per_unit * 2
        if len(pcm) < expected:
            pcm += bytes(expected - len(pcm))  # a short decode must not shift the timeline
        elif len(pcm) > expected:
            pcm = pcm[:expected]
        self._pcm(pcm)

    def _silence(self, duration: int) -> None:
        if duration <= 0:
            return
        if self.passthrough:
            self.writer.conceal(duration * 48000 // self.choice.clock_rate)  # type: ignore[union-attr, operator]
            return
        write_silence(self._pcm, duration * self._per_unit * 2)

    def _pcm(self, pcm: bytes) -> None:
        self.writer.write(pcm)  # type: ignore[arg-type]
        if self.pcm_sink is not None:
            self.pcm_sink(pcm)

    def _dtmf(self, event: DtmfEvent) -> None:
        self.events.append(
            {
                "type": "dtmf",
                "digit": event.digit,
                "event": event.event,
                "start_position": event.position,
                "start_seconds": round(event.position / self.choice.clock_rate, 3),  # type: ignore[operator]
                "duration_ms": round(event.duration_ms, 1),
                "arrival": event.arrival,
                "ended": event.ended,
            }
        )

    # --- housekeeping ----------------------------------------------------------------------

    def flush(self) -> None:
        self.settle()
        if self.failed is not None or self.writer.finalized:
            return
        try:
            self.writer.flush()
        except RecordingWriteError as error:
            self.failed = error

    def finish(self) -> None:
        """End of the stream: flush the timeline and publish the file."""
        self.settle()
        self.timeline.finish()
        self.consume()
        if self.writer.finalized:
            return
        try:
            self.writer.finalize()
        except RecordingWriteError as error:
            self.failed = self.failed or error
            log.error("finalizing {file} failed: {error}", file=self.writer.path, error=error)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sample_rate": 48000 if self.passthrough else self.rate,
            "format": "ogg-opus" if self.passthrough else "wav-pcm16",
            "error": str(self.failed) if self.failed else None,
            "timeline": self.counters.as_dict(),
        }


__all__ = ["StreamRecorder", "Silence", "segment_name", "stream_file_name", "write_silence"]
