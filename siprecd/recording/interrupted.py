"""Start-up recovery of the sessions a crash (or ``kill -9``) left open.

Every session in progress is listed in the active index; for each one found there at start-up
the ``.part`` files are repaired and published (see :mod:`siprecd.recording.recovery`) and
session.json is closed: state ``ended``, the end time the last file write, and the reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection
from typing import Any

from twisted.logger import Logger

from siprecd.recording.files import ACTIVE, ActiveIndex, SessionFiles
from siprecd.crypto.at_rest import SUFFIX
from siprecd.recording.recovery import recover_directory
from siprecd.recording.wav import PART_SUFFIX, publish
from siprecd.recording.session import iso_utc

log = Logger()

INTERRUPTED = "interrupted: siprecd stopped before the call ended; files recovered at start-up"


def recover_interrupted(
    root: str, skip: Collection[str] = (), names: Collection[str] = (ACTIVE,)
) -> list[dict[str, Any]]:
    """Close every session of the active indexes ``names`` but those in ``skip`` (resumed ones)."""
    report = []
    for name in names:
        report.extend(_recover_index(ActiveIndex(root, name), skip))
    return report


def _recover_index(index: ActiveIndex, skip: Collection[str]) -> list[dict[str, Any]]:
    report = []
    for session_id, directory in index.entries():
        if session_id in skip:
            continue
        try:
            report.append(_recover_session(session_id, directory))
        except Exception:
            log.failure("recovering session {session_id} in {directory}", session_id=session_id, directory=directory)
            continue
        index.unmark(session_id)
    return report


def publish_encrypted(directory: str) -> list[dict[str, Any]]:
    """Encrypted ``.part`` files are published as they are: their chunks authenticate up to the
    crash, and the tools report them as truncated (no final chunk), never as corrupt."""
    out = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.name.endswith(SUFFIX + PART_SUFFIX) or not entry.is_file():
            continue
        final = entry.path[: -len(PART_SUFFIX)]
        try:
            publish(entry.path, final)
            outcome = "published-truncated"
        except OSError as error:
            outcome = f"failed: {error.strerror}"
        out.append({"file": os.path.basename(final), "outcome": outcome, "kind": "encrypted"})
    return out


def repair_files(directory: str) -> list[dict[str, Any]]:
    """Publish what a crash left in a session directory: what became of each file."""
    sealed = publish_encrypted(directory)
    return repair_report(sealed, recover_directory(directory))


def repair_report(sealed: list[dict[str, Any]], files: list[Any]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in dataclasses.asdict(r).items() if k not in ("part", "path")}
        | {"file": os.path.basename(r.path)}
        for r in files
    ] + sealed


def _last_write(directory: str) -> float:
    times = [entry.stat().st_mtime for entry in os.scandir(directory) if entry.is_file()]
    return max(times) if times else os.stat(directory).st_mtime


def _recover_session(session_id: str, directory: str) -> dict[str, Any]:
    if not os.path.isdir(directory):
        return {"session_id": session_id, "directory": directory, "outcome": "missing"}
    # Before the repair, which rewrites the WAV headers and so the files' modification times.
    ended_at = _last_write(directory)
    sealed = publish_encrypted(directory)
    files = recover_directory(directory)
    path = os.path.join(directory, "session.json")
    with open(path, encoding="utf-8") as handle:
        session = json.load(handle)
    if session.get("state") != "ended":
        session["state"] = "ended"
        session["ended_at"] = iso_utc(ended_at)
        session["end_reason"] = INTERRUPTED
    session["recovered_files"] = repair_report(sealed, files)
    SessionFiles(directory).write_json("session.json", session)
    log.warn(
        "recovered interrupted session {session_id}: {count} file(s) repaired in {directory}",
        session_id=session_id,
        count=len(files),
        directory=directory,
    )
    return {"session_id": session_id, "directory": directory, "outcome": "recovered", "files": len(files)}
