"""systemd integration: sd_notify READY/STOPPING/WATCHDOG over ``NOTIFY_SOCKET`` (no libsystemd).

The protocol is one datagram per state change to the unix socket systemd names in the
environment (an abstract socket when the name starts with ``@``).  Outside systemd the variables
are absent and every call does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


class Notifier:
    def __init__(self, environ: Mapping[str, str]) -> None:
        path = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        watchdog = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is for; a child must not ping for us.
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(watchdog) / 1e6 / 2 if watchdog.isdigit() and mine else None
        self.sent: list[str] = []

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, state: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), self.address)
        except OSError as error:
            log.warn("sd_notify {state!r} to {address} failed: {error}", state=state, address=self.address, error=error)
            return False
        self.sent.append(state)
        return True


class NotifyService(Service):
    """Started last, so READY=1 goes out once every listener is bound; pings the watchdog."""

    def __init__(self, notifier: Notifier, clock: IReactorTime) -> None:
        self.notifier = notifier
        self.clock = clock
        self._watchdog: LoopingCall | None = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.notifier.notify("READY=1\nSTATUS=recording")
        if self.notifier.watchdog_interval:
            self._watchdog = LoopingCall(self._ping)
            self._watchdog.clock = self.clock
            self._watchdog.start(self.notifier.watchdog_interval, now=False)

    def _ping(self) -> None:
        # A failing ping is logged by notify(); the loop itself must not die (systemd would
        # then kill a healthy server).
        self.notifier.notify("WATCHDOG=1")

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        # Stopped first: systemd learns of the drain before the calls are wound down.
        self.notifier.notify("STOPPING=1\nSTATUS=draining active calls")
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None
