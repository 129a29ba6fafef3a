"""Figure 1, 3 and 4: one load run against one receiver, with everything measured on the way.

A run: start the receiver (siprecd under twistd, or a baseline), start the generator, and in the
steady window (all calls up) read the receiver's CPU time, resident memory and, optionally, a
py-spy profile; when the media stops, read the receiver's socket queues 0.1 s later, then its
packet counters and jitter; then hang up and stop the receiver.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from bench import probes
from bench.generator import Lag, Load, LoadPlan
from bench.rtp import PACKET_TIME

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_TOKEN = "bench-token-for-the-api"
PROFILE_MARKERS = ("datagramReceived", "doRead", "_tick", "consume", "handle_datagram", "doIteration")


@dataclass
class RunResult:
    receiver: str
    srtp: bool
    streams: int
    sent: int = 0
    counted: int = 0
    queues: probes.Queues | None = None
    jitter_ms: float | None = None
    cpu_per_packet_us: float = 0.0
    rss_per_call: float = 0.0
    lag: Lag = field(default_factory=Lag)
    generator_cpu_per_packet_us: float = 0.0  # the generator's own CPU (all its processes) from the media start
    generator_setup_seconds: float = 0.0  # its CPU before: building calls, precomputing packets
    sender: str = "python"
    sender_realtime: bool = False
    failures: dict[str, int] = field(default_factory=dict)
    profile: probes.Profile | None = None
    profile_error: str = ""
    profile_us_per_packet: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.sent - self.counted

    @property
    def generator_ok(self) -> bool:
        """The generator kept its schedule: under 1% of packets more than 5 ms late."""
        return self.lag.late_fraction(5) < 0.01

    @property
    def zero_loss(self) -> bool:
        queues_empty = self.queues is not None and self.queues.queued_bytes == 0
        return self.sent > 0 and self.lost == 0 and queues_empty and not self.failures

    @property
    def trusted(self) -> bool:
        """Carried with zero loss under the load as planned (the generator kept its pace)."""
        return self.zero_loss and self.generator_ok

    def line(self) -> str:
        queues = self.queues
        q = f"queued {queues.queued_bytes} B in {queues.nonempty}/{queues.sockets} sockets" if queues else "queues ?"
        jitter = f"{self.jitter_ms:.2f} ms" if self.jitter_ms is not None else "n/a"
        return (f"{self.receiver:16} {'SRTP' if self.srtp else 'RTP '} {self.streams:5d} streams: "
                f"sent {self.sent} counted {self.counted} lost {self.lost}, {q}, jitter {jitter}, "
                f"CPU {self.cpu_per_packet_us:.2f} us/packet, RSS {self.rss_per_call / 1024:.1f} KiB/call, "
                f"generator late>5ms {self.lag.late_fraction(5) * 100:.2f}% worst {self.lag.worst * 1000:.1f} ms"
                f" ({self.sender} sender{' (SCHED_FIFO)' if self.sender_realtime else ''} {self.generator_cpu_per_packet_us:.2f} us CPU/packet"
                f", {self.generator_setup_seconds:.1f} s CPU before the load)"
                + (f", failures {self.failures}" if self.failures else "")
                + "".join(f"; {note}" for note in self.notes)
                + ("" if self.zero_loss else "  << LOSS")
                + ("" if self.generator_ok else "  << GENERATOR LATE: not counted"))


class Baseline:
    """A receiver process from bench.receivers on the generator's direct ports."""

    def __init__(self, kind: str, plan: LoadPlan, directory: str) -> None:
        self.kind = kind
        self.plan = plan
        self.directory = directory
        self.result_path = os.path.join(directory, f"{kind}.json")
        self.process: subprocess.Popen[str] | None = None

    @property
    def name(self) -> str:
        return {"count": "count-only", "media": "bare media path"}[self.kind]

    def start(self) -> int:
        command = [sys.executable, "-m", "bench.receivers", self.kind, "--port", str(self.plan.direct_port),
                   "--streams", str(self.plan.streams), "--directory", self.directory, "--result", self.result_path]
        if self.plan.srtp:
            command.append("--srtp")
        env = dict(os.environ, PYTHONPATH=REPOSITORY)
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=env, cwd=self.directory)
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "listening":
            raise RuntimeError(f"baseline {self.kind} did not start: {line}{self.process.stdout.read()}")  # type: ignore[union-attr]
        return self.process.pid

    def counted(self) -> int | None:
        return None  # known only once stopped

    def jitter(self) -> float | None:
        return None

    def stop(self) -> dict[str, Any]:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        with open(self.result_path) as handle:
            return json.load(handle)


class Siprecd:
    """``twistd -n siprec`` from this working tree, configured for the run."""

    def __init__(self, plan: LoadPlan, directory: str, *, at_rest: bool,
                 overrides: dict[str, dict[str, str]] | None = None) -> None:
        sys.path.insert(0, REPOSITORY)
        from tests.e2e.server import Server

        self.plan = plan
        self.at_rest = at_rest
        ports = 4 * plan.calls + 2048  # room for ports other processes hold
        sections: dict[str, dict[str, str]] = {
            "sip": {"rate_limit": "0", "t1": "0.5"},
            "media": {"port_min": str(plan.direct_port), "port_max": str(plan.direct_port + ports - 1)},
            "siprec": {"max_sessions": str(plan.calls + 100)},
            "web": {"api_token": API_TOKEN},
            "recording": {"min_free_space": "0"},
            # Calls still up at the end are reported (see stop), not waited for.
            "service": {"drain_timeout": "5"},
        }
        if at_rest:
            sections["encryption"] = {"enabled": "true", "key_store": "memory"}
        for section, values in (overrides or {}).items():
            sections.setdefault(section, {}).update(values)
        self.server = Server(directory, sections=sections)

    @property
    def name(self) -> str:
        return "siprecd+at-rest" if self.at_rest else "siprecd"

    def start(self) -> int:
        self.server.start(timeout=60)
        assert self.server.process is not None
        self.base = probes.scrape(self.metrics_url).get("siprecd_rtp_packets_total", 0.0)
        return self.server.process.pid

    @property
    def sip_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.sip_port)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.web_port}/metrics"

    def counted(self) -> int | None:
        return int(probes.scrape(self.metrics_url).get("siprecd_rtp_packets_total", 0.0) - self.base)

    def jitter(self) -> float | None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.server.web_port}/api/sessions",
                                         headers={"Authorization": f"Bearer {API_TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            sessions = json.load(response)["sessions"]
        values = [s["jitter_ms"] for session in sessions for s in session.get("streams", [])
                  if s.get("jitter_ms") is not None]
        return sum(values) / len(values) if values else None

    def stop(self) -> dict[str, Any]:
        try:
            active = int(probes.scrape(self.metrics_url).get("siprecd_sessions_active", 0))
        except OSError:
            active = -1
        code = self.server.stop(timeout=60)
        return {"exit": code, "active": active}


def run(receiver: str, plan: LoadPlan, *, profile: bool = False, workdir: str | None = None,
        overrides: dict[str, dict[str, str]] | None = None) -> RunResult:
    """One load run of ``plan`` against ``receiver`` (count, media, siprecd, siprecd+at-rest)."""
    directory = tempfile.mkdtemp(prefix=f"bench-{receiver}-", dir=workdir)
    target: Baseline | Siprecd
    if receiver in ("count", "media"):
        target = Baseline(receiver, plan, directory)
    else:
        target = Siprecd(plan, directory, at_rest=receiver == "siprecd+at-rest", overrides=overrides)
    result = RunResult(target.name, plan.srtp, plan.streams)
    pid = target.start()
    if isinstance(target, Siprecd):
        plan = LoadPlan(**{**plan.__dict__, "server": target.sip_address})
    try:
        rss_before = probes.rss_bytes(pid)
        load = Load(plan)
        t0 = load.start()
        window_start = t0 + plan.ramp + min(1.5, plan.hold * 0.25)
        window_end = t0 + plan.media_end - 0.3
        _sleep_until(window_start)
        cpu_start = probes.cpu_seconds(pid)
        spy = None
        profile_path = os.path.join(directory, "profile.txt")
        if profile:
            spy_seconds = probes.profile_seconds(window_end - window_start - 0.2)
            spy = probes.record_profile(pid, spy_seconds, profile_path)
        _sleep_until(window_end)
        cpu = probes.cpu_seconds(pid) - cpu_start
        rss_after = probes.rss_bytes(pid)
        expected_packets = plan.streams * (window_end - window_start) / PACKET_TIME
        result.cpu_per_packet_us = cpu / expected_packets * 1e6
        result.rss_per_call = (rss_after - rss_before) / plan.calls
        media = load.wait_media_done()
        _sleep_until(t0 + plan.media_end + 0.1)
        ports = sorted({port for _, port in media["targets"]})
        result.queues = probes.udp_queues(ports)
        result.sent, result.lag = media["sent"], media["lag"]
        result.generator_cpu_per_packet_us = media["cpu"] / max(1, media["sent"]) * 1e6
        result.generator_setup_seconds = media["cpu_setup"]
        result.sender = plan.sender
        result.sender_realtime = bool(media.get("realtime"))
        result.failures = dict(media["failures"])
        counted = target.counted()
        result.jitter_ms = target.jitter()
        if spy is not None:
            _, error = spy.communicate(timeout=60)
            if spy.returncode == 0 and os.path.exists(profile_path):
                with open(profile_path) as handle:
                    result.profile = probes.parse_profile(handle.read(), 250, PROFILE_MARKERS)
                # Busy samples per packet due in the profiled seconds: py-spy's view of CPU/packet.
                result.profile_us_per_packet = (
                    result.profile.active_seconds / (plan.streams * spy_seconds / PACKET_TIME) * 1e6)
            else:
                result.profile_error = error.decode(errors="replace")[-500:]
        ended = load.hang_up()
        for reason, count in ended["failures"].items():
            if reason not in result.failures or count > result.failures[reason]:
                result.failures[reason] = count
    finally:
        final = target.stop()
    if counted is None:
        counted = int(final["packets"])
        result.jitter_ms = final.get("jitter_ms")
        if final.get("bad"):
            result.failures["rejected by the receiver"] = final["bad"]
    if final.get("active"):
        result.notes.append(f"{final['active']} session(s) still active after the BYEs (-1: unknown)")
    if final.get("exit"):
        # Not a loss (counts and queues were read before), but a stop that took SIGKILL matters.
        result.notes.append(f"twistd exited {final['exit']} (-9: killed after not stopping within 60 s)")
    result.counted = counted
    return result


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)
