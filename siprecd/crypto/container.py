"""The encrypted recording container, format version 1 (byte layout: docs/encryption-format.md).

A file is an immutable header, a key envelope, then a sequence of sealed chunks::

    header (21 bytes) | envelope (KEK id, wrapped data key) | chunk 0 | chunk 1 | ... | final chunk

Each file has its own random 256-bit data key, wrapped with AES-256-GCM under a key-encryption
key (KEK) from the key store.  The header (magic, version, algorithm, maximum chunk size, random
nonce prefix) is in the associated data of the key wrap and of every chunk; the envelope is
authenticated only by the key wrap, so ``rewrap`` can replace it without touching a chunk.

Chunks are STREAM-style (as in age and Tink): the nonce is ``nonce prefix || chunk index ||
last flag``, so a chunk that moved, vanished or was marked final by anyone but the writer fails
authentication, and a file that ends without a final chunk is known to be truncated.  Chunks are
length-prefixed so the writer can flush short ones (about once a second) for crash safety.

This module is pure format: bytes in, bytes or a :class:`Status` out.  Files live in
:mod:`siprecd.crypto.files`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

__all__ = [
    "AES_256_GCM",
    "ALGORITHMS",
    "CHACHA20_POLY1305",
    "Chunk",
    "ContainerReader",
    "Envelope",
    "FormatError",
    "Header",
    "KekLike",
    "KeyProvider",
    "MAGIC",
    "MAX_CHUNK_SIZE",
    "Status",
    "algorithm_name",
    "new_data_key",
    "seal_chunk",
    "unwrap_data_key",
    "wrap_data_key",
]

MAGIC = b"\x89SIPREC\n"  # non-ASCII first byte and a newline: text-mode mangling shows
VERSION = 1
AES_256_GCM = "AES-256-GCM"
CHACHA20_POLY1305 = "ChaCha20-Poly1305"
ALGORITHMS = (AES_256_GCM, CHACHA20_POLY1305)
_ALGORITHM_IDS = {AES_256_GCM: 1, CHACHA20_POLY1305: 2}
_ALGORITHM_BY_ID = {v: k for k, v in _ALGORITHM_IDS.items()}

KEY_SIZE = 32  # data keys and KEKs are 256-bit
TAG_SIZE = 16  # both AEADs
NONCE_PREFIX_SIZE = 7  # 7 + 4 (index) + 1 (last flag) = the AEADs' 12-byte nonce
WRAP_NONCE_SIZE = 12
WRAPPED_KEY_SIZE = KEY_SIZE + TAG_SIZE
LENGTH_SIZE = 4
# Bounds the reader's memory: a chunk length is checked against the header before reading.
MAX_CHUNK_SIZE = 4 * 1024 * 1024
MAX_CHUNKS = 1 << 32  # the index is a 32-bit field

_HEADER = struct.Struct(">8sBBI7s")
HEADER_SIZE = _HEADER.size  # 21

OK = "ok"
TRUNCATED = "truncated"
TAMPERED = "tampered"
UNKNOWN_KEY = "unknown-key"
NOT_ENCRYPTED = "not-encrypted"

TRUNCATED_REASON = "the file ends without its final chunk (the recorder stopped before finishing it)"


class KekLike(Protocol):
    """What the container needs of a key store's ``Kek`` (a NamedTuple there)."""

    @property
    def kek_id(self) -> str: ...

    @property
    def key(self) -> bytes: ...


class KeyProvider(Protocol):
    def current(self) -> KekLike:
        """The KEK new files (and rewrapped ones) are wrapped with."""
        ...

    def get(self, kek_id: str) -> KekLike | None: ...


class FormatError(Exception):
    """A header or envelope that cannot be parsed; ``str()`` says why in plain words."""


def algorithm_name(name: str) -> str:
    """The canonical name of an algorithm given in any case, e.g. ``aes-256-gcm``."""
    for canonical in ALGORITHMS:
        if name.lower() == canonical.lower():
            return canonical
    raise ValueError(f"unknown algorithm {name!r}; expected one of {', '.join(ALGORITHMS)}")


def new_aead(algorithm: str, key: bytes) -> AESGCM | ChaCha20Poly1305:
    return AESGCM(key) if algorithm == AES_256_GCM else ChaCha20Poly1305(key)


def new_data_key() -> bytes:
    return os.urandom(KEY_SIZE)


@dataclass(frozen=True)
class Header:
    """The immutable part of the header: in the AAD of the key wrap and of every chunk."""

    algorithm: str
    chunk_size: int  # the largest plaintext a chunk may hold
    nonce_prefix: bytes  # random per file; also serves as the file's id
    version: int = VERSION

    @classmethod
    def new(cls, algorithm: str, chunk_size: int) -> Header:
        algorithm = algorithm_name(algorithm)
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE}")
        return cls(algorithm, chunk_size, os.urandom(NONCE_PREFIX_SIZE))

    def encode(self) -> bytes:
        algorithm_id = _ALGORITHM_IDS[self.algorithm]
        return _HEADER.pack(MAGIC, self.version, algorithm_id, self.chunk_size, self.nonce_prefix)

    @classmethod
    def parse(cls, data: bytes) -> Header:
        """Parse exactly HEADER_SIZE bytes that start with MAGIC."""
        _, version, algorithm_id, chunk_size, prefix = _HEADER.unpack(data)
        if version != VERSION:
            raise FormatError(f"unsupported format version {version} (this siprecd reads version {VERSION})")
        if algorithm_id not in _ALGORITHM_BY_ID:
            raise FormatError(f"unknown algorithm id {algorithm_id}")
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise FormatError(f"chunk size {chunk_size} out of range")
        return cls(_ALGORITHM_BY_ID[algorithm_id], chunk_size, prefix, version)


@dataclass(frozen=True)
class Envelope:
    """The mutable part of the header: which KEK wraps the data key, and the wrapped key."""

    kek_id: str
    wrap_nonce: bytes
    wrapped_key: bytes

    def encode(self) -> bytes:
        kek_id = self.kek_id.encode("utf-8")
        return bytes([len(kek_id)]) + kek_id + self.wrap_nonce + self.wrapped_key

    @property
    def size(self) -> int:
        return 1 + len(self.kek_id.encode("utf-8")) + WRAP_NONCE_SIZE + WRAPPED_KEY_SIZE


def _kek_id_bytes(kek_id: str) -> bytes:
    raw = kek_id.encode("utf-8")
    if not 1 <= len(raw) <= 255 or not kek_id.isprintable():
        raise ValueError(f"KEK id must be 1-255 bytes of printable UTF-8: {kek_id!r}")
    return raw


def _wrap_aad(header: Header, kek_id: str) -> bytes:
    # The KEK id is bound to the wrapped key, so relabelling an envelope cannot go unnoticed.
    raw = _kek_id_bytes(kek_id)
    return header.encode() + bytes([len(raw)]) + raw


def _kek_key(kek: KekLike) -> bytes:
    if len(kek.key) != KEY_SIZE:
        raise ValueError(f"KEK {kek.kek_id} is {len(kek.key)} bytes, expected {KEY_SIZE}")
    return kek.key


def wrap_data_key(header: Header, kek: KekLike, data_key: bytes) -> Envelope:
    nonce = os.urandom(WRAP_NONCE_SIZE)
    wrapped = AESGCM(_kek_key(kek)).encrypt(nonce, data_key, _wrap_aad(header, kek.kek_id))
    return Envelope(kek.kek_id, nonce, wrapped)


def unwrap_data_key(header: Header, envelope: Envelope, kek: KekLike) -> bytes:
    """The data key; raises InvalidTag if the header, envelope or KEK do not match."""
    aad = _wrap_aad(header, envelope.kek_id)
    return AESGCM(_kek_key(kek)).decrypt(envelope.wrap_nonce, envelope.wrapped_key, aad)


def _nonce(header: Header, index: int, final: bool) -> bytes:
    return header.nonce_prefix + index.to_bytes(4, "big") + (b"\x01" if final else b"\x00")


def seal_chunk_into(
    aead: AESGCM | ChaCha20Poly1305, header_bytes: bytes, header: Header, index: int, plaintext: bytes | memoryview,
    final: bool, out: bytearray,
) -> memoryview:
    """:func:`seal_chunk`'s record written into ``out`` (at least 4 + len + 16 bytes; never
    resized), returned as a view of it: no new buffer per chunk.  A recording writer's 8 KiB
    transients (ciphertext, then length + ciphertext) left holes in the C heap between call
    set-ups (bench/README.md, memory)."""
    if not 0 <= index < MAX_CHUNKS:
        raise OverflowError("too many chunks for one file")
    size = len(plaintext)
    if size > header.chunk_size:
        raise ValueError("chunk larger than the header's chunk size")
    length = size.to_bytes(LENGTH_SIZE, "big")
    record = memoryview(out)[: LENGTH_SIZE + size + TAG_SIZE]
    record[:LENGTH_SIZE] = length
    aead.encrypt_into(_nonce(header, index, final), plaintext, header_bytes + length, record[LENGTH_SIZE:])
    return record


def seal_chunk(
    aead: AESGCM | ChaCha20Poly1305, header_bytes: bytes, header: Header, index: int, plaintext: bytes | memoryview,
    final: bool,
) -> bytes:
    """One chunk record: the 4-byte plaintext length, then ciphertext and tag.

    The length is in the AAD as well: framing alone would already make a wrong length fail
    (the tag would be read from the wrong place), but binding it says so explicitly.
    """
    if not 0 <= index < MAX_CHUNKS:
        raise OverflowError("too many chunks for one file")
    if len(plaintext) > header.chunk_size:
        raise ValueError("chunk larger than the header's chunk size")
    length = len(plaintext).to_bytes(LENGTH_SIZE, "big")
    return length + aead.encrypt(_nonce(header, index, final), plaintext, header_bytes + length)


@dataclass(frozen=True)
class Status:
    """What reading a container found, in a form for humans (:meth:`describe`) and code."""

    state: str  # OK, TRUNCATED, TAMPERED, UNKNOWN_KEY or NOT_ENCRYPTED
    chunk: int | None = None  # 0-based index of the missing or failing chunk; None: the header
    kek_id: str | None = None
    algorithm: str | None = None
    chunks: int = 0  # chunks that authenticated (the final one included)
    plaintext_bytes: int = 0  # plaintext in those chunks
    reason: str = ""
    previous_kek_id: str | None = None  # set by rewrap when it replaced the envelope

    @property
    def ok(self) -> bool:
        return self.state == OK

    def describe(self) -> str:
        if self.state == OK:
            size = human_size(self.plaintext_bytes)
            return f"ok ({self.algorithm}, key {self.kek_id}, {_count(self.chunks, 'chunk')}, {size})"
        if self.state == TRUNCATED:
            verb = "decrypts" if self.chunks == 1 else "decrypt"
            return f"truncated at chunk {self.chunk}: {self.reason}; {_count(self.chunks, 'chunk')} {verb}"
        if self.state == TAMPERED:
            where = "header" if self.chunk is None else f"at chunk {self.chunk}"
            return f"tampered {where}: {self.reason}"
        if self.state == UNKNOWN_KEY:
            return f"unknown key {self.kek_id}: not in the key store"
        return f"not encrypted: {self.reason or 'no siprecd encryption header'}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def human_size(n: int) -> str:
    if n < 1024:
        return _count(n, "byte")
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


class Chunk(NamedTuple):
    index: int
    plaintext: bytes
    record: bytes  # the chunk exactly as stored (length prefix, ciphertext, tag)
    final: bool


def _read_exact(src: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at end of file (pipes may return short reads)."""
    parts = []
    while size > 0:
        part = src.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


class ContainerReader:
    """Reads one container from a stream: :meth:`open`, then :meth:`chunks`, then :attr:`status`.

    ``chunks()`` yields each chunk as soon as it authenticates (so decryption streams); a chunk
    is never yielded before its tag checked.  When it stops, :attr:`status` says why.
    """

    def __init__(self, src: BinaryIO, keys: KeyProvider) -> None:
        self._src = src
        self._keys = keys
        self.header: Header | None = None
        self.header_bytes = b""
        self.envelope: Envelope | None = None
        self.data_key: bytes | None = None
        self.status: Status | None = None
        self._chunks = 0
        self._plaintext = 0

    def open(self) -> bool:
        """Read and check the header and envelope; False (with :attr:`status` set) if unusable."""
        raw = _read_exact(self._src, HEADER_SIZE)
        if raw[: len(MAGIC)] != MAGIC:
            return self._stop(NOT_ENCRYPTED, None, "no siprecd encryption header")
        if len(raw) < HEADER_SIZE:
            return self._stop(TRUNCATED, 0, "the file ends inside its header")
        try:
            header = Header.parse(raw)
        except FormatError as e:
            return self._stop(TAMPERED, None, str(e))
        self.header, self.header_bytes = header, raw
        size = _read_exact(self._src, 1)
        if not size:
            return self._stop(TRUNCATED, 0, "the file ends inside its header")
        rest = _read_exact(self._src, size[0] + WRAP_NONCE_SIZE + WRAPPED_KEY_SIZE)
        if len(rest) < size[0] + WRAP_NONCE_SIZE + WRAPPED_KEY_SIZE:
            return self._stop(TRUNCATED, 0, "the file ends inside its header")
        try:
            kek_id = rest[: size[0]].decode("utf-8")
            _kek_id_bytes(kek_id)
        except (UnicodeDecodeError, ValueError):
            return self._stop(TAMPERED, None, "the key id is not valid")
        nonce_end = size[0] + WRAP_NONCE_SIZE
        self.envelope = Envelope(kek_id, rest[size[0] : nonce_end], rest[nonce_end:])
        kek = self._keys.get(kek_id)
        if kek is None:
            return self._stop(UNKNOWN_KEY, None, "not in the key store")
        try:
            self.data_key = unwrap_data_key(header, self.envelope, kek)
        except InvalidTag:
            return self._stop(
                TAMPERED,
                None,
                f"the data key does not unwrap under key {kek_id} (the header was altered, "
                "or the key store holds a different key under that id)",
            )
        return True

    def chunks(self) -> Iterator[Chunk]:
        if self.data_key is None or self.header is None:
            raise RuntimeError("open() the container first")
        header, aead = self.header, new_aead(self.header.algorithm, self.data_key)
        index = 0
        while True:
            prefix = _read_exact(self._src, LENGTH_SIZE)
            if len(prefix) < LENGTH_SIZE:
                self._stop(TRUNCATED, index, TRUNCATED_REASON)
                return
            length = int.from_bytes(prefix, "big")
            if length > header.chunk_size:
                self._stop(TAMPERED, index, f"chunk length {length} exceeds the maximum {header.chunk_size}")
                return
            body = _read_exact(self._src, length + TAG_SIZE)
            if len(body) < length + TAG_SIZE:
                if self._length_altered(aead, index, body):
                    self._stop(TAMPERED, index, "its length prefix was altered")
                else:
                    self._stop(TRUNCATED, index, TRUNCATED_REASON)
                return
            opened = self._open(aead, index, prefix, body)
            if opened is None:
                self._stop(TAMPERED, index, "authentication failed")
                return
            plaintext, final = opened
            self._chunks += 1
            self._plaintext += length
            yield Chunk(index, plaintext, prefix + body, final)
            if final:
                if _read_exact(self._src, 1):
                    self._stop(TAMPERED, index + 1, "data after the final chunk")
                else:
                    self._stop(OK, None, "")
                return
            index += 1
            if index >= MAX_CHUNKS:
                self._stop(TAMPERED, index, "more chunks than the format allows")
                return

    def _open(
        self, aead: AESGCM | ChaCha20Poly1305, index: int, prefix: bytes, body: bytes
    ) -> tuple[bytes, bool] | None:
        assert self.header is not None
        aad = self.header_bytes + prefix
        # Non-final first: every chunk but one is non-final, so the second try is rare.
        for final in (False, True):
            try:
                return aead.decrypt(_nonce(self.header, index, final), body, aad), final
            except InvalidTag:
                continue
        return None

    def _length_altered(self, aead: AESGCM | ChaCha20Poly1305, index: int, rest: bytes) -> bool:
        """Whether the bytes left after a too-large length prefix are a whole, valid chunk.

        A crash leaves a partial chunk, which never authenticates; a chunk whose length was
        raised past the end of the file does, under its true length.  Only this test tells
        the two apart, so a flipped length in the last chunk is reported as tampering.
        """
        assert self.header is not None
        true_length = len(rest) - TAG_SIZE
        if not 0 <= true_length <= self.header.chunk_size:
            return False
        return self._open(aead, index, true_length.to_bytes(LENGTH_SIZE, "big"), rest) is not None

    def _stop(self, state: str, chunk: int | None, reason: str) -> bool:
        self.status = Status(
            state=state,
            chunk=chunk,
            kek_id=self.envelope.kek_id if self.envelope else None,
            algorithm=self.header.algorithm if self.header else None,
            chunks=self._chunks,
            plaintext_bytes=self._plaintext,
            reason=reason,
        )
        return state == OK
