"""What the harness reads from outside a receiver process: its socket queues, CPU time and
resident memory from /proc, its Prometheus counters, and a py-spy profile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Queues:
    sockets: int  # of the ports asked about, how many were found bound
    queued_bytes: int  # sum of rx_queue
    nonempty: int  # sockets with rx_queue > 0
    drops: int  # the kernel's per-socket drop counters, summed


def udp_queues(ports: Iterable[int], text: str | None = None) -> Queues:
    """rx_queue of the UDP sockets bound to ``ports`` (any address), from /proc/net/udp."""
    wanted = set(ports)
    if text is None:
        with open("/proc/net/udp") as handle:
            text = handle.read()
    sockets = queued = nonempty = drops = 0
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 13:
            continue
        port = int(fields[1].rsplit(":", 1)[1], 16)
        if port not in wanted:
            continue
        rx = int(fields[4].split(":")[1], 16)
        sockets += 1
        queued += rx
        nonempty += rx > 0
        drops += int(fields[12])
    return Queues(sockets, queued, nonempty, drops)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now (with ``[service] workers = N`` the
    server is a parent and N worker processes: CPU and memory are the whole tree's)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended while listed
        children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live descendants."""
    return _own_cpu(pid) + sum(_quietly(_own_cpu, member, 0.0) for member in process_tree(pid)[1:])


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its live descendants."""
    return _own_rss(pid) + sum(_quietly(_own_rss, member, 0) for member in process_tree(pid)[1:])


def _quietly(read: Callable[[int], T], pid: int, gone: T) -> T:
    """A descendant may end between listing and reading: it then counts as ``gone``."""
    try:
        return read(pid)
    except (OSError, ValueError):
        return gone


def _own_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        # The command name may hold spaces: fields are counted after its closing parenthesis.
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _own_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS in /proc/{pid}/status")


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format: each metric name -> the sum of its samples over all labels."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + float(match.group(3))
    return totals


def scrape(url: str, timeout: float = 10.0) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback URL)
        return parse_metrics(response.read().decode())


@dataclass(frozen=True)
class Profile:
    samples: int
    rate: int
    self_time: list[tuple[str, float]]  # function -> share of samples, most first
    under: dict[str, float]  # share of samples with the marker function on the stack

    @property
    def active_seconds(self) -> float:
        return self.samples / self.rate


def profile_seconds(seconds: float) -> int:
    """What ``py-spy record --duration`` is given for a window of ``seconds`` (whole seconds)."""
    return max(1, round(seconds))


def record_profile(pid: int, seconds: float, output: str, rate: int = 250) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` (collapsed stacks) on a running process; wait() on the result."""
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(profile_seconds(seconds)),
               "--rate", str(rate), "--format", "raw", "--output", output, "--nonblocking",
               "--subprocesses"]
    venv_spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.path.exists(venv_spy):
        command[0] = venv_spy
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def parse_profile(text: str, rate: int, markers: Iterable[str] = ()) -> Profile:
    """py-spy's raw (collapsed) format: ``frame;frame;...;leaf count`` per line, frames as
    ``function (file:line)``."""
    leaves: Counter[str] = Counter()
    under: Counter[str] = Counter()
    markers = tuple(markers)
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaves[_function(frames[-1])] += count
        for marker in markers:
            if any(_calls(frame, marker) for frame in frames):
                under[marker] += count
    share = (lambda n: n / total) if total else (lambda n: 0.0)
    return Profile(total, rate, [(name, share(n)) for name, n in leaves.most_common(12)],
                   {marker: share(under[marker]) for marker in markers})


def _calls(frame: str, function: str) -> bool:
    """Whether a frame is ``function`` (bare, or qualified as ``Class.function``)."""
    name = frame.partition(" (")[0]
    return name == function or name.endswith("." + function)


def _function(frame: str) -> str:
    """``function (path/to/module.py:123)`` -> ``function (module.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{name} ({os.path.basename(path)})" if path else name
