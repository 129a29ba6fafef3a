"""The load generator: a SIPREC SRC simulator holding N concurrent calls over several processes.

Each call is a SIPREC INVITE (multipart SDP + RFC 7865 metadata, two labelled PCMU m-lines,
RTP/AVP or RTP/SAVP with ``a=crypto``), then two RTP streams paced at real 20 ms intervals to the
ports of the answer, then a BYE.  Calls arrive at ``rate`` per second; every call's media stops
at the same moment, ``hold`` seconds after the last arrival, so the check that the server's
socket queues are empty 0.1 s later covers every stream; the BYEs come after that check.

Without a SIP server (``server=None``) the streams go straight to ``direct_port`` + 4i and +2
(the baseline receivers listen there), SRTP keyed with ``rtp.stream_key``.

Pacing: a worker keeps its streams in 20 one-millisecond slots (a call's slot is its arrival
time modulo 20 ms, so traffic is spread as real calls are) and sends each slot's packets at
``t0 + n * 1 ms``.  How late each packet left against that schedule is the generator's own lag,
reported with the results: a figure is only trusted when the generator kept up.

Two media senders keep that schedule: ``python`` (each packet built, protected and sent as it is
due) and ``c`` (bench.csender: every packet precomputed before the load, sent by a small C
helper with ``sendmmsg``: its CPU is the kernel's, about half of the Python sender's for RTP
and a third for SRTP).  The SIP side is the same for both.  The
generator's CPU is counted from the start of the media (the precomputation is reported apart).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import select
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench import sip
from bench.csender import CSender, compile_sender, packets_needed
from bench.rtp import PACKET_TIME, StreamSender, stream_key

SENDERS = ("python", "c")
SLOTS = 20
SLOT = PACKET_TIME / SLOTS
# Lateness histogram upper bounds, milliseconds (the last bucket is everything above 50 ms).
LAG_BOUNDS_MS = (1, 2, 5, 10, 20, 50)
INVITE_TIMEOUT = 8.0


@dataclass(frozen=True)
class LoadPlan:
    calls: int
    rate: float  # call arrivals per second
    hold: float  # seconds at full load after the last arrival
    srtp: bool = False
    server: tuple[str, int] | None = None  # the SRS's SIP address; None: straight to direct_port
    direct_port: int = 40000
    workers: int = 2
    address: str = "127.0.0.1"
    sender: str = "python"  # one of SENDERS

    @property
    def streams(self) -> int:
        return 2 * self.calls

    def arrival(self, index: int) -> float:
        return index / self.rate

    @property
    def ramp(self) -> float:
        return self.arrival(self.calls - 1) if self.calls else 0.0

    @property
    def media_end(self) -> float:
        return self.ramp + self.hold

    def worker_calls(self, worker: int) -> range:
        return range(worker, self.calls, self.workers)


@dataclass
class Lag:
    """How late packets left against their schedule."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(LAG_BOUNDS_MS) + 1))
    worst: float = 0.0  # seconds

    def record(self, lateness: float, packets: int) -> None:
        ms = lateness * 1000
        for i, bound in enumerate(LAG_BOUNDS_MS):
            if ms < bound:
                self.buckets[i] += packets
                break
        else:
            self.buckets[-1] += packets
        if lateness > self.worst:
            self.worst = lateness

    def merge(self, other: Lag) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.worst = max(self.worst, other.worst)

    def late_fraction(self, threshold_ms: float = 5) -> float:
        total = sum(self.buckets)
        if not total:
            return 0.0
        late = sum(count for bound, count in zip((0, *LAG_BOUNDS_MS), self.buckets) if bound >= threshold_ms)
        return late / total

    def percentile_ms(self, fraction: float) -> float:
        """Upper bound of the bucket holding the given fraction of packets."""
        total = sum(self.buckets)
        if not total:
            return 0.0
        seen = 0
        for bound, count in zip((*LAG_BOUNDS_MS, float("inf")), self.buckets):
            seen += count
            if seen >= fraction * total:
                return bound if bound != float("inf") else self.worst * 1000
        return self.worst * 1000


@dataclass
class Call:
    index: int
    position: int  # in its worker's calls; its streams are 2 * position and the next
    dialog: sip.Dialog | None
    senders: list[StreamSender]
    invite: bytes = b""
    targets: list[tuple[str, int]] = field(default_factory=list)
    state: str = "new"  # new, inviting, active, failed, bye, done
    sent_at: float = 0.0
    retransmit_at: float = 0.0
    interval: float = 0.5
    status: int = 0


class Worker:
    """One generator process's share of the calls (run in the child)."""

    def __init__(self, plan: LoadPlan, number: int) -> None:
        if plan.sender not in SENDERS:
            raise ValueError(f"unknown media sender {plan.sender!r}: expected one of {', '.join(SENDERS)}")
        self.plan = plan
        self.number = number
        self.t0 = 0.0  # set by run_media
        self.cpu_start = 0.0
        self.cpu_setup = 0.0
        self.media: CSender | None = None
        self.media_done = False
        self.c_sent = 0
        self.c_cpu = 0.0
        self.c_realtime = False
        self.lag = Lag()
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((plan.address, 0))
        self.sip.setblocking(False)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        self.rtp.bind((plan.address, 0))
        self.slots: list[list[Call]] = [[] for _ in range(SLOTS)]
        self.calls: list[Call] = []
        self.by_call_id: dict[str, Call] = {}
        self.waiting: dict[int, Call] = {}  # calls with an INVITE or BYE awaiting its answer
        self.failures: dict[str, int] = {}
        rtp_port = self.rtp.getsockname()[1]
        local = self.sip.getsockname()
        rng = random.Random(number)
        for index in plan.worker_calls(number):
            keys: tuple[bytes | None, bytes | None]
            if plan.srtp:
                seed = f"{index}" if plan.server is None else f"{index}-{rng.getrandbits(64)}"
                keys = (stream_key(f"{seed}-0".encode()), stream_key(f"{seed}-1".encode()))
            else:
                keys = (None, None)
            senders = [StreamSender(rng.getrandbits(32), seq=rng.getrandbits(16), timestamp=rng.getrandbits(32), key=k)
                       for k in keys]
            dialog = None
            call = Call(index, len(self.calls), None, senders)
            if plan.server is not None:
                dialog = sip.Dialog(f"bench{os.getpid()}x{index}x{rng.getrandbits(32):08x}", local, plan.server)
                call.dialog = dialog
                call.invite = dialog.invite(sip.offer(plan.address, rtp_port, keys))
                self.by_call_id[dialog.call_id] = call
            self.calls.append(call)
        if plan.sender == "c":
            # Every stream's packets until the media end; the first call's is the longest.
            per_stream = packets_needed(plan.media_end - plan.arrival(self.calls[0].index)) if self.calls else 0
            self.media = CSender([s for c in self.calls for s in c.senders], per_stream, compile_sender())
        self.cpu_setup = time.process_time()

    # -- SIP ----------------------------------------------------------------------------------

    def _send_sip(self, data: bytes) -> None:
        try:
            self.sip.sendto(data, self.plan.server)  # type: ignore[arg-type]
        except OSError as exc:  # a full buffer: the retransmission timer tries again
            self.failures[f"sip send: {exc.strerror}"] = self.failures.get(f"sip send: {exc.strerror}", 0) + 1

    def _activate(self, call: Call, targets: list[tuple[str, int]]) -> None:
        self.waiting.pop(call.index, None)
        call.targets = targets
        call.state = "active"
        slot = int((self.plan.arrival(call.index) % PACKET_TIME) / SLOT) % SLOTS
        if self.media is None:
            self.slots[slot].append(call)
            return
        if self.media_done:  # an answer after the media end: nothing left to send
            return
        for number, target in enumerate(targets):
            self.media.activate(2 * call.position + number, target, slot)

    def _fail(self, call: Call, reason: str) -> None:
        self.waiting.pop(call.index, None)
        call.state = "failed"
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def read_sip(self) -> None:
        while True:
            try:
                data = self.sip.recv(65535)
            except BlockingIOError:
                return
            except OSError:
                return
            reply = sip.parse_reply(data)
            call = self.by_call_id.get(reply.call_id) if reply else None
            if reply is None or call is None or call.dialog is None or reply.status < 200:
                continue
            if reply.method == "INVITE":
                if reply.status < 300:
                    call.dialog.to = reply.to
                    self._send_sip(call.dialog.ack())
                    if call.state == "inviting":
                        ports = [p for p in reply.ports if p]
                        if len(ports) != len(call.senders):
                            self._fail(call, f"answer with {len(ports)} usable m-lines")
                        else:
                            self._activate(call, [(self.plan.server[0], p) for p in ports])  # type: ignore[index]
                elif call.state == "inviting":
                    call.status = reply.status
                    self._fail(call, f"INVITE answered {reply.status}")
            elif reply.method == "BYE" and call.state == "bye":
                self.waiting.pop(call.index, None)
                call.state = "done" if reply.status < 300 else "bye failed"
                if reply.status >= 300:
                    self.failures[f"BYE answered {reply.status}"] = self.failures.get(f"BYE answered {reply.status}", 0) + 1

    def retransmit(self, now: float) -> None:
        for call in list(self.waiting.values()):
            if now - call.sent_at > INVITE_TIMEOUT:
                self._fail(call, f"no final response to {'INVITE' if call.state == 'inviting' else 'BYE'}")
                continue
            if now < call.retransmit_at:
                continue
            self._send_sip(call.invite if call.state == "inviting" else call.dialog.bye())  # type: ignore[union-attr]
            call.interval = min(call.interval * 2, 4.0)
            call.retransmit_at = now + call.interval

    def _start(self, call: Call, now: float) -> None:
        if call.dialog is None:
            port = self.plan.direct_port + 4 * call.index
            self._activate(call, [(self.plan.address, port), (self.plan.address, port + 2)])
            return
        call.state = "inviting"
        self.waiting[call.index] = call
        call.sent_at = now
        call.retransmit_at = now + 0.5
        self._send_sip(call.invite)

    # -- the paced media loop -----------------------------------------------------------------

    def run_media(self, t0: float) -> None:
        self.t0 = t0
        self.cpu_start = time.process_time()
        if self.media is not None:
            self._run_media_c()
        else:
            self._run_media_python()
        for call in self.calls:
            if call.state == "inviting":
                self._fail(call, "no answer before the media end")

    def _run_media_c(self) -> None:
        """SIP and arrivals here; the C sender paces the packets on this worker's RTP socket."""
        assert self.media is not None
        plan, t0 = self.plan, self.t0
        end = t0 + plan.media_end
        self.media.start(self.rtp.fileno(), t0, end)
        pending = list(self.calls)
        while True:
            now = time.monotonic()
            if now >= end:
                break
            while pending and t0 + plan.arrival(pending[0].index) <= now:
                self._start(pending.pop(0), now)
            wait = min(t0 + plan.arrival(pending[0].index) if pending else end, end) - now
            if plan.server is not None:
                select.select([self.sip], [], [], min(max(0.0, wait), 0.05))
                self.read_sip()
                self.retransmit(time.monotonic())
            elif wait > 0:
                time.sleep(wait)
        self.media_done = True
        report = self.media.finish()
        self.c_sent, self.c_cpu = report.sent, report.cpu
        self.lag = Lag(report.lag_buckets, report.worst)
        if report.errors:
            self.failures["rtp send error"] = self.failures.get("rtp send error", 0) + report.errors
        self.c_realtime = report.realtime
        if report.exhausted:
            self.failures["C sender ran out of precomputed packets"] = report.exhausted
        for call in pending:
            self._fail(call, "not started before the media end")

    def _run_media_python(self) -> None:
        plan, t0 = self.plan, self.t0
        pending = list(self.calls)  # in arrival order
        end = t0 + plan.media_end
        slot_number = 0
        sendto = self.rtp.sendto
        while True:
            due = t0 + slot_number * SLOT
            if due >= end:
                break
            now = time.monotonic()
            while pending and t0 + plan.arrival(pending[0].index) <= now:
                self._start(pending.pop(0), now)
            if now < due:
                if plan.server is not None:
                    select.select([self.sip], [], [], due - now)
                    self.read_sip()
                    self.retransmit(time.monotonic())
                else:
                    time.sleep(due - now)
                continue
            sent = 0
            for call in self.slots[slot_number % SLOTS]:
                if call.state != "active":
                    continue
                for sender, target in zip(call.senders, call.targets):
                    try:
                        sendto(sender.next_packet(), target)
                    except OSError:
                        self.failures["rtp send error"] = self.failures.get("rtp send error", 0) + 1
                    sent += 1
            if sent:
                self.lag.record(time.monotonic() - due, sent)
            slot_number += 1
        for call in pending:
            self._fail(call, "not started before the media end")

    def hang_up(self, timeout: float = 10.0) -> None:
        """BYE every active call, paced at the arrival rate (calls end as they began, not in
        one burst), and wait for the answers."""
        if self.plan.server is None:
            return
        to_end = [c for c in self.calls if c.state == "active" and c.dialog is not None]
        gap = self.plan.workers / self.plan.rate
        next_at = time.monotonic()
        deadline = next_at + gap * len(to_end) + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            while to_end and now >= next_at:
                call = to_end.pop(0)
                call.state = "bye"
                self.waiting[call.index] = call
                call.sent_at = now
                call.interval = 0.5
                call.retransmit_at = now + 0.5
                self._send_sip(call.dialog.bye())  # type: ignore[union-attr]
                next_at += gap
            if not to_end and not self.waiting:
                break
            select.select([self.sip], [], [], min(0.05, max(0.0, next_at - now)) if to_end else 0.05)
            self.read_sip()
            self.retransmit(time.monotonic())

    def report(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for call in self.calls:
            states[call.state] = states.get(call.state, 0) + 1
        sent = self.c_sent if self.media is not None else sum(s.sent for c in self.calls for s in c.senders)
        return {
            "sent": sent,
            "streams": sum(len(c.senders) for c in self.calls if c.targets),
            "targets": [t for c in self.calls for t in c.targets],
            "states": states,
            "failures": self.failures,
            "lag_buckets": self.lag.buckets,
            "lag_worst": self.lag.worst,
            # From the media start: this process (SIP, pacing or Python sending) and the C sender.
            "cpu": time.process_time() - self.cpu_start + self.c_cpu,
            "cpu_setup": self.cpu_setup,
            "realtime": self.c_realtime,  # building the calls and precomputing their packets
        }


def _child(plan: LoadPlan, number: int, conn: Connection) -> None:
    try:
        worker = Worker(plan, number)
        conn.send("ready")
        worker.run_media(conn.recv())
        conn.send(worker.report())
        if conn.recv() == "bye":
            worker.hang_up()
        conn.send(worker.report())
    except Exception as error:  # the parent must not wait forever on a dead worker
        conn.send(WorkerFailed(f"generator worker {number}: {error!r}"))
    finally:
        conn.close()


class WorkerFailed(Exception):
    pass


def _receive(pipe: Connection) -> Any:
    message = pipe.recv()
    if isinstance(message, WorkerFailed):
        raise message
    return message


class Load:
    """The parent's handle on the generator processes."""

    def __init__(self, plan: LoadPlan, start_delay: float = 0.5) -> None:
        self.plan = plan
        self.start_delay = start_delay
        self.t0 = 0.0
        self.processes: list[multiprocessing.Process] = []
        self.pipes: list[Connection] = []

    def start(self) -> float:
        """Fork the workers; returns t0 (time.monotonic() of the first arrival)."""
        context = multiprocessing.get_context("fork")
        for number in range(self.plan.workers):
            parent, child = context.Pipe()
            process = context.Process(target=_child, args=(self.plan, number, child), daemon=True)
            process.start()
            self.processes.append(process)
            self.pipes.append(parent)
        for pipe in self.pipes:  # each has built its calls (and precomputed their packets)
            _receive(pipe)
        self.t0 = time.monotonic() + self.start_delay
        for pipe in self.pipes:
            pipe.send(self.t0)
        return self.t0

    def wait_media_done(self) -> dict[str, Any]:
        """Blocks until every worker stopped sending; their reports merged."""
        return merge_reports([_receive(pipe) for pipe in self.pipes])

    def hang_up(self) -> dict[str, Any]:
        for pipe in self.pipes:
            pipe.send("bye")
        try:
            reports = [_receive(pipe) for pipe in self.pipes]
        finally:
            self.close()
        return merge_reports(reports)

    def close(self) -> None:
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
        for pipe in self.pipes:
            pipe.close()
        self.processes, self.pipes = [], []


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    lag = Lag()
    merged: dict[str, Any] = {"sent": 0, "streams": 0, "targets": [], "states": {}, "failures": {}, "cpu": 0.0,
                              "cpu_setup": 0.0}
    for report in reports:
        merged["sent"] += report["sent"]
        merged["cpu"] += report.get("cpu", 0.0)
        merged["cpu_setup"] += report.get("cpu_setup", 0.0)
        merged["realtime"] = merged.get("realtime", True) and report.get("realtime", False)
        merged["streams"] += report["streams"]
        merged["targets"] += report["targets"]
        for key in ("states", "failures"):
            for name, count in report[key].items():
                merged[key][name] = merged[key].get(name, 0) + count
        lag.merge(Lag(list(report["lag_buckets"]), report["lag_worst"]))
    merged["lag"] = lag
    return merged
