"""How the recorder writes files: in clear, or encrypted under the key store's current KEK.

One object per server, handed down to every writer, so that "is this file encrypted, and how"
is decided in one place.  Encrypted files carry the ``.enc`` suffix; their plaintext is exactly
what the clear file would have held.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred

from siprecd.crypto.container import Header, new_aead, new_data_key, seal_chunk, wrap_data_key
from siprecd.crypto.files import EncryptedPartFile
from siprecd.crypto.keystore import KeyStore
from siprecd.durable import DurableWriter
from siprecd.recording.wav import PartFile

SUFFIX = ".enc"

# session.json fields that say who called whom (or what they typed): with encrypt_metadata they
# live only in session-private.json.enc.
PRIVATE_TOP_LEVEL = ("participants", "sip", "metadata")
PRIVATE_STREAM_FIELDS = ("sending_participants", "events")
PRIVATE_FILE = "session-private.json" + SUFFIX


class AtRest:
    def __init__(
        self,
        keys: KeyStore | None,
        algorithm: str = "AES-256-GCM",
        *,
        encrypt_metadata: bool = False,
        chunk_size: int = 16384,
        durable: DurableWriter | None = None,
    ) -> None:
        self.keys = keys
        # session.json, metadata and SDP files go through it (the server's: a thread of its
        # own; by default they are written at once, on the caller's thread).
        self.durable = durable or DurableWriter()
        self.algorithm = algorithm
        self.encrypt_metadata = encrypt_metadata and keys is not None
        self.chunk_size = chunk_size

    @property
    def encrypted(self) -> bool:
        return self.keys is not None

    def audio_name(self, name: str) -> str:
        return name + SUFFIX if self.encrypted else name

    def metadata_name(self, name: str) -> str:
        return name + SUFFIX if self.encrypt_metadata else name

    def open_audio(self) -> Any:
        """The ``open_file`` a WavWriter takes (clear or encrypted): files published through
        the durable writer, in order with session.json."""
        durable = self.durable
        if self.keys is None:
            return lambda path: PartFile(path, durable=durable)
        keys, algorithm, chunk_size = self.keys, self.algorithm, self.chunk_size
        return lambda path: EncryptedPartFile(path, keys, algorithm, chunk_size=chunk_size, durable=durable)

    def store_metadata(self, path: str, data: bytes) -> Deferred[None]:
        """Write a metadata or SDP file once (never replaced), encrypted when configured;
        fires when it is durable."""
        return self.durable.replace(path, self.seal(data) if self.encrypt_metadata else data)

    def write_session(self, directory: str, document: dict[str, Any]) -> Deferred[None]:
        """session.json, and with encrypt_metadata its personal fields sealed beside it; fires
        when both are durable (the sealed file is renamed first, as it is queued first)."""
        if self.encrypt_metadata:
            self.durable.replace(os.path.join(directory, PRIVATE_FILE), self.seal(_dump(document)))
            document = redact(document)
            document["private_file"] = PRIVATE_FILE
        return self.durable.replace(os.path.join(directory, "session.json"), _dump(document))

    def seal(self, data: bytes) -> bytes:
        """The whole encrypted file of ``data``: what an EncryptedPartFile written with
        ``data`` and published holds (full chunks, then the final chunk with the rest)."""
        assert self.keys is not None
        header = Header.new(self.algorithm, self.chunk_size)
        data_key = new_data_key()
        header_bytes = header.encode()
        out = [header_bytes, wrap_data_key(header, self.keys.current(), data_key).encode()]
        step = self.chunk_size
        full = len(data) - len(data) % step
        pieces = [(data[i : i + step], False) for i in range(0, full, step)] + [(data[full:], True)]
        for index, (piece, final) in enumerate(pieces):
            out.append(seal_chunk(new_aead(self.algorithm, data_key), header_bytes, header, index, piece, final))
        return b"".join(out)


def _dump(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"


def redact(document: dict[str, Any]) -> dict[str, Any]:
    """The non-personal view of a session.json: ids, times, state, file names, statistics."""
    public = {k: v for k, v in document.items() if k not in PRIVATE_TOP_LEVEL}
    public["streams"] = [
        {k: v for k, v in stream.items() if k not in PRIVATE_STREAM_FIELDS}
        for stream in document.get("streams", [])
    ]
    mix = document.get("mix")
    if isinstance(mix, dict) and mix.get("channels"):
        public["mix"] = dict(mix, channels=[
            {k: v for k, v in channel.items() if k != "sending_participants"} for channel in mix["channels"]
        ])
    public["metadata_versions"] = [
        {k: v for k, v in version.items() if k != "error"} for version in document.get("metadata_versions", [])
    ]
    return public
