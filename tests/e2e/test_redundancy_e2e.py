"""Session redundancy end to end: calls survive ``kill -9``, Replaces takes a session over on
another node, Redis going away loses nothing.

Real peers on loopback: ``twistd siprec`` processes, ``redis-server`` and ``kamailio`` started
here on free ports; the SRC is :mod:`tests.e2e.src` (SIP over UDP and paced PCMA tones, 440 Hz on
stream "a", 1000 Hz on "b").  A-law has no zero code, so a zero sample in a recording is always
silence the server inserted: the outage of a restart is found exactly where it must be.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
from twisted.trial.unittest import SkipTest

from tests.audio import assert_near, dominant_frequency, read_wav
from tests.e2e.server import Server
from tests.e2e.src import SRCClient
from tests.e2e.test_media_e2e import PACKET_TIME, TONE_A, TONE_B, MediaTestCase, iso_seconds, stream

RECORDING = {"flush_interval": "0.2", "chunk_size": "4096"}


def kill_9(server: Server) -> float:
    process = server.process
    assert process is not None
    killed_at = time.time()
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    server.process = None
    return killed_at


def sessions(root: str) -> list[str]:
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(root, "*", "*", "*", "*", "session.json")))


def read_json(directory: str) -> dict[str, Any]:
    with open(os.path.join(directory, "session.json"), encoding="utf-8") as handle:
        return json.load(handle)  # type: ignore[no-any-return]


def get_json(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(predicate: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class RedundancyTestCase(MediaTestCase):
    recording = RECORDING
    state: dict[str, str] = {}

    def start_server(self, directory: str) -> Server:
        server = Server(directory, sections={"recording": dict(self.recording), "state": dict(self.state)})
        server.start()
        self.addCleanup(self._stop, server)
        return server

    def segments(self, directory: str, segments: list[str]) -> list[np.ndarray]:
        out = []
        for name in segments:
            rate, channels, samples = read_wav(os.path.join(directory, name))
            self.assertEqual((rate, channels), (8000, 1), name)
            out.append(samples)
        return out



class RestartTests(RedundancyTestCase):
    state = {"orphan_timeout": "30"}

    def test_kill_9_restart_src_continues_then_bye(self) -> None:
        """kill -9 mid-call and restart on the same directory and ports while the SRC keeps
        sending (what it sends during the outage is lost); then a re-INVITE (same ports in the
        answer) and a BYE: one session, audio before and after, the outage as silence where it
        was on the timeline, nothing lost once the ports are bound again, every request answered."""
        client = self.client()
        streams = [stream("PCMA", "a", TONE_A, 6.0), stream("PCMA", "b", TONE_B, 6.0)]
        self.start_call(client, streams)
        ports = dict(client.answer_ports)
        sent: dict[str, Any] = {}
        sender = threading.Thread(target=lambda: sent.setdefault("report", client.send_rtp(streams)))
        sender.start()
        time.sleep(1.5)
        killed_at = kill_9(self.server)
        self.server.start()
        restarted_at = time.time()
        sender.join(30)
        report = sent["report"]
        self.assertGreater(report.last(), restarted_at + 1.0, "the SRC was still sending after the restart")
        reinvite = client.invite(streams)
        self.assertEqual(reinvite.status, 200, reinvite)
        self.assertEqual(client.answer_ports, ports)
        self.assertEqual(client.bye().status, 200)

        (directory,) = sessions(self.server.recordings)
        document = read_json(directory)
        self.assertEqual((document["state"], document["end_reason"]), ("ended", "BYE from the SRC"))
        self.assertEqual(document["call_id"], client.call_id)
        (resumption,) = document["resumptions"]
        self.assertEqual((resumption["how"], resumption["segment"]), ("restart", 2))
        self.assertEqual(document["mix"]["segments"], ["mix-stereo.wav", "mix-stereo.seg2.wav"])
        self.assertEqual([n for n in os.listdir(directory) if n.endswith(".part")], [])
        self.assertEqual(os.listdir(os.path.join(self.server.recordings, ".active")), [])
        started = iso_seconds(document["started_at"])
        for spec, frequency in zip(streams, (TONE_A, TONE_B)):
            label = spec.label
            entry = {s["label"]: s for s in document["streams"]}[label]
            self.assertEqual(entry["segments"], [f"stream-{entry['index'] + 1}-{label}.wav", entry["file"]])
            first, second = self.segments(directory, entry["segments"])
            times = report.times[label]
            # Segment 1: the tone from the first packet to (at most a flush before) the kill.
            start = int(np.flatnonzero(first)[0])
            assert_near(self, dominant_frequency(first[start:], 8000), frequency, 5, "tone")
            self.assertEqual(np.flatnonzero(first[start:] == 0).size, 0, f"{label}: a gap before the kill")
            end = started + len(first) / 8000
            self.assertTrue(killed_at - 0.5 <= end <= killed_at + 0.05, (end, killed_at))
            # Segment 2: silence, then the first packet that reached the new process, placed
            # where it was sent on the session's timeline, then every packet to the end.
            onset = int(np.flatnonzero(second)[0])
            placed = started + (len(first) + onset) / 8000
            nearest = min(times, key=lambda t: abs(t - placed))
            assert_near(self, placed, nearest, 0.1, f"{label}: the first packet after the restart")
            self.assertGreater(nearest, killed_at, f"{label}: placed after the kill")
            after = [t for t in times if t >= nearest]
            assert_near(self, dominant_frequency(second[onset:], 8000), frequency, 5, "tone")
            assert_near(self, (len(second) - onset) / 8000, after[-1] + PACKET_TIME - after[0], 0.1, f"{label}: audio after")
            zeros = np.flatnonzero(second[onset:] == 0)
            self.assertLess(zeros.size, 160, f"{label}: packets lost after the restart")
            # The outage is silence of its real length: the whole call is one timeline.
            assert_near(self, (len(first) + len(second)) / 8000, times[-1] + PACKET_TIME - started, 0.1, f"{label}: timeline")


class RedisTestCase(RedundancyTestCase):
    def setUp(self) -> None:
        from tests.e2e.services import RedisServer, available

        if not available("redis-server"):
            raise SkipTest("redis-server is not installed (scripts/setup installs it)")
        self.redis = RedisServer(self.mktemp())
        self.redis.start()
        self.addCleanup(self.redis.stop)
        self.state = {"backend": "redis", "redis_url": self.redis.url, "lease": "3", "orphan_timeout": "60"}
        super().setUp()

    def stored_sessions(self) -> list[str]:
        reply = self.redis.command("KEYS", "siprecd:session:*").decode()
        return sorted(line.split(":", 2)[2] for line in reply.split("\r\n") if line.startswith("siprecd:session:"))


class RedisOutageTests(RedisTestCase):
    def test_redis_stopped_and_restarted_during_calls(self) -> None:
        """Redis goes away with a call in progress: /ready and the metric say degraded, a new
        call and a re-INVITE are answered, media is recorded; Redis comes back empty: every live
        session is written to it again; both calls end with every packet recorded."""
        web = self.server.web_port
        wait_for(lambda: get_json(web, "/ready")[1]["status"] == "ready", "ready with Redis")
        first = self.client()
        streams = [stream("PCMA", "a", TONE_A, 1.0), stream("PCMA", "b", TONE_B, 1.0)]
        self.start_call(first, streams)
        one = first.send_rtp(streams)
        (session_one,) = wait_for(self.stored_sessions, "the first session in Redis")

        self.redis.stop()
        status, ready = wait_for(lambda: (lambda r: r if r[1]["status"] == "degraded" else None)(get_json(web, "/ready")), "degraded")
        self.assertEqual((status, ready["failing"], ready["degraded"]), (200, [], ["state_store_redis"]))
        self.assertIn("unreachable", ready["checks"]["state_store_redis"]["detail"])
        self.assertEqual(metric(web, "siprecd_state_store_degraded"), 1.0)

        second = self.client()
        self.start_call(second, streams)  # not refused while Redis is down
        reinvite = first.invite(streams)
        self.assertEqual(reinvite.status, 200, reinvite)
        two = second.send_rtp(streams)

        self.redis.start()  # same port, empty: no persistence
        wait_for(lambda: get_json(web, "/ready")[1]["status"] == "ready", "ready again")
        self.assertEqual(metric(web, "siprecd_state_store_degraded"), 0.0)
        self.assertGreaterEqual(metric(web, "siprecd_state_store_resyncs_total") or 0, 2)
        stored = wait_for(lambda: (lambda s: s if len(s) == 2 else None)(self.stored_sessions()), "both sessions resynced")
        self.assertIn(session_one, stored)
        record = json.loads(self.redis.command("GET", f"siprecd:session:{session_one}").split(b"\r\n", 1)[1].rsplit(b"\r\n", 1)[0])
        self.assertEqual(record["sdp_version"], 2)  # the re-INVITE made while Redis was down
        self.assertEqual(record["dialog"]["call_id"], first.call_id)

        for client, report in ((first, one), (second, two)):
            self.assertEqual(client.bye().status, 200)
            document, directory = self.session(client.call_id)
            self.assertEqual(document["state"], "ended")
            for entry in document["streams"]:
                rate, _, samples = read_wav(os.path.join(directory, entry["file"]))
                sound = np.flatnonzero(samples)
                sent = report.times[entry["label"]][-1] + PACKET_TIME - report.times[entry["label"]][0]
                assert_near(self, (len(samples) - sound[0]) / rate, sent, 0.03, f"{entry['label']}: audio")
        wait_for(lambda: self.stored_sessions() == [], "ended sessions removed from Redis")


class ClusterTests(RedisTestCase):
    """Two nodes, one Redis, Kamailio dispatching (etc/kamailio/kamailio.cfg)."""

    def setUp(self) -> None:
        from tests.e2e.services import Kamailio, available

        if not available("kamailio"):
            raise SkipTest("kamailio is not installed (scripts/setup installs it)")
        super().setUp()  # Redis, and self.server: node A
        self.server.stop()
        self.nodes = {}
        for name in ("node-a", "node-b"):
            state = dict(self.state, node_id=name, lease="2")
            node = Server(os.path.join(self.mktemp(), name), sections={"recording": dict(self.recording), "state": state})
            node.start()
            self.addCleanup(self._stop, node)
            self.nodes[name] = node
        for node in self.nodes.values():
            wait_for(lambda: get_json(node.web_port, "/ready")[1]["status"] == "ready", "nodes ready with Redis")
        self.kamailio = Kamailio(self.mktemp(), [n.sip_port for n in self.nodes.values()])
        self.kamailio.start()
        self.addCleanup(self.kamailio.stop)

    def test_node_killed_src_replaces_to_other_node(self) -> None:
        """The call lands on one node through Kamailio, the next on the other (round-robin); the
        first node is killed (-9); a new call then reaches the live node; once the dead node's
        lease has run out, the SRC's INVITE with Replaces is dispatched to the other node, which
        takes the session over from Redis: same session_id, recording continues in segment 2,
        BYE answered through the proxy."""
        client = SRCClient(self.kamailio.port)
        self.addCleanup(client.close)
        streams = [stream("PCMA", "a", TONE_A, 1.0), stream("PCMA", "b", TONE_B, 1.0)]
        self.start_call(client, streams)
        self.assertTrue(client.route_set, "Kamailio record-routes the dialog")
        before = client.send_rtp(streams)
        time.sleep(0.3)  # a tick: positions stored
        owners = {name: sessions(node.recordings) for name, node in self.nodes.items()}
        (first,) = [name for name, found in owners.items() if found]
        (second,) = [name for name in self.nodes if name != first]
        document = read_json(owners[first][0])
        session_id = document["session_id"]

        # Round-robin: the next call goes to the other node.
        other = SRCClient(self.kamailio.port)
        self.addCleanup(other.close)
        self.start_call(other, [stream("PCMA", "a", TONE_A, 0.2)])
        self.assertEqual(len(sessions(self.nodes[second].recordings)), 1)

        kill_9(self.nodes[first])
        # A new call while the node is dead: Kamailio sends it to the live node (probing marks
        # the dead one inactive; before that, the INVITE times out there and fails over).
        late = SRCClient(self.kamailio.port)
        self.addCleanup(late.close)
        self.start_call(late, [stream("PCMA", "a", TONE_A, 0.2)])
        self.assertEqual(len(sessions(self.nodes[second].recordings)), 2)
        wait_for(lambda: self.redis.command("EXISTS", f"siprecd:owner:{session_id}").startswith(b":0"), "the lease to run out")
        old_dialog = f"siprecd:dialog:{client.call_id}|{client.to_tag}|{client.tag}"
        self.assertTrue(self.redis.command("EXISTS", old_dialog).startswith(b":1"))
        client.extra_headers = [f"Replaces: {client.replace_dialog()}", "Require: replaces"]
        response = client.invite(streams)
        self.assertEqual(response.status, 200, response)
        wait_for(lambda: self.redis.command("EXISTS", old_dialog).startswith(b":0"), "the replaced dialog's index entry gone")
        self.assertEqual(response.headers.get("Supported"), "siprec, replaces")
        after = client.send_rtp([stream("PCMA", "a", TONE_A, 1.0), stream("PCMA", "b", TONE_B, 1.0)], seed=9)
        # Segment 1 is on the dead node's disk: its .part files hold the audio before the kill.
        parts = {}
        for entry in document["streams"]:
            _, _, parts[entry["label"]] = read_wav(os.path.join(owners[first][0], entry["file"] + ".part"))
        # The dead node comes back: it resumes its stored copy, finds in Redis that the session
        # is node B's now, and ends its copy without a BYE; Redis keeps node B's record.
        self.nodes[first].start()
        wait_for(lambda: read_json(owners[first][0])["state"] == "ended", "the stale copy ended")
        stale = read_json(owners[first][0])
        self.assertEqual(stale["end_reason"], f"taken over by node {second} (RFC 3891 Replaces)")
        self.assertEqual(self.redis.command("GET", f"siprecd:owner:{session_id}").split(b"\r\n")[1].decode(), second)
        self.assertEqual(client.bye().status, 200)
        for done in (other, late):
            self.assertEqual(done.bye().status, 200)

        (directory,) = [d for d in sessions(self.nodes[second].recordings) if read_json(d)["session_id"] == session_id]
        taken = read_json(directory)
        self.assertEqual(taken["session_id"], session_id)
        self.assertEqual((taken["state"], taken["end_reason"]), ("ended", "BYE from the SRC"))
        self.assertEqual(taken["started_at"], document["started_at"])
        (resumption,) = taken["resumptions"]
        self.assertEqual(
            (resumption["how"], resumption["node"], resumption["previous_node"], resumption["segment"]),
            ("replaces", second, first, 2),
        )
        self.assertEqual(taken["participants"], document["participants"])  # metadata carried over
        for entry in taken["streams"]:
            self.assertEqual(entry["segments"][1], entry["file"])
            self.assertTrue(entry["file"].endswith(".seg2.wav"), entry["file"])
        started = iso_seconds(taken["started_at"])
        for spec in streams:
            entry = {s["label"]: s for s in taken["streams"]}[spec.label]
            rate, _, samples = read_wav(os.path.join(directory, entry["file"]))
            onset = int(np.flatnonzero(samples)[0])
            assert_near(self, dominant_frequency(samples[onset:], rate), {"a": TONE_A, "b": TONE_B}[spec.label], 5, "tone")
            # Segment 2 starts where segment 1 ended (the positions node A stored on its tick),
            # so its silence runs to the first packet sent to node B.
            part = parts[spec.label]
            assert_near(self, (len(part) + onset) / rate, after.times[spec.label][0] - started, 0.3, f"{spec.label}: timeline")
            sent = after.times[spec.label][-1] + PACKET_TIME - after.times[spec.label][0]
            assert_near(self, (len(samples) - onset) / rate, sent, 0.05, f"{spec.label}: audio on node B")
        self.assertTrue(before.sent("a"))

    def test_replaces_unknown_dialog_481(self) -> None:
        client = SRCClient(self.kamailio.port)
        self.addCleanup(client.close)
        client.extra_headers = ["Replaces: no-such-call@example.com;to-tag=1;from-tag=2"]
        response = client.invite([stream("PCMA", "a", TONE_A, 0.1)])
        self.assertEqual(response.status, 481, response)
