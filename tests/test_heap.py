"""The heap trimmer: malloc_trim(0) every interval on an injected clock, nothing when off."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.heap import HeapTrim, glibc_malloc_trim


class HeapTrimTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.calls: list[int] = []

    def trim(self, pad: int) -> int:
        self.calls.append(pad)
        return 1

    def test_trims_every_interval_until_stopped(self) -> None:
        service = HeapTrim(self.clock, 10, trim=self.trim)
        service.startService()
        self.assertEqual(self.calls, [])  # not at start-up: nothing to give back yet
        self.clock.advance(9.9)
        self.assertEqual(self.calls, [])
        self.clock.advance(0.1)
        self.clock.advance(10)
        self.assertEqual(self.calls, [0, 0])
        service.stopService()
        self.clock.advance(100)
        self.assertEqual(self.calls, [0, 0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_interval_zero_never_trims(self) -> None:
        service = HeapTrim(self.clock, 0, trim=self.trim)
        service.startService()
        self.clock.advance(1000)
        self.assertEqual(self.calls, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        service.stopService()

    def test_a_failing_trim_is_logged_not_raised(self) -> None:
        calls = []

        def broken_once(pad: int) -> int:
            calls.append(pad)
            if len(calls) == 1:
                raise OSError("no")
            return 1

        service = HeapTrim(self.clock, 1, trim=broken_once)
        service.startService()
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.clock.advance(1)  # the job goes on after its own failure
        self.assertEqual((len(calls), service.trims), (2, 1))
        service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_glibc_trim_runs_here(self) -> None:
        trim = glibc_malloc_trim()
        if trim is None:
            self.skipTest("no malloc_trim in this C library")
        self.assertIn(trim(0), (0, 1))
