"""The parent's own SIP counts in /metrics (what never reached a worker's counters)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric


class RouterCollector:
    """``siprecd_parent_sip_messages_total{outcome}``: what the parent did with each SIP message
    (routed to a worker, dropped while its worker was down, rate-limited, not SIP, malformed,
    keep-alives); the parent's counts live in the Router, read at scrape time."""

    def __init__(self, counters: Mapping[str, int]) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "siprecd_parent_sip_messages",
            "SIP messages the parent of [service] workers received, by what it did with them.",
            labels=["outcome"],
        )
        for outcome, count in sorted(self._counters.items()):
            family.add_metric([outcome], count)
        yield family
