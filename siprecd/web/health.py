"""``GET /health``: liveness as JSON (status, version, uptime)."""

from __future__ import annotations

import json

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from siprecd import __version__


class Health(Resource):
    isLeaf = True

    def __init__(self, clock: IReactorTime) -> None:
        super().__init__()
        self._clock = clock
        self._started = clock.seconds()

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        body = {
            "status": "ok",
            "version": __version__,
            "uptime_seconds": round(self._clock.seconds() - self._started, 3),
        }
        return json.dumps(body).encode()


def root(clock: IReactorTime) -> Resource:
    tree = Resource()
    tree.putChild(b"health", Health(clock))
    return tree
