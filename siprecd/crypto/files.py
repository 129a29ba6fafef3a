"""Encrypted recording files: the streaming writer, and decrypt / verify / rewrap for the tools.

:class:`EncryptedPartFile` encrypts while the call runs: plaintext is only ever in memory (at
most one chunk per file), and what reaches ``<path>.part`` is already sealed.  It follows the
publish discipline of :class:`siprecd.recording.wav.PartFile` (which it uses): writes go to the
``.part`` file, :meth:`~EncryptedPartFile.publish` fsyncs and links it to its final name without
ever replacing a file, and every OSError becomes :class:`RecordingWriteError`.

After ``kill -9`` the ``.part`` file holds every flushed chunk and no final chunk: it decrypts up
to its last complete chunk and reads as "truncated", never as "tampered".  Crash recovery may
publish such a file as it is; it stays truncated, which is the truth about it.

Format details: :mod:`siprecd.crypto.container` and docs/encryption-format.md.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import tempfile
import threading
from typing import BinaryIO

from siprecd.crypto.container import (
    LENGTH_SIZE,
    MAGIC,
    OK,
    TAG_SIZE,
    TRUNCATED,
    ContainerReader,
    Header,
    KeyProvider,
    Status,
    new_aead,
    new_data_key,
    seal_chunk,
    seal_chunk_into,
    unwrap_data_key,
    wrap_data_key,
)
from siprecd.recording.recovery import _repair_wav
from siprecd.durable import DurableWriter, sync_directory
from siprecd.recording.wav import PartFile, RecordingWriteError, publish

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "EncryptedPartFile",
    "decrypt_file",
    "decrypt_stream",
    "is_encrypted",
    "rewrap_file",
    "verify_file",
]

DEFAULT_CHUNK_SIZE = 16 * 1024  # ~50 KB per call in memory (DESIGN.md: 8-16 KiB chunks)


_local = threading.local()


def _scratch(chunk_size: int) -> tuple[bytearray, bytearray]:
    """This thread's plaintext and record buffers for chunks up to ``chunk_size``: every file
    seals and writes a chunk before the next one is sealed, so one pair serves them all.  A
    larger chunk size gets new buffers (the old ones may still be viewed; never resized)."""
    plain: bytearray | None = getattr(_local, "plain", None)
    if plain is None or len(plain) < chunk_size:
        _local.plain = plain = bytearray(chunk_size)
        _local.out = bytearray(LENGTH_SIZE + chunk_size + TAG_SIZE)
    return plain, _local.out


class EncryptedPartFile:
    """An encrypted recording written to ``path + '.part'`` and published under ``path``.

    :meth:`write` buffers and seals whole chunks of ``chunk_size`` plaintext bytes;
    :meth:`flush` seals whatever is buffered as a shorter chunk, so every flushed byte survives
    a crash; :meth:`publish` seals the final chunk, fsyncs and publishes.  ``kek_id`` is the
    key-encryption key the data key is wrapped with.
    """

    def __init__(
        self,
        path: str,
        keys: KeyProvider,
        algorithm: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        mode: int = 0o640,
        durable: DurableWriter | None = None,
    ) -> None:
        self.header = Header.new(algorithm, chunk_size)  # ValueError for a bad algorithm or size
        kek = keys.current()
        data_key = new_data_key()
        envelope = wrap_data_key(self.header, kek, data_key)
        self.kek_id: str = kek.kek_id
        self.algorithm = self.header.algorithm
        self.chunk_size = chunk_size
        self._header_bytes = self.header.encode()
        # The key, not an AEAD object: cryptography's AESGCM holds ~2.5 KiB of OpenSSL context
        # (three files per call), and a new one costs ~1 us per chunk sealed (about one a second).
        self._data_key = data_key
        self._buffer = bytearray()
        self._next_index = 0  # next chunk index to seal: never sealed twice (nonce reuse)
        self._good_size = 0  # file offset after the last record wholly on disk
        self.chunks = 0  # records wholly on disk, the final one included
        self.plaintext_bytes = 0  # accepted by write(), buffered or not
        self._final: tuple[int, bytes] | None = None  # (index, record) of the sealed final chunk
        #: The first write error; the file accepts nothing after it.
        self.failed: RecordingWriteError | None = None
        self.published = False
        self._file = PartFile(path, mode=mode, durable=durable)
        self.path = path
        self.part_path = self._file.part_path
        try:
            self._emit([self._header_bytes + envelope.encode()], chunks=False)
        except RecordingWriteError:
            self._file.close()
            raise

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def size(self) -> int:
        """Bytes of the file written so far (header, envelope, sealed chunks)."""
        return self._file.size

    @property
    def written(self) -> int:
        """Bytes appended to the file so far; never goes down (see PartFile.written)."""
        return self._file.written

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Accept plaintext; every full chunk is sealed and written at once."""
        self._check_writable()
        size = len(data)
        self.plaintext_bytes += size
        step = self.chunk_size
        buffered = len(self._buffer)
        if buffered + size < step:
            self._buffer += data
            return
        plain, out = _scratch(step)
        with memoryview(data) as view:
            offset = 0
            if buffered:
                # Top the buffered part up to a chunk, in the scratch plaintext (a view of
                # _buffer must not be alive when a failed write clears it).
                offset = step - buffered
                plain[:buffered] = self._buffer
                plain[buffered:step] = view[:offset]
                self._buffer.clear()
                with memoryview(plain) as chunk:
                    self._emit([self._seal_into(chunk[:step], out)])
            # Whole chunks straight from the caller's data: no copy of the plaintext.
            while size - offset >= step:
                self._emit([self._seal_into(view[offset : offset + step], out)])
                offset += step
            self._buffer += view[offset:]

    def flush(self) -> None:
        """Seal the buffered plaintext as a (short) non-final chunk and write it."""
        self._check_writable()
        buffered = len(self._buffer)
        if buffered:
            plain, out = _scratch(self.chunk_size)
            plain[:buffered] = self._buffer
            self._buffer.clear()
            with memoryview(plain) as chunk:
                self._emit([self._seal_into(chunk[:buffered], out)])

    def publish(self) -> str:
        """Seal the final chunk, fsync and publish under ``path``; returns ``path``.

        After a write error, keeps the chunks that reached the disk whole and ends the file
        with an empty final chunk (the unwritten plaintext is lost, as with WAV).  Raises
        :class:`RecordingWriteError` if even that fails; the ``.part`` file then stays.
        """
        if self.published:
            return self.path
        try:
            if self.failed is None:
                self._final = (self._next_index, self._seal(bytes(self._buffer), final=True))
                self._buffer.clear()
                try:
                    self._emit([self._final[1]])
                except RecordingWriteError:
                    pass  # recorded in self.failed; salvage below
            if self.failed is not None:
                self._salvage()
            self._file.publish()
        except RecordingWriteError:
            self._file.close()
            raise
        self.published = True
        return self.path

    def close(self) -> None:
        """Give up without publishing: buffered plaintext is dropped, the ``.part`` file stays."""
        self._buffer.clear()
        self._file.close()

    def _check_writable(self) -> None:
        if self.failed is not None:
            raise self.failed
        if self._final is not None or self._file.closed:
            raise ValueError("write after publish or close")

    def _seal_into(self, plaintext: memoryview, out: bytearray) -> memoryview:
        """A non-final chunk's record in the thread's scratch ``out``, valid until the next seal."""
        index = self._next_index
        self._next_index += 1  # before sealing: a failed write must not free the nonce
        aead = new_aead(self.algorithm, self._data_key)
        if not hasattr(aead, "encrypt_into"):  # cryptography < 42
            return memoryview(seal_chunk(aead, self._header_bytes, self.header, index, plaintext, False))
        return seal_chunk_into(aead, self._header_bytes, self.header, index, plaintext, False, out)

    def _seal(self, plaintext: bytes | memoryview, final: bool) -> bytes:
        index = self._next_index
        self._next_index += 1  # before sealing: a failed write must not free the nonce
        return seal_chunk(new_aead(self.algorithm, self._data_key), self._header_bytes, self.header, index,
                          plaintext, final)

    def _emit(self, records: list[bytes] | list[memoryview], *, chunks: bool = True) -> None:
        try:
            self._file.write(b"".join(records) if len(records) > 1 else records[0])
        except RecordingWriteError as e:
            self.failed = e
            self._buffer.clear()
            # PartFile.size counts the bytes that did reach the file: keep the whole records.
            for record in records:
                if self._file.size < self._good_size + len(record):
                    break
                self._good_size += len(record)
                self.chunks += chunks
            raise
        self._good_size = self._file.size
        if chunks:
            self.chunks += len(records)

    def _salvage(self) -> None:
        self._file.truncate(self._good_size)
        if self._final is not None and self._final[0] == self.chunks:
            # The same final chunk again: identical bytes, so no nonce is reused.
            record = self._final[1]
        else:
            # (index, final flag) was never sealed: the failed chunks at this index were
            # non-final, and a sealed final chunk (if any) had a later index.
            record = seal_chunk(new_aead(self.algorithm, self._data_key), self._header_bytes, self.header,
                                self.chunks, b"", True)
            self._final = (self.chunks, record)
        self._file.write(record)
        self.chunks += 1


def is_encrypted(path: str) -> bool:
    """Whether ``path`` starts with the container's magic (OSError if it cannot be read)."""
    with open(path, "rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


def decrypt_stream(src: BinaryIO, dst: BinaryIO, keys: KeyProvider) -> Status:
    """Write the plaintext of every chunk that authenticates to ``dst``, as it goes.

    All that reaches ``dst`` is authentic and in order, but it is complete only if the
    returned status is ok: a truncated or tampered file stops early.
    """
    reader = ContainerReader(src, keys)
    if reader.open():
        for chunk in reader.chunks():
            dst.write(chunk.plaintext)
    assert reader.status is not None
    return reader.status


def verify_file(path: str, keys: KeyProvider) -> Status:
    """Authenticate every chunk of ``path``; plaintext stays in memory, one chunk at a time."""
    with open(path, "rb") as src:
        reader = ContainerReader(src, keys)
        if reader.open():
            for _ in reader.chunks():
                pass
    assert reader.status is not None
    return reader.status


def decrypt_file(in_path: str, out_path: str, keys: KeyProvider) -> Status:
    """Decrypt ``in_path`` to a new file ``out_path`` (mode 0600), atomically.

    The output appears only when the status is ok or truncated (then it holds the chunks that
    decrypt: the authentic start of the recording); otherwise nothing is written.  A WAV's
    placeholder sizes (the recorder cannot patch an encrypted header) are set to the real
    lengths and a trailing partial sample frame is cut, so the result plays.  Never replaces
    an existing ``out_path`` (FileExistsError); other OSErrors propagate.
    """
    directory, name = os.path.split(os.path.abspath(out_path))
    with open(in_path, "rb") as src:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w+b") as dst:
                status = decrypt_stream(src, dst, keys)
                if status.state in (OK, TRUNCATED):
                    _patch_wav(dst)
                    dst.flush()
                    os.fsync(dst.fileno())
            if status.state not in (OK, TRUNCATED):
                os.unlink(temporary)
                return status
            publish(temporary, out_path)
        except BaseException:
            _unlink_quietly(temporary)
            raise
    return status


def _patch_wav(handle: BinaryIO) -> None:
    handle.flush()
    handle.seek(0)
    head = handle.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        # The same repair crash recovery applies to a WAV .part: data runs to the end.
        _repair_wav(handle)


def rewrap_file(path: str, keys: KeyProvider) -> Status:
    """Wrap the data key of ``path`` under ``keys.current()``; chunks are copied byte for byte.

    Refuses (returns the status, file untouched) unless every chunk verifies.  A file already
    under the current KEK is verified and left alone (``previous_kek_id`` stays None).  The new
    file replaces the old one atomically, with its mode, owner (when permitted) and times, so
    retention by age is not reset.  The data key itself is unchanged: rewrap retires a KEK, it
    does not answer a leaked data key.
    """
    kek = keys.current()
    directory, name = os.path.split(os.path.abspath(path))
    with open(path, "rb") as src:
        before = os.fstat(src.fileno())
        reader = ContainerReader(src, keys)
        if not reader.open():
            assert reader.status is not None
            return reader.status
        assert reader.header is not None and reader.envelope is not None and reader.data_key is not None
        previous = reader.envelope.kek_id
        if previous == kek.kek_id:
            for _ in reader.chunks():
                pass
            assert reader.status is not None
            return reader.status
        envelope = wrap_data_key(reader.header, kek, reader.data_key)
        # Prove the new envelope opens before the old one is gone (guards a broken provider).
        if unwrap_data_key(reader.header, envelope, kek) != reader.data_key:
            raise ValueError(f"key {kek.kek_id} does not round-trip a data key")
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".rewrap")
        try:
            with os.fdopen(fd, "wb") as dst:
                dst.write(reader.header_bytes + envelope.encode())
                # One pass: the bytes copied are exactly the bytes that just verified.
                for chunk in reader.chunks():
                    dst.write(chunk.record)
                assert reader.status is not None
                if not reader.status.ok:
                    os.unlink(temporary)
                    return reader.status
                os.fchmod(dst.fileno(), before.st_mode & 0o7777)
                _keep_owner(dst.fileno(), before)
                dst.flush()
                os.fsync(dst.fileno())
            os.utime(temporary, ns=(before.st_atime_ns, before.st_mtime_ns))
            now = os.stat(path)
            if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
                raise OSError(errno.ESTALE, "the file was replaced during rewrap", path)
            os.replace(temporary, path)
        except BaseException:
            _unlink_quietly(temporary)
            raise
    sync_directory(directory)
    return dataclasses.replace(reader.status, kek_id=kek.kek_id, previous_kek_id=previous)


def _keep_owner(fd: int, before: os.stat_result) -> None:
    if (before.st_uid, before.st_gid) != (os.geteuid(), os.getegid()):
        try:
            os.fchown(fd, before.st_uid, before.st_gid)
        except PermissionError:
            pass  # only root may give files away; the tool's own owner is the best left


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
