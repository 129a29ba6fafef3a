"""Durable file writes: what a crash or power loss cannot half-do.

:func:`atomic_write` does one file on the calling thread.  :class:`DurableWriter` does many, in
order, on a thread of its own (group commit): a SIPREC setup wrote ~12 small files, each with
its own fsync and directory fsync, on the reactor thread, and under media load each fsync took
1-2 ms while every media socket waited.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]


def sync_directory(path: str) -> None:
    """fsync a directory, so that a rename or a new name in it survives a crash."""
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stage(path: str, data: bytes, mode: int) -> tuple[str, int]:
    """``data`` in a new temporary file beside ``path``, its write-back started; returns its
    name and the open descriptor, for :func:`_sync_close`."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not loosen (or tighten) what was asked for
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        _start_writeback(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(temporary)
        raise
    return temporary, fd


def _start_writeback(fd: int) -> None:
    """Start writing the file's dirty pages now, without waiting.  On ext4 (delayed
    allocation) a batch's files then get their blocks before the first fsync, whose journal
    commit takes them all: the batch's other fsyncs find nothing left to commit.  Without it
    each fsync allocated its own blocks and forced a commit of its own, each waiting for the
    recordings' data (data=ordered): 1-2 ms apiece under media load.  (POSIX_FADV_DONTNEED
    starts asynchronous write-back of dirty pages; the cache of these small files is not
    needed again.)"""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):
        pass  # an optimisation only: the fsync still makes the file durable


def _sync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path: str, data: bytes, *, mode: int = 0o640) -> None:
    """Replace ``path`` with ``data`` all at once: temp file, fsync, rename, fsync directory.

    Readers see the old or the new content, never a mix; the temp file never follows a link.
    """
    temporary, fd = _stage(path, data, mode)
    try:
        _sync_close(fd)
        os.replace(temporary, path)
        sync_directory(os.path.dirname(path))
    except BaseException:
        _unlink_quietly(temporary)
        raise


def publish(part_path: str, path: str, *, sync: bool = True) -> None:
    """Atomically give ``part_path``'s file the name ``path``; never replaces an existing file.

    Raises FileExistsError if ``path`` exists.  A crash between the link and the unlink leaves
    both names on one inode, which recovery recognises and cleans.  ``sync``: fsync the
    directory (a batch does it once for all its files).
    """
    try:
        os.link(part_path, path)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # No hard links here (some network/FUSE filesystems): check, then rename.
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "file exists", path) from e
        os.rename(part_path, path)
    else:
        os.unlink(part_path)
    if sync:
        sync_directory(os.path.dirname(path) or ".")


@dataclass(frozen=True)
class Part:
    """A finished ``.part`` file handed over open: fsync, close, then publish."""

    fd: int
    part_path: str


@dataclass
class _Job:
    path: str | None  # None: a barrier
    data: bytes | Part | None  # None: remove the file
    mode: int
    done: Deferred[None] = field(default_factory=Deferred)


def write_batch(jobs: list[tuple[str, bytes | Part | None, int]]) -> list[OSError | None]:
    """Carry out ``(path, data, mode)`` in order; one error (or None) per job.  ``data``: the
    new content, None to remove the file, or a :class:`Part` to publish under ``path``.

    Group commit: a path written several times is written once, with its last data (the
    earlier versions would be replaced moments later anyway; their jobs share its outcome);
    every file is fsynced before any rename, and each directory is fsynced once, after all of
    its renames.  Renames happen in the order of each path's first job, so a file that came
    before another in the queue (session.json before the active-session marker) never
    appears after it, even after a crash half-way.
    """
    last: dict[str, int] = {}
    for index, (path, _, _) in enumerate(jobs):
        last[path] = index  # dict order: each path's first job; value: its last
    errors: list[OSError | None] = [None] * len(jobs)
    # Every file written and its write-back started, then every file fsynced (see
    # _start_writeback), then the renames.
    opened: dict[str, tuple[str, int]] = {}
    for path, index in last.items():
        data, mode = jobs[index][1], jobs[index][2]
        try:
            if isinstance(data, Part):
                _start_writeback(data.fd)
                opened[path] = (data.part_path, data.fd)
            elif data is not None:
                opened[path] = _stage(path, data, mode)
        except OSError as error:
            errors[index] = error
    staged: dict[str, str] = {}
    for path, (name, fd) in opened.items():
        try:
            _sync_close(fd)
            staged[path] = name
        except OSError as error:
            errors[last[path]] = error
            if not isinstance(jobs[last[path]][1], Part):
                _unlink_quietly(name)  # a .part file stays for recovery
    directories: dict[str, list[str]] = {}
    for path, index in last.items():
        try:
            if jobs[index][1] is None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                continue  # a lost unlink costs nothing: no directory fsync for it
            if path not in staged:
                continue
            if isinstance(jobs[index][1], Part):
                publish(staged[path], path, sync=False)  # a failure leaves the .part for recovery
            else:
                try:
                    os.replace(staged[path], path)
                except BaseException:
                    _unlink_quietly(staged[path])
                    raise
            directories.setdefault(os.path.dirname(path), []).append(path)
        except OSError as error:
            errors[index] = error
    for directory, paths in directories.items():
        try:
            sync_directory(directory)
        except OSError as error:
            for path in paths:
                errors[last[path]] = error
    for index, (path, _, _) in enumerate(jobs):
        errors[index] = errors[last[path]]
    return errors


def run_inline(work: Callable[[], Any]) -> Deferred[Any]:
    """A runner for tests and tools: the work on the calling thread, at once."""
    return maybeDeferred(work)


class DurableWriter:
    """Files made durable in order, one batch at a time on ``run`` (a one-thread pool).

    ``run(work)`` runs ``work`` elsewhere and fires its Deferred on the reactor thread
    (``lambda work: deferToThreadPool(reactor, pool, work)``; :func:`run_inline` in tests).
    Jobs queue on the reactor thread while a batch runs; the next batch takes them all.  A
    job's Deferred fires when the file is durable, or fails with its OSError (ENOSPC, EIO...),
    after every job queued before it.
    """

    def __init__(self, run: Runner = run_inline) -> None:
        self._run = run
        self._queue: list[_Job] = []
        self._busy = False
        self._held = 0
        self.batches = 0
        self.queued = 0  # jobs ever queued, barriers aside (metrics)
        self.done = 0  # of those, finished (durable or failed)
        self.failed = 0  # of those, failed (a .part left for start-up recovery, a file not written)

    def replace(self, path: str, data: bytes, *, mode: int = 0o640) -> Deferred[None]:
        """Replace ``path`` with ``data`` atomically and durably (as :func:`atomic_write`)."""
        return self._add(_Job(path, bytes(data), mode))

    def publish(self, fd: int, part_path: str, path: str) -> Deferred[None]:
        """Take over ``fd`` (the finished ``part_path``): fsync, close and publish it under
        ``path`` (never replacing a file; as :meth:`PartFile.publish` did on its own)."""
        return self._add(_Job(path, Part(fd, part_path), 0))

    def remove(self, path: str) -> Deferred[None]:
        """Unlink ``path`` (gone already is fine), in order with the writes."""
        return self._add(_Job(path, None, 0))

    def barrier(self) -> Deferred[None]:
        """Fires (never fails) once every job queued before it is done."""
        return self._add(_Job(None, None, 0))

    @contextmanager
    def gathered(self) -> Iterator[None]:
        """Jobs queued inside go to the thread together, at the end (one SIP request's files
        in one batch, instead of the first alone and the rest in the next)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            self._next()

    @property
    def pending(self) -> int:
        """Jobs queued or being written (barriers aside)."""
        return self.queued - self.done

    def _add(self, job: _Job) -> Deferred[None]:
        if job.path is not None:
            self.queued += 1
        self._queue.append(job)
        self._next()
        return job.done

    def _next(self) -> None:
        if self._busy or self._held or not self._queue:
            return
        batch, self._queue = self._queue, []
        self._busy = True
        work = [(job.path, job.data, job.mode) for job in batch if job.path is not None]
        self.batches += 1
        self._run(lambda: write_batch(work)).addBoth(self._finished, batch)

    def _finished(self, outcome: list[OSError | None] | Failure, batch: list[_Job]) -> None:
        self._busy = False
        self.done += sum(1 for job in batch if job.path is not None)
        errors = iter(outcome) if isinstance(outcome, list) else None
        for job in batch:
            if job.path is None:
                job.done.callback(None)
                continue
            if errors is None:
                assert isinstance(outcome, Failure)
                self.failed += 1
                job.done.errback(outcome)  # not an OSError: a bug, reported by each waiter
                continue
            error = next(errors)
            if error is None:
                job.done.callback(None)
            else:
                self.failed += 1
                job.done.errback(Failure(error))
        self._next()


class DurableWriterService(Service):
    """The server's DurableWriter on a one-thread pool: one thread keeps the writes in order.

    Started first and stopped last (after the calls are drained): stopping waits for every
    queued write, then for the thread."""

    def __init__(self, reactor: Any) -> None:
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="siprecd-durable")
        self.writer = DurableWriter(lambda work: deferToThreadPool(reactor, self.pool, work))

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        done = self.writer.barrier()
        done.addBoth(lambda _: self.pool.stop())
        return done


__all__ = ["DurableWriter", "DurableWriterService", "Part", "atomic_write", "publish", "run_inline", "sync_directory", "write_batch"]
