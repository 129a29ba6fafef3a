"""Access control (siprecd.web.auth): bearer and Basic credentials, 401 challenges, exposure rule."""

from __future__ import annotations

import base64
import json
from typing import Any
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from siprecd.web import auth
from siprecd.web.auth import Protected, check_exposure, protect

TOKEN = "tok-0123456789abcdef"
OTHER = "tok-fedcba9876543210"


class Leaf(Resource):
    """Answers with the path it was asked for, as ApiResource (a leaf) would see it."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return json.dumps({"prepath": [p.decode() for p in request.prepath],
                           "postpath": [p.decode() for p in request.postpath]}).encode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class ProtectedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Resource()
        self.root.putChild(b"api", Protected(Leaf(), {TOKEN, OTHER}, {"ops": "pass:word", "ana": "ünï"}))

    def get(self, path: str, authorization: str | None = None, method: bytes = b"GET") -> tuple[DummyRequest, bytes]:
        request = DummyRequest(path.lstrip("/").encode().split(b"/"))
        request.method = method
        if authorization is not None:
            request.requestHeaders.setRawHeaders(b"authorization", [authorization.encode()])
        resource = getChildForRequest(self.root, request)
        body = resource.render(request)
        return request, body

    def assert_allowed(self, path: str, authorization: str, postpath: list[str]) -> None:
        request, body = self.get(path, authorization)
        self.assertIn(request.responseCode, (None, 200))
        self.assertEqual(json.loads(body), {"prepath": ["api"], "postpath": postpath})

    def assert_refused(self, path: str, authorization: str | None) -> DummyRequest:
        request, body = self.get(path, authorization)
        self.assertEqual(request.responseCode, 401)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"www-authenticate"),
            [b'Basic realm="siprecd", charset="UTF-8"', b'Bearer realm="siprecd"'],
        )
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertIn("authentication required", json.loads(body)["error"])
        return request

    def test_bearer(self) -> None:
        self.assert_allowed("/api/recordings/x/streams/1/audio", f"Bearer {TOKEN}", ["recordings", "x", "streams", "1", "audio"])
        self.assert_allowed("/api/sessions", f"bearer   {OTHER}", ["sessions"])
        self.assert_refused("/api/sessions", f"Bearer {TOKEN}x")
        self.assert_refused("/api/sessions", f"Bearer {TOKEN[:-1]}")
        self.assert_refused("/api/sessions", "Bearer ")
        self.assert_refused("/api/sessions", TOKEN)

    def test_basic(self) -> None:
        self.assert_allowed("/api/server", basic("ops", "pass:word"), ["server"])
        self.assert_allowed("/api/server", basic("ana", "ünï"), ["server"])
        self.assert_refused("/api/server", basic("ops", "pass:wor"))
        self.assert_refused("/api/server", basic("OPS", "pass:word"))
        self.assert_refused("/api/server", basic("ana", "pass:word"))  # another user's password
        self.assert_refused("/api/server", basic("", ""))
        self.assert_refused("/api/server", "Basic !!!not-base64")
        self.assert_refused("/api/server", "Basic " + base64.b64encode(b"no-colon").decode())
        self.assert_refused("/api/server", f"Basic {TOKEN}")

    def test_missing(self) -> None:
        self.assert_refused("/api/sessions", None)
        self.assert_refused("/api/sessions", "")
        # The resource itself (``/api`` with nothing after it) is protected too.
        request, body = self.get("/api", None)
        self.assertEqual(request.responseCode, 401)
        request, body = self.get("/api", f"Bearer {TOKEN}")
        self.assertEqual(json.loads(body)["prepath"], ["api"])

    def test_head_has_no_body(self) -> None:
        request, body = self.get("/api/sessions", None, method=b"HEAD")
        self.assertEqual((request.responseCode, body), (401, b""))

    def test_challenges_follow_what_is_configured(self) -> None:
        only_tokens = Protected(Leaf(), {TOKEN})
        request = DummyRequest([b""])
        only_tokens.render(request)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"www-authenticate"), [b'Bearer realm="siprecd"'])
        only_users = Protected(Leaf(), (), {"ops": "x"}, realm='my "realm"')
        request = DummyRequest([b""])
        request.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {TOKEN}".encode()])
        only_users.render(request)
        self.assertEqual(request.responseCode, 401)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"www-authenticate"), [b'Basic realm="my realm", charset="UTF-8"']
        )

    def test_nothing_configured_refuses_everything(self) -> None:
        closed = Protected(Leaf())
        for header in (None, "Bearer ", "Basic Og=="):  # Og== is ":"
            request = DummyRequest([b""])
            if header is not None:
                request.requestHeaders.setRawHeaders(b"authorization", [header.encode()])
            closed.render(request)
            self.assertEqual(request.responseCode, 401)

    def test_protect_leaves_open_only_without_credentials(self) -> None:
        leaf = Leaf()
        self.assertIs(protect(leaf), leaf)
        self.assertIs(protect(leaf, [""], {}), leaf)
        self.assertIsInstance(protect(leaf, [TOKEN]), Protected)
        self.assertIsInstance(protect(leaf, (), {"ops": "x"}), Protected)

    def test_every_secret_is_compared(self) -> None:
        # No early exit: the first token matching still compares against all of them.
        calls: list[tuple[bytes, bytes]] = []
        real = auth.hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return real(a, b)

        with mock.patch.object(auth.hmac, "compare_digest", spy):
            self.assert_allowed("/api/x", f"Bearer {TOKEN}", ["x"])
            self.assertEqual(len(calls), 2)
            calls.clear()
            self.assert_allowed("/api/x", basic("ops", "pass:word"), ["x"])
            self.assertEqual(len(calls), 4)  # user and password, for both users


class ExposureTests(SynchronousTestCase):
    def test_loopback_is_fine_without_credentials(self) -> None:
        for address in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"):
            self.assertIsNone(check_exposure(address, False), address)

    def test_other_addresses_need_credentials(self) -> None:
        for address in ("0.0.0.0", "::", "192.0.2.1", "2001:db8::1", "example.com"):
            message = check_exposure(address, False)
            assert message is not None, address
            self.assertIn(f"[web] bind_address {address} is not a loopback address", message)
            self.assertIn("[web] api_token", message)
            self.assertIn("[web] basic_users", message)
            self.assertIsNone(check_exposure(address, True))


class AccessLogTests(SynchronousTestCase):
    def test_token_never_logged(self) -> None:
        from twisted.web.test.requesthelper import DummyRequest

        from siprecd.web.root import access_log_formatter

        request = DummyRequest([b""])
        request.uri = b"/?view=live&token=s3cr3t-token-value&x=1"
        request.method = b"GET"
        request.clientproto = b"HTTP/1.1"
        request.code = 200
        request.sentLength = 0
        line = access_log_formatter("[22/Nov/2026:05:00:00 +0000]", request)
        self.assertNotIn("s3cr3t", line)
        self.assertIn("/?view=live&token=REDACTED&x=1", line)
