"""Per-source token buckets on an injected clock, with a bounded number of tracked sources."""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime


class RateLimiter:
    def __init__(
        self, clock: IReactorTime, rate: float, burst: float, max_sources: int = 10000
    ) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._max_sources = max_sources
        # source -> (tokens, last refill time); least recently seen first, evicted first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, source: str) -> bool:
        if not self.enabled:
            return True
        now = self._clock.seconds()
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[source] = (tokens, now)
        while len(self._buckets) > self._max_sources:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self) -> int:
        """Seconds until one token is back: the Retry-After of a 503."""
        return max(1, int(1.0 / self.rate + 0.999)) if self.enabled else 1
