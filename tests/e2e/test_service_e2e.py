"""Operations end to end: systemd notification, /health and /ready, graceful drain with calls in
progress, SIGHUP certificate reload, JSON logs, and the systemd unit itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.audio import assert_near, dominant_frequency, read_wav
from tests.certs import make_test_pki
from tests.e2e.server import REPOSITORY, TWISTD, Server
from tests.e2e.src import SRCClient
from tests.e2e.test_media_e2e import TONE_A, TONE_B, stream


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


class ServiceTestCase(SynchronousTestCase):
    def notify_socket(self) -> socket.socket:
        # AF_UNIX paths are short (108 bytes): an abstract socket, as systemd itself may use.
        path = f"@siprecd-test-{os.getpid()}-{time.monotonic_ns()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + path[1:])
        sock.settimeout(10)
        self.addCleanup(sock.close)
        self.notify_path = path
        return sock

    def wait_for(self, sock: socket.socket, state: str) -> list[str]:
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = sock.recv(4096).decode()
            seen.append(message)
            if state in message.split("\n"):
                return seen
        self.fail(f"no {state} from the server; got {seen}")

    def server(self, **sections: dict[str, str]) -> Server:
        server = Server(self.mktemp(), sections=sections, environment=getattr(self, "environment", {}))
        server.start()
        self.addCleanup(server.stop)
        return server


class DrainTests(ServiceTestCase):
    def test_stop_with_calls_in_progress(self) -> None:
        """SIGTERM: STOPPING=1, new INVITEs get 503, the active call goes on to its own BYE,
        every file is final and plays, and the process exits 0."""
        sock = self.notify_socket()
        self.environment = {"NOTIFY_SOCKET": self.notify_path, "WATCHDOG_USEC": "400000"}
        server = self.server(service={"drain_timeout": "20"})
        self.wait_for(sock, "READY=1")
        self.wait_for(sock, "WATCHDOG=1")
        self.assertEqual(get(server.web_port, "/health")[0], 200)
        status, ready = get(server.web_port, "/ready")
        self.assertEqual((status, ready["failing"]), (200, []))
        self.assertEqual(sorted(ready["checks"]), ["key_store", "recording_directory", "sip_listeners", "state_store"])

        client = SRCClient(server.sip_port)
        self.addCleanup(client.close)
        streams = [stream("PCMU", "a", TONE_A, 2.0), stream("PCMU", "b", TONE_B, 2.0)]
        self.assertEqual(client.invite(streams).status, 200)
        sender = threading.Thread(target=client.send_rtp, args=(streams,))
        sender.start()
        time.sleep(0.5)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        self.wait_for(sock, "STOPPING=1")
        late = SRCClient(server.sip_port)
        self.addCleanup(late.close)
        refused = late.invite([stream("PCMU", "x", TONE_A, 0.1)])
        self.assertEqual((refused.status, refused.headers.get("Retry-After")), (503, "30"))
        sender.join()
        self.assertEqual(client.bye().status, 200)
        self.assertEqual(server.process.wait(20), 0, server.log()[-3000:])
        server.process = None
        log = server.log()
        self.assertNotIn("Traceback", log)
        sessions = [
            os.path.join(root, "session.json")
            for root, _, names in os.walk(server.recordings)
            if "session.json" in names
        ]
        self.assertEqual(len(sessions), 1)
        with open(sessions[0]) as handle:
            document = json.load(handle)
        self.assertEqual((document["state"], document["end_reason"]), ("ended", "BYE from the SRC"))
        directory = os.path.dirname(sessions[0])
        self.assertEqual([n for n in os.listdir(directory) if n.endswith(".part")], [])
        for entry, tone in zip(document["streams"], (TONE_A, TONE_B)):
            rate, _, samples = read_wav(os.path.join(directory, entry["file"]))
            self.assertGreater(len(samples) / rate, 2.0)
            assert_near(self, dominant_frequency(samples[-8000:], rate), tone, 3)

    def test_drain_timeout_ends_calls_with_bye(self) -> None:
        server = self.server(service={"drain_timeout": "1"})
        client = SRCClient(server.sip_port)
        self.addCleanup(client.close)
        self.assertEqual(client.invite([stream("PCMU", "a", TONE_A, 0.5)]).status, 200)
        client.send_rtp([stream("PCMU", "a", TONE_A, 0.5)])
        assert server.process is not None
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        bye, _ = client.sip.recvfrom(65535)  # the SRS ends the call when the drain times out
        waited = time.monotonic() - started
        self.assertTrue(bye.startswith(b"BYE "), bye[:80])
        self.assertGreaterEqual(waited, 0.9)  # the call was given its drain_timeout first
        self.assertEqual(server.process.wait(20), 0)
        server.process = None
        sessions = [os.path.join(r, "session.json") for r, _, n in os.walk(server.recordings) if "session.json" in n]
        with open(sessions[0]) as handle:
            self.assertEqual(json.load(handle)["end_reason"], "SRS shutting down")


class ReadyTests(ServiceTestCase):
    def test_not_ready_below_min_free_space(self) -> None:
        server = self.server(recording={"min_free_space": str(2**62)})
        status, ready = get(server.web_port, "/ready")
        self.assertEqual((status, ready["failing"]), (503, ["recording_directory"]))
        self.assertIn("below [recording] min_free_space", ready["checks"]["recording_directory"]["detail"])
        client = SRCClient(server.sip_port)
        self.addCleanup(client.close)
        response = client.invite([stream("PCMU", "a", TONE_A, 0.1)])
        self.assertEqual(response.status, 503)
        self.assertIn("min_free_space", response.reason)


class ReloadTests(ServiceTestCase):
    def peer_subject(self, port: int, ca: str) -> str:
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", ca, "-brief"],
            input=b"", capture_output=True, timeout=20,
        )
        text = (result.stdout + result.stderr).decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("Peer certificate:"):
                return line
        self.fail(text)

    def test_sighup_reloads_the_certificate(self) -> None:
        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed: run scripts/setup")
        first = make_test_pki(os.path.abspath(self.mktemp()))
        second = make_test_pki(os.path.abspath(self.mktemp()))
        live = os.path.abspath(self.mktemp())
        os.makedirs(live)
        cert, key = os.path.join(live, "server.pem"), os.path.join(live, "server.key")
        shutil.copy(first.server_cert, cert)
        shutil.copy(first.server_key, key)
        server = self.server(sip={"tls_port": "auto", "tls_certificate": cert, "tls_private_key": key})
        before = self.peer_subject(server.tls_port, first.ca_cert)
        shutil.copy(second.server_cert, cert)
        shutil.copy(second.server_key, key)
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "SIGHUP: reloaded" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn("SIGHUP: reloaded TLS certificates", server.log())
        after = self.peer_subject(server.tls_port, second.ca_cert)  # verifies only under the new CA
        self.assertEqual(before, after)  # same subject name (localhost) ...
        failed = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.tls_port}", "-CAfile", first.ca_cert,
             "-verify_return_error", "-brief"],
            input=b"", capture_output=True, timeout=20,
        )
        self.assertNotEqual(failed.returncode, 0)  # ... but the old CA no longer verifies it
        self.assertEqual(server.process.poll(), None)


class LoggingTests(ServiceTestCase):
    def test_json_logs_carry_session_and_call_ids(self) -> None:
        server = Server(self.mktemp(), twistd_options=("--logger=siprecd.logs.json",))
        server.start()
        self.addCleanup(server.stop)
        client = SRCClient(server.sip_port)
        self.addCleanup(client.close)
        self.assertEqual(client.invite([stream("PCMU", "a", TONE_A, 0.1)]).status, 200)
        self.assertEqual(client.bye().status, 200)

        def logged(what: str) -> list[dict[str, Any]]:
            events = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
            return [e for e in events if e.get("log_format", "").startswith(f"recording session {{session_id}} {what}")]

        # Polled, not slept for: the log reaches the file at the server's pace.
        deadline = time.monotonic() + 10
        while not logged("ended") and time.monotonic() < deadline:
            time.sleep(0.1)
        started = logged("started")
        self.assertEqual(len(started), 1, server.output()[-2000:])
        self.assertEqual(started[0]["call_id"], client.call_id)
        ended = logged("ended")
        self.assertTrue(ended, server.output()[-2000:])
        self.assertEqual((ended[0]["session_id"], ended[0]["call_id"]), (started[0]["session_id"], client.call_id))


class UnitFileTests(SynchronousTestCase):
    def test_systemd_analyze_verify(self) -> None:
        if shutil.which("systemd-analyze") is None:
            raise SkipTest("systemd-analyze is not installed")
        with open(os.path.join(REPOSITORY, "systemd", "siprecd.service")) as handle:
            unit = handle.read()
        self.assertIn("Type=notify", unit)
        # [service] workers: systemd signals only the parent, which drains its workers.
        self.assertIn("\nKillMode=mixed\n", unit)
        self.assertIn("\nNotifyAccess=main\n", unit)
        # Verify the unit as installed, with this checkout's twistd standing in for /opt/siprecd.
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "siprecd.service")
        with open(path, "w") as handle:
            handle.write(unit.replace("/opt/siprecd/.venv/bin/twistd", TWISTD))
        result = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=60)
        problems = [line for line in result.stderr.splitlines() if "siprecd.service" in line]
        self.assertEqual((result.returncode, problems), (0, []), result.stderr)
