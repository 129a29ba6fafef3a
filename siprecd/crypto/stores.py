"""The key store the configuration asks for, for the server and for siprecctl alike."""

from __future__ import annotations

from collections.abc import Mapping

from siprecd.config import EncryptionConfig
from siprecd.crypto.keystore import FileKeyStore, KeyStore, KeyStoreError, MemoryKeyStore

PASSPHRASE_VARIABLE = "SIPRECD_ENCRYPTION_PASSPHRASE"


def key_store_from_config(
    config: EncryptionConfig, environ: Mapping[str, str], *, ephemeral_ok: bool = True
) -> KeyStore:
    """Open (and check) the configured store; KeyStoreError says what is wrong in plain words."""
    if config.key_store == "memory":
        if not ephemeral_ok:
            raise KeyStoreError(
                "[encryption] key_store = memory: the keys lived only inside the server process, "
                "so there is nothing here to use"
            )
        return MemoryKeyStore()
    store = FileKeyStore(
        config.key_directory,
        passphrase=environ.get(PASSPHRASE_VARIABLE) or None,
        kdf=config.kdf,
        kdf_cost=config.kdf_cost,
    )
    store.check()
    return store
