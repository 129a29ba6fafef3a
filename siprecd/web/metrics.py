"""``GET /metrics``: the Prometheus exposition of one :class:`~siprecd.metrics.Metrics`.

Prometheus text format 0.0.4 by default; OpenMetrics when the scraper asks for it in
``Accept``.  Collection reads in-memory counters (and one statvfs), in the reactor thread, so a
scrape sees a consistent picture: no session is half-way between live and finished.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from siprecd.metrics import Metrics

log = Logger()


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        accept = request.getHeader(b"accept")
        try:
            body, content_type = self.metrics.exposition(accept.decode("latin-1") if accept else None)
        except Exception:
            log.failure("collecting metrics")
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"metrics collection failed; see the server log\n"
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body
