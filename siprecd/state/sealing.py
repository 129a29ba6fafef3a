"""Secrets in the state store (SRTP keys, private metadata) sealed under the key store's KEK.

AES-256-GCM with the current KEK, a fresh 96-bit nonce per seal, and the record it belongs to
(session id and field) as associated data, so a sealed value cannot be moved to another record.
Without a key store the secret is not stored at all: said loudly, never written in clear.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from siprecd.crypto.keystore import KeyStore

NO_KEY_STORE = "not stored: no key store to encrypt it under ([encryption] enabled = false)"


class SealError(Exception):
    """A sealed value cannot be opened (wrong or missing KEK, altered data)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Sealer:
    def __init__(self, keys: KeyStore | None) -> None:
        self.keys = keys

    @property
    def available(self) -> bool:
        return self.keys is not None

    def seal(self, value: Any, context: str) -> dict[str, str] | None:
        if self.keys is None:
            return None
        kek = self.keys.current()
        nonce = os.urandom(12)
        data = json.dumps(value, separators=(",", ":")).encode()
        sealed = AESGCM(kek.key).encrypt(nonce, data, context.encode())
        return {"kek_id": kek.kek_id, "nonce": _b64(nonce), "sealed": _b64(sealed)}

    def open(self, blob: dict[str, str], context: str) -> Any:
        if self.keys is None:
            raise SealError(f"{context}: sealed under KEK {blob.get('kek_id')!r} but no key store is configured")
        kek = self.keys.get(str(blob.get("kek_id")))
        if kek is None:
            raise SealError(f"{context}: KEK {blob.get('kek_id')!r} is not in the key store")
        try:
            data = AESGCM(kek.key).decrypt(
                base64.b64decode(blob["nonce"]), base64.b64decode(blob["sealed"]), context.encode()
            )
        except (InvalidTag, KeyError, ValueError) as error:
            raise SealError(f"{context}: sealed value does not open ({type(error).__name__})") from None
        return json.loads(data)
