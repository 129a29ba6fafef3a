"""The web server of the parent of ``[service] workers = N``: one server on ``[web] port`` over
every worker's own web server (each on 127.0.0.1, an ephemeral port, from the directory).

Same tree, same credentials as a single process (:func:`siprecd.web.root.build_root`, the
dashboard unchanged): ``/health`` and ``/ready`` add one check per worker, ``/metrics``
re-exposes every worker's series with a ``worker`` label (:mod:`siprecd.web.cluster_metrics`),
``/api`` answers over the workers (:mod:`siprecd.web.cluster_api`).  The client's credentials,
already checked here, are passed on to the workers (or the parent's ``api_token`` when the
client sent none, e.g. an open /health), so workers with the same config accept them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from siprecd.config import Config
from siprecd.web.auth import protect
from siprecd.web.cluster_api import ClusterApi
from siprecd.web.cluster_metrics import ClusterMetrics
from siprecd.web.dashboard import dashboard_resource
from siprecd.web.health import Check, Health, Ready, json_response
from siprecd.web.root import access_log_formatter, build_root
from siprecd.web.upstream import DEFAULT_TIMEOUT, Answer, FanOut, Unavailable, Upstream
from siprecd.workers.directory import WorkerDirectory, WorkerInfo


def check_name(worker: WorkerInfo) -> str:
    return f"worker_{worker.index}"


def health_problem(worker: WorkerInfo, answer: Answer | Unavailable) -> str | None:
    if isinstance(answer, Unavailable):
        return str(answer)
    if answer.status != 200:
        return f"worker {worker.index} (pid {worker.pid}): /health answered HTTP {answer.status}"
    return None


def ready_check(worker: WorkerInfo, answer: Answer | Unavailable) -> Check:
    """The worker's readiness as one of the parent's checks: critical unless merely degraded."""
    name = check_name(worker)
    problem = health_problem(worker, answer)
    if problem is not None and not (isinstance(answer, Answer) and answer.status == 503):
        return Check(name, lambda: problem)
    try:
        document = json.loads(answer.body)  # type: ignore[union-attr]
        checks = document["checks"]
        failing, degraded = document["failing"], document["degraded"]
    except (ValueError, KeyError, TypeError):
        return Check(name, lambda: f"worker {worker.index}: /ready did not answer its usual JSON")

    def named(names: list[str]) -> str:
        return "; ".join(f"{n}: {(checks.get(n) or {}).get('detail')}" for n in names)

    if failing:
        return Check(name, lambda: f"worker {worker.index} (pid {worker.pid}) is not ready: {named(failing)}")
    if degraded:
        return Check(name, lambda: f"worker {worker.index} (pid {worker.pid}) is degraded: {named(degraded)}",
                     critical=False)
    return Check(name, lambda: None)


class ClusterHealth(FanOut):
    """The parent's liveness (same fields as a single process) and each worker's: a worker down
    or failing its /health makes the answer 503 with ``status: failing`` naming it."""

    def __init__(self, clock: IReactorTime, directory: WorkerDirectory, upstream: Upstream) -> None:
        super().__init__(directory, upstream)
        self._own = Health(clock)

    async def answer(self, request: Request) -> bytes:
        answers = await self.ask_workers(request, b"/health")
        document = json.loads(self._own.render_GET(request))
        results, failing = {}, []
        for worker, answer in answers:
            problem = health_problem(worker, answer)
            results[check_name(worker)] = {"ok": problem is None, "detail": problem}
            if problem is not None:
                failing.append(check_name(worker))
        document.update(status="failing" if failing else "ok", failing=failing, workers=results)
        return json_response(request, 503 if failing else 200, document)


class ClusterReady(FanOut):
    """The parent's own checks plus one per worker, in the single process's /ready shape."""

    def __init__(self, checks: Sequence[Check], directory: WorkerDirectory, upstream: Upstream) -> None:
        super().__init__(directory, upstream)
        self._checks = list(checks)

    async def answer(self, request: Request) -> bytes:
        answers = await self.ask_workers(request, b"/ready")
        checks = [*self._checks, *(ready_check(w, a) for w, a in answers)]
        return Ready(checks).render_GET(request)  # type: ignore[no-any-return]


def build_cluster_site(
    reactor: Any,
    config: Config,
    directory: WorkerDirectory,
    *,
    checks: Sequence[Check] | None = None,
    collectors: Sequence[Collector] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> Site:
    """The parent's Site for ``[web]``.  ``checks``: the parent's own readiness checks (default:
    the recording directory's free space); ``collectors``: the parent's own Prometheus
    collectors, exported beside the workers' series; ``timeout``: seconds a worker has to
    answer (and may stay silent in the middle of a relayed body)."""
    if checks is None:
        from siprecd.service import recording_space_problem  # the single process's own check

        checks = [Check("recording_directory", lambda: recording_space_problem(config))]
    web = config.web
    tokens = [web.api_token] if web.api_token else []
    upstream = Upstream(reactor, timeout, b"Bearer " + web.api_token.encode("utf-8") if web.api_token else None)
    root: Resource = build_root(
        reactor,
        checks,
        metrics=ClusterMetrics(directory, upstream, collectors),
        api=ClusterApi(directory, upstream, reactor),
        dashboard=dashboard_resource(),
        protect=lambda resource: protect(resource, tokens, web.users),
        protect_health=web.protect_health,
        protect_metrics=web.protect_metrics,
        health=ClusterHealth(reactor, directory, upstream),
        ready=ClusterReady(checks, directory, upstream),
    )
    return Site(root, logFormatter=access_log_formatter)
