"""Key rotation: a new key-encryption key every ``[encryption] rotation_interval``.

:class:`KeyRotation` is a Service owning a LoopingCall on the injected clock.  New files use
the new KEK (``store.current()``); old KEKs stay in the store for decryption.  A failed
rotation is logged with its traceback, counted (``counters["rotation_failures"]``) and retried
after ``min(60 s, interval)``; it never stops recording (files keep using the current KEK) and
never kills the LoopingCall.  ``stopService`` cancels everything it scheduled.

The first rotation is due one interval after the current KEK was created, so a server that
restarts more often than the interval still rotates: with a fresh KEK that is one interval
after start; with a KEK already older than the interval it is at once (on the next reactor turn).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from siprecd.crypto.keystore import KeyStore

if TYPE_CHECKING:
    from siprecd.metrics import Metrics

log = Logger()

MAX_RETRY_DELAY = 60.0

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"(?:{_NUMBER}\s*[smhd]\s*)+|{_NUMBER}")
_PART = re.compile(rf"({_NUMBER})\s*([smhd])")


def parse_duration(text: str) -> float:
    """Seconds in ``"24h"``, ``"30m"``, ``"90s"``, ``"7d"``, ``"1h30m"`` or ``"86400"``.

    ``"0"`` gives 0.0 (the caller decides whether that means "off"); anything else that is not
    a non-negative finite duration raises ValueError with a message naming the text."""
    value = text.strip().lower() if isinstance(text, str) else ""
    if not _DURATION.fullmatch(value):
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 30m, 24h, 7d, 1h30m or plain seconds)")
    if value[-1] not in _UNITS:
        seconds = float(value)
    else:
        seconds = sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(value))
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is too long a duration")
    return seconds


class KeyRotation(Service):
    name = "key-rotation"

    def __init__(
        self,
        store: KeyStore,
        clock: IReactorTime,
        interval: float,
        *,
        retry_delay: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if not (isinstance(interval, (int, float)) and math.isfinite(interval) and interval > 0):
            raise ValueError(f"rotation interval must be a positive number of seconds, not {interval!r}")
        self.store = store
        self.clock = clock
        self.interval = float(interval)
        self.retry_delay = min(MAX_RETRY_DELAY, self.interval) if retry_delay is None else float(retry_delay)
        self.counters = {"rotations": 0, "rotation_failures": 0}
        self._loop: LoopingCall | None = None
        self._start_call: IDelayedCall | None = None
        self._retry_call: IDelayedCall | None = None
        if metrics is not None:
            metrics.watch_rotation(self)  # exports self.counters at scrape time

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._start_call = self.clock.callLater(self._first_delay(), self._start_loop)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        if self._start_call is not None and self._start_call.active():
            self._start_call.cancel()
        self._start_call = None
        self._cancel_retry()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _first_delay(self) -> float:
        try:
            created = self.store.current().created
        except Exception:
            log.failure("key rotation: cannot read the current key; first rotation in {interval}s",
                        interval=self.interval)
            return self.interval
        age = self.clock.seconds() - created
        # A KEK "from the future" (clocks that disagree) waits one full interval.
        return min(self.interval, max(0.0, self.interval - age))

    def _start_loop(self) -> None:
        self._start_call = None
        self._loop = LoopingCall(self._scheduled)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True).addErrback(self._loop_died)

    def _loop_died(self, failure: Failure) -> None:
        # Unreachable while _rotate catches everything; logged loudly if that ever changes.
        log.failure("key rotation loop stopped: no more automatic rotations", failure)

    def _scheduled(self) -> None:
        self._cancel_retry()  # the scheduled rotation replaces a pending retry
        self._rotate()

    def _retry(self) -> None:
        self._retry_call = None
        self._rotate()

    def _rotate(self) -> None:
        try:
            kek = self.store.rotate()
        except Exception:
            self.counters["rotation_failures"] += 1
            # A retry at or after the next scheduled rotation would only duplicate it.
            retry = self.running and self.retry_delay < self.interval
            log.failure(
                "key rotation failed ({failures} so far); new files keep using the current key; "
                "retrying in {delay}s",
                failures=self.counters["rotation_failures"],
                delay=self.retry_delay if retry else self.interval,
            )
            if retry:
                self._retry_call = self.clock.callLater(self.retry_delay, self._retry)
            return
        self.counters["rotations"] += 1
        log.info("key rotation: new key-encryption key {kek_id}", kek_id=kek.kek_id)

    def _cancel_retry(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
