"""The web resource tree: /health, /ready, /metrics, /api, and the dashboard at /."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource

from siprecd.web.health import Check, Health, Ready


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
) -> Resource:
    """``protect(resource)`` wraps a resource behind the configured credentials."""
    guard = protect if protect is not None else (lambda resource: resource)
    root = dashboard if dashboard is not None else Resource()
    health: Resource = Health(clock)
    ready: Resource = Ready(checks)
    if protect_health:
        health, ready = guard(health), guard(ready)  # type: ignore[operator]
    root.putChild(b"health", health)
    root.putChild(b"ready", ready)
    if metrics is not None:
        root.putChild(b"metrics", guard(metrics) if protect_metrics else metrics)  # type: ignore[operator]
    if api is not None:
        root.putChild(b"api", guard(api))  # type: ignore[operator]
    return root
