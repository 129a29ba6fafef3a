"""DurableWriter: order, group commit, coalescing, errors; with a pool the test runs by hand."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from typing import Any
from unittest import mock

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import TestCase

from siprecd import durable
from siprecd.durable import DurableWriter, write_batch


class ManualPool:
    """A one-thread pool whose work runs when the test says so."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append((work, d))
        return d

    def step(self) -> None:
        work, d = self.waiting.pop(0)
        maybeDeferred(work).chainDeferred(d)


class WriteBatchTests(TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir, ignore_errors=True))

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def read(self, name: str) -> bytes:
        with open(self.path(name), "rb") as handle:
            return handle.read()

    def test_last_write_wins_one_fsync_per_file_and_directory(self) -> None:
        fsyncs: list[int] = []
        real = os.fsync
        with mock.patch.object(durable.os, "fsync", side_effect=lambda fd: (fsyncs.append(fd), real(fd))):
            errors = write_batch([
                (self.path("session.json"), b"one", 0o640),
                (self.path("marker"), b"m", 0o640),
                (self.path("session.json"), b"two", 0o640),
            ])
        self.assertEqual(errors, [None, None, None])
        self.assertEqual(self.read("session.json"), b"two")
        self.assertEqual(self.read("marker"), b"m")
        self.assertEqual(len(fsyncs), 3)  # two files, one directory
        self.assertEqual(sorted(os.listdir(self.dir)), ["marker", "session.json"])  # no temp left

    def test_renames_in_order_of_first_job(self) -> None:
        renamed: list[str] = []
        real = os.replace
        with mock.patch.object(durable.os, "replace", side_effect=lambda a, b: (renamed.append(os.path.basename(b)), real(a, b))):
            write_batch([(self.path("a"), b"1", 0o640), (self.path("b"), b"2", 0o640), (self.path("a"), b"3", 0o640)])
        self.assertEqual(renamed, ["a", "b"])

    def test_remove_after_write_in_one_batch_leaves_nothing(self) -> None:
        errors = write_batch([(self.path("m"), b"x", 0o640), (self.path("m"), None, 0)])
        self.assertEqual(errors, [None, None])
        self.assertEqual(os.listdir(self.dir), [])

    def test_disk_full_fails_only_that_file_and_keeps_the_old_version(self) -> None:
        with open(self.path("session.json"), "wb") as handle:
            handle.write(b"old")
        real = os.write

        def full(fd: int, data: Any) -> int:
            if bytes(data[:3]) == b"new":
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data)

        with mock.patch.object(durable.os, "write", side_effect=full):
            errors = write_batch([(self.path("session.json"), b"new", 0o640), (self.path("other"), b"ok", 0o640)])
        assert errors[0] is not None
        self.assertEqual(errors[0].errno, errno.ENOSPC)
        self.assertIsNone(errors[1])
        self.assertEqual(self.read("session.json"), b"old")
        self.assertEqual(sorted(os.listdir(self.dir)), ["other", "session.json"])

    def test_directory_fsync_failure_fails_its_files(self) -> None:
        def broken(path: str) -> None:
            raise OSError(errno.EIO, "Input/output error")

        with mock.patch.object(durable, "sync_directory", side_effect=broken):
            errors = write_batch([(self.path("a"), b"1", 0o640), (self.path("a"), b"2", 0o640)])
        self.assertEqual([e.errno if e else None for e in errors], [errno.EIO, errno.EIO])


    def test_publish_fsyncs_closes_and_links_never_replacing(self) -> None:
        fds = []
        for name in ("a.wav", "b.wav"):
            fd = os.open(self.path(name + ".part"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
            os.write(fd, name.encode())
            fds.append(fd)
        with open(self.path("b.wav"), "wb") as handle:
            handle.write(b"finished before")
        errors = write_batch([
            (self.path("a.wav"), durable.Part(fds[0], self.path("a.wav.part")), 0),
            (self.path("b.wav"), durable.Part(fds[1], self.path("b.wav.part")), 0),
        ])
        self.assertIsNone(errors[0])
        assert errors[1] is not None
        self.assertEqual(errors[1].errno, errno.EEXIST)
        self.assertEqual(self.read("a.wav"), b"a.wav")
        self.assertEqual(self.read("b.wav"), b"finished before")  # never replaced
        self.assertEqual(sorted(os.listdir(self.dir)), ["a.wav", "b.wav", "b.wav.part"])  # kept for recovery
        for fd in fds:
            self.assertRaises(OSError, os.fstat, fd)  # closed


class DurableWriterTests(TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir, ignore_errors=True))
        self.pool = ManualPool()
        self.writer = DurableWriter(self.pool)

    def test_jobs_gather_while_a_batch_runs(self) -> None:
        fired: list[str] = []
        first = self.writer.replace(os.path.join(self.dir, "a"), b"1")
        first.addCallback(lambda _: fired.append("a"))
        for name in ("b", "c"):
            self.writer.replace(os.path.join(self.dir, name), name.encode()).addCallback(lambda _, n=name: fired.append(n))
        barrier = self.writer.barrier()
        barrier.addCallback(lambda _: fired.append("barrier"))
        self.assertEqual(len(self.pool.waiting), 1)  # b, c and the barrier wait for a's batch
        self.assertEqual(self.writer.pending, 3)  # a being written, b and c queued (a metric)
        self.assertEqual(fired, [])
        self.pool.step()
        self.assertEqual(fired, ["a"])
        self.assertEqual(len(self.pool.waiting), 1)
        self.pool.step()
        self.assertEqual(fired, ["a", "b", "c", "barrier"])
        self.assertEqual(self.writer.batches, 2)
        self.assertEqual(self.writer.pending, 0)

    def test_error_reaches_its_job_only(self) -> None:
        missing = os.path.join(self.dir, "no-such-directory", "session.json")
        failed = self.writer.replace(missing, b"x")
        fine = self.writer.replace(os.path.join(self.dir, "ok"), b"y")
        self.pool.step()
        self.pool.step()
        failure = self.failureResultOf(failed, OSError)
        self.assertEqual(failure.value.errno, errno.ENOENT)
        self.assertIsNone(self.successResultOf(fine))
        self.assertEqual((self.writer.done, self.writer.failed), (2, 1))  # counted for /metrics

    def test_unexpected_error_fails_every_job_and_the_writer_goes_on(self) -> None:
        with mock.patch.object(durable, "write_batch", side_effect=RuntimeError("bug")):
            broken = self.writer.replace(os.path.join(self.dir, "a"), b"1")
            self.pool.step()
        self.failureResultOf(broken, RuntimeError)
        later = self.writer.replace(os.path.join(self.dir, "b"), b"2")
        self.pool.step()
        self.assertIsNone(self.successResultOf(later))
        self.assertEqual(self.writer.failed, 1)

    def test_inline_runner_is_synchronous(self) -> None:
        writer = DurableWriter()
        path = os.path.join(self.dir, "x")
        self.assertIsNone(self.successResultOf(writer.replace(path, b"data")))
        with open(path, "rb") as handle:
            self.assertEqual(handle.read(), b"data")
        self.assertIsNone(self.successResultOf(writer.remove(path)))
        self.assertFalse(os.path.exists(path))


class ServiceTests(TestCase):
    def test_service_writes_on_its_thread_and_stops_after_the_queue(self) -> None:
        from twisted.internet import reactor

        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(directory, ignore_errors=True))
        service = durable.DurableWriterService(reactor)
        service.startService()
        path = os.path.join(directory, "session.json")
        written = service.writer.replace(path, b"{}")
        stopped = service.stopService()  # waits for the write, then for the thread

        def check(_: object) -> None:
            self.assertTrue(written.called)
            with open(path, "rb") as handle:
                self.assertEqual(handle.read(), b"{}")

        return stopped.addCallback(check)
