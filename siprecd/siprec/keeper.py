"""What keeps a controller's sessions alive beyond the process: state store writes, the
periodic positions, start-up resumption, and the orphan sweep."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from siprecd.recording.session import RecordingSession, SessionState
from siprecd.recording.wav import WavWriter
from siprecd.state.record import session_record
from siprecd.state.store import StoreError

if TYPE_CHECKING:
    from siprecd.siprec.controller import Controller

log = Logger()


class SessionKeeper:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        if controller.store is not None and hasattr(controller.store, "on_lost"):
            controller.store.on_lost = self.lost

    def lost(self, session_id: str, owner: str) -> None:
        """Another node took this session over (Replaces while this node was down): stop
        recording it here, without a BYE (the dialog is theirs); the files are finalized."""
        c = self.controller
        call = c.calls.get(session_id)
        if call is None or c.stack is None:
            return
        c.stack.core.forget(call.dialog, f"taken over by node {owner} (RFC 3891 Replaces)")

    def persist(self, session: RecordingSession) -> None:
        """Every change of a live session goes to the state store (before the answer leaves:
        callers save before they return their response); an ended one is forgotten."""
        c = self.controller
        if c.store is None:
            return
        call = c.calls.get(session.session_id)
        try:
            if call is None or session.state == SessionState.ENDED:
                c.store.delete(session.session_id)
                return
            media = call.media
            record = session_record(
                session,
                call.dialog,
                offer=call.offer,
                answer=call.answer,
                metadata=session.metadata_documents,
                mix_segments=media.mix_segments + [w.path.rsplit("/", 1)[-1] for w in media.mix_writers],
                sealer=c.sealer,
                encrypt_private=c.at_rest.encrypt_metadata,
                node=c.node_id,
                now=c.clock.seconds(),
            )
            record["origin"] = media.origin
            c.store.put(session.session_id, record)
        except StoreError as error:
            c._count("state_store_errors")
            log.error("state of {session_id} not stored: {error}", session_id=session.session_id, call_id=session.call_id, error=error)

    def suspend(self, call: Any) -> None:
        """A clean stop with ``[state] on_stop = keep``: leave the call as a crash would, but
        with every buffered sample on disk: the next start resumes it (no BYE, no final files)."""
        c = self.controller
        session = call.session
        self.positions(session.session_id)
        call.media.suspend()
        for stream in call.session.live_streams():
            if stream.ports is not None:
                c.ports.release(stream.ports)
                stream.ports = None
        c.sessions.pop(session.session_id, None)
        c.calls.pop(session.session_id, None)
        if c.stack is not None:
            c.stack.core.dialogs.remove(call.dialog)
        call.dialog.session = None
        log.info(
            "recording session {session_id} kept for the next start ([state] on_stop = keep)",
            session_id=session.session_id, call_id=session.call_id,
        )

    def positions(self, session_id: str) -> None:
        """On the session's tick: how much of each stream is on disk (seconds) and when."""
        c = self.controller
        call = c.calls.get(session_id)
        if c.store is None or call is None:
            return
        streams = {}
        srtp = {}
        for stream in call.session.live_streams():
            writer = getattr(stream.recorder, "writer", None)
            if isinstance(writer, WavWriter):
                streams[stream.key] = writer.data_size / writer.block_align / writer.sample_rate
            indices = stream.media.srtp_indices() if stream.media is not None else None
            if indices is not None:
                srtp[stream.key] = indices  # where a restored SRTP context's ROC/SRTCP index go on
        try:
            c.store.positions(session_id, {"at": c.clock.seconds(), "streams": streams, "srtp": srtp})
        except StoreError as error:
            c._count("state_store_errors")
            log.error("positions of {session_id} not stored: {error}", session_id=session_id, error=error)

    def sweep_orphans(self) -> None:
        """End the sessions that saw neither media nor SIP for ``[state] orphan_timeout``: their
        SRC has gone away (it crashed, or the call was lost while this node was down)."""
        c = self.controller
        timeout = c.config.state.orphan_timeout
        now = c.clock.seconds()
        for call in list(c.calls.values()):
            try:
                seen = sum(
                    s.media.counters.datagrams + s.media.counters.rtcp_packets
                    for s in call.session.streams
                    if s.media is not None
                )
                if seen != call.activity:
                    call.activity, call.active_at = seen, now
                    continue
                if now - call.active_at >= timeout and c.stack is not None:
                    c._count("orphans_closed")
                    log.warn(
                        "recording session {session_id}: no media and no SIP for {seconds:.0f}s, ending it",
                        session_id=call.session.session_id, call_id=call.session.call_id, seconds=now - call.active_at,
                    )
                    c.stack.core.hang_up(call.dialog, f"orphaned: no media and no SIP for {timeout:g}s ([state] orphan_timeout)")
            except Exception:
                # One broken session must not stop the sweep (nor its LoopingCall).
                c._count("internal_errors")
                log.failure("orphan check of {session_id}", session_id=call.session.session_id)

    def resume_stored(self) -> set[str]:
        """At start-up: carry on every session the state store holds; the ones that cannot be
        resumed are forgotten here and closed as interrupted by the start-up recovery."""
        c = self.controller
        if c.store is None:
            return set()
        resumed: set[str] = set()
        try:
            records = c.store.load_all()
        except StoreError as error:
            log.error("cannot read the state store: {error}; interrupted sessions will be closed", error=error)
            return resumed
        for session_id, record in records.items():
            try:
                if "unreadable" in record:
                    raise ValueError(record["unreadable"])
                c.resumer.resume(record)
                resumed.add(session_id)
            except Exception:
                log.failure("resuming session {session_id}; it will be closed as interrupted", session_id=session_id)
                try:
                    c.store.delete(session_id)
                except StoreError:
                    pass
        return resumed
