"""``siprecctl keys list`` and ``siprecctl keys rotate``.

``list`` prints one line per key-encryption key, oldest first: id, creation time (ISO 8601,
UTC) and ``current`` on the newest, two spaces apart.  An empty store prints nothing.
``rotate`` makes a new current key and prints its id; a running server picks it up for its
next new file.  Exit codes: 0 ok; 1 the key store refused (the reason goes to stderr).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from siprecd.crypto.keystore import Kek, KeyStore, KeyStoreError

EXIT_OK, EXIT_PROBLEM = 0, 1


def format_created(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))


def format_kek(kek: Kek, *, current: bool) -> str:
    line = f"{kek.kek_id}  {format_created(kek.created)}"
    return line + "  current" if current else line


def cmd_keys_list(store: KeyStore, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    try:
        keks = store.list()
    except KeyStoreError as error:
        return _refused(error, err)
    for index, kek in enumerate(keks):
        print(format_kek(kek, current=index == len(keks) - 1), file=out)
    return EXIT_OK


def cmd_keys_rotate(store: KeyStore, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    try:
        kek = store.rotate()
    except KeyStoreError as error:
        return _refused(error, err)
    print(kek.kek_id, file=out)
    return EXIT_OK


def _refused(error: KeyStoreError, err: TextIO | None) -> int:
    print(f"siprecctl: {error}", file=sys.stderr if err is None else err)
    return EXIT_PROBLEM
