"""Encrypted recording container: round trips, every tamper class, crashes, rewrap, WAV repair."""

from __future__ import annotations

import io
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import wave
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from twisted.trial import unittest

from siprecd.crypto import container
from siprecd.crypto.container import AES_256_GCM, CHACHA20_POLY1305, Status
from siprecd.crypto.files import (
    EncryptedPartFile,
    decrypt_file,
    decrypt_stream,
    is_encrypted,
    rewrap_file,
    verify_file,
)
from siprecd.recording.wav import RecordingWriteError, wav_header

HEADER = 21
TAG = 16


class Kek(NamedTuple):
    kek_id: str
    key: bytes
    created: float


class FakeKeys:
    """The key store's KeyProvider interface: ``current()`` and ``get(kek_id)``."""

    def __init__(self, *keks: Kek) -> None:
        self.keks = {k.kek_id: k for k in keks}
        self.current_id = keks[-1].kek_id

    def current(self) -> Kek:
        return self.keks[self.current_id]

    def get(self, kek_id: str) -> Kek | None:
        return self.keks.get(kek_id)


def kek(kek_id: str, fill: int) -> Kek:
    return Kek(kek_id, bytes([fill]) * 32, 1700000000.0)


K1 = kek("k-1", 1)
K2 = kek("k-2", 2)


def envelope_size(kek_id: str) -> int:
    return 1 + len(kek_id) + 12 + 48


def records(data: bytes, kek_id: str = "k-1") -> list[tuple[int, int]]:
    """(offset, length of the whole record) of each chunk, walking the length prefixes."""
    offset = HEADER + envelope_size(kek_id)
    found = []
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        found.append((offset, 4 + length + TAG))
        offset += 4 + length + TAG
    return found


class ByteReader(io.RawIOBase):
    """A stream that returns one byte per read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(1, size) if size >= 0 else 1)


class Base(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.keys = FakeKeys(K1)
        self.counter = 0

    def path(self, name: str | None = None) -> str:
        self.counter += 1
        return os.path.join(self.directory, name or f"rec-{self.counter}.enc")

    def write(self, pieces: list[bytes | None], *, algorithm: str = AES_256_GCM, chunk_size: int = 1024) -> str:
        """Write pieces (None means flush) and publish; returns the final path."""
        writer = EncryptedPartFile(self.path(), self.keys, algorithm, chunk_size=chunk_size)
        for piece in pieces:
            if piece is None:
                writer.flush()
            else:
                writer.write(piece)
        return writer.publish()

    def decrypt(self, data: bytes, keys: FakeKeys | None = None) -> tuple[Status, bytes]:
        out = io.BytesIO()
        status = decrypt_stream(io.BytesIO(data), out, keys or self.keys)
        return status, out.getvalue()


class RoundTripTests(Base):
    def test_large_file_both_algorithms(self) -> None:
        plaintext = os.urandom(3 * 1024 * 1024 + 100)
        for algorithm in (AES_256_GCM, CHACHA20_POLY1305):
            # Irregular writes, so chunk boundaries fall inside writes.
            pieces = [plaintext[i : i + 7001] for i in range(0, len(plaintext), 7001)]
            path = self.write(pieces, algorithm=algorithm, chunk_size=16384)
            with open(path, "rb") as handle:
                data = handle.read()
            self.assertFalse(os.path.exists(path + ".part"))
            # 192 full chunks, then the final one with 100 bytes.
            self.assertEqual(len(data), HEADER + envelope_size("k-1") + 193 * (4 + TAG) + len(plaintext))
            status, out = self.decrypt(data)
            self.assertEqual(out, plaintext)
            self.assertEqual(
                (status.state, status.chunks, status.plaintext_bytes, status.algorithm, status.kek_id),
                ("ok", 193, len(plaintext), algorithm, "k-1"),
            )
            self.assertEqual(status.describe(), f"ok ({algorithm}, key k-1, 193 chunks, 3.0 MiB)")
            self.assertEqual(verify_file(path, self.keys), status)
            self.assertNotIn(plaintext[:64], data)

    def test_empty_file_both_algorithms(self) -> None:
        for algorithm in (AES_256_GCM, "chacha20-poly1305"):
            path = self.write([], algorithm=algorithm)
            with open(path, "rb") as handle:
                data = handle.read()
            self.assertEqual(len(data), HEADER + envelope_size("k-1") + 4 + TAG)
            status, out = self.decrypt(data)
            self.assertEqual(out, b"")
            self.assertEqual((status.state, status.chunks, status.plaintext_bytes), ("ok", 1, 0))
            name = container.algorithm_name(algorithm)
            self.assertEqual(status.describe(), f"ok ({name}, key k-1, 1 chunk, 0 bytes)")

    def test_flush_writes_short_chunks(self) -> None:
        path = self.write([b"a" * 100, None, b"b" * 50, None, None, b"c" * 2500])
        with open(path, "rb") as handle:
            data = handle.read()
        lengths = [size - 4 - TAG for _, size in records(data)]
        self.assertEqual(lengths, [100, 50, 1024, 1024, 452])
        status, out = self.decrypt(data)
        self.assertEqual(out, b"a" * 100 + b"b" * 50 + b"c" * 2500)
        self.assertEqual(status.chunks, 5)

    def test_whole_chunks_written_with_nothing_buffered(self) -> None:
        # The WAV writer's path: its buffer arrives whole, sealed without a second copy; the
        # caller's buffer may be reused (cleared, refilled) right after write() returns.
        source = bytearray(b"x" * 2500)
        writer = EncryptedPartFile(self.path(), self.keys, AES_256_GCM, chunk_size=1024)
        writer.write(source)
        self.assertEqual(writer.buffered, 452)
        source[:] = b"y" * 2048
        writer.write(source)
        self.assertEqual(writer.buffered, 452)
        writer.flush()
        source[:] = b"z" * 1024
        writer.write(source)
        self.assertEqual(writer.buffered, 0)
        with open(writer.publish(), "rb") as handle:
            data = handle.read()
        self.assertEqual([size - 4 - TAG for _, size in records(data)], [1024, 1024, 1024, 1024, 452, 1024, 0])
        status, out = self.decrypt(data)
        self.assertEqual(out, b"x" * 2500 + b"y" * 2048 + b"z" * 1024)
        self.assertEqual(status.state, "ok")

    def test_seal_into_matches_seal(self) -> None:
        header = container.Header.new(AES_256_GCM, 1024)
        out = bytearray(2000)
        for algorithm, aead in ((AES_256_GCM, AESGCM(b"k" * 32)), (CHACHA20_POLY1305, ChaCha20Poly1305(b"k" * 32))):
            for size, final in ((0, True), (1, False), (1024, False), (700, True)):
                plaintext = os.urandom(size)
                record = container.seal_chunk_into(aead, b"hdr", header, 7, memoryview(plaintext), final, out)
                self.assertEqual(bytes(record), container.seal_chunk(aead, b"hdr", header, 7, plaintext, final),
                                 (algorithm, size, final))
        self.assertRaises(ValueError, container.seal_chunk_into, aead, b"", header, 0, b"x" * 1025, False, out)

    def test_interleaved_writers_share_the_scratch_buffers(self) -> None:
        # Every file seals into one per-thread pair of buffers: files written in turn (as the
        # streams of many calls are) must each get their own bytes, whatever the chunk sizes.
        sizes = (1024, 333, 1024, 4096)
        writers = [EncryptedPartFile(self.path(), self.keys, AES_256_GCM, chunk_size=size) for size in sizes]
        expected = [b""] * len(writers)
        for round_ in range(12):
            for n, writer in enumerate(writers):
                piece = bytes([n * 16 + round_ % 16]) * (100 + 97 * round_ + n)
                writer.write(piece)
                expected[n] += piece
                if round_ % 5 == n % 5:
                    writer.flush()
        for n, writer in enumerate(writers):
            with open(writer.publish(), "rb") as handle:
                status, out = self.decrypt(handle.read())
            self.assertEqual((status.state, out), ("ok", expected[n]), n)

    def test_writer_keeps_no_aead_object(self) -> None:
        # ~2.5 KiB of OpenSSL context per AEAD object, three files per call: one is made per
        # chunk instead (bench/README.md, memory).
        writer = EncryptedPartFile(self.path(), self.keys, AES_256_GCM, chunk_size=1024)
        writer.write(b"a" * 3000)
        self.assertFalse([v for v in vars(writer).values() if isinstance(v, (AESGCM, ChaCha20Poly1305))])
        writer.publish()

    def test_byte_at_a_time_reader(self) -> None:
        plaintext = os.urandom(5000)
        with open(self.write([plaintext, None, b"tail"]), "rb") as handle:
            data = handle.read()
        out = io.BytesIO()
        status = decrypt_stream(ByteReader(data), out, self.keys)
        self.assertEqual((status.state, out.getvalue()), ("ok", plaintext + b"tail"))

    def test_layout_matches_the_document(self) -> None:
        """An independent reader written from docs/encryption-format.md alone."""
        for algorithm, algorithm_id, aead in ((AES_256_GCM, 1, AESGCM), (CHACHA20_POLY1305, 2, ChaCha20Poly1305)):
            self.keys = FakeKeys(K1, kek("key-two", 7))
            with open(self.write([b"x" * 1500], algorithm=algorithm), "rb") as handle:
                data = handle.read()
            header = data[:21]
            magic, version, alg, chunk_size, prefix = struct.unpack(">8sBBI7s", header)
            self.assertEqual((magic, version, alg, chunk_size), (b"\x89SIPREC\n", 1, algorithm_id, 1024))
            id_length = data[21]
            kek_id = data[22 : 22 + id_length]
            self.assertEqual(kek_id, b"key-two")
            wrap_nonce = data[22 + id_length : 34 + id_length]
            wrapped = data[34 + id_length : 82 + id_length]
            data_key = AESGCM(bytes([7]) * 32).decrypt(wrap_nonce, wrapped, header + bytes([id_length]) + kek_id)
            offset, plain = 82 + id_length, b""
            for index, expected_length, final in ((0, 1024, 0), (1, 476, 1)):
                length = data[offset : offset + 4]
                self.assertEqual(int.from_bytes(length, "big"), expected_length)
                nonce = prefix + index.to_bytes(4, "big") + bytes([final])
                sealed = data[offset + 4 : offset + 4 + expected_length + 16]
                plain += aead(data_key).decrypt(nonce, sealed, header + length)
                offset += 4 + expected_length + 16
            self.assertEqual((plain, offset), (b"x" * 1500, len(data)))

    def test_nonce_prefix_and_data_key_differ_per_file(self) -> None:
        with open(self.write([b"same"]), "rb") as a, open(self.write([b"same"]), "rb") as b:
            first, second = a.read(), b.read()
        self.assertNotEqual(first[14:21], second[14:21])
        self.assertNotEqual(first[-20:], second[-20:])

    def test_writer_arguments(self) -> None:
        self.assertRaises(ValueError, EncryptedPartFile, self.path(), self.keys, "AES-128-CBC")
        self.assertRaises(ValueError, EncryptedPartFile, self.path(), self.keys, AES_256_GCM, chunk_size=0)
        writer = EncryptedPartFile(self.path(), self.keys, "aes-256-gcm")
        self.assertEqual((writer.algorithm, writer.kek_id), (AES_256_GCM, "k-1"))
        self.assertEqual(stat.S_IMODE(os.stat(writer.part_path).st_mode), 0o640)
        writer.close()

    def test_publish_never_replaces(self) -> None:
        path = self.path()
        with open(path, "wb") as handle:
            handle.write(b"earlier")
        writer = EncryptedPartFile(path, self.keys, AES_256_GCM)
        writer.write(b"data")
        self.assertRaises(RecordingWriteError, writer.publish)
        with open(path, "rb") as handle:
            self.assertEqual(handle.read(), b"earlier")
        self.assertEqual(verify_file(path + ".part", self.keys).state, "ok")

    def test_write_after_publish_refused(self) -> None:
        writer = EncryptedPartFile(self.path(), self.keys, AES_256_GCM)
        writer.publish()
        self.assertRaises(ValueError, writer.write, b"late")
        self.assertEqual(writer.publish(), writer.path)

    def test_is_encrypted(self) -> None:
        plain = self.path("plain.wav")
        with open(plain, "wb") as handle:
            handle.write(wav_header(8000, 1, 0))
        self.assertTrue(is_encrypted(self.write([b"x"])))
        self.assertFalse(is_encrypted(plain))
        status = verify_file(plain, self.keys)
        self.assertEqual(status.state, "not-encrypted")
        self.assertEqual(status.describe(), "not encrypted: no siprecd encryption header")


class TamperTests(Base):
    """A file of chunks 0..3 (1024 bytes each) and a final chunk 4 (904 bytes)."""

    def setUp(self) -> None:
        super().setUp()
        self.plaintext = os.urandom(5000)
        self.file_path = self.write([self.plaintext])
        with open(self.file_path, "rb") as handle:
            self.data = handle.read()
        self.records = records(self.data)
        self.assertEqual([size for _, size in self.records], [1044] * 4 + [924])

    def record(self, index: int) -> bytes:
        offset, size = self.records[index]
        return self.data[offset : offset + size]

    def flip(self, position: int, bit: int = 0x01) -> bytes:
        changed = bytearray(self.data)
        changed[position] ^= bit
        return bytes(changed)

    def assertStatus(
        self, data: bytes, state: str, chunk: int | None, good_chunks: int, describe: str | None = None
    ) -> Status:
        status, out = self.decrypt(data)
        self.assertEqual((status.state, status.chunk, status.chunks), (state, chunk, good_chunks))
        # Whatever was released is exactly the authentic prefix.
        self.assertEqual(out, self.plaintext[: 1024 * good_chunks])
        self.assertEqual(status.plaintext_bytes, len(out))
        if describe is not None:
            self.assertEqual(status.describe(), describe)
        return status

    def test_untouched(self) -> None:
        status, out = self.decrypt(self.data)
        self.assertEqual((status.state, status.chunks, out), ("ok", 5, self.plaintext))

    def test_bit_flip_in_ciphertext(self) -> None:
        offset, _ = self.records[2]
        self.assertStatus(self.flip(offset + 100), "tampered", 2, 2, "tampered at chunk 2: authentication failed")

    def test_bit_flip_in_final_tag(self) -> None:
        self.assertStatus(self.flip(len(self.data) - 1, 0x80), "tampered", 4, 4)

    def test_bit_flip_in_length_prefix(self) -> None:
        offset, _ = self.records[1]
        # 1024 -> 1025: more than the header's chunk size.
        self.assertStatus(
            self.flip(offset + 3), "tampered", 1, 1, "tampered at chunk 1: chunk length 1025 exceeds the maximum 1024"
        )
        # 1024 -> 0: the split moves, the tag is read from the wrong place.
        self.assertStatus(self.flip(offset + 2, 0x04), "tampered", 1, 1, "tampered at chunk 1: authentication failed")
        # The last chunk's length raised past the end of the file: not mistaken for a crash.
        offset, _ = self.records[4]
        self.assertEqual(int.from_bytes(self.data[offset : offset + 4], "big"), 904)
        self.assertStatus(
            self.flip(offset + 3, 0x40), "tampered", 4, 4, "tampered at chunk 4: its length prefix was altered"
        )
        # ... and lowered.
        self.assertStatus(self.flip(offset + 3, 0x08), "tampered", 4, 4)

    def test_bit_flip_in_immutable_header(self) -> None:
        self.assertStatus(self.flip(0), "not-encrypted", None, 0)
        status = self.assertStatus(self.flip(8, 0x02), "tampered", None, 0)
        self.assertEqual(
            status.describe(), "tampered header: unsupported format version 3 (this siprecd reads version 1)"
        )
        self.assertEqual(self.assertStatus(self.flip(9, 0x04), "tampered", None, 0).reason, "unknown algorithm id 5")
        unwrap_fails = (
            "tampered header: the data key does not unwrap under key k-1 (the header was altered, "
            "or the key store holds a different key under that id)"
        )
        self.assertStatus(self.flip(9, 0x03), "tampered", None, 0, unwrap_fails)  # AES -> ChaCha20
        self.assertStatus(self.flip(12, 0x01), "tampered", None, 0, unwrap_fails)  # chunk size
        self.assertStatus(self.flip(17), "tampered", None, 0, unwrap_fails)  # nonce prefix

    def test_edit_in_envelope(self) -> None:
        # The KEK id "k-1" -> "k-0": not a stored key.
        self.assertEqual(self.data[22:25], b"k-1")
        self.assertStatus(self.flip(24), "unknown-key", None, 0, "unknown key k-0: not in the key store")
        # "k-1" -> "k-2", a stored key: the wrap AAD names k-1, so the unwrap fails.
        self.keys = FakeKeys(K1, K2)
        self.assertStatus(self.flip(24, 0x03), "tampered", None, 0)
        self.assertStatus(self.flip(21, 0x01), "unknown-key", None, 0, "unknown key k-: not in the key store")
        self.assertStatus(self.flip(24, 0x80), "tampered", None, 0, "tampered header: the key id is not valid")
        self.assertStatus(self.flip(30), "tampered", None, 0)  # wrap nonce
        self.assertStatus(self.flip(60), "tampered", None, 0)  # wrapped key
        self.assertStatus(self.flip(HEADER + envelope_size("k-1") - 1), "tampered", None, 0)  # its tag

    def test_chunks_swapped(self) -> None:
        start = self.records[0][0]
        swapped = self.data[:start] + self.record(0) + self.record(2) + self.record(1) + self.record(3) + self.record(4)
        self.assertStatus(swapped, "tampered", 1, 1)

    def test_chunk_removed(self) -> None:
        offset, size = self.records[2]
        self.assertStatus(self.data[:offset] + self.data[offset + size :], "tampered", 2, 2)

    def test_chunk_duplicated(self) -> None:
        offset, _ = self.records[2]
        self.assertStatus(self.data[:offset] + self.record(1) + self.data[offset:], "tampered", 2, 2)

    def test_chunk_from_another_file(self) -> None:
        with open(self.write([os.urandom(5000)]), "rb") as handle:
            other = handle.read()
        offset, size = self.records[3]
        alien = other[offset : offset + size]
        self.assertStatus(self.data[:offset] + alien + self.data[offset + size :], "tampered", 3, 3)

    def test_truncated_mid_chunk(self) -> None:
        offset, _ = self.records[3]
        self.assertStatus(
            self.data[: offset + 500],
            "truncated",
            3,
            3,
            "truncated at chunk 3: the file ends without its final chunk "
            "(the recorder stopped before finishing it); 3 chunks decrypt",
        )
        self.assertStatus(self.data[: offset + 2], "truncated", 3, 3)  # inside the length prefix

    def test_final_chunk_removed(self) -> None:
        offset, _ = self.records[4]
        self.assertStatus(self.data[:offset], "truncated", 4, 4)
        offset, _ = self.records[1]
        status = self.assertStatus(self.data[:offset], "truncated", 1, 1)
        self.assertTrue(status.describe().endswith("; 1 chunk decrypts"), status.describe())

    def test_truncated_inside_header(self) -> None:
        for size in (10, 21, 22, 60):
            self.assertStatus(self.data[:size], "truncated", 0, 0)
        self.assertEqual(
            self.decrypt(self.data[:60])[0].describe(),
            "truncated at chunk 0: the file ends inside its header; 0 chunks decrypt",
        )

    def test_data_after_final_chunk(self) -> None:
        self.assertStatus(self.data + b"\x00", "tampered", 5, 5, "tampered at chunk 5: data after the final chunk")
        self.assertStatus(self.data + self.record(4), "tampered", 5, 5)

    def test_unknown_key(self) -> None:
        status, out = self.decrypt(self.data, FakeKeys(K2))
        self.assertEqual((status.state, status.kek_id, out), ("unknown-key", "k-1", b""))
        self.assertEqual(status.describe(), "unknown key k-1: not in the key store")

    def test_wrong_key_under_the_right_id(self) -> None:
        status, out = self.decrypt(self.data, FakeKeys(kek("k-1", 9)))
        self.assertEqual((status.state, status.chunk, out), ("tampered", None, b""))
        self.assertIn("does not unwrap under key k-1", status.describe())

    def test_every_single_bit_flip_is_detected(self) -> None:
        path = self.write([b"short", None, b"file"], chunk_size=8)
        with open(path, "rb") as handle:
            data = bytearray(handle.read())
        for position in range(len(data)):
            for bit in range(8):
                data[position] ^= 1 << bit
                status, _ = self.decrypt(bytes(data))
                self.assertNotEqual(status.state, "ok", f"flip of bit {bit} at byte {position}")
                data[position] ^= 1 << bit
        self.assertEqual(self.decrypt(bytes(data))[0].state, "ok")


class CrashTests(Base):
    def test_flushed_part_file_is_truncated_and_decrypts(self) -> None:
        writer = EncryptedPartFile(self.path(), self.keys, AES_256_GCM, chunk_size=1024)
        flushed = os.urandom(3000)
        writer.write(flushed)
        writer.flush()
        writer.write(b"never flushed")
        status = verify_file(writer.part_path, self.keys)
        self.assertEqual((status.state, status.chunk, status.chunks, status.plaintext_bytes), ("truncated", 3, 3, 3000))
        with open(writer.part_path, "rb") as handle:
            partial = handle.read()
        _, out = self.decrypt(partial)
        self.assertEqual(out, flushed)
        # A torn write at the end (the crash hit mid-chunk) changes nothing.
        writer.flush()
        with open(writer.part_path, "rb") as handle:
            torn = handle.read()[: len(partial) + 4 + 10]
        status, out = self.decrypt(torn)
        self.assertEqual((status.state, status.chunk, out), ("truncated", 3, flushed))
        writer.close()
        self.assertFalse(os.path.exists(writer.path))

    def test_kill_9(self) -> None:
        path = os.path.abspath(self.path())
        script = textwrap.dedent(
            f"""
            import os, sys
            from tests.test_crypto_container import FakeKeys, K1
            from siprecd.crypto.files import EncryptedPartFile
            writer = EncryptedPartFile({path!r}, FakeKeys(K1), "ChaCha20-Poly1305", chunk_size=1000)
            for second in range(5):
                writer.write(bytes([second]) * 1600)
                writer.flush()
            writer.write(b"buffered, not flushed")
            print("ready", flush=True)
            sys.stdin.read()
            """
        )
        child = subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        try:
            if child.stdout.readline() != b"ready\n":
                self.fail(child.stderr.read().decode())  # the child died before it was ready
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait()
            for pipe in (child.stdin, child.stdout, child.stderr):
                pipe.close()
        self.assertEqual(child.returncode, -signal.SIGKILL)
        self.assertFalse(os.path.exists(path))
        status = verify_file(path + ".part", self.keys)
        # Each second: one full chunk of 1000 and a flushed one of 600.
        self.assertEqual((status.state, status.chunk, status.algorithm), ("truncated", 10, CHACHA20_POLY1305))
        out = self.path("out.raw")
        self.assertEqual(decrypt_file(path + ".part", out, self.keys).state, "truncated")
        with open(out, "rb") as handle:
            self.assertEqual(handle.read(), b"".join(bytes([s]) * 1600 for s in range(5)))

    def test_failed_write_is_salvaged_without_nonce_reuse(self) -> None:
        writer = EncryptedPartFile(self.path(), self.keys, AES_256_GCM, chunk_size=100)
        writer.write(b"a" * 300)  # chunks 0..2 on disk
        real_write = writer._file.write

        def torn(data: bytes) -> None:  # chunk 3 lands whole, chunk 4 half: then ENOSPC
            real_write(bytes(data)[: 120 + 60])
            raise RecordingWriteError(writer.part_path, OSError(28, "No space left on device"))

        writer._file.write = torn  # type: ignore[method-assign]
        with self.assertRaises(RecordingWriteError) as caught:
            writer.write(b"b" * 200 + b"c" * 50)
        self.assertTrue(caught.exception.disk_full)
        self.assertIs(self.assertRaises(RecordingWriteError, writer.write, b"more"), caught.exception)
        writer._file.write = real_write  # type: ignore[method-assign]
        path = writer.publish()
        with open(path, "rb") as handle:
            data = handle.read()
        status, out = self.decrypt(data)
        self.assertEqual((status.state, status.chunks, out), ("ok", 5, b"a" * 300 + b"b" * 100))
        self.assertEqual([size for _, size in records(data)], [120, 120, 120, 120, 20])

    def test_failed_final_write_rewrites_the_same_final_chunk(self) -> None:
        writer = EncryptedPartFile(self.path(), self.keys, AES_256_GCM, chunk_size=100)
        writer.write(b"a" * 150)
        real_write = writer._file.write
        attempts: list[bytes] = []

        def torn_once(data: bytes) -> None:
            attempts.append(bytes(data))
            if len(attempts) == 1:
                real_write(bytes(data)[:10])
                raise RecordingWriteError(writer.part_path, OSError(5, "Input/output error"))
            real_write(data)

        writer._file.write = torn_once  # type: ignore[method-assign]
        path = writer.publish()
        self.assertEqual(attempts[0], attempts[1])  # identical bytes: the nonce sealed the same plaintext
        with open(path, "rb") as handle:
            status, out = self.decrypt(handle.read())
        self.assertEqual((status.state, out), ("ok", b"a" * 150))


class RewrapTests(Base):
    def test_rewrap_keeps_chunks_and_changes_the_key(self) -> None:
        plaintext = os.urandom(10000)
        path = self.write([plaintext])
        os.chmod(path, 0o604)
        os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
        with open(path, "rb") as handle:
            before = handle.read()
        self.keys = FakeKeys(K1, kek("k-2026-02", 5))
        status = rewrap_file(path, self.keys)
        self.assertEqual(
            (status.state, status.kek_id, status.previous_kek_id, status.chunks), ("ok", "k-2026-02", "k-1", 10)
        )
        with open(path, "rb") as handle:
            after = handle.read()
        self.assertEqual(after[:HEADER], before[:HEADER])
        self.assertEqual(after[HEADER + 1 : HEADER + 1 + 9], b"k-2026-02")
        self.assertEqual(after[HEADER + envelope_size("k-2026-02") :], before[HEADER + envelope_size("k-1") :])
        self.assertEqual(os.stat(path).st_mtime_ns, 1_600_000_000_123_456_789)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o604)
        # Decrypts with the old KEK gone.
        status, out = self.decrypt(after, FakeKeys(kek("k-2026-02", 5)))
        self.assertEqual((status.state, status.kek_id, out), ("ok", "k-2026-02", plaintext))
        self.assertEqual(os.listdir(self.directory), [os.path.basename(path)])
        # Again: already under the newest key, left alone.
        again = rewrap_file(path, self.keys)
        self.assertEqual((again.state, again.previous_kek_id), ("ok", None))
        with open(path, "rb") as handle:
            self.assertEqual(handle.read(), after)

    def test_rewrap_refuses_files_that_do_not_verify(self) -> None:
        complete = self.write([os.urandom(3000)])
        with open(complete, "rb") as handle:
            data = handle.read()
        offset, _ = records(data)[1]
        cases = {
            "tampered": data[: offset + 50] + bytes([data[offset + 50] ^ 1]) + data[offset + 51 :],
            "truncated": data[: offset + 50],
            "unknown-key": data[:22] + b"k-9" + data[25:],
        }
        self.keys = FakeKeys(K1, K2)
        for expected, content in cases.items():
            path = self.path()
            with open(path, "wb") as handle:
                handle.write(content)
            status = rewrap_file(path, self.keys)
            self.assertEqual((status.state, status.previous_kek_id), (expected, None))
            with open(path, "rb") as handle:
                self.assertEqual(handle.read(), content)
        self.assertEqual(len(os.listdir(self.directory)), 4)  # no temporary file left behind


class WavDecryptTests(Base):
    def test_placeholder_sizes_are_patched(self) -> None:
        pcm = bytes(range(256)) * 31 + b"\x01"  # 7937 bytes: 3968 frames and half a sample
        for placeholder in (0, 0xFFFFFFFF - 36):
            header = wav_header(8000, 1, placeholder)
            path = self.write([header, pcm[:5000], None, pcm[5000:]])
            out = self.path("out.wav")
            status = decrypt_file(path, out, self.keys)
            self.assertEqual(status.state, "ok")
            with wave.open(out, "rb") as reader:
                self.assertEqual((reader.getnframes(), reader.getframerate()), (3968, 8000))
                self.assertEqual(reader.readframes(4000), pcm[:7936])
            self.assertEqual(os.path.getsize(out), 44 + 7936)
            self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)
            os.unlink(out)

    def test_truncated_wav_plays_up_to_the_crash(self) -> None:
        writer = EncryptedPartFile(self.path(), self.keys, AES_256_GCM, chunk_size=1000)
        writer.write(wav_header(16000, 2, 0))
        writer.write(b"\x10\x00\x20\x00" * 900)
        writer.flush()
        writer.write(b"\x30\x00" * 100)  # lost with the crash
        out = self.path("out.wav")
        self.assertEqual(decrypt_file(writer.part_path, out, self.keys).state, "truncated")
        with wave.open(out, "rb") as reader:
            self.assertEqual((reader.getnframes(), reader.getnchannels()), (900, 2))
        writer.close()

    def test_nothing_written_unless_ok_or_truncated(self) -> None:
        path = self.write([b"RIFF" + os.urandom(3000)])
        with open(path, "r+b") as handle:
            handle.seek(-5, os.SEEK_END)
            handle.write(b"\x00")
        names = sorted(os.listdir(self.directory))
        out = self.path("out.wav")
        self.assertEqual(decrypt_file(path, out, self.keys).state, "tampered")
        self.assertEqual(sorted(os.listdir(self.directory)), names)

    def test_existing_output_is_never_replaced(self) -> None:
        path = self.write([b"plain"])
        out = self.path("out.raw")
        with open(out, "wb") as handle:
            handle.write(b"mine")
        self.assertRaises(FileExistsError, decrypt_file, path, out, self.keys)
        with open(out, "rb") as handle:
            self.assertEqual(handle.read(), b"mine")
        self.assertEqual(sorted(os.listdir(self.directory)), sorted([os.path.basename(path), "out.raw"]))

    def test_non_wav_output_is_left_as_is(self) -> None:
        path = self.write([b"RIFF1234WAVX and more"])
        out = self.path("out.raw")
        decrypt_file(path, out, self.keys)
        with open(out, "rb") as handle:
            self.assertEqual(handle.read(), b"RIFF1234WAVX and more")
