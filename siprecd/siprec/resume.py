"""Carrying a recording session on from its stored state: after a restart, or a takeover.

Restart (clean or ``kill -9``): the session's ``.part`` files are repaired and published as
segment N, the stored dialog is put back (so re-INVITE, UPDATE and BYE are answered with the
right tags and CSeq checks), the same ports are bound again and recording goes on into
segment N+1 (``stream-1-<label>.seg2.wav``...), whose timeline starts where segment N ended: the
outage is silence of its real length, and concatenating the segments gives the whole call.
Segments rather than appending to the repaired file: a published file is never written again
(an encrypted one is sealed; a checksum taken after recovery stays true), and session.json lists
the segments of each stream in order.

Takeover (RFC 3891 Replaces) of a session another node owned: the same, but from the record in
Redis, with the new INVITE's dialog and offer (fresh ports on this node).
"""

from __future__ import annotations

import os
import wave
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from siprecd.recording.files import SessionFiles, session_directory
from siprecd.recording.interrupted import repair_files
from siprecd.recording.session import RecordingSession, iso_utc
from siprecd.sdp import parse
from siprecd.siprec.session_media import SessionMedia
from siprecd.siprec.streams import StreamTable
from siprecd.state.record import (
    metadata_documents,
    open_sdp,
    restore_dialog,
    restore_security,
    restore_session,
    restore_stream,
    srtp_indices,
)

if TYPE_CHECKING:
    from siprecd.siprec.controller import Controller

log = Logger()


def segment_seconds(directory: str, name: str) -> float | None:
    """Length of a published clear WAV segment; None when it cannot be read (encrypted, Ogg)."""
    try:
        with wave.open(os.path.join(directory, name), "rb") as handle:
            return handle.getnframes() / handle.getframerate()
    except (OSError, wave.Error, EOFError, ZeroDivisionError):
        return None


def last_segment_end(record: dict[str, Any], directory: str | None) -> float:
    """Wall-clock time where the last segment ends: its origin plus the longest stream in it
    (from the file itself when it is here and readable, else the positions of the last tick)."""
    origin = float(record.get("origin", record["started_at"]))
    positions = (record.get("positions") or {}).get("streams", {})
    longest = 0.0
    for stream in record["streams"]:
        if not stream["segments"]:
            continue
        seconds = segment_seconds(directory, stream["segments"][-1]) if directory else None
        if seconds is None:
            seconds = float(positions.get(stream["key"], 0.0))
        longest = max(longest, seconds)
    return origin + longest


class Resumer:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    # --- after a restart --------------------------------------------------------------------

    def resume(self, record: dict[str, Any]) -> RecordingSession:
        """Bring one stored session back to life on this node (raises on anything missing)."""
        c = self.controller
        directory = record["directory"]
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"session directory {directory} is gone")
        repaired = repair_files(directory)
        session_id = record["session_id"]
        offer_body = open_sdp(record["offer"], f"{session_id}/offer", c.sealer)
        answer_body = open_sdp(record["answer"], f"{session_id}/answer", c.sealer)
        offer = parse(offer_body)
        dialog = restore_dialog(record["dialog"], c.sealer, session_id)
        session, media, streams = self._restore(record, directory, dialog, "restart")
        session.resumptions[-1]["recovered_files"] = repaired
        pending = []
        for stored in record["streams"]:
            stream = restore_stream(stored)
            if not stream.ended and stream.choice.accepted and stored["rtp_port"]:
                stream.media = media.new_stream_media()
            pending.append(stream)
            if stream.media is not None:
                try:
                    stream.ports = c.ports.allocate_at(stored["rtp_port"], stream.media.rtp, stream.media.rtcp)
                    restore_security(
                        session_id, stream, stored, c.sealer, indices=srtp_indices(record, stream.key)
                    )
                except BaseException:
                    for bound in pending:
                        if bound.ports is not None:
                            c.ports.release(bound.ports)
                    raise
        streams.current = [s for s in pending if not s.ended]
        streams.ended = [s for s in pending if s.ended]
        session.streams = streams.all
        try:
            media.attach([s for s in streams.current if s.ports is not None], offer)
        except BaseException:
            streams.release_all()
            raise
        c.adopt(session, streams, media, dialog, offer_body, answer_body)
        assert c.stack is not None
        c.stack.core.dialogs.add(dialog)  # in-dialog requests find it again
        self.announce(session)
        return session

    # --- a takeover from a dead node --------------------------------------------------------

    def takeover(self, record: dict[str, Any], dialog: Any) -> tuple[RecordingSession, SessionMedia, StreamTable]:
        """Session identity, metadata and segment numbering from another node's record; the
        caller negotiates the new INVITE's offer on what this returns."""
        root = self.controller.config.recording.directory
        directory = session_directory(root, record["session_id"], float(record["started_at"]))
        here = os.path.isdir(directory)  # shared storage: the dead node's files are here
        repaired = repair_files(directory) if here else []
        if not here:
            SessionFiles(directory).create()
        session, media, streams = self._restore(record, directory if here else None, dialog, "replaces")
        session.resumptions[-1]["recovered_files"] = repaired
        session.directory = directory
        return session, media, streams

    # --- shared -----------------------------------------------------------------------------

    def _restore(
        self, record: dict[str, Any], directory: str | None, dialog: Any, how: str
    ) -> tuple[RecordingSession, SessionMedia, StreamTable]:
        c = self.controller
        now = c.clock.seconds()
        origin = last_segment_end(record, directory)
        session = restore_session(record, directory or record["directory"], c.sealer)
        c.metadata.replay(session, metadata_documents(record, c.sealer))
        segment = 1 + max((len(s["segments"]) for s in record["streams"]), default=0)
        session.resumptions.append(
            {
                "at": iso_utc(now),
                "how": how,
                "node": c.node_id,
                "previous_node": record.get("node"),
                "segment": segment,
                "outage_seconds": round(max(0.0, now - origin), 3),
            }
        )
        media = c.session_media(session, dialog)
        media.segment = segment
        media.origin = origin
        media.mix_segments = list(record.get("mix_segments", []))
        streams = StreamTable(c.ports, media.new_stream_media, media.finish_stream)
        return session, media, streams

    def announce(self, session: RecordingSession) -> None:
        """The session is recording again (logged only once it is; session.json has it all)."""
        last = session.resumptions[-1]
        log.info(
            "recording session {session_id} resumed ({how}) in segment {segment} after {outage:.3f}s",
            session_id=session.session_id, call_id=session.call_id, how=last["how"], segment=last["segment"],
            outage=last["outage_seconds"],
        )
