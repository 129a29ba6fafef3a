"""The benchmark's figures, kept per receiver, and the one summary line they end with."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.callrate import Step, best
from bench.media import RunResult


@dataclass
class Figures:
    runs: list[RunResult] = field(default_factory=list)
    cps_baseline: list[Step] = field(default_factory=list)
    cps_siprecd: list[Step] = field(default_factory=list)
    cps_srtp: bool = False  # the call-rate offers were SDES-SRTP
    server_workers: int = 1  # siprecd's [service] workers in the siprecd runs

    def add(self, result: RunResult) -> None:
        self.runs.append(result)

    def of(self, receiver: str, srtp: bool) -> list[RunResult]:
        return [r for r in self.runs if r.receiver == receiver and r.srtp == srtp]

    def carried(self, receiver: str, srtp: bool) -> int:
        """The most streams a receiver carried with zero loss and queues empty (0: none)."""
        return max((r.streams for r in self.of(receiver, srtp) if r.trusted), default=0)

    def least_loaded(self, receiver: str, srtp: bool) -> RunResult | None:
        """The carried run at the lowest step: the figures for CPU, memory and jitter (near
        saturation, CPU per packet only says "one core" and jitter says "queueing")."""
        carried = [r for r in self.of(receiver, srtp) if r.trusted]
        return min(carried, key=lambda r: r.streams) if carried else None

    def profile_text(self, result: RunResult) -> str:
        profile = result.profile
        assert profile is not None
        lines = [f"  py-spy: {profile.samples} samples ({profile.active_seconds:.1f} s busy, "
                 f"{result.profile_us_per_packet:.2f} us per packet); on the stack: "
                 + ", ".join(f"{name} {share * 100:.0f}%" for name, share in profile.under.items())]
        lines.append("  self time: " + ", ".join(f"{name} {share * 100:.0f}%" for name, share in profile.self_time[:8]))
        return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def summary_line(figures: Figures) -> str:
    parts = []
    for srtp in sorted({r.srtp for r in figures.runs}):
        mode = "SRTP" if srtp else "RTP"
        count = figures.carried("count-only", srtp)
        for name in ("siprecd", "siprecd+at-rest"):
            if not figures.of(name, srtp):
                continue
            carried = figures.carried(name, srtp)
            run = figures.least_loaded(name, srtp)
            bare = None
            if run is not None:
                # CPU and jitter compared at the same stream count (the per-packet cost falls as
                # the load rises).
                same = [r for r in figures.of("bare media path", srtp) if r.streams == run.streams]
                bare = same[0] if same else None
            text = f"{mode} {name}: {carried} streams zero-loss (count-only {count}, {_ratio(carried, count)})"
            if run is not None:
                text += f"; at {run.streams}: CPU {run.cpu_per_packet_us:.2f} us/pkt"
                if bare is not None:
                    text += f" (bare path {bare.cpu_per_packet_us:.2f}, {_ratio(run.cpu_per_packet_us, bare.cpu_per_packet_us)})"
                text += f", {run.rss_per_call / 1024:.0f} KiB/call"
                if run.jitter_ms is not None and bare is not None and bare.jitter_ms is not None:
                    text += f", jitter {run.jitter_ms - bare.jitter_ms:+.2f} ms"
            parts.append(text)
    if figures.cps_siprecd or figures.cps_baseline:
        ours, theirs = best(figures.cps_siprecd), best(figures.cps_baseline)
        parts.append(f"cps{' SRTP' if figures.cps_srtp else ''} {ours}/s (SIPp UAS {theirs}/s, {_ratio(ours, theirs)})")
    kept = [r for r in figures.runs if r.generator_ok]
    worst_late = max((r.lag.late_fraction(5) for r in kept), default=0.0)
    dropped = len(figures.runs) - len(kept)
    senders = sorted({r.sender for r in figures.runs})
    worst_cpu = max((r.generator_cpu_per_packet_us for r in figures.runs), default=0.0)
    parts.append(f"generator late>5ms max {worst_late * 100:.2f}%"
                 + (f" ({dropped} run(s) with a late generator not counted)" if dropped else "")
                 + (f", CPU max {worst_cpu:.2f} us/packet ({'/'.join(senders)} sender)" if senders else ""))
    workers = f" (siprecd with {figures.server_workers} workers)" if figures.server_workers > 1 else ""
    return f"summary{workers}: " + "; ".join(parts)
