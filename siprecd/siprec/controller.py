"""The SIPREC controller (RFC 7866): turns an SRC's dialog into a recording session.

It is the UAS core's application: the initial INVITE creates a session (ports bound before the
answer leaves, session.json written), re-INVITEs and UPDATEs re-negotiate keeping each label's
port, metadata arrives in INVITE, re-INVITE, UPDATE and BYE, and the end of the dialog (BYE from
either side, CANCEL, missing ACK) finalizes the session.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import uuid
from dataclasses import dataclass
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from siprecd.config import Config
from siprecd.crypto.at_rest import AtRest
from siprecd.errors import BadRequest, NotAcceptableHere, ServiceUnavailable
from siprecd.media.ports import PortAllocator, PortProbe
from siprecd.recording.interrupted import recover_interrupted
from siprecd.recording.files import (
    DISK_FULL,
    ActiveIndex,
    SessionFiles,
    active_index_name,
    disk_free,
    indexes_to_recover,
    session_directory,
)
from siprecd.recording.session import RecordingSession, SessionState
from siprecd.sdp import SessionDescription, build_answer, parse, plan_streams, serialize
from siprecd.security.policy import SecurityPolicy
from siprecd.security.sdes import redact_keys
from siprecd.sip.dialog import Dialog
from siprecd.sip.headers import contact_has_feature
from siprecd.sip.message import Request, ResponseSpec
from siprecd.sip.multipart import BodyPart, parse_body
from siprecd.sip.stack import SIPStack
from siprecd.recording.wav import RecordingWriteError
from siprecd.siprec.keeper import SessionKeeper
from siprecd.siprec.metadata_intake import MetadataIntake
from siprecd.siprec.resume import Resumer
from siprecd.siprec.session_media import SessionMedia
from siprecd.siprec.streams import StreamTable
from siprecd.siprec.takeover import Takeovers
from siprecd.state.factory import node_id
from siprecd.state.sealing import Sealer
from siprecd.state.store import StateStore

if TYPE_CHECKING:
    from siprecd.metrics import Metrics

log = Logger()


def is_siprec(request: Request) -> bool:
    """RFC 7866 §6.1.1: ``Require: siprec`` or the ``+sip.src`` feature tag in Contact."""
    if "siprec" in request.headers.tokens("Require"):
        return True
    return any(contact_has_feature(contact, "+sip.src") for contact in request.contacts)


def sdp_part(parts: list[BodyPart]) -> BodyPart | None:
    return next((p for p in parts if p.content_type == "application/sdp"), None)


@dataclass
class Call:
    """What the controller keeps on a dialog: its session, streams, media and last answer."""

    session: RecordingSession
    streams: StreamTable
    media: SessionMedia
    answer: bytes
    dialog: Dialog
    offer: bytes = b""
    # session.json of the setup (or of the resumption) written: None when durable, else the
    # error (logged and counted already).  The initial INVITE's 200 waits for it.
    saved: Deferred[Exception | None] | None = None
    # Orphan detection: RTP+RTCP datagrams counted at the last sweep, and the last time those
    # moved or an in-dialog request arrived.
    activity: int = -1
    active_at: float = 0.0


class Controller:
    def __init__(
        self,
        clock: Any,
        config: Config,
        ports: PortAllocator,
        at_rest: AtRest | None = None,
        metrics: Metrics | None = None,
        store: StateStore | None = None,
        node_id: str = "",
        security: SecurityPolicy | None = None,
    ) -> None:
        self.at_rest = at_rest or AtRest(None)
        self.security = security or SecurityPolicy(config.security)
        self.store = store
        self.node_id = node_id
        self.sealer = Sealer(self.at_rest.keys)
        self.resumer = Resumer(self)
        self.takeovers = Takeovers(self)
        self.keeper = SessionKeeper(self)
        self.clock = clock
        # One writer for session.json, metadata, SDP files and the active index (AtRest's):
        # in order, off the reactor thread in the server.
        self.durable = self.at_rest.durable
        self.active = ActiveIndex(
            config.recording.directory, active_index_name(config.worker_index), durable=self.durable
        )
        self.config = config
        self.ports = ports
        self.stack: SIPStack | None = None
        self.sessions: dict[str, RecordingSession] = {}
        self.calls: dict[str, Call] = {}  # by session id, as long as the session is in sessions
        self.metrics = metrics
        if metrics is not None:
            metrics.watch_controller(self)
        self.finished = 0
        self.counters: dict[str, int] = {}
        self.metadata = MetadataIntake(
            clock, config.siprec.max_metadata_size, self._count, self.at_rest
        )

    def attach(self, stack: SIPStack) -> None:
        self.stack = stack

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # --- Application ------------------------------------------------------------------------

    def invite(self, request: Request, dialog: Dialog) -> ResponseSpec | Deferred[ResponseSpec]:
        with self.durable.gathered():
            return self._invite(request, dialog)

    def _invite(self, request: Request, dialog: Dialog) -> ResponseSpec | Deferred[ResponseSpec]:
        siprec = is_siprec(request)
        if not siprec and not self.config.siprec.accept_plain_calls:
            self._count("plain_calls_refused")
            raise NotAcceptableHere(
                "not a SIPREC INVITE (no 'Require: siprec' and no '+sip.src' Contact) and "
                "[siprec] accept_plain_calls is false"
            )
        if len(self.sessions) >= self.config.siprec.max_sessions:
            self._count("refused_max_sessions")
            raise ServiceUnavailable(
                f"{len(self.sessions)} sessions active ([siprec] max_sessions)",
                retry_after=self.config.siprec.retry_after,
            )
        free = disk_free(self.config.recording.directory)
        if free is not None and free < self.config.recording.min_free_space:
            self._count("refused_disk_space")
            raise ServiceUnavailable(
                f"recording storage has {free} bytes free, below [recording] min_free_space",
                retry_after=self.config.siprec.retry_after,
            )
        parts = parse_body(request.headers.get("Content-Type"), request.body)
        offer_part = sdp_part(parts)
        if offer_part is None:
            raise NotAcceptableHere("INVITE without an SDP offer is not supported by this SRS")
        replaces = request.headers.get("Replaces")
        if replaces is not None:
            return self.takeovers.replace(request, dialog, replaces, parts, offer_part)
        session = self._new_session(request, dialog, siprec)
        media = self.session_media(session, dialog)
        streams = StreamTable(self.ports, media.new_stream_media, media.finish_stream)
        answer = self.start_call(session, media, streams, request, dialog, parts, offer_part, create=True)
        log.info(
            "recording session {session_id} started for call {call_id} from {src}: {streams} streams",
            session_id=session.session_id,
            call_id=session.call_id,
            src=dialog.source,
            streams=sum(1 for s in session.streams if s.choice.accepted),
        )
        return self.answer_when_saved(session, answer)

    def answer_when_saved(self, session: RecordingSession, answer: bytes) -> Deferred[ResponseSpec]:
        """The 200 leaves once the session's files (session.json, the metadata, the SDP files
        and the active-session marker, queued before it) are durable, as when they were written
        on the reactor thread; if session.json cannot be written the call is refused (503) and
        leaves nothing behind, as before."""
        call = self.calls.get(session.session_id)
        saved = call.saved if call is not None and call.saved is not None else succeed(None)
        if call is not None:
            call.saved = None  # its result is the response's from here on

        def answered(error: Exception | None) -> ResponseSpec:
            if error is not None and session.state != SessionState.ENDED:
                self._refuse(session)
                full = getattr(error, "errno", None) in DISK_FULL
                raise ServiceUnavailable(
                    "recording storage is full" if full else "recording storage is not writable",
                    retry_after=self.config.siprec.retry_after,
                )
            # Ended meanwhile (CANCEL): the UAS sends nothing more for this INVITE.
            return ResponseSpec(200, "OK", body=answer, content_type="application/sdp")

        return saved.addCallback(answered)

    def _refuse(self, session: RecordingSession) -> None:
        """Undo a session whose setup could not be stored: ports, media, state, files."""
        call = self.calls.pop(session.session_id, None)
        self.sessions.pop(session.session_id, None)
        session.state = SessionState.ENDED
        if call is not None:
            call.streams.release_all()
            call.media.stop()
            call.dialog.session = None
        self.active.unmark(session.session_id)
        self.keeper.persist(session)  # ended: forgotten by the state store
        directory = session.directory
        # After what is queued for it (the writer would otherwise recreate nothing, but fail).
        self.durable.barrier().addCallback(lambda _: shutil.rmtree(directory, ignore_errors=True))

    def session_media(self, session: RecordingSession, dialog: Dialog) -> SessionMedia:
        session_id = session.session_id
        media = SessionMedia(
            self.clock,
            self.config,
            session,
            lambda reason: self._abort_session(session_id, reason),
            self.at_rest,
            count=self._count,
            on_tick=lambda: self.keeper.positions(session_id),
            changed=lambda: self._save(session),
            security=self.security,
        )
        session.mix_view = media.to_json
        return media

    def start_call(
        self,
        session: RecordingSession,
        media: SessionMedia,
        streams: StreamTable,
        request: Request,
        dialog: Dialog,
        parts: list[BodyPart],
        offer_part: BodyPart,
        *,
        create: bool,
        segments: dict[str, list[str]] | None = None,
        carried: dict[str, Any] | None = None,
    ) -> bytes:
        """Answer an offer that starts recording on this node (a new call or a takeover).

        ``carried``: stream key -> the SRTP agreement another node had (a takeover): an offer
        with the same keys keeps it, its SRS key and its counters."""
        try:
            offer = parse(offer_part.body)
            answer = self._negotiate(session, streams, offer, request, dialog, carried)
            if create:
                self._create_files(session)
            self._attach_media(session, media, streams, offer)
        except BaseException:
            streams.release_all()
            media.stop()
            raise
        for stream in streams.pending:
            stream.segments = list((segments or {}).get(stream.key, []))
        streams.commit()
        session.streams = streams.all
        # An initial offer may already be on hold (all m-lines inactive): paused from the start.
        session.update_state()
        self.metadata.take(session, parts, request.method)
        self._store_sdp(session, "offer", offer_part.body)
        self._store_sdp(session, "answer", answer)
        self.adopt(session, streams, media, dialog, offer_part.body, answer)
        return answer

    def adopt(
        self, session: RecordingSession, streams: StreamTable, media: SessionMedia, dialog: Dialog,
        offer: bytes, answer: bytes,
    ) -> None:
        """The session is live on this node from now on: indexed, ticking, stored."""
        call = Call(session, streams, media, answer, dialog, offer, active_at=self.clock.seconds())
        dialog.session = self.calls[session.session_id] = call
        self.sessions[session.session_id] = session
        self.active.mark(session.session_id, session.directory)
        media.start()
        call.saved = self._save(session)

    def reinvite(self, request: Request, dialog: Dialog) -> Deferred[ResponseSpec]:
        with self.durable.gathered():
            return self._after_writes(self._renegotiate(request, dialog))

    def update(self, request: Request, dialog: Dialog) -> Deferred[ResponseSpec]:
        with self.durable.gathered():
            return self._after_writes(self._renegotiate(request, dialog))

    def _after_writes(self, spec: ResponseSpec) -> Deferred[ResponseSpec]:
        """The response once what the request changed (SDP files, metadata, session.json) is
        durable, as when those were written before returning; their errors are logged only."""
        return self.durable.barrier().addCallback(lambda _: spec)

    def info(self, request: Request, dialog: Dialog) -> Deferred[ResponseSpec]:
        with self.durable.gathered():
            call = self._call(dialog)
            self._touch(call)
            if call is not None and request.body:
                parts = parse_body(request.headers.get("Content-Type"), request.body)
                if self.metadata.take(call.session, parts, request.method):
                    self._save(call.session)
            return self._after_writes(ResponseSpec(200, "OK"))

    def bye(self, request: Request, dialog: Dialog) -> Deferred[Any] | None:
        with self.durable.gathered():
            return self._bye(request, dialog)

    def _bye(self, request: Request, dialog: Dialog) -> Deferred[Any] | None:
        call = self._call(dialog)
        if call is None:
            return None
        self._touch(call)
        try:
            if request.body:
                parts = parse_body(request.headers.get("Content-Type"), request.body)
                self.metadata.take(call.session, parts, request.method)
        except BadRequest as error:
            # The BYE is answered 200 whatever its body; a broken one is logged, not raised.
            self._count("bad_bodies")
            log.warn(
                "BYE of session {session_id} has a body that cannot be read: {error}",
                session_id=call.session.session_id, call_id=call.session.call_id,
                error=error.reason,
            )
        finally:
            # Finalized before the 200 leaves: an SRC (or anyone watching) that has the 200
            # finds session.json final, with the BYE's metadata in it (durable: the 200 waits).
            saved = self._finish(dialog, "BYE from the SRC")
        return saved

    def acked(self, dialog: Dialog) -> None:
        pass

    def dialog_ended(self, dialog: Dialog, reason: str) -> None:
        with self.durable.gathered():
            self._finish(dialog, reason)

    def _finish(self, dialog: Dialog, reason: str) -> Deferred[Exception | None] | None:
        """End the call; the Deferred fires when its final session.json is durable."""
        call = self._call(dialog)
        if call is None:
            return None
        session, streams = call.session, call.streams
        if session.state == SessionState.ENDED:
            return None
        streams.release_all()  # each stream's file is published as its ports are released
        call.media.stop()  # then the mix, which both streams fed to the end
        session.state = SessionState.ENDED
        session.ended_at = self.clock.seconds()
        session.end_reason = reason
        self.sessions.pop(session.session_id, None)
        self.calls.pop(session.session_id, None)
        dialog.session = None
        self.finished += 1
        if self.metrics is not None:
            # The same turn the session leaves live_media(): its counts move to the totals.
            self.metrics.session_finished(reason, session.streams, call.media.mix_writers)
        saved = self._save(session)
        self.active.unmark(session.session_id)
        log.info(
            "recording session {session_id} ended ({reason})",
            session_id=session.session_id, call_id=session.call_id,
            reason=reason,
        )
        return saved

    # --- negotiation ------------------------------------------------------------------------

    def _renegotiate(self, request: Request, dialog: Dialog) -> ResponseSpec:
        call = self._call(dialog)
        if call is None:
            raise NotAcceptableHere("no recording session for this dialog")
        self._touch(call)
        session, streams, answer = call.session, call.streams, call.answer
        media = call.media
        parts = parse_body(request.headers.get("Content-Type"), request.body)
        offer_part = sdp_part(parts)
        metadata_changed = self.metadata.take(session, parts, request.method)
        if offer_part is None:
            if metadata_changed:
                self._save(session)
            if request.method == "UPDATE":
                return ResponseSpec(200, "OK")
            # An offerless re-INVITE: our current SDP is the offer; the ACK carries the answer.
            return ResponseSpec(200, "OK", body=answer, content_type="application/sdp")
        # A failed re-offer leaves the session as it was (RFC 3261 §14.2); metadata it carried
        # has been stored, so session.json must list it all the same.
        try:
            offer = parse(offer_part.body)
            answer = self._negotiate(session, streams, offer, request, dialog)
            self._attach_media(session, media, streams, offer)
        except BaseException:
            streams.abort()
            if metadata_changed:
                self._save(session)
            raise
        streams.commit()
        session.streams = streams.all
        call.answer = answer
        call.offer = offer_part.body
        session.update_state()
        self._store_sdp(session, "offer", offer_part.body)
        self._store_sdp(session, "answer", answer)
        self._save(session)
        return ResponseSpec(200, "OK", body=answer, content_type="application/sdp")

    def _negotiate(
        self,
        session: RecordingSession,
        streams: StreamTable,
        offer: SessionDescription,
        request: Request,
        dialog: Dialog,
        carried: dict[str, Any] | None = None,
    ) -> bytes:
        siprec = self.config.siprec
        plan = plan_streams(
            offer, codec_preference=siprec.codec_preference, security=self.security.decide
        )
        ports = streams.assign(plan)
        # A kept stream re-offered with the same key keeps its agreement: same answer key,
        # same contexts and counters.
        plan = [
            dataclasses.replace(
                choice,
                security=self.security.carry_over(
                    choice.security,
                    (carried or {}).get(stream.key) if stream.choice is choice else stream.choice.security,
                ),
            )
            for choice, stream in zip(plan, streams.pending)
        ]
        sdp, choices = build_answer(
            offer,
            address=self._media_address(request, dialog),
            ports=ports,
            codec_preference=siprec.codec_preference,
            origin_session_id=session.sdp_session_id,
            origin_version=session.sdp_version + 1,
            announce_rtcp=True,
            plan=plan,
        )
        streams.settle(choices)
        session.sdp_version += 1
        return serialize(sdp)

    def _attach_media(
        self, session: RecordingSession, media: SessionMedia, streams: StreamTable, offer: SessionDescription
    ) -> None:
        try:
            media.attach(streams.pending, offer)
            for stream in streams.pending:
                if stream.media is not None and stream.choice.accepted:
                    self.security.activate(stream.choice.security, stream.media)
        except RecordingWriteError as error:
            self._count("storage_errors")
            log.error("cannot create recording files of {session_id}: {error}", session_id=session.session_id, call_id=session.call_id, error=error)
            raise ServiceUnavailable(
                "recording storage is full" if error.disk_full else "recording storage is not writable",
                retry_after=self.config.siprec.retry_after,
            ) from None

    def _abort_session(self, session_id: str, reason: str) -> None:
        call = self.calls.get(session_id)
        if call is not None:
            self._abort(call.dialog, reason)

    def _abort(self, dialog: Dialog, reason: str) -> None:
        """A recording failed (disk full, I/O error): end this session only, with a BYE."""
        self._count("recording_failures")
        if self.stack is not None and dialog.ended_reason is None:
            self.stack.core.hang_up(dialog, f"recording failed: {reason}")

    def _media_address(self, request: Request, dialog: Dialog) -> str:
        media = self.config.media
        if media.advertised_address:
            return media.advertised_address
        if media.bind_address not in ("0.0.0.0", "::"):
            return media.bind_address
        assert self.stack is not None
        host, _ = self.stack.core.local_address(dialog.source, request)
        return host.strip("[]")

    # --- session files ----------------------------------------------------------------------

    def _new_session(self, request: Request, dialog: Dialog, siprec: bool) -> RecordingSession:
        now = self.clock.seconds()
        session_id = str(uuid.uuid4())
        source = dialog.source
        return RecordingSession(
            session_id=session_id,
            call_id=request.call_id,
            started_at=now,
            src={"address": source.host, "port": source.port, "transport": source.transport},
            sip={
                "request_uri": request.raw_uri,
                "from": request.headers.get("From"),
                "to": request.headers.get("To"),
                "contact": request.headers.get("Contact"),
                "user_agent": request.headers.get("User-Agent"),
            },
            siprec=siprec,
            directory=session_directory(self.config.recording.directory, session_id, now),
            sdp_session_id=secrets.randbelow(2**62),
        )

    def _create_files(self, session: RecordingSession) -> None:
        # session.json is written once the call is set up (adopt), in the same batch as its
        # metadata and SDP files: an earlier version here was replaced moments later, and a
        # crash in between left a directory the active index does not name either way.
        files = SessionFiles(session.directory)
        try:
            files.create()
        except (OSError, RecordingWriteError) as error:
            self._count("storage_errors")
            full = error.errno in DISK_FULL
            log.error(
                "cannot create recording session directory {path}: {error}",
                path=session.directory,
                error=error,
            )
            raise ServiceUnavailable(
                "recording storage is full" if full else "recording storage is not writable",
                retry_after=self.config.siprec.retry_after,
            ) from None

    def _store_sdp(self, session: RecordingSession, kind: str, data: bytes) -> None:
        name = self.at_rest.metadata_name(f"sdp-{len(session.sdp_files) + 1:04d}-{kind}.sdp")
        # Listed at once (the session.json queued after it names it); dropped again if it
        # could not be stored, which the next session.json then says.
        session.sdp_files.append(name)

        def failed(failure: Any) -> None:
            failure.trap(OSError, RecordingWriteError)
            self._count("storage_errors")
            if name in session.sdp_files:
                session.sdp_files.remove(name)
            log.error("cannot store {name} for {session_id}: {error}", name=name, session_id=session.session_id, call_id=session.call_id, error=failure.value)

        # SDES keys stay out of files: the SDP is kept for audit, its a=crypto keys redacted.
        path = os.path.join(session.directory, name)
        maybeDeferred(self.at_rest.store_metadata, path, redact_keys(data)).addErrback(failed).addErrback(
            lambda f: log.failure("storing {name}", f, name=name)
        )

    def _save(self, session: RecordingSession) -> Deferred[Exception | None]:
        """session.json (queued: durable when the Deferred fires with None; a failure is
        logged, counted and given as the result) and the state store (at once)."""
        def failed(failure: Any) -> Exception:
            failure.trap(OSError, RecordingWriteError)
            # The previous session.json stays intact (atomic rename); the next change retries.
            self._count("storage_errors")
            log.error("cannot write session.json of {session_id}: {error}", session_id=session.session_id, call_id=session.call_id, error=failure.value)
            return failure.value

        written = maybeDeferred(self.at_rest.write_session, session.directory, session.to_json())
        written.addCallbacks(lambda _: None, failed)
        self.keeper.persist(session)
        return written

    def _touch(self, call: Call | None) -> None:
        if call is not None:
            call.active_at = self.clock.seconds()

    def reoffer(self, request: Request, dialog: Dialog) -> ResponseSpec:
        return self._renegotiate(request, dialog)

    @staticmethod
    def _call(dialog: Dialog) -> Call | None:
        return dialog.session  # type: ignore[no-any-return]

    def live_media(self) -> Iterator[tuple[list[Any], list[Any]]]:
        """(streams, mix writers) of every session in progress, for the metrics."""
        for call in self.calls.values():
            yield call.session.streams, call.media.mix_writers

    def drain(self, timeout: float, poll: float = 0.25) -> Deferred[None]:
        """Graceful stop: new INVITEs get 503 + Retry-After at once; active calls go on for up to
        ``timeout`` seconds, then get a BYE.  Fires when every session is finalized."""
        if self.stack is None:
            return succeed(None)
        self.stack.core.draining = True
        if self.sessions:
            log.info(
                "draining: {count} active session(s) may go on for up to {timeout:g}s",
                count=len(self.sessions),
                timeout=timeout,
            )
        done: Deferred[None] = Deferred()
        deadline = self.clock.seconds() + timeout

        def check() -> None:
            if self.sessions and self.clock.seconds() < deadline:
                self.clock.callLater(poll, check)
                return
            self.shutdown()
            # Then the files of the sessions just ended and the responses waiting for them (a
            # BYE's 200), before the services stopped after this one (the SIP listeners, a
            # worker's relay) take the way out.
            self.durable.barrier().chainDeferred(done)

        check()
        return done

    def shutdown(self) -> None:
        """End every session's recording now: BYE to each SRC, files finalized, ports released."""
        if self.stack is None:
            return
        self.stack.core.draining = True  # new INVITEs get 503 from now on
        if self.config.state.on_stop == "keep" and self.store is not None:
            for call in list(self.calls.values()):
                self.keeper.suspend(call)
            return
        for dialog in list(self.stack.core.dialogs):
            if dialog.session is not None:
                self.stack.core.hang_up(dialog, "SRS shutting down")


class ControllerService(Service):
    def __init__(self, controller: Controller, drain_timeout: float = 0) -> None:
        self.controller = controller
        self.drain_timeout = drain_timeout
        self._orphans: LoopingCall | None = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        controller = self.controller
        # Sessions whose state is stored go on; the others a crash left open are closed, their
        # files repaired, before new calls arrive.
        resumed = controller.keeper.resume_stored()
        config = controller.config
        root = config.recording.directory
        names = indexes_to_recover(root, config.worker_index, config.service.workers)
        recovered = recover_interrupted(root, skip=resumed, names=names)
        metrics = controller.metrics
        if metrics is not None:
            for _ in recovered:
                metrics.session_finished("interrupted")
        timeout = controller.config.state.orphan_timeout
        if timeout:
            self._orphans = LoopingCall(controller.keeper.sweep_orphans)
            self._orphans.clock = controller.clock
            self._orphans.start(min(30.0, max(0.25, timeout / 4)), now=False)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        if self._orphans is not None and self._orphans.running:
            self._orphans.stop()
        self._orphans = None
        return self.controller.drain(self.drain_timeout)


def build_controller(
    reactor: Any,
    config: Config,
    at_rest: AtRest | None = None,
    metrics: Metrics | None = None,
    store: StateStore | None = None,
    port_probe: PortProbe | None = None,
) -> tuple[Controller, ControllerService]:
    media = config.media
    ports = PortAllocator(
        reactor,
        media.bind_address,
        media.port_min,
        media.port_max,
        config.siprec.retry_after,
        receive_buffer=media.receive_buffer,
        probe=port_probe,
    )
    controller = Controller(reactor, config, ports, at_rest, metrics, store, node_id(config))
    security = controller.security
    from siprecd.security.dtls_method import DTLSSRTP, dtls_profiles

    # Registered even when [security] key_exchange leaves it out, so that an offer hears it is
    # not allowed rather than not supported.  The certificate is made (or loaded) once, at
    # start-up: every answer carries its fingerprint.  Preflight has checked configured files
    # and that the suites leave DTLS a profile when it is allowed.
    if dtls_profiles(config.security.suites):
        security.methods["dtls-srtp"] = DTLSSRTP.from_config(config.security, reactor, sessions=security.sessions)
    return controller, ControllerService(controller, config.service.drain_timeout)

