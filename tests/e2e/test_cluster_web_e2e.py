"""``[service] workers = 2`` seen from ``[web]``: a real twistd parent and its two workers, one
web server (siprecd.web.cluster) on the configured port.

Calls land on both workers (the Call-ID picks one); the parent's API lists them together with
their worker, finds one session on its worker, counts them in /metrics with a ``worker`` label
(the sum over it is the single-process figure), lists the recordings both wrote and streams their
audio; a worker killed with SIGKILL is named by /health until it is back.  The browser tests of
tests/e2e/test_dashboard_e2e.py run again over the workers (``ClusterDashboardTests``).

Skipped where ``siprecd.workers`` has no parent process (before the workers branch is merged).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import urllib.error
import uuid
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.e2e import test_dashboard_e2e as dashboard
from tests.e2e.server import Server
from tests.e2e.src import SRCClient
from tests.e2e.test_media_e2e import TONE_A, TONE_B, stream
from tests.e2e.test_redundancy_e2e import wait_for

try:
    import siprecd.workers.parent  # noqa: F401  (the supervisor, which serves build_cluster_site)
    from siprecd.workers.routing import worker_for
except ImportError:  # the workers branch is not merged here
    worker_for = None

WORKERS = 2
TOKEN = "e2e-cluster-token-51b9"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def skip_without_workers() -> None:
    if worker_for is None:
        raise SkipTest("siprecd.workers has no parent process here ([service] workers is not merged)")


class ClusterServer(Server):
    """The same server with ``[service] workers = 2``; started once its /ready says so (the
    parent's web answers before the workers are up)."""

    def config_text(self) -> str:
        self.sections = {**{k: dict(v) for k, v in self.sections.items()}, "service": {"workers": str(WORKERS)}}
        return super().config_text()

    def _listening(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/ready", timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.HTTPError):
            return False


def call_id_for(index: int) -> str:
    """A Call-ID that the parent routes to worker ``index``."""
    while True:
        call_id = f"{uuid.uuid4().hex}@src.example.com"
        if worker_for(call_id.encode(), WORKERS) == index:  # type: ignore[misc]
            return call_id


class ClusterWebTests(SynchronousTestCase):
    def setUp(self) -> None:
        skip_without_workers()
        self.server = ClusterServer(self.mktemp(), sections={"web": {"api_token": TOKEN, "protect_metrics": "true"}})
        self.server.start(timeout=30)
        self.addCleanup(self.server.stop_cleanly, self)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.server.web_port}{path}", headers=AUTH if headers is None else headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def json(self, path: str, status: int = 200) -> Any:
        code, body = self.get(path)
        self.assertEqual(code, status, body[:500])
        return json.loads(body)

    def test_calls_on_both_workers_are_one_server(self) -> None:
        spec = [stream("PCMU", "a", TONE_A, 1.0), stream("PCMU", "b", TONE_B, 1.0)]
        clients = {}
        for worker in (0, 1, 1):
            client = SRCClient(self.server.sip_port)
            self.addCleanup(client.close)
            client.call_id = call_id_for(worker)
            self.assertEqual(client.invite(spec).status, 200)
            client.send_rtp(spec)
            clients[client.call_id] = (worker, client)

        sessions = self.json("/api/sessions")
        self.assertEqual(sessions["problems"], [])
        self.assertEqual({(s["call_id"], s["worker"]) for s in sessions["sessions"]},
                         {(call_id, worker) for call_id, (worker, _) in clients.items()})
        for session in sessions["sessions"]:
            self.assertEqual([s["packets"] for s in session["streams"]], [50, 50])
            detail = self.json(f"/api/sessions/{session['session_id']}")
            self.assertEqual(detail["call_id"], session["call_id"])

        self.assertEqual(self.get("/metrics", {})[0], 401)
        code, text = self.get("/metrics")
        self.assertEqual(code, 200)
        values: dict[tuple[str, str], float] = {}
        invites = 0.0
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                if sample.name == "siprecd_sip_requests_total" and sample.labels["method"] == "INVITE":
                    invites += sample.value
                values[(sample.name, sample.labels.get("worker", ""))] = sample.value
        self.assertEqual(invites, 3)  # what one process would have counted
        self.assertEqual((values[("siprecd_sessions_active", "0")], values[("siprecd_sessions_active", "1")]), (1, 2))
        self.assertEqual(values[("siprecd_workers_configured", "")], WORKERS)
        self.assertEqual(values[("siprecd_worker_scrape_ok", "1")], 1)

        for _, client in clients.values():
            self.assertEqual(client.bye().status, 200)
        server = wait_for(lambda: (s := self.json("/api/server"))["finished_sessions"] == 3 and s, "three finished sessions")
        self.assertEqual(sorted(w["finished_sessions"] for w in server["workers"]), [1, 2])
        recordings = wait_for(lambda: (r := self.json("/api/recordings"))["total"] == 3 and r, "three recordings")
        self.assertEqual({r["call_id"] for r in recordings["recordings"]}, set(clients))
        item = recordings["recordings"][0]
        code, audio = self.get(item["streams"][0]["audio_url"])
        self.assertEqual(code, 200)
        (path,) = glob.glob(os.path.join(self.server.recordings, "*", "*", "*", item["session_id"], item["streams"][0]["file"]))
        with open(path, "rb") as handle:
            self.assertEqual(audio, handle.read())

    def test_a_killed_worker_is_named_until_it_is_back(self) -> None:
        pid = {w["worker"]: w["pid"] for w in self.json("/api/server")["workers"]}[1]
        os.kill(pid, signal.SIGKILL)
        health = wait_for(lambda: (h := self.json_any("/health"))["failing"] and h, "worker 1 to be named", 10)
        self.assertEqual(health["failing"], ["worker_1"])
        self.assertIn("worker 1", health["workers"]["worker_1"]["detail"])
        self.assertTrue(health["workers"]["worker_0"]["ok"])
        wait_for(lambda: self.get("/health")[0] == 200, "worker 1 to be back", 30)
        self.assertEqual(self.get("/ready")[0], 200)
        text = self.get("/metrics")[1].decode()
        self.assertIn('siprecd_worker_restarts_total{worker="1"} 1.0', text)

    def json_any(self, path: str) -> Any:
        return json.loads(self.get(path)[1])


class ClusterDashboardTests(dashboard.DashboardTests):
    """The dashboard's browser story, unchanged, over two workers."""

    server_class = ClusterServer

    def setUp(self) -> None:
        skip_without_workers()
        super().setUp()


class OpenClusterDashboardTests(dashboard.OpenDashboardTests):
    server_class = ClusterServer

    def setUp(self) -> None:
        skip_without_workers()
        super().setUp()
