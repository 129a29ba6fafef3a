"""A recording session's directory: atomic session.json, metadata versions stored verbatim.

Layout: ``<directory>/<YYYY>/<MM>/<DD>/<session_id>/`` (dated so retention and listing stay
cheap with millions of sessions).  Every write goes to a temporary file in the same directory,
is fsynced and renamed over the target, so a crash or a full disk never leaves a half-written
session.json behind: the previous version stays intact.
"""

from __future__ import annotations

import errno
import json
import os
import time
from typing import Any

from twisted.logger import Logger

from twisted.internet.defer import Deferred

from siprecd.durable import DurableWriter, atomic_write

log = Logger()

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def session_directory(root: str, session_id: str, started: float) -> str:
    day = time.gmtime(started)
    return os.path.join(root, f"{day.tm_year:04d}", f"{day.tm_mon:02d}", f"{day.tm_mday:02d}", session_id)


def disk_free(path: str) -> int | None:
    """Bytes available to this process on the file system holding ``path`` (None: unknown)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


ACTIVE = ".active"


def active_index_name(worker_index: int | None) -> str:
    """The index of one process: each of [service] workers has its own, so that a worker
    restarting recovers only the sessions it had, never another worker's live calls."""
    return ACTIVE if worker_index is None else f"{ACTIVE}.worker{worker_index}"


def active_index_names(root: str) -> list[str]:
    """Every active index under ``root``: a single process's and any worker's."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(n for n in names if n == ACTIVE or (n.startswith(ACTIVE + ".worker") and n[len(ACTIVE) + 7:].isdigit()))


def indexes_to_recover(root: str, worker_index: int | None, workers: int) -> list[str]:
    """The active indexes this process closes at start-up (besides resuming its own stored
    sessions): its own, and those nobody else will ever read after [service] workers changed,
    a single process's taken by worker 0, and workers beyond the count by whoever runs now."""
    own = active_index_name(worker_index)
    if worker_index not in (None, 0):
        return [own]
    keep = {active_index_name(i) for i in range(workers)} if worker_index == 0 else set()
    stale = [n for n in active_index_names(root) if n != own and n not in keep]
    return [own] + stale


class ActiveIndex:
    """``<root>/.active/<session_id>`` for every session in progress, holding its directory.

    After a crash, start-up reads only this index (not every session ever recorded) to find
    the sessions whose files need recovering.
    """

    def __init__(self, root: str, name: str = ACTIVE, durable: DurableWriter | None = None) -> None:
        self.path = os.path.join(root, name)
        self.durable = durable or DurableWriter()
        self._made = False

    def mark(self, session_id: str, directory: str) -> Deferred[None]:
        """Fires (never fails) when the marker is durable, or could not be written: losing
        it only costs recovery after a crash, never the recording."""
        try:
            if not self._made:
                os.makedirs(self.path, mode=0o750, exist_ok=True)
                self._made = True
        except OSError:
            pass  # the write below fails and is ignored as well
        written = self.durable.replace(os.path.join(self.path, session_id), directory.encode())
        return written.addErrback(lambda _: None)

    def unmark(self, session_id: str) -> Deferred[None]:
        # A lost unlink (crash) leaves a marker of a session whose session.json says ended:
        # recovery closes it again, harmlessly.  So no fsync, only the order of the writer.
        return self.durable.remove(os.path.join(self.path, session_id)).addErrback(lambda _: None)

    def entries(self) -> list[tuple[str, str]]:
        """(session_id, directory) of every marked session."""
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []
        except OSError as error:
            # Start-up must go on: the sessions stay marked for a later start to recover.
            log.error("cannot read the active-session index {path}: {error}", path=self.path, error=error)
            return []
        out = []
        for name in names:
            if name.startswith("."):
                continue
            try:
                with open(os.path.join(self.path, name), encoding="utf-8") as handle:
                    out.append((name, handle.read().strip()))
            except OSError:
                continue
        return out


class SessionFiles:
    def __init__(self, path: str) -> None:
        self.path = path

    def create(self) -> None:
        os.makedirs(self.path, mode=0o750, exist_ok=False)

    def write_json(self, name: str, document: dict[str, Any]) -> None:
        data = json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False).encode() + b"\n"
        atomic_write(os.path.join(self.path, name), data)
