"""``siprecctl decrypt | verify | rewrap``: encrypted recordings, in plain words.

Each command returns its exit code and prints one line per file, ``PATH: what happened``, on
``stdout`` (I/O errors on one file included, so a script reads one line per file); usage errors
go to ``stderr``.  Exit codes, shared by all three:

- 0: every file is fine (ok; decrypted; rewrapped or already under the newest key)
- 1: some file is truncated, tampered, under an unknown key, or not encrypted
- 2: usage or I/O error (no files given, unreadable file, output exists, a key store that
  fails to load a key, ...); wins over 1
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from siprecd.crypto.container import TRUNCATED, KeyProvider, Status
from siprecd.crypto.files import decrypt_file, rewrap_file, verify_file
from siprecd.crypto.keystore import KeyStoreError

__all__ = ["EXIT_OK", "EXIT_BAD_FILE", "EXIT_ERROR", "cmd_decrypt", "cmd_rewrap", "cmd_verify"]

EXIT_OK = 0
EXIT_BAD_FILE = 1
EXIT_ERROR = 2


def cmd_decrypt(in_path: str, out_path: str, keys: KeyProvider, *, stdout: TextIO | None = None) -> int:
    """Decrypt one file to a new file ``out_path`` (never replaced if it exists).

    Exit 0: ok, written.  1: truncated (the chunks that decrypt are written and the line says
    so), or tampered / unknown key / not encrypted (nothing written).  2: I/O error or
    ``out_path`` exists.
    """
    out = stdout or sys.stdout
    try:
        status = decrypt_file(in_path, out_path, keys)
    except FileExistsError:
        print(f"{in_path}: not decrypted: {out_path} already exists", file=out)
        return EXIT_ERROR
    except (OSError, ValueError, KeyStoreError) as e:
        print(f"{in_path}: error: {_error(e)}", file=out)
        return EXIT_ERROR
    if status.ok:
        print(f"{in_path}: {status.describe()}; written to {out_path}", file=out)
        return EXIT_OK
    if status.state == TRUNCATED:
        print(f"{in_path}: {status.describe()}; those were written to {out_path}", file=out)
    else:
        print(f"{in_path}: {status.describe()}; nothing written", file=out)
    return EXIT_BAD_FILE


def cmd_verify(
    paths: Sequence[str], keys: KeyProvider, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Authenticate every chunk of each file; prints ``PATH: status`` per file.

    Exit 0: all ok.  1: any truncated, tampered, unknown key or not encrypted.  2: no paths,
    or a file could not be read.
    """
    return _each_file("verify", paths, lambda path: verify_file(path, keys), Status.describe, stdout, stderr)


def cmd_rewrap(
    paths: Sequence[str], keys: KeyProvider, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Re-wrap each file's data key under the newest KEK without decrypting the audio.

    Files that do not verify are left untouched and reported.  Exit 0: all rewrapped or
    already under the newest key.  1: any not rewrapped because it is truncated, tampered,
    under an unknown key or not encrypted.  2: no paths, or an I/O error.
    """
    return _each_file("rewrap", paths, lambda path: rewrap_file(path, keys), _describe_rewrapped, stdout, stderr)


def _each_file(
    command: str,
    paths: Sequence[str],
    act: Callable[[str], Status],
    describe: Callable[[Status], str],
    stdout: TextIO | None,
    stderr: TextIO | None,
) -> int:
    """Run ``act`` on each path, one ``PATH: ...`` line per file; the exit code of the worst."""
    out = stdout or sys.stdout
    if not paths:
        print(f"{command}: no files given", file=stderr or sys.stderr)
        return EXIT_ERROR
    code = EXIT_OK
    for path in paths:
        try:
            status = act(path)
        except (OSError, ValueError, KeyStoreError) as e:
            print(f"{path}: error: {_error(e)}", file=out)
            code = EXIT_ERROR
            continue
        print(f"{path}: {describe(status)}", file=out)
        code = max(code, _code(status))
    return code


def _describe_rewrapped(status: Status) -> str:
    if status.previous_kek_id is not None:
        moved = f"from key {status.previous_kek_id} to key {status.kek_id}"
        return f"rewrapped {moved} ({status.chunks} chunks unchanged)"
    if status.ok:
        return f"already under key {status.kek_id}; {status.describe()}"
    return f"not rewrapped: {status.describe()}"


def _code(status: Status) -> int:
    return EXIT_OK if status.ok else EXIT_BAD_FILE


def _error(error: Exception) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)
