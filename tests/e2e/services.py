"""Real ``redis-server`` and ``kamailio`` processes on loopback for the redundancy tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from tests.e2e.server import REPOSITORY, free_port

KAMAILIO_CONFIG = os.path.join(REPOSITORY, "etc", "kamailio", "kamailio.cfg")


def available(*programs: str) -> bool:
    return all(shutil.which(p) is not None for p in programs)


class RedisServer:
    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        self.port = free_port((socket.SOCK_STREAM,))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        log = open(os.path.join(self.directory, "redis.log"), "ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def command(self, *args: str) -> bytes:
        """One command in RESP, the raw reply (enough for GET/KEYS checks in tests)."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(payload.encode())
            time.sleep(0.05)
            return s.recv(1 << 20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)
        self.process = None


class Kamailio:
    """The dispatcher config from etc/kamailio/ with its listen address and node list
    rewritten to free loopback ports."""

    def __init__(self, directory: str, nodes: list[int]) -> None:
        self.directory = os.path.abspath(directory)
        self.port = free_port()
        self.nodes = nodes
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        with open(KAMAILIO_CONFIG, encoding="utf-8") as handle:
            text = handle.read()
        lists = os.path.join(self.directory, "dispatcher.list")
        with open(lists, "w", encoding="utf-8") as handle:
            for port in self.nodes:
                handle.write(f"1 sip:127.0.0.1:{port}\n")
        text = text.replace('#!substdef "!LISTEN!udp:0.0.0.0:5060!g"', f'#!substdef "!LISTEN!udp:127.0.0.1:{self.port}!g"')
        text = text.replace('#!substdef "!DISPATCHER_LIST!/etc/kamailio/dispatcher.list!g"', f'#!substdef "!DISPATCHER_LIST!{lists}!g"')
        text = text.replace('#!substdef "!PROBE_INTERVAL!10!g"', '#!substdef "!PROBE_INTERVAL!1!g"')
        config = os.path.join(self.directory, "kamailio.cfg")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(text)
        log = open(os.path.join(self.directory, "kamailio.log"), "ab")
        self.process = subprocess.Popen(
            ["kamailio", "-f", config, "-DD", "-E", "-Y", self.directory, "-P", os.path.join(self.directory, "kamailio.pid"),
             "-m", "32", "-M", "8", "-n", "2"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.settimeout(0.3)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"kamailio exited {self.process.returncode}:\n{self.log()}")
                probe.sendto(
                    (f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{probe.getsockname()[1] if probe.getsockname()[1] else 0};branch=z9hG4bKprobe{time.time_ns()}\r\n"
                     "From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 0\r\nContent-Length: 0\r\n\r\n").encode(),
                    ("127.0.0.1", self.port),
                )
                try:
                    probe.recvfrom(65535)
                    return
                except OSError:
                    continue
        finally:
            probe.close()
        raise RuntimeError(f"kamailio did not answer:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(os.path.join(self.directory, "kamailio.log"), encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
