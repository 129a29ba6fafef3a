"""Metadata arriving in any SIP request: stored verbatim first, then parsed and merged.

Bad metadata never fails a call (RFC 7866 leaves the SRS free to record anyway): the raw body is
kept, the problem logged with what and where, and counted.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger

from siprecd.metadata import MetadataError, parse_metadata
from siprecd.crypto.at_rest import AtRest
from siprecd.recording.wav import RecordingWriteError
from siprecd.recording.session import MetadataVersion, RecordingSession, iso_utc
from siprecd.sip.multipart import BodyPart

log = Logger()

METADATA_TYPES = ("application/rs-metadata+xml", "application/rs-metadata")


def metadata_parts(parts: list[BodyPart]) -> list[BodyPart]:
    """Parts that are recording metadata, including mislabelled ones (lost or odd types)."""
    found = []
    for part in parts:
        if part.content_type in METADATA_TYPES:
            found.append(part)
        elif part.disposition == "recording-session" and part.content_type != "application/sdp":
            found.append(part)
    return found


class MetadataIntake:
    def __init__(
        self, clock: Any, max_size: int, count: Callable[[str], None], at_rest: AtRest
    ) -> None:
        self._at_rest = at_rest
        self._clock = clock
        self._max_size = max_size
        self._count = count

    def take(self, session: RecordingSession, parts: list[BodyPart], method: str) -> bool:
        """Store and apply every metadata part; True when anything was received."""
        taken = False
        for part in metadata_parts(parts):
            taken = True
            self._take_one(session, part, method)
        return taken

    def _take_one(self, session: RecordingSession, part: BodyPart, method: str) -> None:
        now = iso_utc(self._clock.seconds())
        index = len(session.metadata_versions) + 1
        name = self._at_rest.metadata_name(f"metadata-{index:04d}.xml")
        version = MetadataVersion(index, name, now, method, part.content_type, parsed=False)

        def failed(failure: Any) -> None:
            # The next session.json says the version has no file.
            failure.trap(OSError, RecordingWriteError)
            self._count("storage_errors")
            version.file = ""
            log.error(
                "cannot store {name} of {session_id}: {error}",
                name=name,
                session_id=session.session_id, call_id=session.call_id,
                error=failure.value,
            )

        stored = maybeDeferred(self._at_rest.store_metadata, os.path.join(session.directory, name), part.body)
        stored.addErrback(failed).addErrback(lambda f: log.failure("storing {name}", f, name=name))
        session.metadata_versions.append(version)
        session.metadata_documents.append(
            {"received_at": now, "body": base64.b64encode(part.body).decode("ascii")}
        )
        self._apply(session, part.body, now, version, method)

    def replay(self, session: RecordingSession, documents: list[dict[str, Any]]) -> None:
        """A resumed session: merge the stored documents again (their files exist already)."""
        for document, version in zip(documents, session.metadata_versions):
            session.metadata_documents.append(document)
            if version.parsed:
                self._apply(session, base64.b64decode(document["body"]), document["received_at"], version, version.method)

    def _apply(self, session: RecordingSession, body: bytes, now: str, version: MetadataVersion, method: str) -> None:
        index = version.index
        try:
            document = parse_metadata(body, max_size=self._max_size)
        except MetadataError as error:
            self._count("metadata_errors")
            version.error = str(error)
            log.warn(
                "metadata version {index} of session {session_id} ({method}) kept raw, not "
                "parsed: {error}",
                index=index,
                session_id=session.session_id, call_id=session.call_id,
                method=method,
                error=error,
            )
            return
        version.parsed = True
        session.metadata = session.metadata.apply(document, at=now)
