"""``twistd`` with tracemalloc on, for bench.memory: the real server, and a snapshot on demand.

    python -m bench.memserver FRAMES SNAPSHOT_PREFIX -- twistd arguments...

tracemalloc starts before siprecd is imported (FRAMES deep; 0: no tracing, only the RSS and
malloc figures, so that tracing's own memory does not blur them).  Each SIGUSR2 writes
SNAPSHOT_PREFIX.N.pickle (a tracemalloc snapshot, when tracing) and SNAPSHOT_PREFIX.N.json
(tracemalloc's own memory, the GC's object count, pymalloc's arena figures).  Python runs the
handler in the main thread between bytecodes, i.e. between two reactor events: the snapshot
sees the server's state as it stands, never half an update.
"""

from __future__ import annotations

import ctypes
import gc
import io
import json
import os
import re
import signal
import sys
import tracemalloc
from types import FrameType


def pymalloc_figures() -> dict[str, int]:
    """Arenas and the bytes in pymalloc's free blocks and free pools (fragmentation), from
    ``sys._debugmallocstats()``, which writes to the C stderr: read back through a pipe."""
    read_end, write_end = os.pipe()
    saved = os.dup(2)
    try:
        os.dup2(write_end, 2)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_end)
    with io.open(read_end, "rb") as pipe:
        text = pipe.read().decode(errors="replace")
    figures: dict[str, int] = {}
    for name, pattern in (("arenas_allocated_current", r"# arenas allocated current\s*=\s*([\d,]+)"),
                          ("arenas_bytes", r"(\d[\d,]*) arenas \* \d+ bytes/arena\s*=\s*([\d,]+)"),
                          ("free_pool_bytes", r"# bytes in available blocks\s*=\s*([\d,]+)"),
                          ("unused_pool_bytes", r"unused pools \* \d+ bytes\s*=\s*([\d,]+)"),
                          ("quantization_bytes", r"# bytes lost to quantization\s*=\s*([\d,]+)"),
                          ("pool_header_bytes", r"# bytes lost to pool headers\s*=\s*([\d,]+)")):
        match = re.search(pattern, text)
        if match:
            figures[name] = int(match.groups()[-1].replace(",", ""))
    return figures


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_figures() -> dict[str, int]:
    """glibc's heap: bytes in use (every C and large Python allocation), free inside the heap
    (fragmentation RSS may still hold), and mmapped blocks.  Empty off glibc."""
    try:
        libc = ctypes.CDLL(None)
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"malloc_in_use_bytes": info.uordblks, "malloc_free_bytes": info.fordblks,
            "malloc_mmapped_bytes": info.hblkhd}


def main() -> None:
    frames, prefix = int(sys.argv[1]), sys.argv[2]
    if sys.argv[3] != "--":
        raise SystemExit("usage: python -m bench.memserver FRAMES SNAPSHOT_PREFIX -- twistd arguments")
    if frames:
        tracemalloc.start(frames)
    taken = [0]

    def snapshot(signum: int, frame: FrameType | None) -> None:
        taken[0] += 1
        base = f"{prefix}.{taken[0]}"
        gc.collect()
        if frames:
            tracemalloc.take_snapshot().dump(base + ".pickle")
        # Live sessions as the server holds them (the divisor: the generator may have given up
        # on a call the server still holds).
        census: dict[str, int] = {}
        for o in gc.get_objects():
            name = f"{type(o).__module__}.{type(o).__qualname__}"
            census[name] = census.get(name, 0) + 1
        sessions = census.get("siprecd.siprec.session_media.SessionMedia", 0)
        facts = {"sessions": sessions, "tracemalloc_bytes": tracemalloc.get_tracemalloc_memory() if frames else 0,
                 "traced_bytes": tracemalloc.get_traced_memory()[0] if frames else 0,
                 "gc_objects": len(gc.get_objects()), **pymalloc_figures(), **malloc_figures(),
                 "census": census}
        with open(base + ".json.tmp", "w") as handle:
            json.dump(facts, handle)
        os.rename(base + ".json.tmp", base + ".json")  # the harness waits for this name

    signal.signal(signal.SIGUSR2, snapshot)
    from twisted.scripts.twistd import run
    sys.argv = ["twistd", *sys.argv[4:]]
    run()


if __name__ == "__main__":
    main()
