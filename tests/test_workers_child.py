"""siprecd.workers.child: a worker's share of the configuration, and its end of the relay."""

from __future__ import annotations

import dataclasses
import os

from twisted.internet.testing import StringTransport
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.config import load_config
from siprecd.recording.files import active_index_name, indexes_to_recover
from siprecd.sip.message import make_response, parse_message
from siprecd.sip.source import Source
from siprecd.state.factory import base_node_id, node_id, state_path
from siprecd.tap import twistd_options
from siprecd.workers.child import (
    FLUSH_TIMEOUT,
    ParentVerdict,
    RelayService,
    RelayedConnection,
    RelayTransports,
    WorkerRelay,
    WorkerRole,
    port_slice,
    worker_config,
)
from siprecd.workers.relay import Closed, FrameDecoder, Inbound, Outbound, encode
from tests.test_workers_routing import INVITE


class ShareTests(SynchronousTestCase):
    def test_port_slices_are_disjoint_pairs_covering_the_range(self) -> None:
        for low, high, count in ((20000, 30000, 2), (20000, 20011, 4), (40000, 40099, 3)):
            slices = [port_slice(low, high, i, count) for i in range(count)]
            self.assertEqual(slices[0][0], low)
            for (a, b), (c, _) in zip(slices, slices[1:]):
                self.assertEqual(c, b + 1)
                self.assertEqual((a % 2, b % 2), (0, 1))
            self.assertLessEqual(slices[-1][1], high)
            self.assertGreaterEqual(slices[-1][1], high - 1)

    def test_worker_config(self) -> None:
        base = load_config(None, {"SIPRECD_SERVICE_WORKERS": "2", "SIPRECD_STATE_NODE_ID": "node-a",
                                   "SIPRECD_RECORDING_DIRECTORY": "/srv/rec"})
        one = worker_config(base, 1)
        self.assertEqual((one.media.port_min, one.media.port_max), (25000, 29999))
        self.assertEqual(one.worker_index, 1)
        self.assertEqual(dataclasses.replace(one, media=base.media, worker_index=None), base)
        self.assertEqual((node_id(one), base_node_id(one), node_id(base)), ("node-a-w1", "node-a", "node-a"))
        self.assertEqual(state_path(base), "/srv/rec/.state/state.sqlite")
        self.assertEqual(state_path(one), "/srv/rec/.state/state.worker1.sqlite")
        custom = dataclasses.replace(one, state=dataclasses.replace(one.state, path="/var/lib/s/db"))
        self.assertEqual(state_path(custom), "/var/lib/s/db.worker1")

    def test_too_few_ports_for_the_workers(self) -> None:
        from siprecd.config import ConfigError

        with self.assertRaises(ConfigError) as caught:
            load_config(None, {"SIPRECD_SERVICE_WORKERS": "3", "SIPRECD_MEDIA_PORT_MIN": "20000",
                               "SIPRECD_MEDIA_PORT_MAX": "20003"})
        self.assertIn("[service] workers = 3", str(caught.exception))

    def test_role_json(self) -> None:
        role = WorkerRole(1, 2, {"UDP": ("127.0.0.1", 5060), "TLS": ("0.0.0.0", 5061)})
        self.assertEqual(WorkerRole.from_json(role.to_json()), role)
        self.assertRaises(ValueError, WorkerRole.from_json, WorkerRole(2, 2, {}).to_json())


class ActiveIndexTests(SynchronousTestCase):
    def test_who_recovers_which_index(self) -> None:
        root = self.mktemp()
        for name in (".active", ".active.worker0", ".active.worker1", ".active.worker2", ".active.workerx"):
            os.makedirs(os.path.join(root, name))
        self.assertEqual(active_index_name(None), ".active")
        self.assertEqual(active_index_name(1), ".active.worker1")
        # Two workers now: worker 0 also closes what the single process and worker 2 left.
        self.assertEqual(indexes_to_recover(root, 0, 2), [".active.worker0", ".active", ".active.worker2"])
        self.assertEqual(indexes_to_recover(root, 1, 2), [".active.worker1"])
        # Back to one process: every worker's index is its to close.
        self.assertEqual(indexes_to_recover(root, None, 1), [".active", ".active.worker0", ".active.worker1", ".active.worker2"])


class FakeReceiver:
    def __init__(self, verdict: ParentVerdict) -> None:
        self.verdict = verdict
        self.received: list[tuple[bytes, Source, bool]] = []

    def receive(self, data: bytes, source: Source) -> None:
        self.received.append((data, source, self.verdict.allow(source.host)))


class RelayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.lost: list[bool] = []
        self.relay = WorkerRelay(on_parent_lost=lambda: self.lost.append(True))
        self.verdict = ParentVerdict(Clock(), 10, 20)
        self.receiver = FakeReceiver(self.verdict)
        self.relay.attach(self.receiver, self.verdict)
        self.transport = StringTransport()
        self.relay.makeConnection(self.transport)

    def sent(self) -> list[object]:
        return FrameDecoder().feed(self.transport.value())

    def test_inbound_reaches_the_stack_with_source_connection_and_verdict(self) -> None:
        data = encode(Inbound("TCP", "10.0.0.1", 40000, 5, INVITE, False)) + encode(Inbound("UDP", "10.0.0.2", 5060, 0, INVITE))
        for i in range(len(data)):  # one byte at a time
            self.relay.dataReceived(data[i:i + 1])
        (_, tcp, refused), (_, udp, allowed) = self.receiver.received
        self.assertEqual((tcp.transport, tcp.host, tcp.port, refused), ("TCP", "10.0.0.1", 40000, False))
        self.assertIsInstance(tcp.connection, RelayedConnection)
        self.assertTrue(tcp.connection.open)
        self.assertEqual((udp.connection, allowed), (None, True))
        self.assertTrue(self.verdict.allow("10.0.0.1"))  # reset after the message
        self.relay.dataReceived(encode(Closed(5)))
        self.assertFalse(tcp.connection.open)

    def test_transports_send_through_the_parent(self) -> None:
        transports = RelayTransports(self.relay)
        connection = RelayedConnection(self.relay, 9, "TCP", "10.0.0.1", 40000)
        request = parse_message(INVITE.replace(b"SIP/2.0/UDP 10.0.0.1:5060;branch", b"SIP/2.0/TCP 10.0.0.1:5060;rport=4;received=10.0.0.7;branch"))
        response = make_response(request, 200, "OK")  # type: ignore[arg-type]
        transports.send_response(response, Source("TCP", "10.0.0.1", 40000, connection))
        connection.closed()
        transports.send_response(response, Source("TCP", "10.0.0.1", 40000, connection))
        transports.send_request(request, Source("UDP", "10.0.0.3", 5080))  # type: ignore[arg-type]
        transports.udp.send(b"SIP/2.0 400 Bad", "10.0.0.4", 5060)
        first, second, third, fourth = self.sent()
        self.assertEqual((first.conn_id, first.host, first.port), (9, "10.0.0.7", 4))
        self.assertEqual((second.conn_id, second.transport), (0, "TCP"))
        self.assertTrue(first.data.startswith(b"SIP/2.0 200 OK"))
        self.assertEqual(third, Outbound("UDP", "10.0.0.3", 5080, 0, request.to_bytes()))  # type: ignore[union-attr]
        self.assertEqual(fourth, Outbound("UDP", "10.0.0.4", 5060, 0, b"SIP/2.0 400 Bad"))

    def test_parent_lost_but_not_on_our_own_stop(self) -> None:
        self.relay.connectionLost()
        self.assertEqual(self.lost, [True])
        other = WorkerRelay(on_parent_lost=lambda: self.lost.append(False))
        other.makeConnection(StringTransport())
        other.stopping = True
        other.connectionLost()
        self.assertEqual(self.lost, [True])

    def test_stop_waits_for_the_last_frames_to_leave(self) -> None:
        clock = Clock()
        service = RelayService(clock, self.relay, WorkerRole(0, 2, {}))
        service.running = 1
        self.relay.send(Outbound("UDP", "10.0.0.1", 5060, 0, b"SIP/2.0 200 OK"))
        stopped = service.stopService()
        self.assertTrue(self.transport.disconnecting)  # loseConnection: flushed, then closed
        self.assertNoResult(stopped)
        self.relay.connectionLost()
        self.successResultOf(stopped)
        self.assertEqual(self.lost, [])  # our own stop, not the parent's loss
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_gives_up_waiting_after_the_flush_timeout(self) -> None:
        clock = Clock()
        service = RelayService(clock, self.relay, WorkerRole(0, 2, {}))
        service.running = 1
        stopped = service.stopService()
        clock.advance(FLUSH_TIMEOUT)
        self.successResultOf(stopped)

    def test_corrupt_input_closes_the_pipe(self) -> None:
        self.relay.dataReceived(b"\x00\x00\x00\x01Z")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.receiver.received, [])


class TwistdOptionsTests(SynchronousTestCase):
    def test_inherited_options(self) -> None:
        argv = ["twistd", "--nodaemon", "--pidfile=", "--logger=siprecd.logs.json", "-l", "/var/log/s.log",
                "-repoll", "siprec", "--config", "x", "--logfile=not-this"]
        self.assertEqual(twistd_options(argv), {"--logger": "siprecd.logs.json", "--logfile": "/var/log/s.log", "--reactor": "epoll"})
        self.assertEqual(twistd_options(["twistd", "-n", "siprec"]), {})
