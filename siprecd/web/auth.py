"""Access control for the web server: bearer tokens or HTTP Basic credentials from the config.

:class:`Protected` wraps any resource (the API, the dashboard, /metrics): a request passes with
``Authorization: Bearer <token>`` for a configured token or ``Authorization: Basic`` for a
configured user and password; anything else gets 401 with ``WWW-Authenticate``.  Secrets are
compared with :func:`hmac.compare_digest` against every configured one, so the time taken says
nothing about which part matched.  A wrapper with no credentials at all refuses everything
(fail closed): use :func:`protect` to leave a resource open when nothing is configured.

:func:`check_exposure` is the preflight rule: the API and dashboard may run without credentials
only on a loopback address.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
from collections.abc import Iterable, Mapping

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

REALM = "siprecd"


class Protected(Resource):
    def __init__(
        self,
        resource: IResource,
        tokens: Iterable[str] = (),
        basic: Mapping[str, str] | None = None,
        realm: str = REALM,
    ) -> None:
        super().__init__()
        self._resource = resource
        self._tokens = [t.encode("utf-8") for t in tokens if t]
        self._basic = [(u.encode("utf-8"), p.encode("utf-8")) for u, p in (basic or {}).items()]
        self._realm = realm.replace("\\", "").replace('"', "")

    # Traversal: check once, at this level, then hand the rest of the path to the wrapped tree.
    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:  # noqa: N802
        if not self.authorized(request):
            return _Unauthorized(self._challenges())
        # Undo the step the traversal just took (as twisted.web.guard does): the wrapped
        # resource sees the path it would see mounted here directly, leaf or not.
        request.postpath.insert(0, request.prepath.pop())
        return self._resource

    def render(self, request: Request) -> bytes:
        if not self.authorized(request):
            return _Unauthorized(self._challenges()).render(request)
        return self._resource.render(request)

    def authorized(self, request: Request) -> bool:
        header = request.getHeader(b"authorization")
        if not header:
            return False
        scheme, _, credentials = header.strip().partition(b" ")
        credentials = credentials.strip()
        scheme = scheme.lower()
        if scheme == b"bearer" and self._tokens:
            return _any_equal(credentials, self._tokens)
        if scheme == b"basic" and self._basic:
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            user, colon, password = decoded.partition(b":")
            if not colon:
                return False
            ok = False
            for known_user, known_password in self._basic:
                # Both comparisons always run: no early exit on the user name.
                user_ok = hmac.compare_digest(user, known_user)
                password_ok = hmac.compare_digest(password, known_password)
                ok |= user_ok & password_ok
            return ok
        return False

    def _challenges(self) -> list[bytes]:
        out = []
        if self._basic or not self._tokens:
            out.append(f'Basic realm="{self._realm}", charset="UTF-8"'.encode())
        if self._tokens:
            out.append(f'Bearer realm="{self._realm}"'.encode())
        return out


def _any_equal(given: bytes, known: list[bytes]) -> bool:
    ok = False
    for candidate in known:
        ok |= hmac.compare_digest(given, candidate)
    return ok


class _Unauthorized(Resource):
    isLeaf = True

    def __init__(self, challenges: list[bytes]) -> None:
        super().__init__()
        self._challenges = challenges

    def render(self, request: Request) -> bytes:
        request.setResponseCode(401)
        for challenge in self._challenges:
            request.responseHeaders.addRawHeader(b"www-authenticate", challenge)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        body = json.dumps({"error": "authentication required: a bearer token or a user name and password"}).encode()
        request.setHeader(b"content-length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body


def protect(
    resource: IResource, tokens: Iterable[str] = (), basic: Mapping[str, str] | None = None, realm: str = REALM
) -> IResource:
    """``resource`` behind :class:`Protected`, or unchanged when no credentials are configured
    (which :func:`check_exposure` allows only on a loopback bind)."""
    tokens = [t for t in tokens if t]
    if not tokens and not basic:
        return resource
    return Protected(resource, tokens, basic, realm)


def is_loopback(address: str) -> bool:
    address = address.strip().strip("[]")
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_exposure(bind_address: str, has_credentials: bool) -> str | None:
    """An error message when the web server would serve the API without credentials beyond
    this machine; None when that is fine."""
    if has_credentials or is_loopback(bind_address):
        return None
    return (
        f"[web] bind_address {bind_address} is not a loopback address and neither [web] api_token "
        "nor [web] basic_users is set: the API and dashboard (recordings, who called whom) would "
        "be open to the network. Set credentials, or bind to 127.0.0.1"
    )
