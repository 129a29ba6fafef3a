"""``GET /metrics`` of the parent of ``[service] workers = N``: every worker's series, labelled.

Each worker's own exposition (Prometheus text) is scraped at scrape time, parsed, and every
sample gets ``worker="<index>"``; families of the same name are merged, so HELP and TYPE appear
once and ``sum without (worker) (...)`` of a counter is what one process would have counted.
The parent adds what only it knows:

* ``siprecd_workers_configured``, ``siprecd_workers_alive`` (gauges);
* ``siprecd_worker_restarts_total{worker}`` (counter, from the directory);
* ``siprecd_worker_scrape_ok{worker}``: 1 when that worker's series are in this scrape, 0 when
  it was down, slow or answered garbage (its series are then absent, and the log says why);
* its own ``process_*`` series with ``worker="parent"``.

A worker restarted by the supervisor starts its counters from zero: Prometheus's ``rate()``
treats that as a counter reset of that worker's series, as for any restarted process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from twisted.logger import Logger
from twisted.web.server import Request

from siprecd.web.upstream import Answer, FanOut, Unavailable, Upstream
from siprecd.workers.directory import WorkerDirectory, WorkerInfo

log = Logger()

PARENT = "parent"  # the worker label of the parent's own process series


def labelled(families: Iterable[Metric], worker: str) -> Iterator[Metric]:
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [s._replace(labels={**s.labels, "worker": worker}) for s in family.samples]
        yield copy


def merge(groups: Iterable[Iterable[Metric]]) -> list[Metric]:
    """One family per name, samples in the order given; the first HELP and TYPE win."""
    merged: dict[str, Metric] = {}
    for families in groups:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                merged[family.name] = into = Metric(family.name, family.documentation, family.type, family.unit)
            into.samples.extend(family.samples)
    return list(merged.values())


def parse_worker(text: str, worker: str) -> list[Metric]:
    """A worker's exposition, labelled; raises ValueError when it is not Prometheus text."""
    return list(labelled(text_string_to_metric_families(text), worker))


def parent_families(workers: Sequence[WorkerInfo], scraped: dict[int, bool]) -> list[Metric]:
    configured = GaugeMetricFamily("siprecd_workers_configured", "Worker processes configured ([service] workers).")
    configured.add_metric([], len(workers))
    alive = GaugeMetricFamily("siprecd_workers_alive", "Worker processes running and past their start-up handshake.")
    alive.add_metric([], sum(1 for w in workers if w.alive))
    restarts = CounterMetricFamily(
        "siprecd_worker_restarts", "Times each worker was started again after it died.", labels=["worker"]
    )
    ok = GaugeMetricFamily(
        "siprecd_worker_scrape_ok",
        "1 when this worker's own metrics are in this scrape; 0 when it was down, too slow or unreadable.",
        labels=["worker"],
    )
    for w in workers:
        restarts.add_metric([str(w.index)], w.restarts)
        ok.add_metric([str(w.index)], 1 if scraped.get(w.index) else 0)
    own = list(labelled(ProcessCollector(registry=None).collect(), PARENT))
    return [configured, alive, restarts, ok, *own]


class _Families:
    """A collector that hands out families already gathered (a registry per scrape)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class ClusterMetrics(FanOut):
    def __init__(self, directory: WorkerDirectory, upstream: Upstream, collectors: Sequence[Collector] = ()) -> None:
        """``collectors``: the parent's own metrics (the supervisor's, the router's), exported
        as they are, beside the workers'."""
        super().__init__(directory, upstream)
        self._collectors = list(collectors)

    async def answer(self, request: Request) -> bytes:
        # No Accept: the workers answer Prometheus text, which is what is parsed here.
        answers = await self.ask_workers(request, b"/metrics")
        groups: list[list[Metric]] = []
        scraped: dict[int, bool] = {}
        for worker, answer in answers:
            families = self._families_of(worker, answer)
            scraped[worker.index] = families is not None
            if families is not None:
                groups.append(families)
        groups.append(parent_families([w for w, _ in answers], scraped))
        groups.extend(list(collector.collect()) for collector in self._collectors)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(merge(groups)))  # type: ignore[arg-type]
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return encoder(registry)  # type: ignore[no-any-return]

    def _families_of(self, worker: WorkerInfo, answer: Answer | Unavailable) -> list[Metric] | None:
        if isinstance(answer, Unavailable):
            log.warn("metrics of worker {index} left out: {problem}", index=worker.index, problem=str(answer))
            return None
        if answer.status != 200:
            log.warn("metrics of worker {index} left out: HTTP {status}", index=worker.index, status=answer.status)
            return None
        try:
            return parse_worker(answer.body.decode("utf-8"), str(worker.index))
        except (UnicodeDecodeError, ValueError, IndexError, TypeError) as error:
            log.warn("metrics of worker {index} left out: not Prometheus text ({error})", index=worker.index,
                     error=error)
            return None
