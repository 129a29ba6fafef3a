"""Encryption at rest: the key store, the chunked AEAD container and the encrypted file writer.

Importing the package imports nothing else, so each submodule (``keystore``, ``container``,
``files``) is loaded only by code that needs it.
"""
