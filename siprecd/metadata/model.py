"""The recording metadata model (RFC 7865), one shape for every dialect an SRC may send.

Everything is a frozen dataclass holding tuples, so a parsed document, a merged state and every
snapshot kept in the history can be shared freely and never change under a reader's feet.
Times are kept as the strings the SRC sent: several SRCs send local times without a zone, and
turning those into datetimes would invent information.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

DataMode = Literal["complete", "partial"]

#: Where an :class:`Extension` came from: an ``<extensiondata>`` element, an element in a
#: namespace that is not a recording namespace, or an element of a recording namespace (or of
#: no namespace) that this parser does not interpret.
ExtensionKind = Literal["extensiondata", "vendor", "unrecognized"]


class MetadataError(Exception):
    """Metadata cannot be read; the message says what was wrong and where.

    Deliberately not a :class:`siprecd.errors.SIPError`: bad metadata never fails a call.  The
    caller keeps the raw body, logs this message and records the audio regardless.
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        super().__init__(message if line is None else f"{message} (line {line})")


@dataclass(frozen=True)
class Extension:
    """A piece of XML kept verbatim because it may hold the only real caller/callee numbers."""

    kind: ExtensionKind
    tag: str  # local name of the kept element
    namespace: str | None
    xml: str  # the element serialized with the namespace declarations it needs
    #: id of the group/session/participant/stream (or association) the element belonged to, or
    #: the ``parent`` attribute of a top-level ``<extensiondata>``; None at recording level.
    parent: str | None = None
    #: every leaf text and attribute inside, as ("path/of/local/names[@attr]", value), so that
    #: consumers can search it without parsing XML again.
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Name:
    text: str
    lang: str | None = None


@dataclass(frozen=True)
class NameID:
    aor: str | None
    names: tuple[Name, ...] = ()


@dataclass(frozen=True)
class Group:
    group_id: str
    associate_time: str | None = None
    disassociate_time: str | None = None
    extensions: tuple[Extension, ...] = ()


@dataclass(frozen=True)
class Session:
    session_id: str
    sip_session_ids: tuple[str, ...] = ()
    group_ref: str | None = None
    start_time: str | None = None
    stop_time: str | None = None
    extensions: tuple[Extension, ...] = ()


@dataclass(frozen=True)
class Participant:
    participant_id: str
    name_ids: tuple[NameID, ...] = ()
    #: send/recv lists given inside ``<participant>`` (late drafts); None when not given, so a
    #: partial update can tell "not mentioned" from "now sends nothing".
    send: tuple[str, ...] | None = None
    recv: tuple[str, ...] | None = None
    extensions: tuple[Extension, ...] = ()

    @property
    def aors(self) -> tuple[str, ...]:
        return tuple(n.aor for n in self.name_ids if n.aor)

    @property
    def display_names(self) -> tuple[Name, ...]:
        return tuple(name for n in self.name_ids for name in n.names)


@dataclass(frozen=True)
class Stream:
    stream_id: str
    session_id: str | None = None
    label: str | None = None
    content_type: str | None = None  # RFC 4796 content (main, slides, ...) or a media type
    mode: str | None = None  # drafts: separate | mixed
    associate_time: str | None = None
    disassociate_time: str | None = None
    extensions: tuple[Extension, ...] = ()


@dataclass(frozen=True)
class SessionRecordingAssoc:
    session_id: str
    associate_time: str | None = None
    disassociate_time: str | None = None


@dataclass(frozen=True)
class ParticipantSessionAssoc:
    participant_id: str
    session_id: str | None
    associate_time: str | None = None
    disassociate_time: str | None = None


@dataclass(frozen=True)
class ParticipantStreamAssoc:
    participant_id: str
    send: tuple[str, ...] = ()
    recv: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recording:
    """One metadata document, or the merged state of several."""

    datamode: DataMode = "complete"
    #: "rfc7865" (namespace ...:recording:1), "draft" (...:recording), "early-draft"
    #: (...:siprec or a <recording_metadata> root) or "none" (no namespace).
    dialect: str = "rfc7865"
    namespace: str | None = None
    recording_id: str | None = None  # early drafts only: <recording id="...">
    groups: tuple[Group, ...] = ()
    sessions: tuple[Session, ...] = ()
    participants: tuple[Participant, ...] = ()
    streams: tuple[Stream, ...] = ()
    session_recording_assocs: tuple[SessionRecordingAssoc, ...] = ()
    participant_session_assocs: tuple[ParticipantSessionAssoc, ...] = ()
    participant_stream_assocs: tuple[ParticipantStreamAssoc, ...] = ()
    extensions: tuple[Extension, ...] = ()
    #: things the parser tolerated, worth one log line each (missing datamode, stray text...).
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def group(self, group_id: str) -> Group | None:
        return next((g for g in self.groups if g.group_id == group_id), None)

    def session(self, session_id: str) -> Session | None:
        return next((s for s in self.sessions if s.session_id == session_id), None)

    def participant(self, participant_id: str) -> Participant | None:
        return next((p for p in self.participants if p.participant_id == participant_id), None)

    def stream(self, stream_id: str) -> Stream | None:
        return next((s for s in self.streams if s.stream_id == stream_id), None)

    def stream_assoc(self, participant_id: str) -> ParticipantStreamAssoc | None:
        return next(
            (a for a in self.participant_stream_assocs if a.participant_id == participant_id),
            None,
        )

    def sends(self, participant_id: str) -> tuple[str, ...]:
        """Stream ids the participant sends: <participantstreamassoc> wins over <send> in
        <participant>, because RFC 7865 partial updates change the association element."""
        assoc = self.stream_assoc(participant_id)
        if assoc is not None:
            return assoc.send
        participant = self.participant(participant_id)
        if participant is not None and participant.send is not None:
            return participant.send
        return ()

    def receives(self, participant_id: str) -> tuple[str, ...]:
        assoc = self.stream_assoc(participant_id)
        if assoc is not None:
            return assoc.recv
        participant = self.participant(participant_id)
        if participant is not None and participant.recv is not None:
            return participant.recv
        return ()

    def participant_ids(self) -> tuple[str, ...]:
        """Participants in document order, plus any named only by an association."""
        seen = [p.participant_id for p in self.participants]
        for pid in self._association_participant_ids():
            if pid not in seen:
                seen.append(pid)
        return tuple(seen)

    def _association_participant_ids(self) -> Iterator[str]:
        for psa in self.participant_session_assocs:
            yield psa.participant_id
        for pst in self.participant_stream_assocs:
            yield pst.participant_id

    def senders(self, stream_id: str) -> tuple[str, ...]:
        return tuple(pid for pid in self.participant_ids() if stream_id in self.sends(pid))

    def receivers(self, stream_id: str) -> tuple[str, ...]:
        return tuple(pid for pid in self.participant_ids() if stream_id in self.receives(pid))

    def session_assocs(self, participant_id: str) -> tuple[ParticipantSessionAssoc, ...]:
        return tuple(
            a for a in self.participant_session_assocs if a.participant_id == participant_id
        )

    def all_extensions(self) -> Iterator[Extension]:
        """Every kept extension, wherever it is attached."""
        yield from self.extensions
        owners: tuple[Group | Session | Participant | Stream, ...] = (
            *self.groups,
            *self.sessions,
            *self.participants,
            *self.streams,
        )
        for owner in owners:
            yield from owner.extensions
