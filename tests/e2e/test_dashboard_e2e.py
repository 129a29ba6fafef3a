"""The dashboard end to end: a real ``twistd -n siprec``, a real SIPREC call with RTP, and the page
in Debian's headless Chromium driven by Playwright (``playwright-core`` from npm).

The browser side is ``tests/e2e/dashboard/driver.mjs``, a Node script that takes one JSON
command per line and answers one JSON line (see its README); the story stays here.  What is
checked: the token given as ``?token=`` is kept and taken out of the address; a call started
after the page loaded appears in the live table without a reload, with its participants, codecs,
loss, jitter and SRTP method, and its duration goes on counting; a screenshot is taken while
the call is up (its path is printed); after the BYE the call leaves the live table, shows up in
the recent recordings, is found by the search box, and its <audio> players load a playable WAV
(fetched with the token into a blob: URL, duration > 0 after ``loadedmetadata``).  A second test
covers the sign-in dialog (no token, a wrong one, the right one, a token in the fragment), and
``OpenDashboardTests`` the default configuration without credentials (plain audio URLs).

``DashboardResourceTests`` checks the static resource itself (content types, caching, 304s, no
external URLs) without a browser; ``DashboardScriptTests`` runs app.js's formatting functions
under ``node --test`` (tests/e2e/dashboard/format.test.mjs).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.static import Data
from twisted.web.test.requesthelper import DummyRequest

from siprecd import __version__
from siprecd.web.dashboard import dashboard_resource, static_files
from tests.audio import encode, tone
from tests.e2e.server import REPOSITORY, Server
from tests.e2e.src import SendReport, SRCClient, StreamSpec

CHROMIUM = "/usr/bin/chromium"
DASHBOARD = os.path.join(REPOSITORY, "tests", "e2e", "dashboard")
DRIVER = os.path.join(DASHBOARD, "driver.mjs")
PLAYWRIGHT = os.path.join(DASHBOARD, "node_modules", "playwright-core", "package.json")
TOKEN = "e2e-dashboard-token-7c1f"
CALL_SECONDS = 10.0  # RTP sent; the page is read and photographed while it flows


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"Debian's Chromium is not installed ({CHROMIUM}): apt-get install chromium"
    if shutil.which("node") is None or shutil.which("npx") is None:
        return "Node.js (node, npx) is not installed: apt-get install nodejs npm"
    if not os.path.isfile(PLAYWRIGHT):
        return "playwright-core is not installed: (cd tests/e2e/dashboard && npm ci)"
    return None


class BrowserError(Exception):
    pass


class Browser:
    """``node driver.mjs``: send a command, wait for its one-line JSON reply."""

    def __init__(self, directory: str, timeout: float = 60.0) -> None:
        os.makedirs(directory, exist_ok=True)
        self.stderr_path = os.path.join(directory, "driver-stderr.log")
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        env = dict(os.environ, CHROMIUM=CHROMIUM)
        self.process = subprocess.Popen(
            ["node", DRIVER],
            cwd=DASHBOARD,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
            bufsize=1,
        )
        ready = self._reply("start", timeout)
        if not ready.get("ok"):
            raise BrowserError(f"driver did not start: {ready}\n{self.stderr()}")

    def __call__(self, command: str, timeout: float = 60.0, **arguments: Any) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": command, **arguments}) + "\n")
        self.process.stdin.flush()
        reply = self._reply(command, timeout)
        if not reply.get("ok"):
            raise BrowserError(f"{command} {arguments}: {reply.get('error')}")
        return reply.get("result")

    def _reply(self, command: str, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise BrowserError(f"{command}: no reply within {timeout}s\n{self.stderr()}")
        line = self.process.stdout.readline()
        if not line:
            raise BrowserError(f"{command}: the driver exited ({self.process.wait(5)})\n{self.stderr()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def stderr(self) -> str:
        self._stderr.flush()
        with open(self.stderr_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-4000:]

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                try:
                    self("close", timeout=20)
                except (BrowserError, OSError, ValueError):
                    pass
                try:
                    self.process.wait(20)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    stream.close()
            self._stderr.close()


def pcmu(label: str, frequency: float, seconds: float) -> StreamSpec:
    payloads = encode("pcm_mulaw", tone(frequency, seconds, 8000), 8000, 160)
    return StreamSpec(label, 0, "PCMU/8000", payloads, 160)


class BrowserTestCase(SynchronousTestCase):
    """A real server with ``[web]`` set to :attr:`web`, and a browser; no tests of its own."""

    web: dict[str, str] = {}
    server_class: type[Server] = Server  # tests/e2e/test_cluster_web_e2e.py: the same over workers

    def setUp(self) -> None:
        reason = browser_missing()
        if reason:
            raise SkipTest(reason)
        self.server = self.server_class(self.mktemp(), sections={"web": dict(self.web)})
        self.server.start()
        self.addCleanup(self._stop_server)
        self.base = f"http://127.0.0.1:{self.server.web_port}/"
        self._check_served()
        self.browser = Browser(os.path.join(self.server.directory, "browser"))
        self.addCleanup(self.browser.close)

    def start_call(self, seconds: float) -> tuple[SRCClient, threading.Thread, dict[str, Any]]:
        """A SIPREC call (two PCMU streams, party0 and party1) whose RTP flows for ``seconds``
        from a background thread; ``sent["report"]`` is its SendReport (or the error)."""
        client = SRCClient(self.server.sip_port)
        self.addCleanup(client.close)
        streams = [pcmu("a", 440.0, seconds), pcmu("b", 1000.0, seconds)]
        response = client.invite(streams)
        self.assertEqual(response.status, 200, response)
        sent: dict[str, Any] = {}

        def send() -> None:
            try:
                sent["report"] = client.send_rtp(streams)
            except BaseException as error:  # noqa: BLE001 - reported by end_call
                sent["report"] = error

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        self.addCleanup(sender.join, seconds + 10)
        return client, sender, sent

    def end_call(self, client: SRCClient, sender: threading.Thread, sent: dict[str, Any], seconds: float) -> None:
        sender.join(seconds + 10)
        self.assertIsInstance(sent.get("report"), SendReport, f"sending failed: {sent.get('report')!r}")
        self.assertEqual(client.bye().status, 200)

    def assert_playable(self, call_id: str, seconds: float, scheme: str) -> None:
        """The recording's players: streams a and b (and the mix), each with a source of
        ``scheme`` whose metadata loaded with about the call's duration."""
        players = self.browser("playable", callId=call_id, timeout=15000)
        self.assertEqual({p["stream"] for p in players} - {"mix"}, {"a", "b"}, players)
        for played in players:
            self.assertIn(played["event"], ("loadedmetadata", "already"), played)
            self.assertEqual((played["error"], played["scheme"]), (None, scheme), played)
            self.assertGreater(played["duration"], 0, played)
            # Each file runs from the session's start to the last packet: about the call.
            self.assertLess(abs(played["duration"] - seconds), 2.0, played)

    def _stop_server(self) -> None:
        self.server.stop_cleanly(self)

    def _check_served(self) -> None:
        try:
            with urllib.request.urlopen(self.base, timeout=5) as response:
                page = response.read().decode()
        except urllib.error.HTTPError as error:
            self.fail(f"GET / answered {error.code}: is dashboard_resource() wired into siprecd/service.py?")
        self.assertIn('src="app.js"', page)

    def problems(self, allowed: str | None = None) -> list[str]:
        """Console errors, page errors and failed requests so far, except those matching
        ``allowed`` (a regular expression)."""
        found = self.browser("problems")
        every = found["console"] + found["page"] + found["requests"]
        return [p for p in every if not (allowed and re.search(allowed, p))]



class DashboardTests(BrowserTestCase):
    """With an API token: the page must send it, and play recordings from blob: URLs."""

    web = {"api_token": TOKEN}

    def test_live_call_then_recording_search_and_playback(self) -> None:
        browser = self.browser
        opened = browser("open", url=f"{self.base}?token={TOKEN}")
        state = browser("state")
        self.assertEqual(state["url"], self.base, "the token must leave the address bar")
        self.assertEqual(state["token"], TOKEN)
        self.assertFalse(state["dialogOpen"])
        mark = browser("mark")

        # The call starts after the page loaded: it must appear by polling alone.
        client, sender, sent = self.start_call(CALL_SECONDS)

        first = browser("waitLive", text="sip:party0@example.com", minSeconds=1, timeout=15000)
        self.assertEqual(first["callId"], client.call_id)
        self.assertIn("sip:party1@example.com", first["participants"])
        self.assertEqual(first["streams"], ["a", "b"])
        self.assertEqual(first["codecs"], ["PCMU", "PCMU"])
        self.assertEqual(first["srtp"], "none")
        self.assertEqual(first["state"], "active")
        for text in first["loss"]:
            self.assertRegex(text, r"^(0 \(0\.0%\)|–)$")  # nothing lost on loopback
        for text in first["jitter"]:
            self.assertRegex(text, r"^(\d+\.\d ms|–)$")
        self.assertGreaterEqual(first["seconds"], 1)

        # The row keeps counting by itself (waited for, not slept for: the page's polling lags
        # on a loaded machine).
        second = browser("waitLive", text="sip:party0@example.com", minSeconds=first["seconds"] + 2, timeout=15000)
        self.assertEqual(second["callId"], client.call_id)
        self.assertGreaterEqual(second["seconds"], first["seconds"] + 2, (first, second))
        self.assertRegex(second["duration"], r"^\d+:\d\d$")
        for text in second["loss"]:
            self.assertRegex(text, r"^0 \(0\.0%\)$", "packets have been counted by now")
        state = browser("state")
        self.assertEqual((state["mark"], state["navigations"]), (mark, opened["navigations"]), "the page reloaded")
        self.assertEqual(state["connection"], "Live")

        figures = browser("server")
        self.assertEqual(figures["Version"], __version__)
        self.assertEqual(figures["Active calls"], "1")
        self.assertRegex(figures["Disk free"], r"^\d+(\.\d+)? (B|KiB|MiB|GiB|TiB|PiB)$")

        screenshot = os.path.abspath(os.path.join(self.server.directory, "dashboard-live-call.png"))
        browser("screenshot", path=screenshot)
        with open(screenshot, "rb") as handle:
            self.assertEqual(handle.read(8), b"\x89PNG\r\n\x1a\n")
        print(f"\ndashboard screenshot (call active): {screenshot}")
        self.assertTrue(sender.is_alive(), "the screenshot must be taken while RTP flows")

        self.end_call(client, sender, sent, CALL_SECONDS)

        browser("waitNoLive", text="sip:party0@example.com", timeout=15000)
        browser("waitRecording", callId=client.call_id, timeout=20000)
        found = browser("search", participant="sip:party1@example.com")
        self.assertIn(client.call_id, [r["callId"] for r in found["recordings"]], found)
        found = browser("search", callId=client.call_id)
        self.assertEqual([r["callId"] for r in found["recordings"]], [client.call_id], found)

        self.assert_playable(client.call_id, CALL_SECONDS, "blob")
        after = os.path.abspath(os.path.join(self.server.directory, "dashboard-recording.png"))
        browser("screenshot", path=after)
        print(f"dashboard screenshot (recording opened): {after}")
        self.assertEqual(self.problems(), [])

    def test_sign_in_dialog(self) -> None:
        browser = self.browser
        browser("open", url=self.base)
        self.assertIn("needs an API token", browser("waitDialog"))
        self.assertEqual(browser("state")["connection"], "Signed out")

        browser("login", token="not-the-token")
        browser("waitDialog", contains="not accepted")
        self.assertIsNone(browser("state")["token"])

        browser("login", token=TOKEN)
        browser("waitConnection", text="Live")
        state = browser("state")
        self.assertEqual((state["token"], state["dialogOpen"]), (TOKEN, False))
        self.assertEqual(browser("server")["Version"], __version__)
        # The only failures are the API's refusals before the right token was given.
        self.assertEqual(self.problems(allowed=r"/api/\S+: HTTP 401$|status of 401"), [])

        # A token in the fragment (never sent to the server, so never in its access log).
        browser("evaluate", expression="sessionStorage.clear()")
        browser("open", url="about:blank")  # else only the fragment changes: no new page
        browser("open", url=f"{self.base}#token={TOKEN}")
        browser("waitConnection", text="Live")
        state = browser("state")
        self.assertEqual((state["url"], state["token"], state["dialogOpen"]), (self.base, TOKEN, False))
        self.assertNotIn(TOKEN, self.server.log())


class OpenDashboardTests(BrowserTestCase):
    """The default configuration: no credentials, loopback only.  The page sends no
    Authorization header and the players use the audio URLs directly."""

    def test_live_call_then_recording_search_and_playback(self) -> None:
        seconds = 3.0
        client, sender, sent = self.start_call(seconds)
        self.browser("open", url=self.base)
        live = self.browser("waitLive", text="sip:party1@example.com", timeout=15000)
        self.assertEqual(live["callId"], client.call_id)
        self.end_call(client, sender, sent, seconds)
        self.browser("waitRecording", callId=client.call_id, timeout=20000)
        found = self.browser("search", callId=client.call_id)
        self.assertEqual([r["callId"] for r in found["recordings"]], [client.call_id], found)
        self.assert_playable(client.call_id, seconds, "http")
        state = self.browser("state")
        self.assertEqual((state["token"], state["dialogOpen"]), (None, False))
        self.assertEqual(self.problems(), [])



class DashboardScriptTests(SynchronousTestCase):
    def test_formatting_functions(self) -> None:
        """app.js's pure functions (durations, bytes, loss, jitter, SRTP method), under node --test."""
        if shutil.which("node") is None:
            raise SkipTest("Node.js (node) is not installed")
        completed = subprocess.run(
            ["node", "--test", "format.test.mjs"], cwd=DASHBOARD, capture_output=True, text=True, timeout=60
        )
        self.assertEqual(completed.returncode, 0, completed.stdout + completed.stderr)

def render(root: Any, path: bytes, headers: dict[bytes, bytes] | None = None) -> DummyRequest:
    request = DummyRequest(path.split(b"/")[1:])
    request.uri = request.path = path
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    resource = getChildForRequest(root, request)
    body = resource.render(request)
    if isinstance(body, bytes):
        request.write(body)
    return request


class DashboardResourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = dashboard_resource()

    def header(self, request: DummyRequest, name: bytes) -> bytes | None:
        return request.responseHeaders.getRawHeaders(name, [None])[0]

    def test_index_at_root(self) -> None:
        for path in (b"/", b"/index.html"):
            request = render(self.root, path)
            self.assertEqual(request.responseCode or 200, 200)
            self.assertEqual(self.header(request, b"content-type"), b"text/html; charset=utf-8")
            self.assertIn(b'<script type="module" src="app.js">', b"".join(request.written))
            self.assertIn(b"default-src 'none'", self.header(request, b"content-security-policy") or b"")

    def test_content_types_and_caching(self) -> None:
        expected = {
            b"/app.js": b"text/javascript; charset=utf-8",
            b"/app.css": b"text/css; charset=utf-8",
            b"/icon.svg": b"image/svg+xml",
        }
        for path, content_type in expected.items():
            request = render(self.root, path)
            self.assertEqual(self.header(request, b"content-type"), content_type, path)
            self.assertEqual(self.header(request, b"cache-control"), b"no-cache", path)
            self.assertEqual(self.header(request, b"x-content-type-options"), b"nosniff", path)
            etag = self.header(request, b"etag")
            self.assertTrue(etag, path)
            again = render(self.root, path, {b"if-none-match": etag})
            self.assertEqual((again.responseCode, b"".join(again.written)), (304, b""), path)
            other = render(self.root, path, {b"if-none-match": b'"stale"'})
            self.assertEqual(other.responseCode or 200, 200, path)

    def test_unknown_file_and_children(self) -> None:
        self.assertEqual(render(self.root, b"/nope.js").responseCode, 404)
        marker = Data(b"", "text/plain")
        root = dashboard_resource({b"api": marker})
        self.assertIs(getChildForRequest(root, DummyRequest([b"api"])), marker)
        self.assertRaises(ValueError, dashboard_resource, {b"app.js": marker})

    def test_nothing_from_another_origin(self) -> None:
        files = static_files()
        self.assertLessEqual({"index.html", "app.js", "app.css"}, set(files))
        for name, body in files.items():
            text = body.decode().replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
            for reference in re.findall(r'(?:src|href|action)\s*=\s*"([^"]*)"', text):
                self.assertNotRegex(reference, r"^([a-z]+:)?//", f"{name}: {reference}")
            self.assertNotRegex(text, r"https?://|@import|url\(\s*['\"]?(https?:)?//", name)
