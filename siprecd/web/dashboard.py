"""The dashboard: ``index.html`` at ``/`` and its static files (``siprecd/web/static``).

Plain HTML, CSS and one ES module; no build step, nothing fetched from another origin.  The page
talks to the JSON API (``/api/...``) on the same origin with the token it was given.

The files are read once, when the resource is made, and served from memory with their content
type, a strong ETag (``If-None-Match`` gets a 304) and ``Cache-Control: no-cache``: the browser
keeps them but asks again on every load, so an upgrade is seen at once without versioned file
names.  Every response carries ``nosniff`` and ``Referrer-Policy: no-referrer`` (a ``?token=``
in the address must not leak); the page itself carries a Content-Security-Policy that allows
nothing but this origin (and ``blob:`` audio, which is how authenticated recordings play).

Use the dashboard as the site's root and hang the other resources on it::

    Site(dashboard_resource({b"health": health, b"metrics": metrics, b"api": api}))

or mount it anywhere else (its URLs are relative): ``tree.putChild(b"dashboard", ...)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources

from twisted.web.resource import Resource
from twisted.web.server import Request

STATIC_PACKAGE = "siprecd.web"
STATIC_DIRECTORY = "static"

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}

CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    b"connect-src 'self'; media-src 'self' blob:; form-action 'self'; base-uri 'none'; "
    b"frame-ancestors 'none'"
)


class StaticFile(Resource):
    """One file held in memory."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes, *, page: bool = False) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        self.page = page

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"etag", self.etag)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        if self.page:
            request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
            request.setHeader(b"x-frame-options", b"DENY")
        if _matches(request.getHeader(b"if-none-match"), self.etag):
            request.setResponseCode(304)
            return b""
        return self.body


def _matches(header: bytes | None, etag: bytes) -> bool:
    if not header:
        return False
    if header.strip() == b"*":
        return True
    return any(tag.strip().removeprefix(b"W/") == etag for tag in header.split(b","))


class Dashboard(Resource):
    """``/`` (and ``/index.html``) is the page; each static file is a child by its name."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        super().__init__()
        for name, body in files.items():
            suffix = name[name.rfind(".") :]
            self.putChild(name.encode(), StaticFile(body, CONTENT_TYPES[suffix], page=suffix == ".html"))
        self.index = self.children[b"index.html"]

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802
        if path == b"":
            return self.index
        return super().getChild(path, request)

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        # The root itself ("/" is normally routed to the b"" child; this covers a bare mount).
        return self.index.render_GET(request)  # type: ignore[no-any-return]


def static_files() -> dict[str, bytes]:
    """Every file of ``siprecd/web/static`` whose type the dashboard serves, by name."""
    directory = resources.files(STATIC_PACKAGE).joinpath(STATIC_DIRECTORY)
    files = {}
    for entry in directory.iterdir():
        suffix = entry.name[entry.name.rfind(".") :] if "." in entry.name else ""
        if entry.is_file() and suffix in CONTENT_TYPES:
            files[entry.name] = entry.read_bytes()
    if "index.html" not in files:
        raise FileNotFoundError(f"{directory}/index.html is missing: is siprecd/web/static packaged?")
    return files


def dashboard_resource(children: Mapping[bytes, Resource] | None = None) -> Resource:
    """The dashboard as a resource tree; ``children`` (``{b"api": ...}``) are added beside the
    static files, so the result can be the site's root."""
    dashboard = Dashboard(static_files())
    for name, child in (children or {}).items():
        if name in dashboard.children:
            raise ValueError(f"{name!r} clashes with a dashboard file")
        dashboard.putChild(name, child)
    return dashboard
