"""Durable file writes: what a crash or power loss cannot half-do."""

from __future__ import annotations

import os
import secrets


def sync_directory(path: str) -> None:
    """fsync a directory, so that a rename or a new name in it survives a crash."""
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, *, mode: int = 0o640) -> None:
    """Replace ``path`` with ``data`` all at once: temp file, fsync, rename, fsync directory.

    Readers see the old or the new content, never a mix; the temp file never follows a link.
    """
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not loosen (or tighten) what was asked for
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        sync_directory(directory)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
