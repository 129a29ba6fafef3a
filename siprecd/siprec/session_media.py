"""The media side of one recording session: recorders per stream, the mix, the periodic tick.

The tick (every ``[recording] flush_interval``, started at a random phase so sessions do not
flush together) flushes every file, sends RTCP receiver reports every ``[media] rtcp_interval``
and notices write failures, which end the session cleanly through ``on_failure``.  It catches
its own errors so the LoopingCall never dies.
"""

from __future__ import annotations

import functools
import os
import random
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from siprecd.config import Config
from siprecd.crypto.at_rest import AtRest
from siprecd.media.receiver import StreamMedia
from siprecd.recording.mix import Mixer
from siprecd.recording.recorder import StreamRecorder, segment_name
from siprecd.recording.session import RecordedStream, RecordingSession
from siprecd.recording.wav import RecordingWriteError, WavWriter
from siprecd.sdp import SessionDescription

log = Logger()

# Seconds of audio the stereo/mono mix gathers before writing (the tick writes the rest, so a
# crash costs the mix no more than the stream files).
MIX_BATCH = 0.2


class SessionMedia:
    def __init__(
        self,
        clock: IReactorTime,
        config: Config,
        session: RecordingSession,
        on_failure: Callable[[str], None],
        at_rest: AtRest | None = None,
        *,
        count: Callable[[str], None] | None = None,
        changed: Callable[[], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        security: Any = None,
    ) -> None:
        self.security = security  # the SecurityPolicy every stream's SRTP state goes through
        # session.json is rewritten when a stream's state changes between SIP events (a
        # DTLS-SRTP handshake ends): on the next turn, never from inside the packet path.
        self._changed = changed
        self.at_rest = at_rest
        self._count = count  # the controller's error counters
        self.clock = clock
        self.config = config
        self.session = session
        self.on_failure = on_failure
        self.cname = f"siprecd-{session.session_id}"
        self.mixer: Mixer | None = None
        self.mix_writers: list[WavWriter] = []
        self.mix_streams: list[RecordedStream] = []
        self.mix_note: str | None = None
        self._loop: LoopingCall | None = None
        self._start_call: IDelayedCall | None = None
        self._ticks = 0
        self._failed = False
        self._mix_failed: RecordingWriteError | None = None
        self.on_tick = on_tick  # the state store's periodic positions
        # A resumed session records into continuation segments: files numbered ``segment``
        # whose timeline starts where the previous segment ended (``origin``), so the outage
        # is silence of its real length.
        self.segment = 1
        self.origin = session.started_at
        self.mix_segments: list[str] = []

    # --- streams ----------------------------------------------------------------------------

    def new_stream_media(self) -> StreamMedia:
        return StreamMedia(
            self.clock,
            latch_sdp_address=self.config.media.latch == "sdp",
            ssrc=secrets.randbits(32),
            cname=self.cname,
            rekey_grace=self.config.security.rekey_grace,
            log_fields={"session_id": self.session.session_id, "call_id": self.session.call_id},
            changed=self._stream_changed,
            security=self.security,
        )

    def _stream_changed(self) -> None:
        if self._changed is not None:
            self.clock.callLater(0, self._changed)

    def attach(self, streams: list[RecordedStream], offer: SessionDescription) -> None:
        """After an answer: recorders for new recorded streams, codec updates for kept ones.

        Raises RecordingWriteError (with its errno) when a file cannot be created.
        """
        recording = self.config.recording
        created: list[StreamMedia] = []
        try:
            for stream in streams:
                media = stream.media
                if media is None or not stream.choice.accepted or stream.ports is None:
                    continue
                m = offer.media[stream.choice.index]
                media.expect(m.connection_address(offer), m.port)
                if media.recorder is not None:
                    media.recorder.renegotiated(stream.choice)
                    continue
                recorder = StreamRecorder(
                    self.session.directory,
                    stream.choice,
                    origin=self.origin,
                    reorder_window=self.config.media.reorder_window,
                    max_delay=self.config.media.max_reorder_delay,
                    chunk_size=recording.chunk_size,
                    opus_passthrough=recording.opus_passthrough,
                    at_rest=self.at_rest,
                    segment=self.segment,
                    batch=self.config.media.packet_batch,
                )
                media.attach(recorder, stream.choice.clock_rate or 8000)
                created.append(media)
            if self.mixer is None and self.mix_note is None:
                self._start_mix([s for s in streams if s.recorder is not None])
        except RecordingWriteError:
            # The offer fails: nobody will finish the files this call opened (their streams are
            # aborted, not released), so close and remove them here or their descriptors leak.
            for media in created:
                media.recorder.writer.close()
                try:
                    os.unlink(media.recorder.writer.part_path)
                except OSError:
                    pass
                media.recorder = media.stats = None
            raise

    def _start_mix(self, recorded: list[RecordedStream]) -> None:
        mode = self.config.recording.mix
        if mode == "none":
            self.mix_note = "disabled ([recording] mix = none)"
            return
        if len(recorded) != 2:
            self.mix_note = f"not mixed: {len(recorded)} recorded stream(s), a mix needs two"
            return
        if any(s.recorder.passthrough for s in recorded):
            self.mix_note = "not mixed: Opus is stored without decoding ([recording] opus_passthrough)"
            return
        left, right = (s.recorder for s in recorded)
        rate = max(left.rate, right.rate)
        channels = 2 if mode == "stereo" else 1
        name = segment_name(f"mix-{mode}.wav", self.segment)
        open_file = None
        if self.at_rest is not None:
            name = self.at_rest.audio_name(name)
            open_file = self.at_rest.open_audio()
        writer = WavWriter(
            f"{self.session.directory}/{name}",
            sample_rate=rate,
            channels=channels,
            chunk_size=self.config.recording.chunk_size * channels,
            open_file=open_file,
        )
        self.mix_writers = [writer]
        sink = {"stereo": writer} if mode == "stereo" else {"mono": writer}
        self.mixer = Mixer(left.rate, right.rate, batch=MIX_BATCH, **sink)  # type: ignore[arg-type]
        self.mix_streams = recorded
        mixer = self.mixer
        left.pcm_sink = functools.partial(mixer.append, 0)  # a C-level call: per packet
        right.pcm_sink = functools.partial(mixer.append, 1)

    def finish_stream(self, stream: RecordedStream) -> None:
        """A stream ends (dropped by a re-offer, or the session ends): publish its file."""
        if stream.media is not None:
            stream.media.close()
        recorder = stream.recorder
        if recorder is not None:
            recorder.finish()
            if recorder.failed is not None:
                self._fail(f"recording {recorder.file} failed: {recorder.failed}")

    # --- the periodic tick ------------------------------------------------------------------

    def start(self) -> None:
        interval = self.config.recording.flush_interval
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        # A random phase: thousands of sessions must not all write in the same millisecond.
        self._start_call = self.clock.callLater(random.uniform(0, interval), self._start_loop, interval)

    def _start_loop(self, interval: float) -> None:
        assert self._loop is not None
        self._start_call = None
        self._loop.start(interval, now=False)

    def _tick(self) -> None:
        try:
            self._ticks += 1
            report_every = max(1, round(self.config.media.rtcp_interval / self.config.recording.flush_interval))
            send_reports = self._ticks % report_every == 0
            for stream in self.session.streams:
                recorder = stream.recorder
                if recorder is None or stream.ended:
                    continue
                recorder.flush()
                if recorder.failed is not None:
                    self._fail(f"recording {recorder.file} failed: {recorder.failed}")
                    return
                if send_reports and stream.media is not None:
                    stream.media.send_report()
            if self.mixer is not None and not self.mixer.finished:
                self.mixer.flush()
            for writer in self.mix_writers:
                if not writer.finalized and writer.failed is None:
                    writer.flush()
            if self.on_tick is not None:
                self.on_tick()
        except RecordingWriteError as error:
            self._fail(f"writing the mix failed: {error}")
        except Exception:
            if self._count is not None:
                self._count("internal_errors")
            log.failure("media tick of session {session_id}", session_id=self.session.session_id, call_id=self.session.call_id)

    def _fail(self, reason: str) -> None:
        if self._failed:
            return
        self._failed = True
        log.error("session {session_id}: {reason}", session_id=self.session.session_id, call_id=self.session.call_id, reason=reason)
        # Not from inside the packet path or this tick: end the session on the next turn.
        self.clock.callLater(0, self.on_failure, reason)

    def _stop_tick(self) -> None:
        if self._start_call is not None and self._start_call.active():
            self._start_call.cancel()
        self._start_call = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def stop(self) -> None:
        """Stop the tick and finish the mix (idempotent); the streams' own files are finished
        as their ports are released (``finish_stream``), which must come first."""
        self._stop_tick()
        if self.mixer is not None and not self.mixer.finished:
            try:
                self.mixer.finish()
            except RecordingWriteError as error:
                self._mix_failed = error
        for writer in self.mix_writers:
            if not writer.finalized:
                try:
                    writer.finalize()
                except RecordingWriteError as error:
                    self._mix_failed = error
                    log.error("finalizing {path} failed: {error}", path=writer.path, error=error)

    def suspend(self) -> None:
        """Stop without finishing: everything buffered is written, the files stay ``.part``
        (a later start repairs them and goes on in a new segment)."""
        self._stop_tick()
        for stream in self.session.live_streams():
            recorder = stream.recorder
            if recorder is not None and not recorder.writer.finalized:
                recorder.settle()
                recorder.consume()
                recorder.flush()
                recorder.writer.close()
        for writer in self.mix_writers:
            if not writer.finalized:
                try:
                    writer.flush()
                except RecordingWriteError:
                    pass
                writer.close()

    def to_json(self, senders: dict[str, list[str]]) -> dict[str, Any] | None:
        if self.mixer is None:
            return {"file": None, "note": self.mix_note}
        mode = self.config.recording.mix
        channels = []
        for position, stream in zip(("left", "right"), self.mix_streams):
            label = stream.choice.label
            channels.append(
                {
                    "channel": position if mode == "stereo" else "mixed",
                    "label": label,
                    "stream_file": stream.recorder.file,
                    "sending_participants": senders.get(label or "", []),
                }
            )
        writer = self.mix_writers[0]
        name = writer.path.rsplit("/", 1)[-1]
        return {
            "file": name,
            "segments": self.mix_segments + [name],
            "mode": mode,
            "sample_rate": writer.sample_rate,
            "channels": channels,
            "error": str(self._mix_failed) if self._mix_failed else None,
        }
