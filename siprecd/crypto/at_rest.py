"""How the recorder writes files: in clear, or encrypted under the key store's current KEK.

One object per server, handed down to every writer, so that "is this file encrypted, and how"
is decided in one place.  Encrypted files carry the ``.enc`` suffix; their plaintext is exactly
what the clear file would have held.
"""

from __future__ import annotations

import json
import os
from typing import Any

from siprecd.crypto.files import EncryptedPartFile
from siprecd.crypto.keystore import KeyStore
from siprecd.durable import atomic_write

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
    ) -> None:
        self.keys = keys
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
        """The ``open_file`` a WavWriter takes: None writes in clear."""
        if self.keys is None:
            return None
        keys, algorithm, chunk_size = self.keys, self.algorithm, self.chunk_size
        return lambda path: EncryptedPartFile(path, keys, algorithm, chunk_size=chunk_size)

    def store_metadata(self, path: str, data: bytes) -> None:
        """Write a metadata or SDP file once (never replaced), encrypted when configured."""
        if not self.encrypt_metadata:
            atomic_write(path, data)
            return
        self._seal(path, data)

    def write_session(self, directory: str, document: dict[str, Any]) -> None:
        """session.json, and with encrypt_metadata its personal fields sealed beside it."""
        if self.encrypt_metadata:
            self._replace_sealed(os.path.join(directory, PRIVATE_FILE), _dump(document))
            document = redact(document)
            document["private_file"] = PRIVATE_FILE
        atomic_write(os.path.join(directory, "session.json"), _dump(document))

    def _replace_sealed(self, path: str, data: bytes) -> None:
        # EncryptedPartFile never replaces a file: seal under a temporary name, then rename.
        assert self.keys is not None
        temporary = path + ".new"
        for stale in (temporary, temporary + ".part"):
            if os.path.exists(stale):
                os.unlink(stale)
        self._seal(temporary, data)
        os.replace(temporary, path)

    def _seal(self, path: str, data: bytes) -> None:
        """One whole encrypted file at ``path`` (which must not exist yet)."""
        assert self.keys is not None
        sealed = EncryptedPartFile(path, self.keys, self.algorithm, chunk_size=self.chunk_size)
        try:
            sealed.write(data)
            sealed.publish()
        except BaseException:
            sealed.close()
            raise


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
