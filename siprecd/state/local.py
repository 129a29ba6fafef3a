"""The embedded store: SQLite in WAL mode on this node's disk, no server.

WAL with ``synchronous = NORMAL`` survives a process crash (``kill -9``) with every committed
write; a power cut may lose the last transactions, never corrupt the file.  One row per session;
the periodic positions live in a table of their own, so the tick's write touches a small row
(about 2.5 us a session, against 30 us for a column beside a record of several KB).
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from siprecd.state.store import StoreError

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sessions (session_id TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS positions (session_id TEXT PRIMARY KEY, positions TEXT NOT NULL)",
)


def default_path(recording_directory: str) -> str:
    return os.path.join(recording_directory, ".state", "state.sqlite")


class LocalStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._problem: str | None = None
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in SCHEMA:
                self._db.execute(statement)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open the state store {path}: {error}") from None

    def _run(self, what: str, sql: str, args: tuple[Any, ...]) -> None:
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as error:
            self._problem = f"writing {what} to {self.path} failed: {error}"
            raise StoreError(self._problem) from None
        self._problem = None

    def put(self, session_id: str, record: dict[str, Any]) -> None:
        self._run(
            f"session {session_id}",
            "INSERT INTO sessions (session_id, record) VALUES (?, ?) "
            "ON CONFLICT(session_id) DO UPDATE SET record = excluded.record",
            (session_id, json.dumps(record, separators=(",", ":"))),
        )

    def positions(self, session_id: str, positions: dict[str, Any]) -> None:
        self._run(
            f"positions of {session_id}",
            "INSERT INTO positions (session_id, positions) VALUES (?, ?) "
            "ON CONFLICT(session_id) DO UPDATE SET positions = excluded.positions",
            (session_id, json.dumps(positions, separators=(",", ":"))),
        )

    def delete(self, session_id: str) -> None:
        self._run(f"the end of {session_id}", "DELETE FROM positions WHERE session_id = ?", (session_id,))
        self._run(f"the end of {session_id}", "DELETE FROM sessions WHERE session_id = ?", (session_id,))

    def load_all(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        try:
            rows = self._db.execute(
                "SELECT s.session_id, s.record, p.positions FROM sessions s "
                "LEFT JOIN positions p ON p.session_id = s.session_id"
            ).fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"reading {self.path} failed: {error}") from None
        for session_id, record, positions in rows:
            try:
                document = json.loads(record)
                document["positions"] = json.loads(positions) if positions else {}
            except ValueError as error:
                # One bad row must not keep the other sessions from resuming.
                document = {"session_id": session_id, "unreadable": f"{self.path}: {error}"}
            out[session_id] = document
        return out

    def problem(self) -> str | None:
        return self._problem

    def close(self) -> None:
        self._db.close()
