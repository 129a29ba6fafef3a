"""The parent's web side over its workers (siprecd.web.cluster), over real HTTP on loopback.

Each stand-in worker is the real single-process web tree (build_root with the real Health,
Ready, MetricsResource and ApiResource, behind the real auth) on 127.0.0.1, an ephemeral port,
in front of a real Controller driven through a real SIP stack on a fake reactor (as in
tests/test_web_api.py); all of them share one recording directory, as workers of one server do.
The parent is build_cluster_site over a StaticDirectory naming them.  Dead, refusing, silent,
stalling and garbage-speaking workers are Sites of their own.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from siprecd.config import load_config
from siprecd.crypto.at_rest import AtRest
from siprecd.crypto.keystore import MemoryKeyStore
from siprecd.metrics import Metrics
from siprecd.service import build_stack
from siprecd.siprec.controller import build_controller
from siprecd.web.api import ApiResource
from siprecd.web.auth import protect
from siprecd.web.catalog import RecordingCatalog
from siprecd.web.cluster import build_cluster_site
from siprecd.web.cluster_metrics import merge, parse_worker
from siprecd.web.health import Check
from siprecd.web.metrics import MetricsResource
from siprecd.web.root import build_root
from siprecd.workers.directory import StaticDirectory, WorkerInfo
from tests.test_siprec_controller import PORT_MIN, SRS_ADDRESS, START, Call, FakeUDP, MediaReactor, multipart, rfc7865, rfc7865_sdp
from tests.test_web_api import ALICE, BOB, T12, T13A, ApiTestCase, HttpTestCase, _Client, flip_byte, pcm, sid, wav_frames

TOKEN = "s3cret-token-0123456789"
BASIC = "Basic b3BzOnBhc3N3b3JkMQ=="  # ops:password1
TIMEOUT = 0.5  # the parent's patience with a worker, in these tests


def environment(recordings: str, **web: str) -> dict[str, str]:
    env = {
        "SIPRECD_RECORDING_DIRECTORY": recordings,
        "SIPRECD_MEDIA_PORT_MIN": str(PORT_MIN),
        "SIPRECD_MEDIA_PORT_MAX": str(PORT_MIN + 99),
        "SIPRECD_MEDIA_RECEIVE_BUFFER": "0",
    }
    env.update({f"SIPRECD_WEB_{k.upper()}": v for k, v in web.items()})
    return env


class Worker:
    """One worker's whole web side (as service.make_service builds it) on loopback."""

    def __init__(self, test: SynchronousTestCase, index: int, env: dict[str, str], at_rest: AtRest | None = None) -> None:
        self.test = test
        self.index = index
        self.config = load_config(None, env)
        self.clock = MediaReactor()
        self.clock.advance(START)
        self.metrics = Metrics()
        self.controller, _ = build_controller(self.clock, self.config, AtRest(None), self.metrics,
                                              port_probe=self.clock.bindable)
        self.stack = build_stack(self.clock, self.config, self.controller, self.metrics)
        self.controller.attach(self.stack)
        self.udp = FakeUDP()
        self.stack.transports.udp = self.udp  # type: ignore[assignment]
        self.stack.core.local_addresses["UDP"] = (SRS_ADDRESS, 5060)
        self.problem: str | None = None  # what its critical check says
        self.degraded: str | None = None  # what its non-critical check says
        web = self.config.web
        tokens = [web.api_token] if web.api_token else []
        root = build_root(
            self.clock,
            [Check("recording_directory", lambda: self.problem),
             Check("state_store_redis", lambda: self.degraded, critical=False)],
            metrics=MetricsResource(self.metrics),
            api=ApiResource(self.controller, RecordingCatalog(self.config.recording.directory, at_rest and at_rest.keys),
                            at_rest, self.clock),
            protect=lambda resource: protect(resource, tokens, web.users),
            protect_health=web.protect_health,
            protect_metrics=web.protect_metrics,
        )
        self.port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        test.addCleanup(self.port.stopListening)

    def info(self, **changes: Any) -> WorkerInfo:
        fields = {"index": self.index, "pid": 4000 + self.index, "alive": True, "restarts": 0,
                  "web_url": f"http://127.0.0.1:{self.port.getHost().port}"}
        return WorkerInfo(**{**fields, **changes})

    # what Call needs of its test
    def assertEqual(self, *args: Any) -> None:  # noqa: N802
        self.test.assertEqual(*args)

    def responses(self, since: int = 0) -> list[Any]:
        from siprecd.sip.message import Response, parse_message

        return [m for m in (parse_message(d) for d, _, _ in self.udp.sent[since:]) if isinstance(m, Response)]

    def call(self) -> tuple[Call, str]:
        before = set(self.controller.sessions)
        call = Call(self)  # type: ignore[arg-type]
        call.setup(*multipart(rfc7865_sdp(), rfc7865("complete.xml")))
        (session_id,) = set(self.controller.sessions) - before
        return call, session_id


# --- stand-ins for workers that misbehave ------------------------------------------------------


class Silent(Resource):
    """Accepts every request and never answers (a worker stuck in a long reactor turn)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.lost: list[Request] = []

    def render(self, request: Request) -> int:
        request.notifyFinish().addErrback(lambda _: self.lost.append(request))
        return NOT_DONE_YET


class Garbage(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"this is {not prometheus text\n"


@implementer(IPushProducer)
class Endless(Resource):
    """An audio file that never ends, written whenever the connection wants more; or, with
    ``stall_after``, one that stops sending (but keeps the connection) after that many bytes."""

    isLeaf = True

    def __init__(self, stall_after: int | None = None) -> None:
        super().__init__()
        self.stall_after = stall_after
        self.sent = 0
        self.paused = False
        self.request: Request | None = None
        self.finished: Deferred[str] = Deferred()

    def render_GET(self, request: Request) -> int:  # noqa: N802
        self.request = request
        request.setHeader(b"content-type", b"audio/wav")
        request.setHeader(b"content-length", b"%d" % (1 << 40))
        request.notifyFinish().addBoth(lambda r: self.finished.callback("lost" if r is not None else "done"))
        request.registerProducer(self, True)
        reactor.callLater(0, self.resumeProducing)
        return NOT_DONE_YET

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        while not self.paused and self.request is not None:
            if self.stall_after is not None and self.sent >= self.stall_after:
                return
            self.request.write(b"\x55" * 65536)
            self.sent += 65536
            if self.sent > (256 << 20):
                return  # the test failed: nothing pushed back; stop before the memory is gone

    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True

    def stopProducing(self) -> None:  # noqa: N802
        self.request = None


def serve(test: SynchronousTestCase, resource: Resource) -> str:
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return f"http://127.0.0.1:{port.getHost().port}"


def closed_port_url() -> str:
    port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
    number = port.getHost().port
    port.stopListening()
    return f"http://127.0.0.1:{number}"


def series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def summed(text: str, name: str, drop: str = "worker") -> dict[tuple[tuple[str, str], ...], float]:
    """``sum without (worker) (name)``."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for (sample, labels), value in series(text).items():
        if sample == name:
            key = tuple(kv for kv in labels if kv[0] != drop)
            out[key] = out.get(key, 0) + value
    return out


class RoutedCollector:
    """A parent's own collector (the supervisor's counters, say)."""

    def collect(self) -> list[Any]:
        family = CounterMetricFamily("siprecd_parent_routed_messages", "Messages routed.", labels=["transport"])
        family.add_metric(["UDP"], 12)
        return [family]


# --- the fixture ------------------------------------------------------------------------------


class ClusterTestCase(HttpTestCase):
    web: dict[str, str] = {}

    # finished sessions written to the shared directory, as tests/test_web_api.py writes them
    make_session = ApiTestCase.make_session
    write_wav = ApiTestCase.write_wav

    def setUp(self) -> None:
        self.recordings = os.path.abspath(self.mktemp())
        os.makedirs(self.recordings)
        self.writer = self.at_rest()
        self.env = environment(self.recordings, **self.web)
        self.workers = [Worker(self, 0, self.env, self.writer), Worker(self, 1, self.env, self.writer)]
        self.infos = [w.info() for w in self.workers]

    def at_rest(self) -> AtRest:
        return AtRest(None)

    def start_parent(self, infos: list[WorkerInfo] | None = None, env: dict[str, str] | None = None) -> None:
        config = load_config(None, env or self.env)
        site = build_cluster_site(reactor, config, StaticDirectory(infos if infos is not None else self.infos),
                                  collectors=[RoutedCollector()], timeout=TIMEOUT)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    async def get_json(self, path: str, status: int = 200, **headers: str) -> Any:
        reply = await self.get(path, **headers)
        self.assertEqual(reply.status, status, reply.body[:500])
        self.assertTrue(reply.complete)
        return reply.json()


class AggregatedApiTests(ClusterTestCase):
    async def test_sessions_are_the_union_with_the_worker(self) -> None:
        self.start_parent()
        self.assertEqual(await self.get_json("/api/sessions"), {"sessions": [], "problems": []})
        first, one = self.workers[0].call()
        self.workers[1].clock.advance(5)  # started later: listed first
        _, two = self.workers[1].call()
        _, three = self.workers[1].call()
        sessions = (await self.get_json("/api/sessions"))["sessions"]
        self.assertEqual({(s["session_id"], s["worker"]) for s in sessions}, {(one, 0), (two, 1), (three, 1)})
        self.assertEqual(sessions[-1]["session_id"], one)
        self.assertEqual(sessions[-1]["call_id"], first.call_id)
        # the rest of each summary is the worker's own
        own = (await self.worker_json(1, "/api/sessions"))["sessions"]
        self.assertEqual([{k: v for k, v in s.items() if k != "worker"} for s in sessions[:2]], own)

    async def worker_json(self, index: int, path: str) -> Any:
        client = _Client(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.workers[index].port.getHost().port)
        await connectProtocol(endpoint, client)
        from tests.test_web_api import parse_reply

        return parse_reply(await client.done, "GET").json()

    async def test_one_session_is_found_on_its_worker(self) -> None:
        self.start_parent()
        _, session_id = self.workers[1].call()
        detail = await self.get_json(f"/api/sessions/{session_id}")
        self.assertEqual(detail["session_id"], session_id)
        self.assertEqual(detail, await self.worker_json(1, f"/api/sessions/{session_id}"))
        missing = await self.get_json(f"/api/sessions/{sid(9)}", 404)
        self.assertEqual(missing, {"error": f"no live recording session {sid(9)}"})
        index = await self.get_json("/api")
        self.assertIn("/api/recordings/{id}/streams/{label}/audio", index["endpoints"])
        self.assertIn("no such API endpoint", (await self.get_json("/api/nothing", 404))["error"])
        reply = await self.request("POST", "/api/sessions")
        self.assertEqual((reply.status, reply.header("allow")), (405, "GET, HEAD"))
        reply = await self.request("HEAD", f"/api/sessions/{session_id}")
        self.assertEqual((reply.status, reply.body), (200, b""))
        self.assertGreater(int(reply.header("content-length") or 0), 100)

    async def test_server_sums_the_workers(self) -> None:
        self.start_parent()
        call, _ = self.workers[0].call()
        self.workers[1].call()
        self.workers[1].call()
        self.assertEqual(call.request("BYE").status, 200)
        server = await self.get_json("/api/server")
        self.assertEqual((server["active_sessions"], server["finished_sessions"]), (2, 1))
        self.assertEqual(server["recording_directory"], self.recordings)
        self.assertEqual(
            [(w["worker"], w["pid"], w["active_sessions"], w["finished_sessions"], w["problem"]) for w in server["workers"]],
            [(0, 4000, 0, 1, None), (1, 4001, 2, 0, None)],
        )
        self.assertIsInstance(server["uptime_seconds"], float)

    async def test_recordings_and_their_audio(self) -> None:
        self.make_session(1, T12, "call-one@src", [ALICE])
        self.make_session(2, T13A, "call-two@src", [BOB], frames=40000)
        self.start_parent()
        listing = await self.get_json("/api/recordings")
        self.assertEqual([r["session_id"] for r in listing["recordings"]], [sid(2), sid(1)])
        self.assertEqual(listing, await self.worker_json(0, "/api/recordings"))
        self.assertEqual((await self.get_json("/api/recordings?call_id=call-one@src"))["total"], 1)
        self.assertIn("participant", (await self.get_json("/api/recordings?who=x", 400))["error"])
        detail = await self.get_json(f"/api/recordings/{sid(2)}")
        url = detail["links"]["audio"]["1"]
        reply = await self.get(url)
        path = os.path.join(self.catalog_dir(sid(2)), "stream-1-1.wav")
        with open(path, "rb") as handle:
            expected = handle.read()
        self.assertEqual((reply.status, reply.header("content-type")), (200, "audio/wav"))
        self.assertEqual((reply.body, reply.complete), (expected, True))
        self.assertIn(sid(2), reply.header("content-disposition") or "")
        ranged = await self.get(url, Range="bytes=10-19")
        self.assertEqual((ranged.status, ranged.body), (206, expected[10:20]))
        self.assertEqual(ranged.header("content-range"), f"bytes 10-19/{len(expected)}")
        self.assertEqual((await self.get(detail["links"]["mix_audio"])).status, 200)
        await self.get_json(f"/api/recordings/{sid(2)}/streams/9/audio", 404)

    def catalog_dir(self, session_id: str) -> str:
        entry = RecordingCatalog(self.recordings, None).get(session_id)
        assert entry is not None
        return entry.directory

    async def test_a_live_session_is_not_a_recording_yet(self) -> None:
        self.start_parent()
        call, session_id = self.workers[1].call()
        error = (await self.get_json(f"/api/recordings/{session_id}", 409))["error"]
        self.assertIn(session_id, error)
        self.assertEqual(call.request("BYE").status, 200)
        self.assertEqual((await self.get_json(f"/api/recordings/{session_id}"))["session_id"], session_id)

    async def test_dashboard_is_served_by_the_parent(self) -> None:
        self.start_parent()
        page = await self.get("/")
        self.assertEqual((page.status, page.header("content-type")), (200, "text/html; charset=utf-8"))
        self.assertIn(b"app.js", page.body)
        self.assertEqual((await self.get("/app.js")).status, 200)


class EncryptedTests(ClusterTestCase):
    """Workers that share the key store (a file store in production) decrypt for the parent."""

    def at_rest(self) -> AtRest:
        return AtRest(MemoryKeyStore(), chunk_size=1000)

    async def test_decrypted_audio_and_a_tampered_file_cut_short(self) -> None:
        self.make_session(1, T12, "call-one@src", [ALICE], frames=6000)
        self.start_parent()
        reply = await self.get(f"/api/recordings/{sid(1)}/streams/1/audio")
        self.assertEqual((reply.status, reply.complete), (200, True))
        self.assertEqual(wav_frames(reply.body), (8000, 1, pcm(6000, seed=1)))
        flip_byte(os.path.join(self.catalog_dir(sid(1)), "stream-1-1.wav.enc"), -900)  # a late chunk's ciphertext
        reply = await self.get(f"/api/recordings/{sid(1)}/streams/1/audio")
        self.assertEqual(reply.status, 200)
        self.assertFalse(reply.complete)  # the worker aborted, so did the parent: visibly short
        self.assertLess(len(reply.body), 44 + 12000 - 900)

    def catalog_dir(self, session_id: str) -> str:
        entry = RecordingCatalog(self.recordings, self.writer.keys).get(session_id)
        assert entry is not None
        return entry.directory


class StreamingTests(ClusterTestCase):
    """The audio relay holds no whole file: the worker is paused by the client's pace."""

    async def test_a_client_that_does_not_read_pauses_the_worker(self) -> None:
        endless = Endless()
        self.start_parent([WorkerInfo(0, 1, serve(self, endless), True, 0), WorkerInfo(1, 2, serve(self, Resource()), True, 0)])

        class Stalled(_Client):
            def connectionMade(self) -> None:  # noqa: N802
                super().connectionMade()
                self.transport.pauseProducing()  # reads nothing

        client = Stalled(b"GET /api/recordings/x/streams/1/audio HTTP/1.1\r\nHost: x\r\n\r\n")
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port), client)
        await deferLater(reactor, 1.0, lambda: None)
        # Socket buffers on both hops hold a few MB at most; without flow control it would be
        # the 256 MB cap.
        self.assertTrue(endless.paused)
        self.assertLess(endless.sent, 32 << 20)
        sent = endless.sent
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(endless.sent, sent)
        client.transport.abortConnection()
        self.assertEqual(await endless.finished, "lost")  # the client left: so did the relay

    async def test_a_worker_that_stalls_mid_body_is_cut_off(self) -> None:
        stalling = Endless(stall_after=3 * 65536)
        self.start_parent([WorkerInfo(0, 1, serve(self, stalling), True, 0)])
        started = time.monotonic()
        reply = await self.get("/api/recordings/x/streams/1/audio")
        self.assertLess(time.monotonic() - started, 5 * TIMEOUT + 2)
        self.assertEqual(reply.status, 200)
        self.assertEqual(len(reply.body), 3 * 65536)
        self.assertFalse(reply.complete)  # fewer bytes than Content-Length: visibly cut short
        self.assertEqual(await stalling.finished, "lost")


class MetricsTests(ClusterTestCase):
    async def test_worker_series_are_labelled_and_sum_to_one_process(self) -> None:
        self.start_parent()
        # The same calls in one process, for the figure the sum must give.
        single = Worker(self, 9, self.env)
        for worker, groups in ((self.workers[0], [1]), (self.workers[1], [2]), (single, [1, 2])):
            for calls in groups:  # some calls, the last of them ended
                for _ in range(calls):
                    call, _ = worker.call()
                self.assertEqual(call.request("BYE").status, 200)
        reply = await self.get("/metrics")
        self.assertEqual(reply.status, 200)
        self.assertTrue(reply.header("content-type").startswith("text/plain"))
        text = reply.body.decode()
        single_text = (await self.fetch_worker(single, "/metrics")).decode()
        for name in ("siprecd_sip_requests_total", "siprecd_sip_responses_total", "siprecd_sessions_finished_total"):
            self.assertEqual(summed(text, name), summed(single_text, name, drop="none"), name)
            self.assertTrue(summed(text, name), name)
        gauges = series(text)
        self.assertEqual(gauges[("siprecd_sessions_active", (("worker", "0"),))], 0)
        self.assertEqual(gauges[("siprecd_sessions_active", (("worker", "1"),))], 1)
        for line in ("# TYPE siprecd_sip_requests_total counter", "# HELP siprecd_sessions_active "):
            self.assertEqual(text.count(line), 1, line)
        self.assertEqual(gauges[("siprecd_workers_configured", ())], 2)
        self.assertEqual(gauges[("siprecd_workers_alive", ())], 2)
        self.assertEqual(gauges[("siprecd_worker_scrape_ok", (("worker", "1"),))], 1)
        self.assertEqual(gauges[("siprecd_worker_restarts_total", (("worker", "0"),))], 0)
        self.assertIn(("process_resident_memory_bytes", (("worker", "parent"),)), gauges)
        self.assertIn(("process_resident_memory_bytes", (("worker", "1"),)), gauges)
        self.assertEqual(gauges[("siprecd_parent_routed_messages_total", (("transport", "UDP"),))], 12)
        openmetrics = await self.get("/metrics", Accept="application/openmetrics-text; version=1.0.0")
        self.assertTrue(openmetrics.header("content-type").startswith("application/openmetrics-text"))
        self.assertTrue(openmetrics.body.endswith(b"# EOF\n"))

    async def fetch_worker(self, worker: Worker, path: str) -> bytes:
        client = _Client(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", worker.port.getHost().port), client)
        return (await client.done).partition(b"\r\n\r\n")[2]

    async def test_missing_workers_are_flagged_not_fatal(self) -> None:
        infos = [self.infos[0], WorkerInfo(1, None, None, False, 3), WorkerInfo(2, 7, serve(self, Garbage()), True, 0),
                 WorkerInfo(3, 8, serve(self, Silent()), True, 1)]
        self.start_parent(infos)
        started = time.monotonic()
        reply = await self.get("/metrics")
        self.assertLess(time.monotonic() - started, TIMEOUT + 2)
        self.assertEqual(reply.status, 200)
        values = series(reply.body.decode())
        self.assertEqual([values[("siprecd_worker_scrape_ok", (("worker", str(i)),))] for i in range(4)], [1, 0, 0, 0])
        self.assertEqual(values[("siprecd_workers_alive", ())], 3)
        self.assertEqual(values[("siprecd_worker_restarts_total", (("worker", "1"),))], 3)
        workers = {dict(labels).get("worker") for (name, labels) in values if name == "siprecd_sessions_active"}
        self.assertEqual(workers, {"0"})


class MergeTests(SynchronousTestCase):
    def test_families_merge_with_one_help_each(self) -> None:
        a = "# HELP x_total X.\n# TYPE x_total counter\nx_total{k=\"a\"} 1\n"
        b = "# HELP x_total X.\n# TYPE x_total counter\nx_total{k=\"a\"} 2\n# TYPE y gauge\ny 5\n"
        merged = merge([parse_worker(a, "0"), parse_worker(b, "1")])
        self.assertEqual([m.name for m in merged], ["x", "y"])
        self.assertEqual([(s.labels, s.value) for s in merged[0].samples],
                         [({"k": "a", "worker": "0"}, 1), ({"k": "a", "worker": "1"}, 2)])
        self.assertRaises(ValueError, parse_worker, "x{ 1\n", "0")


class HealthTests(ClusterTestCase):
    async def test_all_well(self) -> None:
        self.start_parent()
        health = await self.get_json("/health")
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["workers"], {"worker_0": {"ok": True, "detail": None},
                                             "worker_1": {"ok": True, "detail": None}})
        self.assertEqual(sorted(health), ["failing", "status", "uptime_seconds", "version", "workers"])
        ready = await self.get_json("/ready")
        self.assertEqual((ready["status"], ready["failing"], ready["degraded"]), ("ready", [], []))
        self.assertEqual(sorted(ready["checks"]), ["recording_directory", "worker_0", "worker_1"])

    async def test_a_worker_not_ready_or_degraded(self) -> None:
        self.start_parent()
        self.workers[1].degraded = "Redis is down"
        ready = await self.get_json("/ready")
        self.assertEqual((ready["status"], ready["degraded"]), ("degraded", ["worker_1"]))
        self.assertIn("state_store_redis: Redis is down", ready["checks"]["worker_1"]["detail"])
        self.workers[1].problem = "12 bytes free"
        ready = await self.get_json("/ready", 503)
        self.assertEqual((ready["status"], ready["failing"]), ("not ready", ["worker_1"]))
        self.assertEqual(ready["checks"]["worker_1"]["detail"],
                         "worker 1 (pid 4001) is not ready: recording_directory: 12 bytes free")
        self.assertEqual((await self.get_json("/health"))["status"], "ok")  # alive all the same

    async def test_dead_refusing_and_silent_workers(self) -> None:
        silent = Silent()
        infos = [self.infos[0], WorkerInfo(1, None, None, False, 2), WorkerInfo(2, 77, closed_port_url(), True, 0),
                 WorkerInfo(3, 78, serve(self, silent), True, 0)]
        self.start_parent(infos)
        started = time.monotonic()
        health = await self.get_json("/health", 503)
        self.assertLess(time.monotonic() - started, TIMEOUT + 2)
        self.assertEqual((health["status"], health["failing"]), ("failing", ["worker_1", "worker_2", "worker_3"]))
        details = [health["workers"][f"worker_{i}"]["detail"] for i in range(4)]
        self.assertEqual(details[:2], [None, "worker 1 is not running (restarted 2 times)"])
        self.assertEqual(details[2], "worker 2 (pid 77): refused the connection")
        self.assertEqual(details[3], f"worker 3 (pid 78): no answer within {TIMEOUT:g} s")
        ready = await self.get_json("/ready", 503)
        self.assertEqual(ready["failing"], ["worker_1", "worker_2", "worker_3"])
        self.assertEqual(ready["checks"]["worker_3"]["detail"], details[3])
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(silent.lost), 2)  # the parent gave up on each request: none is left open

    async def test_the_api_carries_on_without_them(self) -> None:
        _, session_id = self.workers[0].call()
        infos = [self.infos[0], WorkerInfo(1, None, None, False, 0), WorkerInfo(2, 78, serve(self, Silent()), True, 0)]
        self.start_parent(infos)
        sessions = await self.get_json("/api/sessions")
        self.assertEqual([s["session_id"] for s in sessions["sessions"]], [session_id])
        self.assertEqual(sessions["problems"], ["worker 1 is not running (restarted 0 times)",
                                                f"worker 2 (pid 78): no answer within {TIMEOUT:g} s"])
        self.assertEqual((await self.get_json(f"/api/sessions/{session_id}"))["session_id"], session_id)
        error = (await self.get_json(f"/api/sessions/{sid(5)}", 503))["error"]
        self.assertEqual(error, f"no live recording session {sid(5)} on the workers that answered; no answer from: "
                                f"worker 1 is not running (restarted 0 times); worker 2 (pid 78): no answer within "
                                f"{TIMEOUT:g} s")
        # Recordings are in the shared directory: the first worker that answers knows.
        self.assertEqual((await self.get_json(f"/api/recordings/{sid(5)}", 404))["error"], f"no recording {sid(5)}")
        server = await self.get_json("/api/server")
        self.assertEqual(server["active_sessions"], 1)
        self.assertEqual([w["problem"] is None for w in server["workers"]], [True, False, False])

    async def test_a_worker_answering_garbage_is_named(self) -> None:
        self.workers[0].call()
        self.start_parent([self.infos[0], WorkerInfo(1, 9, serve(self, Garbage()), True, 0)])
        sessions = await self.get_json("/api/sessions")
        self.assertEqual((len(sessions["sessions"]), sessions["problems"]), (1, ["worker 1: the answer is not JSON"]))
        server = await self.get_json("/api/server")
        self.assertEqual((server["active_sessions"], server["workers"][1]["problem"]),
                         (1, "worker 1: the answer is not JSON"))
        ready = await self.get_json("/ready", 503)
        self.assertEqual(ready["checks"]["worker_1"]["detail"], "worker 1: /ready did not answer its usual JSON")

    async def test_no_worker_at_all(self) -> None:
        self.start_parent([WorkerInfo(0, None, None, False, 5)])
        self.assertIn("worker 0 is not running", (await self.get_json("/api/sessions", 503))["error"])
        self.assertIn("worker 0 is not running", (await self.get_json("/api/server", 503))["error"])
        self.assertIn("worker 0 is not running", (await self.get_json("/api/recordings", 503))["error"])
        self.assertEqual((await self.get("/metrics")).status, 200)


class AuthTests(ClusterTestCase):
    web = {"api_token": TOKEN, "basic_users": "ops:password1", "protect_health": "true", "protect_metrics": "true"}

    async def test_the_same_credentials_pass_through(self) -> None:
        _, session_id = self.workers[1].call()
        self.start_parent()
        for path in ("/api/sessions", "/api/server", f"/api/sessions/{session_id}", "/health", "/ready", "/metrics"):
            self.assertEqual((await self.get(path)).status, 401, path)
            self.assertEqual((await self.get(path, Authorization="Bearer wrong")).status, 401, path)
            for credentials in (f"Bearer {TOKEN}", BASIC):
                reply = await self.get(path, Authorization=credentials)
                self.assertEqual(reply.status, 200, (path, credentials, reply.body[:300]))
        sessions = (await self.get("/api/sessions", Authorization=BASIC)).json()
        self.assertEqual(([s["session_id"] for s in sessions["sessions"]], sessions["problems"]), ([session_id], []))
        self.assertEqual((await self.get("/", Authorization=BASIC)).status, 200)

    async def test_open_health_uses_the_parents_token_with_the_workers(self) -> None:
        # Workers that protect /health, a parent that does not: it asks them with its api_token.
        self.start_parent(env={**self.env, "SIPRECD_WEB_PROTECT_HEALTH": "false", "SIPRECD_WEB_PROTECT_METRICS": "false"})
        self.assertEqual((await self.get_json("/health"))["failing"], [])
        self.assertEqual((await self.get_json("/ready"))["failing"], [])
        values = series((await self.get("/metrics")).body.decode())
        self.assertEqual(values[("siprecd_worker_scrape_ok", (("worker", "1"),))], 1)

    async def test_a_worker_refusing_the_credentials_is_named(self) -> None:
        # A parent whose token the workers do not know (a config mismatch) sees 401s, named.
        self.start_parent(env={**self.env, "SIPRECD_WEB_API_TOKEN": "another-token-0123456789", "SIPRECD_WEB_BASIC_USERS": ""})
        health = await self.get_json("/health", 503, Authorization="Bearer another-token-0123456789")
        self.assertEqual(health["workers"]["worker_0"]["detail"], "worker 0 (pid 4000): /health answered HTTP 401")
