"""What the parent of ``[service] workers = N`` knows of its worker processes.

The supervisor (which starts, routes to and restarts the workers) publishes this; the web side
(health, metrics and the API over every worker) reads it.  Kept apart so that neither depends on
the other's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class WorkerInfo:
    index: int  # 0 .. N-1, stable across restarts of that worker
    pid: int | None  # None while the worker is not running
    web_url: str | None  # the worker's own web server on loopback, e.g. "http://127.0.0.1:41234"
    alive: bool  # running and answered its start-up handshake
    restarts: int  # times this worker was started again after it died

    def problem(self) -> str | None:
        """Why this worker cannot serve, or None."""
        if not self.alive:
            return f"worker {self.index} is not running (restarted {self.restarts} times)"
        if self.web_url is None:
            return f"worker {self.index} (pid {self.pid}) has no web server"
        return None


class WorkerDirectory(Protocol):
    def workers(self) -> Sequence[WorkerInfo]:
        """Every configured worker, in index order, whether running or not."""
        ...


class StaticDirectory:
    """A fixed list: for tests, and for a parent whose workers are known in advance."""

    def __init__(self, workers: Sequence[WorkerInfo]) -> None:
        self._workers = list(workers)

    def workers(self) -> Sequence[WorkerInfo]:
        return list(self._workers)
