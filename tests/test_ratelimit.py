"""Per-source token buckets on a task.Clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.sip.ratelimit import RateLimiter


class RateLimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_disabled(self) -> None:
        limiter = RateLimiter(self.clock, 0, 1)
        self.assertFalse(limiter.enabled)
        self.assertEqual([limiter.allow("a") for _ in range(1000)], [True] * 1000)
        self.assertEqual(limiter.retry_after(), 1)

    def test_burst_then_refill(self) -> None:
        limiter = RateLimiter(self.clock, 1, 2)
        self.assertEqual([limiter.allow("a") for _ in range(3)], [True, True, False])
        self.clock.advance(0.5)
        self.assertFalse(limiter.allow("a"))
        self.clock.advance(0.5)
        self.assertTrue(limiter.allow("a"))
        self.assertFalse(limiter.allow("a"))
        # A long pause refills only up to the burst.
        self.clock.advance(3600)
        self.assertEqual([limiter.allow("a") for _ in range(3)], [True, True, False])

    def test_denied_attempts_do_not_consume(self) -> None:
        limiter = RateLimiter(self.clock, 2, 1)
        self.assertTrue(limiter.allow("a"))
        for _ in range(3):
            self.clock.advance(0.125)
            self.assertFalse(limiter.allow("a"))
        self.clock.advance(0.125)
        # 0.5 s at 2/s is exactly one token, whatever the denied attempts in between.
        self.assertTrue(limiter.allow("a"))

    def test_sources_independent(self) -> None:
        limiter = RateLimiter(self.clock, 1, 1)
        self.assertTrue(limiter.allow("a"))
        self.assertFalse(limiter.allow("a"))
        self.assertTrue(limiter.allow("b"))
        self.assertFalse(limiter.allow("b"))

    def test_burst_at_least_one(self) -> None:
        limiter = RateLimiter(self.clock, 1, 0)
        self.assertEqual(limiter.burst, 1.0)
        self.assertTrue(limiter.allow("a"))
        self.assertFalse(limiter.allow("a"))

    def test_bounded_sources_evict_least_recent(self) -> None:
        limiter = RateLimiter(self.clock, 1, 1, max_sources=2)
        self.assertTrue(limiter.allow("a"))
        self.assertTrue(limiter.allow("b"))
        self.assertFalse(limiter.allow("a"))  # "a" is now the most recent, "b" the oldest
        self.assertTrue(limiter.allow("c"))  # evicts "b"
        self.assertEqual(list(limiter._buckets), ["a", "c"])
        self.assertTrue(limiter.allow("b"))  # forgotten: a fresh bucket (evicts "a")
        self.assertEqual(list(limiter._buckets), ["c", "b"])
        self.assertTrue(limiter.allow("a"))

    def test_retry_after(self) -> None:
        for rate, expected in ((1, 1), (10, 1), (0.5, 2), (0.3, 4), (0.25, 4), (0.01, 100)):
            self.assertEqual(RateLimiter(self.clock, rate, 1).retry_after(), expected, rate)
