"""Key rotation on task.Clock: schedule, failures (logged, counted, retried), clean stop."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.crypto.keystore import FileKeyStore, Kek, KeyStoreError, MemoryKeyStore
from siprecd.crypto.rotation import KeyRotation, parse_duration

DAY = 86400.0


class FlakyStore(MemoryKeyStore):
    """rotate() raises for the next ``failures`` calls."""

    def __init__(self, clock: Clock, failures: int = 0) -> None:
        super().__init__(clock=clock.seconds)
        self.failures = failures
        self.attempts = 0

    def rotate(self) -> Kek:
        self.attempts += 1
        if self.failures and self._keks:  # the first key (from current()) always works
            self.failures -= 1
            raise KeyStoreError("cannot write key file /keys/x.key: No space left on device")
        return super().rotate()


class KeyRotationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_795_000_000)

    def start(self, store: MemoryKeyStore, interval: float = DAY) -> KeyRotation:
        rotation = KeyRotation(store, self.clock, interval)
        rotation.startService()
        self.addCleanup(self.stop, rotation)
        return rotation

    def stop(self, rotation: KeyRotation) -> None:
        if rotation.running:
            rotation.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_rotates_every_interval(self) -> None:
        store = MemoryKeyStore(clock=self.clock.seconds)
        rotation = self.start(store)
        first = store.current()
        self.assertEqual(store.list(), [first])  # nothing rotated at start
        self.clock.advance(DAY - 1)
        self.assertEqual(store.current(), first)
        self.clock.advance(1)
        second = store.current()
        self.assertNotEqual(second, first)
        self.assertEqual(store.get(first.kek_id), first)
        self.assertEqual(rotation.counters, {"rotations": 1, "rotation_failures": 0})
        self.clock.advance(DAY)
        self.assertEqual(len(store.list()), 3)
        self.assertEqual(store.list()[:2], [first, second])
        self.assertEqual(rotation.counters["rotations"], 2)

    def test_first_rotation_counts_from_the_current_key_age(self) -> None:
        store = MemoryKeyStore(clock=self.clock.seconds)
        first = store.current()
        self.clock.advance(DAY - 600)  # restarted 10 minutes before the key is a day old
        self.start(store)
        self.clock.advance(599)
        self.assertEqual(store.current(), first)
        self.clock.advance(1)
        self.assertNotEqual(store.current(), first)

    def test_key_older_than_the_interval_rotates_at_once(self) -> None:
        store = MemoryKeyStore(clock=self.clock.seconds)
        first = store.current()
        self.clock.advance(3 * DAY)
        rotation = self.start(store)
        self.assertEqual(store.current(), first)  # not inside startService
        self.clock.advance(0)
        self.assertNotEqual(store.current(), first)
        self.clock.advance(DAY)
        self.assertEqual(rotation.counters["rotations"], 2)

    def test_failed_rotation_is_logged_counted_and_retried(self) -> None:
        store = FlakyStore(self.clock, failures=1)
        rotation = self.start(store)
        first = store.current()
        self.clock.advance(DAY)
        self.assertEqual(rotation.counters, {"rotations": 0, "rotation_failures": 1})
        self.assertEqual(len(self.flushLoggedErrors(KeyStoreError)), 1)
        self.assertEqual(store.current(), first)  # recording carries on with the current key
        self.clock.advance(59)
        self.assertEqual(store.current(), first)
        self.clock.advance(1)  # retried after min(60, interval)
        second = store.current()
        self.assertNotEqual(second, first)
        self.assertEqual(rotation.counters, {"rotations": 1, "rotation_failures": 1})
        # The LoopingCall is still alive: the next rotation comes on schedule.
        self.clock.advance(DAY - 60)
        self.assertEqual(rotation.counters["rotations"], 2)
        self.assertEqual(len(store.list()), 3)
        self.assertEqual(store.attempts, 4)

    def test_failures_keep_retrying_until_one_works(self) -> None:
        store = FlakyStore(self.clock, failures=3)
        rotation = self.start(store, interval=3600)
        self.clock.advance(3600)
        self.clock.advance(60)
        self.clock.advance(60)
        self.assertEqual(rotation.counters, {"rotations": 0, "rotation_failures": 3})
        self.assertEqual(len(self.flushLoggedErrors(KeyStoreError)), 3)
        self.clock.advance(60)
        self.assertEqual(rotation.counters, {"rotations": 1, "rotation_failures": 3})

    def test_short_interval_retries_on_the_next_tick_without_duplicates(self) -> None:
        store = FlakyStore(self.clock, failures=1)
        rotation = self.start(store, interval=30)
        self.clock.advance(30)
        self.assertEqual(rotation.counters["rotation_failures"], 1)
        self.flushLoggedErrors(KeyStoreError)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # just the loop
        self.clock.advance(30)
        self.assertEqual(rotation.counters, {"rotations": 1, "rotation_failures": 1})
        self.assertEqual(store.attempts, 3)  # first key, failure, one retry

    def test_scheduled_rotation_replaces_a_pending_retry(self) -> None:
        store = FlakyStore(self.clock, failures=1)
        rotation = self.start(store, interval=90)
        self.clock.advance(90)  # fails; retry due at 150, next tick at 180
        self.flushLoggedErrors(KeyStoreError)
        store.failures = 1
        self.clock.advance(60)  # the retry fails too; next retry at 210 > tick at 180
        self.flushLoggedErrors(KeyStoreError)
        self.clock.advance(30)  # the tick rotates and cancels the retry
        self.assertEqual(rotation.counters, {"rotations": 1, "rotation_failures": 2})
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_stop_with_a_retry_pending_leaves_no_delayed_calls(self) -> None:
        store = FlakyStore(self.clock, failures=1)
        rotation = self.start(store)
        self.clock.advance(DAY)
        self.flushLoggedErrors(KeyStoreError)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # loop + retry
        rotation.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_before_the_loop_started(self) -> None:
        rotation = self.start(MemoryKeyStore(clock=self.clock.seconds))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        rotation.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unreadable_store_at_start_is_logged_and_rotation_still_scheduled(self) -> None:
        class Broken(MemoryKeyStore):
            def current(self) -> Kek:
                raise KeyStoreError("key directory /keys has mode 0755")

        rotation = self.start(Broken(clock=self.clock.seconds))
        self.assertEqual(len(self.flushLoggedErrors(KeyStoreError)), 1)
        self.clock.advance(DAY)
        self.assertEqual(rotation.counters["rotations"], 1)

    def test_with_a_file_store(self) -> None:
        directory = os.path.abspath(self.mktemp())
        store = FileKeyStore(directory, passphrase="pw", kdf_cost=4, clock=self.clock.seconds)
        self.start(store)
        first = store.current()
        self.clock.advance(DAY)
        second = store.current()
        self.assertNotEqual(first, second)
        reopened = FileKeyStore(directory, passphrase="pw", kdf_cost=4)
        self.assertEqual(reopened.list(), [first, second])

    def test_bad_interval(self) -> None:
        for interval in (0, -1, float("inf"), float("nan")):
            self.assertRaises(ValueError, KeyRotation, MemoryKeyStore(), self.clock, interval)


class ParseDurationTests(SynchronousTestCase):
    def test_durations(self) -> None:
        cases = {
            "24h": 86400.0,
            "30m": 1800.0,
            "90s": 90.0,
            "86400": 86400.0,
            "7d": 604800.0,
            "1h30m": 5400.0,
            " 1.5H ": 5400.0,
            "0": 0.0,
        }
        for text, seconds in cases.items():
            self.assertEqual(parse_duration(text), seconds, text)

    def test_not_durations(self) -> None:
        for text in ("", "h", "-5", "5x", "1e3", "inf", "nan", "24 hours", "9" * 400):
            error = self.assertRaises(ValueError, parse_duration, text)
            self.assertIn(repr(text), str(error))
