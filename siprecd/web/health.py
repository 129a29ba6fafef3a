"""``GET /health`` (liveness) and ``GET /ready`` (readiness with the failing checks)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from siprecd import __version__

log = Logger()


def json_response(request: Request, status: int, body: object) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode()


class Health(Resource):
    isLeaf = True

    def __init__(self, clock: IReactorTime) -> None:
        super().__init__()
        self._clock = clock
        self._started = clock.seconds()

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        return json_response(
            request,
            200,
            {
                "status": "ok",
                "version": __version__,
                "uptime_seconds": round(self._clock.seconds() - self._started, 3),
            },
        )


@dataclass(frozen=True)
class Check:
    """One readiness check: ``probe()`` returns None when fine, else what is wrong."""

    name: str
    probe: Callable[[], str | None]
    # A problem of a non-critical check makes the server "degraded" (still ready, 200): it
    # works, with less (e.g. session state only on this node while Redis is down).
    critical: bool = True


class Ready(Resource):
    isLeaf = True

    def __init__(self, checks: Sequence[Check]) -> None:
        super().__init__()
        self._checks = list(checks)

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        results = {}
        failing = []
        degraded = []
        for check in self._checks:
            try:
                problem = check.probe()
            except Exception as error:  # a broken probe is a failing check, not a 500
                log.failure("readiness check {name}", name=check.name)
                problem = f"check failed: {error}"
            results[check.name] = {"ok": problem is None, "detail": problem}
            if problem is not None:
                (failing if check.critical else degraded).append(check.name)
        status = 503 if failing else 200
        word = "not ready" if failing else "degraded" if degraded else "ready"
        return json_response(
            request, status, {"status": word, "failing": failing, "degraded": degraded, "checks": results}
        )
