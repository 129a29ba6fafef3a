"""Where a call's memory goes: the real server under load, its RSS per call and a tracemalloc
breakdown per file:line (or per file) of what the calls hold.

    python -m bench.memory [--calls 500] [--rate 200] [--srtp on|off] [--at-rest on|off]
                           [--frames 1] [--group lineno|filename|traceback] [--top 30]
                           [--set section.key=value]

``twistd -n siprec`` from this tree (as ``python -m bench`` runs it, via bench.memserver so that
tracemalloc starts before siprecd is imported), the bench generator placing ``--calls`` SIPREC
calls with two PCMU streams each, media flowing (the C sender).  Once every call is up and its
media has flowed ``--settle`` seconds, the process's VmRSS minus before the first call, divided
by the calls, is the figure ``python -m bench`` reports; the tracemalloc snapshots before and
then give what Python allocated per call, by source line.

What tracemalloc cannot see: C allocations (libsrtp sessions inside pylibsrtp, OpenSSL
contexts of ``cryptography``, lxml trees, the kernel's socket buffers are not RSS) and malloc's
and pymalloc's unused space.  The report prints the RSS delta, the traced delta, and
tracemalloc's own bookkeeping (which inflates RSS: use ``--frames 0`` for the RSS figure).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc

from bench import media, probes
from bench.generator import Load, LoadPlan


class TracedSiprecd(media.Siprecd):
    """media.Siprecd started through bench.memserver."""

    def __init__(self, plan: LoadPlan, directory: str, *, at_rest: bool, frames: int,
                 overrides: dict[str, dict[str, str]] | None = None) -> None:
        super().__init__(plan, directory, at_rest=at_rest, overrides=overrides)
        self.prefix = os.path.join(directory, "memory")
        self.taken = 0
        command = self.server.command

        def traced(config_path: str) -> list[str]:
            twistd = command(config_path)
            return [sys.executable, "-m", "bench.memserver", str(frames), self.prefix, "--", *twistd[1:]]

        self.server.command = traced  # type: ignore[method-assign]

    def snapshot(self, timeout: float = 120.0) -> tuple[dict, tracemalloc.Snapshot | None]:
        assert self.server.process is not None
        self.taken += 1
        base = f"{self.prefix}.{self.taken}"
        self.server.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not os.path.exists(base + ".json"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no snapshot from the server within {timeout} s")
            time.sleep(0.05)
        with open(base + ".json") as handle:
            facts = json.load(handle)
        snap = tracemalloc.Snapshot.load(base + ".pickle") if os.path.exists(base + ".pickle") else None
        return facts, snap


def filtered(snap: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    # tracemalloc's own frames and the snapshot code (pickle) are not the server's memory.
    return snap.filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),
                               tracemalloc.Filter(False, pickle.__file__),
                               tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")))


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, calls: int, group: str,
           top: int) -> list[str]:
    stats = filtered(after).compare_to(filtered(before), group)
    total = sum(stat.size_diff for stat in stats)
    lines = [f"traced by Python: {total / calls / 1024:.1f} KiB/call "
             f"({total / 1e6:.1f} MB over {calls} calls); top {top} by {group}:"]
    for stat in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:top]:
        frame = stat.traceback[0]
        where = f"{_short(frame.filename)}:{frame.lineno}" if group != "filename" else _short(frame.filename)
        if group == "traceback":
            where = " <- ".join(f"{_short(f.filename)}:{f.lineno}" for f in stat.traceback)
        lines.append(f"  {stat.size_diff / calls:9.0f} B/call {stat.count_diff / calls:7.1f} blocks/call  {where}")
    return lines


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/lib/python3", "/wt/memory/", "/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200, help="call arrivals per second")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds of media after the last call is up, before the figures")
    parser.add_argument("--srtp", choices=("on", "off"), default="on")
    parser.add_argument("--at-rest", choices=("on", "off"), default="on")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames (0: off, RSS only)")
    parser.add_argument("--group", choices=("lineno", "filename", "traceback"), default="lineno")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--port", type=int, default=20000, help="first RTP port")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    overrides: dict[str, dict[str, str]] = {}
    for item in args.set:
        name, value = item.split("=", 1)
        section, key = name.split(".", 1)
        overrides.setdefault(section, {})[key] = value
    workdir = tempfile.mkdtemp(prefix="siprecd-memory-")
    plan = LoadPlan(calls=args.calls, rate=args.rate, hold=args.settle + 3.0, srtp=args.srtp == "on",
                    direct_port=args.port, workers=2, sender="c")
    server = TracedSiprecd(plan, workdir, at_rest=args.at_rest == "on", frames=args.frames, overrides=overrides)
    server.start()
    pid = server.server.process.pid  # type: ignore[union-attr]
    plan = LoadPlan(**{**plan.__dict__, "server": server.sip_address})
    lines: list[str] = []
    try:
        facts_before, snap_before = server.snapshot()
        rss_before = probes.rss_bytes(pid)
        load = Load(plan)
        t0 = load.start()
        _sleep_until(t0 + plan.ramp + args.settle)
        rss_after = probes.rss_bytes(pid)
        # A server behind its media holds less audio than one keeping up (the rest waits in
        # the kernel's socket queues, outside its RSS): the backlog says which this was (more
        # than ~10 packets per stream waiting: behind).
        backlog = probes.udp_queues(range(args.port, args.port + 4 * args.calls + 2048))
        facts_after, snap_after = server.snapshot()
        active = probes.scrape(server.metrics_url).get("siprecd_sessions_active", 0)
        media_report = load.wait_media_done()
        ended = load.hang_up()
        # Per session set up (calls the server did not answer in time hold nothing).
        calls = max(1, facts_after["sessions"] - facts_before["sessions"])
        failures = {**media_report["failures"], **ended["failures"]}
        lines.append(f"{args.calls} calls ({'SRTP' if plan.srtp else 'RTP'}, at rest {args.at_rest}), "
                     f"{int(active)} sessions active by the metrics, {calls} SessionMedia objects in the snapshot "
                     f"(the figures are per such session), failures {failures or 'none'}")
        lines.append(f"socket backlog when RSS was read: {backlog.queued_bytes} bytes in {backlog.nonempty} of "
                     f"{backlog.sockets} sockets" + ("" if backlog.queued_bytes < 2000 * backlog.sockets // 2 else
                                                     "  << the server was behind: RSS understated"))
        lines.append(f"RSS: {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB: "
                     f"{(rss_after - rss_before) / calls / 1024:.1f} KiB/call")
        delta = {key: facts_after.get(key, 0) - facts_before.get(key, 0) for key in facts_after
                 if key not in ("sessions", "census", "rss_untrimmed", "rss_trimmed", "trim_seconds")}
        if facts_after["rss_trimmed"] != facts_after["rss_untrimmed"]:
            lines.append(f"malloc_trim(0) with all calls up: RSS {facts_after['rss_untrimmed'] / 2**20:.1f} -> "
                         f"{facts_after['rss_trimmed'] / 2**20:.1f} MiB "
                         f"({(facts_after['rss_trimmed'] - rss_before) / calls / 1024:.1f} KiB/call), "
                         f"{facts_after['trim_seconds'] * 1000:.1f} ms")
        lines.append("per call: " + ", ".join(f"{key} {value / calls / (1 if key == 'gc_objects' else 1024):.1f}"
                                              f"{'' if key == 'gc_objects' else ' KiB'}"
                                              for key, value in delta.items()))
        census = {name: count - facts_before["census"].get(name, 0) for name, count in facts_after["census"].items()}
        lines.append("objects the GC tracks, per call (the most numerous types): " + ", ".join(
            f"{name.rsplit('.', 1)[-1] if name.startswith('builtins.') else name} {count / calls:.1f}"
            for name, count in sorted(census.items(), key=lambda item: -item[1])[:args.top]))
        if snap_before is not None and snap_after is not None:
            if args.group != "filename":
                lines += report(snap_before, snap_after, calls, "filename", 15)
            lines += report(snap_before, snap_after, calls, args.group, args.top)
    finally:
        server.stop()
        if args.keep:
            print(f"work files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(lines))
    return 0


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


if __name__ == "__main__":
    sys.exit(main())
