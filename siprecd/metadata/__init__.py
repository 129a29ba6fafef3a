"""RFC 7865 recording metadata: model, dialect-tolerant parser, partial-update merge, summary.

Pure functions over bytes and frozen objects; no I/O, no clock, no global state.  Bad metadata
raises :class:`MetadataError`, which is not a SIP error: the call is recorded regardless.
"""

from siprecd.metadata.merge import (
    AppliedUpdate,
    MetadataState,
    SessionAssociationEvent,
    StreamAssociationEvent,
    apply_update,
    merge_partial,
    replay,
)
from siprecd.metadata.model import (
    Extension,
    Group,
    MetadataError,
    Name,
    NameID,
    Participant,
    ParticipantSessionAssoc,
    ParticipantStreamAssoc,
    Recording,
    Session,
    SessionRecordingAssoc,
    Stream,
)
from siprecd.metadata.parse import DEFAULT_MAX_SIZE, RECORDING_NAMESPACES, parse_metadata
from siprecd.metadata.summary import numbers_in, senders_by_label, summarize

__all__ = [
    "DEFAULT_MAX_SIZE",
    "RECORDING_NAMESPACES",
    "AppliedUpdate",
    "Extension",
    "Group",
    "MetadataError",
    "MetadataState",
    "Name",
    "NameID",
    "Participant",
    "ParticipantSessionAssoc",
    "ParticipantStreamAssoc",
    "Recording",
    "Session",
    "SessionAssociationEvent",
    "SessionRecordingAssoc",
    "Stream",
    "StreamAssociationEvent",
    "apply_update",
    "merge_partial",
    "numbers_in",
    "parse_metadata",
    "replay",
    "senders_by_label",
    "summarize",
]
