"""The web resource tree: /health, /ready, /metrics, /api, and the dashboard at /."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.http import combinedLogFormatter
from twisted.web.resource import Resource

from siprecd.web.health import Check, Health, Ready


_TOKEN = re.compile(rb"([?&]token=)[^&#]*")


class _RedactedRequest:
    """A request as the access log sees it: the dashboard's ``?token=`` never reaches a log."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = _TOKEN.sub(rb"\1REDACTED", request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def access_log_formatter(timestamp: str, request: Any) -> str:
    return combinedLogFormatter(timestamp, _RedactedRequest(request))


def build_root(
    clock: IReactorTime,
    checks: Sequence[Check],
    *,
    metrics: Resource | None = None,
    api: Resource | None = None,
    dashboard: Resource | None = None,
    protect: object | None = None,
    protect_health: bool = False,
    protect_metrics: bool = False,
    health: Resource | None = None,
    ready: Resource | None = None,
) -> Resource:
    """``protect(resource)`` wraps a resource behind the configured credentials.  ``health`` and
    ``ready`` replace the single process's own (the parent of workers asks its workers too)."""
    guard = protect if protect is not None else (lambda resource: resource)
    root = dashboard if dashboard is not None else Resource()
    health = health if health is not None else Health(clock)
    ready = ready if ready is not None else Ready(checks)
    if protect_health:
        health, ready = guard(health), guard(ready)  # type: ignore[operator]
    root.putChild(b"health", health)
    root.putChild(b"ready", ready)
    if metrics is not None:
        root.putChild(b"metrics", guard(metrics) if protect_metrics else metrics)  # type: ignore[operator]
    if api is not None:
        root.putChild(b"api", guard(api))  # type: ignore[operator]
    return root
