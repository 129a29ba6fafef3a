"""Run a real ``twistd -n siprec`` on loopback for end-to-end tests, and talk to it with real peers.

The server runs the working tree's code (PYTHONPATH points at the repository) with a config file
written for the test: free ports, a private recording directory, and whatever keys the test sets.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from unittest import TestCase

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIPP_DIR = os.path.join(REPOSITORY, "tests", "e2e", "sipp")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port(kinds: tuple[int, ...] = (socket.SOCK_STREAM, socket.SOCK_DGRAM)) -> int:
    """A port number free for every socket kind in ``kinds`` on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if all(_bindable(kind, port) for kind in kinds):
            return port
    raise RuntimeError("no free port found")


def free_port_pair(kinds: tuple[int, ...] = (socket.SOCK_DGRAM,)) -> int:
    """An even port on 127.0.0.1, free with its odd neighbour for every socket kind in
    ``kinds`` (RTP and RTCP for a peer that picks its own media port; baresip's SIP port, whose
    TLS listener takes the next one)."""
    for _ in range(200):
        port = free_port(kinds) & ~1
        if port >= 1024 and all(_bindable(kind, p) for kind in kinds for p in (port, port + 1)):
            return port
    raise RuntimeError("no free even/odd port pair found")


def _bindable(kind: int, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def media_range(pairs: int = 50) -> tuple[int, int]:
    """A random even-aligned RTP range, so parallel test processes rarely collide (they skip
    ports in use anyway).  The machine is shared: a benchmark elsewhere may hold thousands of
    UDP ports, so a range is taken only if nearly all of it can be bound right now."""
    for _ in range(100):
        start = random.randrange(30000, 60000 - 2 * pairs) & ~1
        free = sum(1 for port in range(start, start + 2 * pairs) if _bindable(socket.SOCK_DGRAM, port))
        if free >= 0.9 * 2 * pairs:
            break
    return start, start + 2 * pairs - 1


@dataclass
class Server:
    directory: str
    sections: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    sip_port: int = 0
    tls_port: int = 0
    web_port: int = 0
    twistd_options: tuple[str, ...] = ()  # e.g. ("--logger=siprecd.logs.json",)
    media_ports: tuple[int, int] | None = None  # kept across restarts (sessions keep their ports)

    @property
    def recordings(self) -> str:
        return os.path.join(self.directory, "recordings")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "twistd.log")

    def config_text(self) -> str:
        self.sip_port = self.sip_port or free_port()
        self.web_port = self.web_port or free_port((socket.SOCK_STREAM,))
        self.media_ports = self.media_ports or media_range()
        low, high = self.media_ports
        sections: dict[str, dict[str, str]] = {
            "sip": {
                "bind_address": "127.0.0.1",
                "udp_port": str(self.sip_port),
                "tcp_port": str(self.sip_port),
                "t1": "0.1",
            },
            "media": {"bind_address": "127.0.0.1", "port_min": str(low), "port_max": str(high)},
            "recording": {"directory": self.recordings},
            "web": {"bind_address": "127.0.0.1", "port": str(self.web_port)},
        }
        for name, values in self.sections.items():
            sections.setdefault(name, {}).update(values)
        if sections["sip"].get("tls_port") == "auto":
            self.tls_port = free_port((socket.SOCK_STREAM,))
            sections["sip"]["tls_port"] = str(self.tls_port)
        lines = []
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines.extend(f"{key} = {value}" for key, value in values.items())
            lines.append("")
        return "\n".join(lines)

    def command(self, config_path: str) -> list[str]:
        output = list(self.twistd_options) or [f"--logfile={self.log_path}"]
        return [TWISTD, "--nodaemon", "--pidfile=", *output, "siprec", "--config", config_path]

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIPRECD_")}
        env["PYTHONPATH"] = REPOSITORY
        env.update(self.environment)
        return env

    def start(self, timeout: float = 20.0) -> None:
        self.directory = os.path.abspath(self.directory)
        os.makedirs(self.directory, exist_ok=True)
        config_path = os.path.join(self.directory, "siprecd.conf")
        with open(config_path, "w") as handle:
            handle.write(self.config_text())
        # Output goes to a file, never a pipe nobody reads (a JSON logger fills it fast).
        self.stdout_path = os.path.join(self.directory, "stdout.log")
        with open(self.stdout_path, "ab") as stdout:
            self.process = subprocess.Popen(
                self.command(config_path),
                env=self.environ(),
                stdout=stdout,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.output()
                raise RuntimeError(f"twistd exited with {self.process.returncode}:\n{output}\n{self.log()}")
            if self._listening():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"twistd did not start listening within {timeout}s:\n{self.log()}")

    def _listening(self) -> bool:
        # The kernel accepts connections as soon as a port listens, while twistd is still in
        # startService (the controller, which recovers interrupted sessions, starts after the
        # listeners).  An HTTP answer means the reactor is running: start-up is over.
        try:
            with socket.create_connection(("127.0.0.1", self.sip_port), timeout=0.2):
                pass
            with socket.create_connection(("127.0.0.1", self.web_port), timeout=0.2) as web:
                web.settimeout(2.0)
                web.sendall(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                # Any answer but 503: a parent of [service] workers answers 503 until every
                # worker is up (401 is a protected /health: up as well).
                status = web.recv(12)
                return status.startswith(b"HTTP/") and status[9:12] != b"503"
        except OSError:
            return False

    def stop(self, timeout: float = 20.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def output(self) -> str:
        return read_text(getattr(self, "stdout_path", ""))

    def log(self) -> str:
        return read_text(self.log_path, "(no log)")

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """The log once it holds ``text`` (or at the timeout): the server writes what it saw of
        a connection after the peer already noticed, and a loaded machine delays it."""
        deadline = time.monotonic() + timeout
        log = self.log()
        while text not in log and time.monotonic() < deadline:
            time.sleep(0.05)
            log = self.log()
        return log

    def stop_cleanly(self, test: TestCase) -> str:
        """Stop the server and fail ``test`` unless it exited cleanly; returns its log."""
        code = self.stop()
        log = self.log()
        # twistd ends with the signal it got (-SIGTERM): that is a clean stop too.
        test.assertIn(code, (0, -15), f"twistd exit status {code}\n{log}")
        test.assertNotIn("Traceback", log)
        return log


def read_text(path: str, missing: str = "") -> str:
    """A log or trace file's text (``missing`` if it is not there yet)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return missing


def sipp_available() -> bool:
    return shutil.which("sipp") is not None


@dataclass
class SippResult:
    returncode: int
    output: str
    messages: str
    errors: str

    def explain(self) -> str:
        return f"sipp exited {self.returncode}\n--- errors\n{self.errors}\n--- messages\n{self.messages[-6000:]}\n--- output\n{self.output[-2000:]}"


def run_sipp(
    scenario: str,
    server_port: int,
    directory: str,
    *,
    transport: str = "u1",
    extra: list[str] | None = None,
    timeout: float = 30.0,
) -> SippResult:
    """Run one SIPp call from ``scenario`` (a file in tests/e2e/sipp or a path)."""
    path = scenario if os.path.isabs(scenario) else os.path.join(SIPP_DIR, scenario)
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, f"sipp-{os.path.basename(path)}-{transport}")
    local_port = free_port()
    media_port = free_port((socket.SOCK_DGRAM,))
    command = [
        "sipp", "-sf", path, "-m", "1", "-t", transport, "-i", "127.0.0.1", "-p", str(local_port),
        "-mp", str(media_port),
        "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error", "-max_recv_loops", "1000",
        "-trace_msg", "-message_file", base + ".msg", "-trace_err", "-error_file", base + ".err",
        *(extra or []), f"127.0.0.1:{server_port}",
    ]
    completed = subprocess.run(command, capture_output=True, timeout=timeout + 15, cwd=directory)
    return SippResult(
        completed.returncode,
        completed.stdout.decode(errors="replace") + completed.stderr.decode(errors="replace"),
        read_text(base + ".msg"),
        read_text(base + ".err"),
    )
