"""Complete and partial metadata updates (RFC 7865 §5, §8), with the history of what changed.

A recording session receives a first snapshot in the INVITE and later documents in re-INVITEs,
UPDATEs and even the BYE.  ``complete`` replaces the state; ``partial`` changes only the
elements it names, matched by id.  Compliance needs to know who was on the call and who spoke
on which stream *when*, so every document, the state it replaced and every change of a
participant's session association or send/recv lists are kept, never overwritten.

Everything here is pure: :func:`apply_update` returns a new :class:`MetadataState`.  The package
has no clock, so the caller passes ``at`` (when the request carrying the document arrived).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from siprecd.metadata.model import (
    DataMode,
    Extension,
    ParticipantSessionAssoc,
    Recording,
)

T = TypeVar("T")

# Fields where an empty tuple in an update means "now empty" rather than "not mentioned":
# a participant that stops sending (hold) must lose its send list.
_EMPTY_REPLACES = frozenset({"send", "recv"})


@dataclass(frozen=True)
class AppliedUpdate:
    index: int  # 1 for the first document of the recording session
    datamode: DataMode
    at: str | None
    document: Recording  # as received
    previous: Recording | None  # the state before this document was applied


@dataclass(frozen=True)
class SessionAssociationEvent:
    """A participant/session association as it stood after update ``update``."""

    update: int
    at: str | None
    participant_id: str
    session_id: str | None
    associate_time: str | None
    disassociate_time: str | None
    removed: bool = False  # gone from a complete snapshot without a disassociate-time


@dataclass(frozen=True)
class StreamAssociationEvent:
    """What a participant sent and received after update ``update``."""

    update: int
    at: str | None
    participant_id: str
    send: tuple[str, ...]
    recv: tuple[str, ...]


@dataclass(frozen=True)
class MetadataState:
    current: Recording | None = None
    updates: tuple[AppliedUpdate, ...] = ()
    session_history: tuple[SessionAssociationEvent, ...] = ()
    stream_history: tuple[StreamAssociationEvent, ...] = ()

    def apply(self, document: Recording, *, at: str | None = None) -> MetadataState:
        return apply_update(self, document, at=at)

    def send_history(self, participant_id: str) -> tuple[StreamAssociationEvent, ...]:
        return tuple(e for e in self.stream_history if e.participant_id == participant_id)

    def session_events(self, participant_id: str) -> tuple[SessionAssociationEvent, ...]:
        return tuple(e for e in self.session_history if e.participant_id == participant_id)


def apply_update(
    state: MetadataState, document: Recording, *, at: str | None = None
) -> MetadataState:
    """Apply one parsed document to ``state``: replace on complete, merge on partial."""
    previous = state.current
    if document.datamode == "complete":
        current = document
    else:
        # A partial update with nothing before it (the INVITE's metadata was lost or
        # unreadable) still tells us something: merge it into an empty snapshot.
        base = previous or Recording(dialect=document.dialect, namespace=document.namespace)
        current = merge_partial(base, document)
    index = len(state.updates) + 1
    return MetadataState(
        current=current,
        updates=(*state.updates, AppliedUpdate(index, document.datamode, at, document, previous)),
        session_history=(
            *state.session_history,
            *_session_changes(previous, current, index, at),
        ),
        stream_history=(*state.stream_history, *_stream_changes(previous, current, index, at)),
    )


def replay(documents: Sequence[tuple[Recording, str | None]]) -> MetadataState:
    """Rebuild a state from stored documents, e.g. after a restart."""
    state = MetadataState()
    for document, at in documents:
        state = apply_update(state, document, at=at)
    return state


def merge_partial(base: Recording, update: Recording) -> Recording:
    """``base`` with the elements named in the partial ``update`` added or updated by id."""
    return replace(
        base,
        recording_id=update.recording_id or base.recording_id,
        groups=_merge_by(base.groups, update.groups, lambda g: g.group_id),
        sessions=_merge_by(base.sessions, update.sessions, lambda s: s.session_id),
        participants=_merge_by(base.participants, update.participants, lambda p: p.participant_id),
        streams=_merge_by(base.streams, update.streams, lambda s: s.stream_id),
        session_recording_assocs=_merge_by(
            base.session_recording_assocs, update.session_recording_assocs, lambda a: a.session_id
        ),
        participant_session_assocs=_merge_psas(
            base.participant_session_assocs, update.participant_session_assocs
        ),
        # RFC 7865 §8 (hold): a <participantstreamassoc> in a partial update lists everything
        # the participant now sends and receives, so it replaces the old one outright.
        participant_stream_assocs=_merge_by(
            base.participant_stream_assocs,
            update.participant_stream_assocs,
            lambda a: a.participant_id,
            lambda old, new: new,
        ),
        extensions=_union(base.extensions, update.extensions),
        warnings=(*base.warnings, *update.warnings),
    )


def merge_item(old: T, new: T) -> T:
    """Field by field: what the update says wins, what it leaves out is kept."""
    changes: dict[str, Any] = {}
    for f in fields(old):  # type: ignore[arg-type]
        value = getattr(new, f.name)
        if f.name == "extensions":
            changes[f.name] = _union(getattr(old, f.name), value)
        elif value is None:
            continue
        elif isinstance(value, tuple) and not value and f.name not in _EMPTY_REPLACES:
            continue
        else:
            changes[f.name] = value
    return replace(old, **changes)  # type: ignore[type-var]


def _merge_by(
    base: tuple[T, ...],
    update: tuple[T, ...],
    key: Callable[[T], Hashable],
    combine: Callable[[T, T], T] = merge_item,
) -> tuple[T, ...]:
    merged: dict[Hashable, T] = {key(item): item for item in base}
    for item in update:
        k = key(item)
        merged[k] = combine(merged[k], item) if k in merged else item
    return tuple(merged.values())


def _merge_psas(
    base: tuple[ParticipantSessionAssoc, ...], update: tuple[ParticipantSessionAssoc, ...]
) -> tuple[ParticipantSessionAssoc, ...]:
    # A late-draft partial may name a participant without its session attribute: it then
    # updates that participant's only association rather than creating a session-less one.
    resolved: list[ParticipantSessionAssoc] = []
    for assoc in update:
        if assoc.session_id is None:
            known = [a for a in base if a.participant_id == assoc.participant_id]
            if len(known) == 1:
                assoc = replace(assoc, session_id=known[0].session_id)
        resolved.append(assoc)
    return _merge_by(base, tuple(resolved), lambda a: (a.participant_id, a.session_id))


def _union(old: tuple[Extension, ...], new: tuple[Extension, ...]) -> tuple[Extension, ...]:
    return (*old, *(e for e in new if e not in old))


def _session_changes(
    previous: Recording | None, current: Recording, index: int, at: str | None
) -> list[SessionAssociationEvent]:
    before = {
        (a.participant_id, a.session_id): a
        for a in (previous.participant_session_assocs if previous else ())
    }

    def event(assoc: ParticipantSessionAssoc, removed: bool = False) -> SessionAssociationEvent:
        return SessionAssociationEvent(
            index, at, assoc.participant_id, assoc.session_id, assoc.associate_time, assoc.disassociate_time, removed
        )

    seen: set[tuple[str, str | None]] = set()
    events: list[SessionAssociationEvent] = []
    for assoc in current.participant_session_assocs:
        key = (assoc.participant_id, assoc.session_id)
        seen.add(key)
        if before.get(key) != assoc:
            events.append(event(assoc))
    events += [event(assoc, removed=True) for key, assoc in before.items() if key not in seen]
    return events


def _stream_changes(
    previous: Recording | None, current: Recording, index: int, at: str | None
) -> list[StreamAssociationEvent]:
    events: list[StreamAssociationEvent] = []
    ids = list(current.participant_ids())
    if previous is not None:
        ids += [pid for pid in previous.participant_ids() if pid not in ids]
    for pid in ids:
        send, recv = current.sends(pid), current.receives(pid)
        # Order inside <send>/<recv> carries no meaning: a re-ordered list is not a change.
        now = (frozenset(send), frozenset(recv))
        then = (
            (frozenset(previous.sends(pid)), frozenset(previous.receives(pid)))
            if previous is not None
            else (frozenset(), frozenset())
        )
        if now != then:
            events.append(StreamAssociationEvent(index, at, pid, send, recv))
    return events
