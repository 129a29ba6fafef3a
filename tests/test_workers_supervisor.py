"""siprecd.workers.supervisor: the parent's router and the supervisor of the worker processes,
on a fake reactor (task.Clock with a spawnProcess that records)."""

from __future__ import annotations

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from siprecd.sip.message import Limits
from siprecd.sip.ratelimit import RateLimiter
from siprecd.sip.source import Source
from siprecd.workers.child import RELAY_FD, WorkerRole
from siprecd.workers.relay import Closed, FrameDecoder, Hello, Inbound, Outbound, encode
from siprecd.workers.routing import worker_for
from siprecd.workers.supervisor import FIRST_BACKOFF, MAX_BACKOFF, Router, Supervisor
from tests.test_workers_routing import INVITE


class Recorder:
    def __init__(self) -> None:
        self.frames: list[object] = []

    def send(self, frame: object) -> None:
        self.frames.append(frame)


class FakeUDP:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, int]] = []

    def send(self, data: bytes, host: str, port: int) -> None:
        self.sent.append((data, host, port))


class FakeConnection:
    def __init__(self) -> None:
        self.open = True
        self.written: list[bytes] = []

    def write_message(self, data: bytes) -> None:
        self.written.append(data)


def invite(call_id: bytes, to_tag: bool = False) -> bytes:
    data = INVITE.replace(b"abc-123@10.0.0.1", call_id)
    return data.replace(b"To: <sip:srs@127.0.0.1>", b"To: <sip:srs@127.0.0.1>;tag=t") if to_tag else data


def call_id_for(index: int, count: int = 2) -> bytes:
    n = 0
    while worker_for(f"c{n}".encode(), count) != index:
        n += 1
    return f"c{n}".encode()


class RouterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.router = Router(2, Limits(), RateLimiter(self.clock, 1, 2))
        self.links = [Recorder(), Recorder()]
        self.router.links = list(self.links)
        self.udp = FakeUDP()
        self.router.transports.udp = self.udp  # type: ignore[assignment]

    def test_routes_by_call_id_with_the_real_source(self) -> None:
        for index in (0, 1):
            self.router.receive(invite(call_id_for(index)), Source("UDP", "10.0.0.1", 5062))
        [first], [second] = self.links[0].frames, self.links[1].frames
        self.assertEqual(first, Inbound("UDP", "10.0.0.1", 5062, 0, invite(call_id_for(0)), True))
        self.assertEqual(second.data, invite(call_id_for(1)))

    def test_rate_verdict_is_global_over_workers(self) -> None:
        """Burst 2 for one source across both workers: the third new call is refused, wherever
        it goes; in-dialog requests spend no token."""
        source = Source("UDP", "10.0.0.1", 5062)
        for index in (0, 1, 0):
            self.router.receive(invite(call_id_for(index)), source)
        verdicts = [f.rate_ok for link in self.links for f in link.frames]
        self.assertEqual(sorted(verdicts), [False, True, True])
        self.router.receive(invite(call_id_for(1), to_tag=True), source)
        self.assertTrue(self.links[1].frames[-1].rate_ok)
        self.clock.advance(1)
        self.router.receive(invite(call_id_for(1)), source)
        self.assertTrue(self.links[1].frames[-1].rate_ok)

    def test_no_call_id_gets_400_from_the_parent(self) -> None:
        self.router.receive(INVITE.replace(b"Call-ID: abc-123@10.0.0.1\r\n", b""), Source("UDP", "10.0.0.1", 5062))
        [(data, host, port)] = self.udp.sent
        self.assertTrue(data.startswith(b"SIP/2.0 400 "), data)
        self.assertEqual((host, port), ("10.0.0.1", 5062))
        self.assertEqual([link.frames for link in self.links], [[], []])

    def test_not_sip_and_keepalives_dropped(self) -> None:
        self.router.receive(b"\x16\x03\x01garbage", Source("UDP", "10.0.0.1", 5062))
        self.router.receive(b"\r\n\r\n", Source("UDP", "10.0.0.1", 5062))
        self.assertEqual((self.udp.sent, [l.frames for l in self.links]), ([], [[], []]))
        self.assertEqual((self.router.counters["not_sip_dropped"], self.router.counters["keepalives"]), (1, 1))

    def test_worker_down_drops(self) -> None:
        self.router.links[1] = None
        self.router.receive(invite(call_id_for(1)), Source("UDP", "10.0.0.1", 5062))
        self.assertEqual(self.router.counters["worker_down_dropped"], 1)

    def test_counts_exported_to_prometheus(self) -> None:
        from prometheus_client import CollectorRegistry, generate_latest

        from siprecd.workers.metrics import RouterCollector

        registry = CollectorRegistry()
        registry.register(RouterCollector(self.router.counters))
        self.router.links[1] = None
        self.router.receive(invite(call_id_for(1)), Source("UDP", "10.0.0.1", 5062))
        self.router.receive(invite(call_id_for(0)), Source("UDP", "10.0.0.1", 5062))
        self.router.receive(b"\r\n\r\n", Source("UDP", "10.0.0.1", 5062))
        text = generate_latest(registry).decode()
        for outcome, count in (("worker_down_dropped", 1), ("routed", 1), ("keepalives", 1)):
            self.assertIn(f'siprecd_parent_sip_messages_total{{outcome="{outcome}"}} {count}.0', text)

    def test_connections_numbered_closed_told_to_workers_that_heard(self) -> None:
        connection = FakeConnection()
        self.router.connection_opened(connection)  # type: ignore[arg-type]
        source = Source("TCP", "10.0.0.1", 40000, connection)
        self.router.receive(invite(call_id_for(1)), source)
        [frame] = self.links[1].frames
        self.assertEqual((frame.transport, frame.conn_id), ("TCP", 1))
        self.router.send_out(Outbound("TCP", "10.0.0.1", 40000, 1, b"SIP/2.0 200 OK\r\n\r\n"))
        self.assertEqual(connection.written, [b"SIP/2.0 200 OK\r\n\r\n"])
        self.router.connection_closed(connection)  # type: ignore[arg-type]
        self.assertEqual(self.links[1].frames[-1], Closed(1))
        self.assertEqual(self.links[0].frames, [])  # worker 0 never heard of it

    def test_send_out_to_an_address(self) -> None:
        self.router.send_out(Outbound("UDP", "10.0.0.9", 5070, 0, b"BYE"))
        self.router.send_out(Outbound("UDP", "10.0.0.9", 5071, 77, b"BYE"))  # unknown connection
        self.assertEqual(self.udp.sent, [(b"BYE", "10.0.0.9", 5070), (b"BYE", "10.0.0.9", 5071)])


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.written: list[tuple[int, bytes]] = []

    def signalProcess(self, name: str) -> None:  # noqa: N802
        self.signals.append(name)

    def writeToChild(self, fd: int, data: bytes) -> None:  # noqa: N802
        self.written.append((fd, data))


class ProcessReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[object, FakeProcess, list[str], dict]] = []
        self.relays: list[StringTransport] = []

    def adoptStreamConnection(self, fd, family, factory):  # noqa: N802, ANN001, ANN201
        transport = StringTransport()
        factory.buildProtocol(None).makeConnection(transport)
        self.relays.append(transport)
        return transport

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None):  # noqa: N802, ANN001, ANN201
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((protocol, process, args, childFDs))
        protocol.makeConnection(process)
        return process


class SupervisorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.router = Router(2, Limits(), RateLimiter(self.reactor, 0, 1))
        self.router.local_addresses["UDP"] = ("127.0.0.1", 5060)
        self.roles: list[WorkerRole] = []
        self.supervisor = Supervisor(self.reactor, self.router, self.command, stop_timeout=10)

    def command(self, role: WorkerRole) -> tuple[str, list[str], dict[str, str]]:
        self.roles.append(role)
        return "/bin/worker", ["worker", role.to_json()], {}

    def protocol(self, n: int):  # noqa: ANN201
        return self.reactor.spawned[n][0]

    def hello(self, n: int, web_port: int = 8000) -> None:
        self.protocol(n).relay_data(encode(Hello(1000 + n, web_port + n)))

    def die(self, n: int, reason: Exception) -> None:
        self.protocol(n).processEnded(Failure(reason))

    def test_spawns_every_worker_with_its_role_and_pipes(self) -> None:
        self.supervisor.startService()
        self.assertEqual([r.index for r in self.roles], [0, 1])
        self.assertEqual(self.roles[0].addresses, {"UDP": ("127.0.0.1", 5060)})
        childFDs = self.reactor.spawned[0][3]
        self.assertEqual(sorted(childFDs), [0, 1, 2, RELAY_FD])
        self.assertIsInstance(childFDs[RELAY_FD], int)  # the child's end of the socketpair
        self.assertEqual([info.alive for info in self.supervisor.workers()], [False, False])

    def test_ready_once_every_worker_said_hello(self) -> None:
        self.supervisor.startService()
        ready = self.supervisor.when_ready()
        self.hello(0)
        self.assertNoResult(ready)
        self.hello(1)
        self.successResultOf(ready)
        infos = self.supervisor.workers()
        self.assertEqual([(i.pid, i.web_url, i.alive) for i in infos],
                         [(1000, "http://127.0.0.1:8000", True), (1001, "http://127.0.0.1:8001", True)])

    def test_relays_both_ways(self) -> None:
        self.supervisor.startService()
        self.router.receive(invite(call_id_for(1)), Source("UDP", "10.0.0.1", 5062))
        self.assertEqual(self.reactor.relays[0].value(), b"")
        [frame] = FrameDecoder().feed(self.reactor.relays[1].value())
        self.assertEqual(frame.data, invite(call_id_for(1)))
        udp = FakeUDP()
        self.router.transports.udp = udp  # type: ignore[assignment]
        self.protocol(1).relay_data(encode(Outbound("UDP", "10.0.0.1", 5062, 0, b"SIP/2.0 100")))
        self.assertEqual(udp.sent, [(b"SIP/2.0 100", "10.0.0.1", 5062)])

    def test_corrupt_pipe_kills_the_worker(self) -> None:
        self.supervisor.startService()
        self.protocol(0).relay_data(b"\x00\x00\x00\x01Z")
        self.assertEqual(self.reactor.spawned[0][1].signals, ["KILL"])

    def test_dead_worker_restarted_with_backoff(self) -> None:
        self.supervisor.startService()
        self.hello(0)
        self.hello(1)
        self.die(1, ProcessTerminated(signal=9))
        info = self.supervisor.workers()[1]
        self.assertEqual((info.alive, info.pid, info.restarts), (False, None, 0))
        self.assertIsNone(self.router.links[1])
        self.reactor.advance(FIRST_BACKOFF)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(self.roles[-1].index, 1)
        self.assertEqual(self.supervisor.workers()[1].restarts, 1)
        self.assertIs(self.router.links[1], self.protocol(2))
        # Dying again at once: twice the wait; after a stable minute, the first wait again.
        self.protocol(2).processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.reactor.advance(FIRST_BACKOFF)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.reactor.advance(FIRST_BACKOFF)
        self.assertEqual(len(self.reactor.spawned), 4)
        self.reactor.advance(61)
        self.protocol(3).processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.reactor.advance(FIRST_BACKOFF)
        self.assertEqual(len(self.reactor.spawned), 5)
        self.assertEqual(self.supervisor.workers()[1].restarts, 3)

    def test_backoff_is_capped(self) -> None:
        self.supervisor.startService()
        for _ in range(10):
            self.die(len(self.reactor.spawned) - 1 if len(self.reactor.spawned) > 2 else 1, ProcessTerminated(exitCode=1))
            self.reactor.advance(MAX_BACKOFF)
        self.assertEqual(len(self.reactor.spawned), 12)
        self.assertEqual(self.supervisor.states[1].backoff, MAX_BACKOFF)

    def test_stop_signals_and_waits_for_every_worker(self) -> None:
        self.supervisor.startService()
        stopped = self.supervisor.stopService()
        self.assertEqual([p.signals for _, p, _, _ in self.reactor.spawned], [["TERM"], ["TERM"]])
        self.die(0, ProcessDone(0))
        self.assertNoResult(stopped)
        self.die(1, ProcessDone(0))
        self.successResultOf(stopped)
        self.assertTrue(all(relay.disconnecting for relay in self.reactor.relays))
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 2)  # nothing restarted while stopping
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_kills_stragglers_and_cancels_restarts(self) -> None:
        self.supervisor.startService()
        self.die(0, ProcessTerminated(signal=9))  # a restart is pending
        stopped = self.supervisor.stopService()
        self.reactor.advance(10)
        self.assertEqual(self.reactor.spawned[1][1].signals, ["TERM", "KILL"])
        self.die(1, ProcessTerminated(signal=9))
        self.successResultOf(stopped)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
