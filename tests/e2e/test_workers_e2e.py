"""``[service] workers = 2`` end to end: a real twistd parent and its two worker processes on
loopback.  Calls over UDP and TCP land on both workers (each answering from its own port slice,
the one crc32(Call-ID) names) and are recorded; a worker killed with SIGKILL is restarted and
resumes its call while the other worker's call goes on untouched; SIGTERM to the parent drains
every worker's calls and the parent exits 0 (READY=1 only once both workers are up)."""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import socket
import threading
import time
import uuid

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from siprecd.workers.child import port_slice
from siprecd.workers.routing import worker_for
from tests.audio import read_wav
from tests.e2e import test_tls_e2e as tls  # the module: its classes stay its own tests
from tests.e2e.server import Server, read_text, run_sipp, sipp_available
from tests.e2e.src import SRCClient
from tests.e2e.test_media_e2e import TONE_A, TONE_B, stream

WORKERS = 2


class WorkersServer(Server):
    """A parent with [service] workers = 2.  Its web is the other branch's (the cluster site):
    these tests do not rely on it; start-up is over when every worker has said it is up."""

    def config_text(self) -> str:
        sections = {name: dict(values) for name, values in self.sections.items()}
        sections.setdefault("service", {})["workers"] = str(WORKERS)
        sections.setdefault("web", {})["port"] = "0"
        self.sections = sections
        return super().config_text()

    def start(self, timeout: float = 20.0) -> None:
        self.started_at = len(self.log()) if os.path.exists(self.log_path) else 0  # a restart appends
        super().start(timeout)

    def _listening(self) -> bool:
        return len({i for i, _ in self.up_lines(self.started_at)}) >= WORKERS

    def up_lines(self, since: int = 0) -> list[tuple[int, int]]:
        """(worker index, pid) of every 'is up' line in the parent's log, in order."""
        return [(int(i), int(p)) for i, p in re.findall(r"worker (\d+) \(pid (\d+)\) is up", self.log()[since:])]

    def pid_of(self, index: int) -> int:
        return [pid for i, pid in self.up_lines() if i == index][-1]

    def worker_logs(self) -> str:
        return "".join(read_text(f"{self.log_path}.worker{i}") for i in range(WORKERS))

    def slice_of(self, index: int) -> tuple[int, int]:
        assert self.media_ports is not None
        return port_slice(*self.media_ports, index, WORKERS)


def call_id_for(index: int) -> str:
    while True:
        call_id = uuid.uuid4().hex
        if worker_for(call_id.encode(), WORKERS) == index:
            return call_id


def sessions(server: Server) -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(server.recordings, "*", "*", "*", "*", "session.json"))):
        with open(path) as handle:
            document = json.load(handle)
        document["directory"] = os.path.dirname(path)
        out.append(document)
    return out


class WorkersTestCase(SynchronousTestCase):
    def server(self, **sections: dict[str, str]) -> WorkersServer:
        server = WorkersServer(self.mktemp(), sections=sections, environment=getattr(self, "environment", {}))
        server.start(timeout=30)
        self.addCleanup(server.stop)
        return server

    def assert_clean_logs(self, server: WorkersServer) -> None:
        self.assertNotIn("Traceback", server.log())
        self.assertNotIn("Traceback", server.worker_logs())

    def in_slice(self, server: WorkersServer, document: dict) -> int:
        """The worker that recorded ``document`` (by its ports), checked to be its Call-ID's."""
        index = worker_for(document["call_id"].encode(), WORKERS)
        low, high = server.slice_of(index)
        for entry in document["streams"]:
            self.assertTrue(low <= entry["rtp_port"] <= high, (index, entry["rtp_port"], low, high))
        return index


class RoutingTests(WorkersTestCase):
    def test_calls_over_udp_and_tcp_land_on_both_workers(self) -> None:
        if not sipp_available():
            raise SkipTest("sipp (Debian package sip-tester) is not installed: run scripts/setup")
        server = self.server(siprec={"accept_plain_calls": "true"})
        self.assertEqual(len({pid for _, pid in server.up_lines()}), WORKERS)
        for transport in ("u1", "t1"):
            for n in range(4):
                result = run_sipp("invite_bye.xml", server.sip_port, os.path.join(server.directory, f"sipp{n}"), transport=transport)
                self.assertEqual(result.returncode, 0, f"{transport}: {result.explain()}\n{server.log()[-3000:]}")
        documents = sessions(server)
        self.assertEqual(len(documents), 8)
        seen = set()
        for document in documents:
            self.assertEqual((document["state"], document["end_reason"]), ("ended", "BYE from the SRC"))
            seen.add((self.in_slice(server, document), document["src"]["transport"]))
            [entry] = document["streams"]
            self.assertTrue(os.path.isfile(os.path.join(document["directory"], entry["file"])), entry["file"])
        # 8 random Call-IDs all on one worker: 2 x 2^-8; each transport on one: more often, so
        # only the workers are required to differ, and both transports to have been recorded.
        self.assertEqual({index for index, _ in seen}, {0, 1}, seen)
        self.assertEqual({transport for _, transport in seen}, {"UDP", "TCP"}, seen)
        self.assertEqual(server.stop(), 0)
        self.assert_clean_logs(server)


class RestartTests(WorkersTestCase):
    def test_killed_worker_is_restarted_and_resumes_its_call(self) -> None:
        server = self.server(service={"drain_timeout": "5"})
        clients = {}
        for index in range(WORKERS):
            client = SRCClient(server.sip_port)
            self.addCleanup(client.close)
            client.call_id = call_id_for(index)
            clients[index] = client
        spec = [stream("PCMU", "a", TONE_A, 1.0), stream("PCMU", "b", TONE_B, 1.0)]
        for index, client in clients.items():
            self.assertEqual(client.invite(spec).status, 200)
            low, high = server.slice_of(index)
            self.assertTrue(all(low <= port <= high for port in client.answer_ports.values()), client.answer_ports)
        for client in clients.values():
            client.send_rtp(spec)
        victim = server.pid_of(1)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and server.pid_of(1) == victim:
            time.sleep(0.1)
        self.assertNotEqual(server.pid_of(1), victim, server.log()[-3000:])
        self.assertIn("worker 1 died (killed by signal 9)", server.log())
        self.assertEqual(server.pid_of(0), [pid for i, pid in server.up_lines() if i == 0][0])  # untouched
        # The resumed call goes on: same ports, more media, then its BYE is answered.
        for client in clients.values():
            client.send_rtp(spec)
        for client in clients.values():
            self.assertEqual(client.bye().status, 200)
        self.assertEqual(server.stop(), 0)
        documents = {d["call_id"]: d for d in sessions(server)}
        self.assertEqual(len(documents), 2)
        resumed, untouched = documents[clients[1].call_id], documents[clients[0].call_id]
        self.assertEqual((resumed["state"], resumed["end_reason"]), ("ended", "BYE from the SRC"))
        self.assertEqual(len(resumed["resumptions"]), 1, resumed["resumptions"])
        self.assertEqual((untouched["end_reason"], untouched["resumptions"]), ("BYE from the SRC", []))
        for entry in resumed["streams"]:
            self.assertEqual(len(entry["segments"]), 2, entry["segments"])
            for name in entry["segments"]:
                rate, _, samples = read_wav(os.path.join(resumed["directory"], name))
                self.assertGreater(len(samples) / rate, 0.5, name)
        self.assertNotIn("Traceback", server.log())


    def test_workers_leave_when_the_parent_is_killed(self) -> None:
        """A worker without its parent can reach no SRC and would hold its ports from the next
        parent's worker: it exits at once (70), its calls left to be resumed."""
        server = self.server()
        pids = [server.pid_of(index) for index in range(WORKERS)]
        os.kill(pids[1], signal.SIGHUP)  # reload is the parent's: a worker ignores it
        time.sleep(0.5)
        self.assertEqual(server.pid_of(1), pids[1])
        self.assertNotIn("worker 1 died", server.log())
        self.assertEqual(kill_parent(server, pids), [])
        self.assertIn("the parent process is gone", server.worker_logs())


    def test_calls_resume_on_their_worker_after_the_parent_is_killed(self) -> None:
        """crc32(Call-ID) % N does not change across restarts: after kill -9 of the parent (its
        workers leave at once), the next start's worker of the same index resumes each call from
        its own state file, on the same ports."""
        server = self.server()
        spec = [stream("PCMU", "a", TONE_A, 0.6), stream("PCMU", "b", TONE_B, 0.6)]
        clients = []
        for index in range(WORKERS):
            client = SRCClient(server.sip_port)
            self.addCleanup(client.close)
            client.call_id = call_id_for(index)
            self.assertEqual(client.invite(spec).status, 200)
            client.send_rtp(spec)
            clients.append(client)
        old_pids = [server.pid_of(index) for index in range(WORKERS)]
        self.assertEqual(kill_parent(server, old_pids), [])
        server.start(timeout=30)
        for client in clients:
            client.send_rtp(spec)  # to the same ports as before
            self.assertEqual(client.bye().status, 200)
        self.assertEqual(server.stop(), 0)
        documents = sessions(server)
        self.assertEqual(len(documents), 2)
        for document in documents:
            self.in_slice(server, document)
            self.assertEqual((document["end_reason"], len(document["resumptions"])), ("BYE from the SRC", 1))
            for entry in document["streams"]:
                self.assertEqual(len(entry["segments"]), 2, entry["segments"])


def kill_parent(server: Server, workers: list[int], timeout: float = 10.0) -> list[int]:
    """kill -9 the parent, then wait for its workers to leave; the workers still running."""
    assert server.process is not None
    server.process.kill()
    server.process.wait(10)
    server.process = None
    deadline = time.monotonic() + timeout
    running = workers
    while running and time.monotonic() < deadline:
        time.sleep(0.1)
        running = [pid for pid in workers if os.path.exists(f"/proc/{pid}") and not zombie(pid)]
    return running


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


class DrainTests(WorkersTestCase):
    def notify_socket(self) -> socket.socket:
        path = f"@siprecd-workers-{os.getpid()}-{time.monotonic_ns()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + path[1:])
        sock.settimeout(15)
        self.addCleanup(sock.close)
        self.environment = {"NOTIFY_SOCKET": path}
        return sock

    def test_sigterm_drains_every_worker_and_exits_0(self) -> None:
        sock = self.notify_socket()
        server = self.server(service={"drain_timeout": "20"})
        self.assertEqual(sock.recv(4096).decode().split("\n")[0], "READY=1")
        self.assertEqual(len(server.up_lines()), WORKERS)  # READY=1 came after both were up
        clients = []
        spec = [stream("PCMU", "a", TONE_A, 2.0), stream("PCMU", "b", TONE_B, 2.0)]
        for index in range(WORKERS):
            client = SRCClient(server.sip_port)
            self.addCleanup(client.close)
            client.call_id = call_id_for(index)
            self.assertEqual(client.invite(spec).status, 200)
            clients.append(client)
        senders = [threading.Thread(target=c.send_rtp, args=(spec,)) for c in clients]
        for sender in senders:
            sender.start()
        time.sleep(0.5)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        self.assertEqual(sock.recv(4096).decode().split("\n")[0], "STOPPING=1")
        # The parent says STOPPING=1 as it signals the workers: each starts draining once its
        # own reactor has taken the signal, a few milliseconds later.
        time.sleep(0.5)
        for index in range(WORKERS):  # each worker refuses new calls while it drains
            late = SRCClient(server.sip_port)
            self.addCleanup(late.close)
            late.call_id = call_id_for(index)
            self.assertEqual(late.invite([stream("PCMU", "x", TONE_A, 0.1)]).status, 503)
        for sender in senders:
            sender.join()
        for client in clients:
            self.assertEqual(client.bye().status, 200)
        self.assertEqual(server.process.wait(30), 0, server.log()[-3000:])
        server.process = None
        documents = sessions(server)
        self.assertEqual(len(documents), 2)
        self.assertEqual({self.in_slice(server, d) for d in documents}, {0, 1})
        for document in documents:
            self.assertEqual((document["state"], document["end_reason"]), ("ended", "BYE from the SRC"))
            self.assertEqual([n for n in os.listdir(document["directory"]) if n.endswith(".part")], [])
        log = server.log()
        self.assertEqual(len(re.findall(r"worker \d stopped \(exited 0\)", log)), WORKERS, log[-3000:])
        self.assert_clean_logs(server)


class WorkersTLSTests(tls.TLSTests):
    """SIP over TLS through the parent (handshake there; the Contact names the parent's port)."""

    server_class = WorkersServer


class WorkersMutualTLSTests(tls.MutualTLSTests):
    """Client certificates are checked by the parent, before any worker hears of the connection."""

    server_class = WorkersServer
