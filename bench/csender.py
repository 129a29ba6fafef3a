"""The generator's cheap media sender: packets precomputed in Python, sent by a small C helper.

The Python sender spends 2-5 us of CPU per packet building, protecting and sending it, which on
a 2-core machine takes from the server under test a third of a core or more.  Here every
stream's packets are built before the load starts, by the same ``StreamSender`` (so SRTP is
pylibsrtp under the offered key, sequence numbers and timestamps consecutive, never repeated),
into a memfd; ``bench/sender.c``, compiled with gcc at run time, maps it and sends each 1 ms
slot's packets with one ``sendmmsg`` at ``CLOCK_MONOTONIC`` deadlines, on the worker's own RTP
socket (the source port offered in SDP), and reports its lateness histogram and its CPU time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from bench.rtp import PACKET_TIME, StreamSender

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sender.c")
# Slack over the schedule's count: a stream's first turn may come up to one slot early.
SPARE_PACKETS = 2


class SenderUnavailable(RuntimeError):
    """The C sender cannot be built here (no gcc, or it failed)."""


def compile_sender(cache: str | None = None) -> str:
    """Path of the compiled sender, built once per source version (cached by its hash)."""
    compiler = shutil.which("gcc")
    if compiler is None:
        raise SenderUnavailable("the C media sender needs gcc (apt-get install gcc), or use --sender python")
    with open(SOURCE, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:16]
    directory = cache or os.path.join(tempfile.gettempdir(), f"siprecd-bench-{os.getuid()}")
    os.makedirs(directory, exist_ok=True)
    binary = os.path.join(directory, f"sender-{digest}")
    if os.path.exists(binary):
        return binary
    partial = f"{binary}.{os.getpid()}.tmp"
    build = subprocess.run([compiler, "-O2", "-Wall", "-o", partial, SOURCE], capture_output=True, text=True)
    if build.returncode != 0:
        raise SenderUnavailable(f"gcc could not build {SOURCE}: {build.stderr.strip()[-800:]}")
    os.replace(partial, binary)  # atomic: two workers building at once both end with a whole file
    return binary


def packets_needed(seconds: float) -> int:
    """Packets one stream sends in ``seconds`` of media at 20 ms, with the slot's slack."""
    return int(seconds / PACKET_TIME) + SPARE_PACKETS


def precompute(sender: StreamSender, count: int) -> bytes:
    """``count`` consecutive packets of ``sender``, back to back (each the same length).

    ``sender.sent`` is left as it was: it counts packets sent, and these are only built."""
    sent = sender.sent
    packets = b"".join([sender.next_packet() for _ in range(count)])
    sender.sent = sent
    return packets


@dataclass
class SenderReport:
    sent: int
    errors: int
    exhausted: int
    lag_buckets: list[int]
    worst: float  # seconds
    # seconds; nearly all of it the kernel's (on loopback the softirq delivering each packet into
    # the receiver's socket runs in the sender's context: about half, by perf)
    cpu: float
    realtime: bool  # it ran at SCHED_FIFO priority 1


def parse_report(line: str) -> SenderReport:
    words = line.split()
    try:
        if words[:1] != ["sent"] or words[6] != "lag" or words[14] != "worst_ns" or words[16] != "cpu_ns" or words[18] != "rt":
            raise ValueError
        numbers = [int(w) for w in words[1:6:2] + words[7:14] + [words[15], words[17], words[19]]]
    except (IndexError, ValueError):
        raise ValueError(f"the C sender's report is malformed: {line!r}") from None
    return SenderReport(numbers[0], numbers[1], numbers[2], numbers[3:10], numbers[10] / 1e9, numbers[11] / 1e9, bool(numbers[12]))


class CSender:
    """One worker's C sender process over its streams' precomputed packets."""

    def __init__(self, senders: list[StreamSender], per_stream: int, binary: str) -> None:
        self.binary = binary
        self.count = len(senders)
        self.per_stream = per_stream
        self.size = 0
        self.memfd = os.memfd_create("siprecd-bench-packets")
        with open(self.memfd, "wb", closefd=False) as out:
            for sender in senders:
                data = precompute(sender, per_stream)
                self.size = self.size or len(data) // per_stream
                if len(data) != per_stream * self.size:  # the C sender's layout is fixed-size slots
                    raise ValueError(f"stream {sender.ssrc:#x}: packets of unequal length")
                out.write(data)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, sock: int, t0: float, end: float) -> None:
        command = [self.binary, str(self.memfd), str(sock), str(self.count), str(self.size), str(self.per_stream),
                   str(int(t0 * 1e9)), str(int(end * 1e9))]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, pass_fds=(self.memfd, sock))

    def activate(self, stream: int, target: tuple[str, int], slot: int) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(f"A {stream} {target[0]} {target[1]} {slot}\n".encode())
        self.process.stdin.flush()

    def finish(self) -> SenderReport:
        """Waits for the sender to reach the media end; its report."""
        assert self.process is not None
        out, err = self.process.communicate(timeout=60)
        os.close(self.memfd)
        if self.process.returncode != 0:
            raise RuntimeError(f"the C sender exited {self.process.returncode}: {err.decode(errors='replace')[-500:]}")
        return parse_report(out.decode().strip())
