"""The session state store: what a restarted (or another) node needs to carry a call on.

A record is a JSON-able dict per recording session (see :mod:`siprecd.state.record`), written
before the answer leaves and on every change; the file positions are a separate, small update
made on the session's tick, so the periodic write never rewrites the whole record.
"""

from __future__ import annotations

from typing import Any, Protocol


class StoreError(Exception):
    """The store cannot be read or written (the message says which and why)."""


class StateStore(Protocol):
    def put(self, session_id: str, record: dict[str, Any]) -> None:
        """Store the whole record (durable when this returns, for the local store)."""

    def positions(self, session_id: str, positions: dict[str, Any]) -> None:
        """Store the periodic file positions and timestamps of a session."""

    def delete(self, session_id: str) -> None:
        """The session ended: forget it."""

    def load_all(self) -> dict[str, dict[str, Any]]:
        """Every stored session record (positions merged in under ``"positions"``)."""

    def problem(self) -> str | None:
        """Readiness: None when the store works as configured, else what is wrong."""

    def close(self) -> None: ...
