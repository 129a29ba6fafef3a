"""Repair and publish the ``.part`` recordings a crash left in a session directory.

Called at start-up for every session whose session.json does not say it ended.  For each
``*.part`` file directly in the directory:

- WAV (RIFF/WAVE with a ``fmt `` and a ``data`` chunk): the data runs to the end of the file;
  a trailing partial sample frame is cut, the RIFF and data sizes are patched to match.
- Ogg (pages starting ``OggS``): the file is cut after the last whole page whose CRC checks.

The file is then fsynced and published under its name without ``.part``, never replacing an
existing file.  Files that are neither, or whose final name is taken by a different file, are
left as they are and reported; a ``.part`` name that is a second link to the published file (a
crash between the two steps of publishing) is removed.  Nothing here raises for one bad file:
each file's outcome, errors included, is in the returned list.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from siprecd.recording.oggopus import ogg_crc
from siprecd.recording.wav import PART_SUFFIX, publish

__all__ = ["Recovered", "recover_directory", "recover_file"]

RECOVERED = "recovered"  # repaired (if needed) and published under the final name
DUPLICATE = "duplicate"  # the .part was a second name of the already published file: removed
CONFLICT = "conflict"  # another file has the final name: .part left alone
UNRECOGNISED = "unrecognised"  # not a WAV or Ogg file we can repair: left alone
FAILED = "failed"  # an OSError while repairing: left alone


@dataclass(frozen=True)
class Recovered:
    part: str  # path of the .part file
    path: str  # the final path it was (or would have been) published as
    outcome: str  # one of RECOVERED, DUPLICATE, CONFLICT, UNRECOGNISED, FAILED
    kind: str = ""  # "wav" or "ogg"
    audio_bytes: int = 0  # WAV: PCM bytes kept; Ogg: bytes of whole pages kept
    removed_bytes: int = 0  # bytes cut from the end (a torn sample frame or page)
    detail: str = ""


def recover_directory(path: str) -> list[Recovered]:
    """Repair and publish every ``*.part`` file in ``path`` (not recursive); sorted by name."""
    results = []
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    for name in names:
        if name.endswith(PART_SUFFIX) and len(name) > len(PART_SUFFIX):
            full = os.path.join(path, name)
            if os.path.isfile(full) and not os.path.islink(full):
                results.append(recover_file(full))
    return results


def recover_file(part: str) -> Recovered:
    final = part[: -len(PART_SUFFIX)]
    try:
        if os.path.lexists(final):
            if os.path.samefile(part, final):
                os.unlink(part)
                return Recovered(part, final, DUPLICATE, detail="second link of the published file")
            return Recovered(part, final, CONFLICT, detail="final name exists")
        with open(part, "r+b") as handle:
            head = handle.read(12)
            if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
                kind, result = "wav", _repair_wav(handle)
            elif head[:4] == b"OggS":
                kind, result = "ogg", _repair_ogg(handle)
            else:
                return Recovered(part, final, UNRECOGNISED, detail="neither WAV nor Ogg")
            if isinstance(result, str):
                return Recovered(part, final, UNRECOGNISED, kind, detail=result)
            handle.flush()
            os.fsync(handle.fileno())
        publish(part, final)
    except OSError as e:
        return Recovered(part, final, FAILED, detail=f"{type(e).__name__}: {e.strerror or e}")
    kept, removed = result
    return Recovered(part, final, RECOVERED, kind, kept, removed)


def _repair_wav(handle) -> tuple[int, int] | str:  # noqa: ANN001
    size = os.fstat(handle.fileno()).st_size
    offset = 12
    block_align = None
    while offset + 8 <= size:
        handle.seek(offset)
        chunk_id, chunk_size = struct.unpack("<4sI", handle.read(8))
        if chunk_id == b"fmt ":
            fmt = handle.read(min(chunk_size, 16))
            if len(fmt) < 16:
                return "truncated fmt chunk"
            block_align = struct.unpack_from("<H", fmt, 12)[0]
        elif chunk_id == b"data":
            if not block_align:
                return "data chunk before a usable fmt chunk"
            start = offset + 8
            available = size - start
            kept = available - available % block_align
            if start + kept != size:
                handle.truncate(start + kept)
            # Over 4 GiB the fields saturate; readers that read to the end still get it all.
            handle.seek(4)
            handle.write(struct.pack("<I", min(start - 8 + kept, 0xFFFFFFFF)))
            handle.seek(offset + 4)
            handle.write(struct.pack("<I", min(kept, 0xFFFFFFFF)))
            return kept, size - (start + kept)
        offset += 8 + chunk_size + (chunk_size & 1)
    return "no data chunk"


def _repair_ogg(handle) -> tuple[int, int] | str:  # noqa: ANN001
    size = os.fstat(handle.fileno()).st_size
    position = 0
    while position + 27 <= size:
        handle.seek(position)
        header = handle.read(27)
        if header[:4] != b"OggS":
            break
        lacing = handle.read(header[26])
        if len(lacing) < header[26]:
            break
        body = handle.read(sum(lacing))
        if len(body) < sum(lacing):
            break
        page = bytearray(header) + lacing + body
        expected = struct.unpack_from("<I", page, 22)[0]
        page[22:26] = b"\0\0\0\0"
        if ogg_crc(page) != expected:
            break
        position += len(page)
    if position == 0:
        return "no whole Ogg page"
    if position != size:
        handle.truncate(position)
    return position, size - position
