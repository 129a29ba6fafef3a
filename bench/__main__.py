"""``python -m bench``: the short benchmark (under 5 minutes), ending with one summary line.

Figure 1 (streams with zero loss, jitter added), 3 (RSS per call) and 4 (CPU per packet, with a
py-spy profile of siprecd) from load runs against the count-only receiver, the bare media path,
siprecd and siprecd with encryption at rest, each at the same stream counts on the same ports,
in plain RTP and (when the server answers SDES) SRTP; figure 2 (call setups per second) from
SIPp against siprecd and against a SIPp UAS.  ``--streams 1000,2000,3000`` steps each receiver
up until a step loses packets; the figure is the highest step it carried.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time

from bench import callrate, media
from bench.generator import SENDERS, LoadPlan
from bench.report import Figures, summary_line

RECEIVERS = ("count", "media", "siprecd", "siprecd+at-rest")


def server_has_srtp() -> bool:
    try:
        return importlib.util.find_spec("siprecd.security.srtp") is not None
    except ModuleNotFoundError:  # no siprecd.security package at all
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="600", help="stream counts to step through, comma-separated")
    parser.add_argument("--rate", type=float, default=150, help="call arrivals per second of the media runs")
    parser.add_argument("--hold", type=float, default=6, help="seconds at full load after the last arrival")
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    parser.add_argument("--sender", choices=SENDERS, default="c",
                        help="media sender: c (precomputed packets, sendmmsg; needs gcc) or python")
    parser.add_argument("--cps", default="150,300,450,600", help="call rates to step through (SIPp)")
    parser.add_argument("--cps-seconds", type=float, default=3, help="seconds of calls per call-rate step")
    parser.add_argument("--srtp", choices=("auto", "on", "off"), default="auto",
                        help="SRTP runs too (auto: when the server has siprecd.security.srtp)")
    parser.add_argument("--receivers", default=",".join(RECEIVERS))
    parser.add_argument("--port", type=int, default=20000, help="first RTP port of the media runs (below the ephemeral range)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a siprecd config key for the siprecd runs (repeatable)")
    parser.add_argument("--server-workers", type=int, default=1, metavar="N",
                        help="siprecd's [service] workers for the siprecd runs (1: one process; CPU and "
                             "memory are summed over the parent and its workers)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (recordings, logs)")
    args = parser.parse_args(argv)
    overrides: dict[str, dict[str, str]] = {}
    for item in args.set:
        name, equals, value = item.partition("=")
        section, dot, key = name.partition(".")
        if not (equals and dot and section and key):
            parser.error(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. recording.chunk_size=8192")
        overrides.setdefault(section, {})[key] = value
    if args.server_workers < 1:
        parser.error("--server-workers: at least 1")
    if args.server_workers > 1:
        overrides.setdefault("service", {})["workers"] = str(args.server_workers)

    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="siprecd-bench-")
    steps = [int(n) for n in args.streams.split(",")]
    receivers = [r for r in args.receivers.split(",") if r]
    unknown = set(receivers) - set(RECEIVERS)
    if unknown:
        parser.error(f"--receivers: unknown {', '.join(sorted(unknown))}; known: {', '.join(RECEIVERS)}")
    srtp_modes = [False]
    if args.srtp == "on" or (args.srtp == "auto" and server_has_srtp()):
        srtp_modes.append(True)
    elif args.srtp == "auto":
        print("SRTP: this server has no siprecd.security.srtp (SDES not merged): plain RTP only", flush=True)
    figures = Figures(server_workers=args.server_workers)
    for srtp in srtp_modes:
        for receiver in receivers:
            for streams in steps:
                plan = LoadPlan(calls=streams // 2, rate=args.rate, hold=args.hold, srtp=srtp,
                                direct_port=args.port, workers=args.workers, sender=args.sender)
                for _attempt in range(2):  # once more if only the generator fell behind
                    result = media.run(receiver, plan, profile=receiver.startswith("siprecd"), workdir=workdir,
                                       overrides=overrides)
                    print(result.line(), flush=True)
                    figures.add(result)
                    if result.profile is not None:
                        print(figures.profile_text(result), flush=True)
                    elif result.profile_error:
                        print(f"  py-spy failed: {result.profile_error}", flush=True)
                    if not result.zero_loss or result.generator_ok:
                        break
                if not result.trusted:
                    break
    rates = [int(r) for r in args.cps.split(",") if r]
    if rates:
        # The target is with SDES-SRTP and encryption at rest on: SRTP offers when the
        # server has SRTP (the SIPp UAS answers them with its plain SDP all the same).
        srtp = srtp_modes[-1]
        figures.cps_srtp = srtp
        figures.cps_baseline = callrate.against_sipp_uas(rates, args.cps_seconds, workdir, srtp=srtp)
        figures.cps_siprecd = callrate.against_siprecd(rates, args.cps_seconds, workdir, at_rest=True, srtp=srtp,
                                                       overrides=overrides)
        name = "siprecd+at-rest" + (" SRTP" if srtp else "")
        for name, run_steps in (("SIPp UAS", figures.cps_baseline), (name, figures.cps_siprecd)):
            print(f"call rate {name:16}: " + ", ".join(
                f"{s.rate}/s {'ok' if s.passed else f'FAILED {s.failed}/{s.calls}'}" for s in run_steps), flush=True)
    if args.keep:
        print(f"work files kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"(took {time.monotonic() - started:.0f} s)")
    print(summary_line(figures))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
