"""Streaming WAV (RIFF, PCM 16-bit) writer that stays playable while it grows.

A recording is written to ``<final name>.part``.  PCM is buffered per stream and written in one
``write`` once the buffer reaches ``chunk_size`` (16 KiB by default: about a second of 8 kHz
audio).  The writes are size-triggered, and the first one comes at a random point between half
and all of a chunk, so streams that start together do not all write together afterwards.

After every write of audio, the RIFF and data sizes in the header are rewritten in place
(``pwrite``, one syscall), so if the process is killed (``kill -9``) every byte written so far is
in a valid WAV file.  :meth:`WavWriter.finalize` writes the rest, fixes the header, fsyncs and
publishes the file under its final name atomically (a hard link to the final name, refusing to
replace an existing file, then removal of the ``.part`` name; a plain rename where the filesystem
has no hard links).  What survives a power loss is what was fsynced: only finalized files.

Write failures (ENOSPC, EDQUOT, EIO, ...) raise :class:`RecordingWriteError`; the caller ends the
session cleanly and calls ``finalize()``, which keeps what reached the disk (a header write and
an fsync need no new blocks).  ``.part`` files left by a crash are repaired by
:mod:`siprecd.recording.recovery`.
"""

from __future__ import annotations

import errno
import os
import random
import struct
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from siprecd.durable import DurableWriter, publish

log = Logger()

__all__ = [
    "PART_SUFFIX",
    "RecordingWriteError",
    "RecordingSizeLimit",
    "PartFile",
    "WavWriter",
    "wav_header",
    "publish",
]

PART_SUFFIX = ".part"
DEFAULT_CHUNK_SIZE = 16 * 1024
WAV_HEADER_SIZE = 44
# The RIFF size field (data size + 36) is 32-bit.
MAX_WAV_DATA = 0xFFFFFFFF - 36

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class RecordingWriteError(Exception):
    """Writing a recording file failed; ``errno`` and ``path`` say how and where."""

    def __init__(self, path: str, error: OSError) -> None:
        self.path = path
        self.errno = error.errno
        self.strerror = error.strerror or str(error)
        super().__init__(f"{path}: {self.strerror}")

    @property
    def disk_full(self) -> bool:
        return self.errno in _DISK_FULL


class RecordingSizeLimit(RecordingWriteError):
    """The file format cannot grow further (a WAV's data is at most 4 GiB).

    Raised by ``write`` before it accepts the data, so nothing is lost: the caller may finalize
    this file and continue in a new one, or end the session like any write error.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, OSError(errno.EFBIG, "WAV size limit (4 GiB) reached"))


class PartFile:
    """A file written as ``path + '.part'`` and published under ``path`` by :meth:`publish`.

    Every OSError becomes :class:`RecordingWriteError`.  ``size`` counts the bytes written at
    the current offset (all of them, even those of a write that failed half-way); ``written``
    counts every byte :meth:`write` put in the file, and never goes down (a metric).
    """

    def __init__(
        self, path: str, *, part_path: str | None = None, mode: int = 0o640, durable: DurableWriter | None = None
    ) -> None:
        self.path = path
        # Publishing (fsync, link, directory fsync) through it: off the reactor thread.
        self.durable = durable
        self.part_path = part_path if part_path is not None else path + PART_SUFFIX
        self.size = 0
        self.written = 0
        try:
            self._fd: int | None = os.open(
                self.part_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode
            )
        except OSError as e:
            raise RecordingWriteError(self.part_path, e) from e

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        fd = self._require_open()
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                self.size += written
                self.written += written
                view = view[written:]
        except OSError as e:
            raise RecordingWriteError(self.part_path, e) from e

    def pwrite(self, data: bytes, offset: int) -> None:
        fd = self._require_open()
        try:
            if os.pwrite(fd, data, offset) != len(data):
                raise OSError(errno.EIO, "short write")
        except OSError as e:
            raise RecordingWriteError(self.part_path, e) from e

    def pread(self, size: int, offset: int) -> bytes:
        fd = self._require_open()
        try:
            return os.pread(fd, size, offset)
        except OSError as e:
            raise RecordingWriteError(self.part_path, e) from e

    def truncate(self, size: int) -> None:
        fd = self._require_open()
        try:
            os.ftruncate(fd, size)
            os.lseek(fd, size, os.SEEK_SET)
        except OSError as e:
            raise RecordingWriteError(self.part_path, e) from e
        self.size = size

    def publish(self) -> str:
        """fsync, close, and make the file appear under its final name; returns that name."""
        fd = self._require_open()
        if self.durable is not None:
            # The writer owns the descriptor now.  A failure leaves the .part file, which
            # start-up recovery publishes; it is logged here, the recording is already over.
            self._fd = None
            part_path = self.part_path
            self.durable.publish(fd, part_path, self.path).addErrback(
                lambda f: log.error("cannot publish {path}: {error}", path=part_path, error=f.value)
            )
            return self.path
        try:
            try:
                os.fsync(fd)
            finally:
                self._fd = None
                os.close(fd)
            publish(self.part_path, self.path)
        except OSError as e:
            raise RecordingWriteError(self.part_path, e) from e
        return self.path

    def close(self) -> None:
        """Close without publishing (the ``.part`` file stays for recovery)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _require_open(self) -> int:
        if self._fd is None:
            raise RecordingWriteError(self.part_path, OSError(errno.EBADF, "file already closed"))
        return self._fd


def wav_header(sample_rate: int, channels: int, data_size: int) -> bytes:
    """The canonical 44-byte header of a 16-bit PCM WAV file."""
    block_align = 2 * channels
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        min(36 + data_size, 0xFFFFFFFF),
        b"WAVE",
        b"fmt ",
        16,
        1,  # WAVE_FORMAT_PCM
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        16,
        b"data",
        min(data_size, 0xFFFFFFFF),
    )


class WavWriter:
    """16-bit PCM WAV, mono or stereo (interleaved), written in size-triggered chunks.

    ``path`` is the final name; the file is ``path + '.part'`` until :meth:`finalize`.
    ``first_chunk`` sets the size of the first write (default: random between chunk_size/2 and
    chunk_size, to stagger streams); tests pass it to be deterministic.

    ``open_file(path)`` replaces the plain :class:`PartFile`, e.g. with an encrypting one.  Such
    a file is append-only: the header keeps placeholder sizes (the decrypting tool fixes them)
    and every flush seals what was written so a crash keeps it.
    """

    def __init__(
        self,
        path: str,
        *,
        sample_rate: int,
        channels: int = 1,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        first_chunk: int | None = None,
        mode: int = 0o640,
        open_file: Callable[[str], Any] | None = None,
    ) -> None:
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.sample_rate = sample_rate
        self.channels = channels
        self.block_align = 2 * channels
        self.chunk_size = chunk_size
        self._threshold = first_chunk if first_chunk is not None else random.randint(chunk_size // 2, chunk_size)
        # The PCM pieces as written (no copy) until a write joins them: one bytearray grown a
        # packet at a time and cleared per chunk left glibc's heap full of holes (bench.memory:
        # ~10 KiB free per call inside the heap), whereas equal small pieces recycle cleanly.
        self._parts: list[bytes] = []
        self._buffered = 0
        #: Bytes of PCM that reached the file (after the header).
        self.data_size = 0
        #: The first write error; the writer accepts nothing after it.
        self.failed: RecordingWriteError | None = None
        self.finalized = False
        self._file = PartFile(path, mode=mode) if open_file is None else open_file(path)
        # Only a plain file can have its header patched in place as it grows.
        self._patchable = isinstance(self._file, PartFile)
        self.path = path
        self.part_path = self._file.part_path
        try:
            self._file.write(wav_header(sample_rate, channels, 0 if self._patchable else MAX_WAV_DATA))
        except RecordingWriteError as e:
            self.failed = e
            self._file.close()
            raise

    @property
    def frames(self) -> int:
        """Sample frames accepted so far (written or buffered)."""
        return (self.data_size + self._buffered) // self.block_align

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def bytes_written(self) -> int:
        """Bytes appended to the file so far (header and, encrypted, container overhead)."""
        return getattr(self._file, "written", 0)

    def write(self, pcm: bytes | bytearray | memoryview) -> None:
        """Append PCM (whole sample frames); writes to disk when the buffer is full."""
        if self.failed is not None:
            raise self.failed
        if self.finalized:
            raise ValueError("write after finalize")
        size = len(pcm)
        if size % self.block_align:
            raise ValueError(f"PCM must be whole {self.block_align}-byte frames, got {size} bytes")
        if self.data_size + self._buffered + size > MAX_WAV_DATA:
            raise RecordingSizeLimit(self.part_path)
        # A bytes object is kept as it is; anything mutable is copied (the caller may reuse it).
        self._parts.append(pcm if type(pcm) is bytes else bytes(pcm))
        self._buffered += size
        if self._buffered >= self._threshold:
            self.flush()

    def flush(self) -> None:
        """Write the buffer and update the header's sizes."""
        if self.failed is not None:
            raise self.failed
        if not self._buffered:
            return
        self._threshold = self.chunk_size
        parts = self._parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            self._file.write(data)
        except RecordingWriteError as e:
            self._fail(e)
            raise
        self.data_size += len(data)
        parts.clear()
        self._buffered = 0
        if self._patchable:
            self._write_sizes()
        else:
            self._seal()

    def finalize(self) -> str:
        """Flush, fix the header, fsync and rename ``.part`` to the final name; returns it.

        After a write error, keeps the whole frames that reached the disk.  Raises
        :class:`RecordingWriteError` if that is impossible too (the ``.part`` file then stays
        for :func:`~siprecd.recording.recovery.recover_directory`).
        """
        if self.finalized:
            return self.path
        try:
            if self.failed is None:
                try:
                    self.flush()
                except RecordingWriteError:
                    pass  # recorded in self.failed; keep what is on disk
            if self.failed is not None and self._patchable:
                self._salvage()
            path = self._file.publish()
        except RecordingWriteError:
            self._file.close()
            raise
        self.finalized = True
        return path

    def close(self) -> None:
        """Give up without publishing: the ``.part`` file stays as it is on disk."""
        self._parts.clear()
        self._buffered = 0
        self._file.close()

    def _fail(self, error: RecordingWriteError) -> None:
        self.failed = error
        self._parts = []
        self._buffered = 0

    def _salvage(self) -> None:
        # A failed write may have put part of a frame on disk: keep whole frames only.
        on_disk = max(0, self._file.size - WAV_HEADER_SIZE)
        self.data_size = on_disk - on_disk % self.block_align
        self._file.truncate(WAV_HEADER_SIZE + self.data_size)
        self._write_sizes()

    def _seal(self) -> None:
        try:
            self._file.flush()
        except RecordingWriteError as e:
            self._fail(e)
            raise

    def _write_sizes(self) -> None:
        # Bytes 4..44 of the header: RIFF size, 'WAVE', fmt chunk, 'data', data size. One pwrite.
        header = wav_header(self.sample_rate, self.channels, self.data_size)
        try:
            self._file.pwrite(header[4:], 4)
        except RecordingWriteError as e:
            self._fail(e)
            raise
