"""SIP requests and responses: a pure parser over bytes and a serializer (RFC 3261 §7, §25).

``parse_message`` accepts one complete message (a datagram, or what the stream framer cut from a
connection).  It raises :class:`NotSIP` for input that is not a SIP message at all (to be dropped
and counted) and :class:`~siprecd.errors.BadRequest` for a SIP message that is malformed (to be
answered 400 when it is a request whose Via, Call-ID, CSeq, From and To could be read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from siprecd.errors import BadRequest
from siprecd.sip.headers import (
    TOKEN,
    CSeq,
    Headers,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_via,
)
from siprecd.sip.uri import URI, URIError, parse_uri

SIP_VERSION = "SIP/2.0"
_VERSION = re.compile(r"^SIP/\d+\.\d+$", re.I)
_STATUS_LINE = re.compile(r"^(SIP/\d+\.\d+) ([1-9][0-9]{2})(?: (.*))?$", re.I | re.S)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


class NotSIP(Exception):
    """The bytes are not a SIP message at all: drop them and count them."""


class MessageTooLarge(BadRequest):
    code = 513
    reason = "Message Too Large"


@dataclass
class Message:
    headers: Headers
    body: bytes

    @cached_property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_list("Via")]

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise BadRequest("missing Via header")
        return vias[0]

    @cached_property
    def call_id(self) -> str:
        value = self.headers.get("Call-ID")
        if value is None or not value.strip():
            raise BadRequest("missing Call-ID header")
        if any(c.isspace() for c in value.strip()):
            raise BadRequest(f"malformed Call-ID {value!r}")
        return value.strip()

    @cached_property
    def cseq(self) -> CSeq:
        value = self.headers.get("CSeq")
        if value is None:
            raise BadRequest("missing CSeq header")
        return parse_cseq(value)

    @cached_property
    def from_(self) -> NameAddr:
        return self._one_address("From")

    @cached_property
    def to(self) -> NameAddr:
        return self._one_address("To")

    @cached_property
    def contacts(self) -> list[NameAddr]:
        values = self.headers.get_list("Contact")
        if values == ["*"]:
            return []
        return [parse_name_addr(v, "Contact") for v in values]

    @cached_property
    def record_routes(self) -> list[NameAddr]:
        return [parse_name_addr(v, "Record-Route") for v in self.headers.get_list("Record-Route")]

    @property
    def content_type(self) -> str | None:
        """The media type in lower case without parameters, or None."""
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip().lower()

    def _one_address(self, name: str) -> NameAddr:
        values = self.headers.get_raw(name)
        if not values:
            raise BadRequest(f"missing {name} header")
        if len(values) > 1:
            raise BadRequest(f"more than one {name} header")
        return parse_name_addr(values[0], name)

    def validate(self) -> None:
        """Parse the headers every transaction needs, so that errors surface as one 400."""
        if not self.vias:
            raise BadRequest("missing Via header")
        # Each property raises BadRequest naming the header it could not parse.
        self.call_id, self.cseq, self.from_, self.to  # noqa: B018

    def serialize_headers(self, out: list[str]) -> None:
        for name, value in self.headers:
            if name != "Content-Length":
                out.append(f"{name}: {value}\r\n")
        out.append(f"Content-Length: {len(self.body)}\r\n\r\n")


@dataclass
class Request(Message):
    method: str = ""
    uri: URI | None = None
    version: str = SIP_VERSION
    raw_uri: str = ""

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        value = value.strip()
        if not (value.isascii() and value.isdigit()) or int(value) > 255:
            raise BadRequest(f"malformed Max-Forwards {value!r}")
        return int(value)

    def validate(self) -> None:
        super().validate()
        if self.cseq.method != self.method:
            raise BadRequest(
                f"CSeq method {self.cseq.method} does not match request method {self.method}"
            )
        self.max_forwards  # noqa: B018 - parsed for its error

    def to_bytes(self) -> bytes:
        out = [f"{self.method} {self.uri} {self.version}\r\n"]
        self.serialize_headers(out)
        return "".join(out).encode("utf-8", "surrogateescape") + self.body


@dataclass
class Response(Message):
    status: int = 200
    reason: str = "OK"
    version: str = SIP_VERSION

    def to_bytes(self) -> bytes:
        out = [f"{self.version} {self.status} {self.reason}\r\n"]
        self.serialize_headers(out)
        return "".join(out).encode("utf-8", "surrogateescape") + self.body


@dataclass(frozen=True)
class Limits:
    """Bounds every parser applies so that no peer can make a message cost unbounded memory."""

    max_message_size: int = 65535
    max_headers: int = 128


DEFAULT_LIMITS = Limits()


def head_end(data: bytes | bytearray) -> tuple[int, int] | None:
    """Where the headers end: (end of the last header line, start of the body), or None.

    The blank line is CRLFCRLF; bare LFs are tolerated.
    """
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return None
    if lf < 0 or (0 <= crlf < lf):
        return crlf, crlf + 4
    return lf, lf + 2


def split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """Split at the first empty line into head and body. None if there is none."""
    end = head_end(data)
    if end is None:
        return None
    return data[: end[0]], data[end[1]:]


def parse_message(
    data: bytes, *, limits: Limits = DEFAULT_LIMITS, stream: bool = False
) -> Request | Response:
    """Parse one SIP message.

    With ``stream=False`` (a datagram) a body longer than Content-Length is truncated to it and a
    missing Content-Length means "the rest of the datagram" (RFC 3261 §18.3).  The stream framer
    passes ``stream=True`` after it has cut the body to Content-Length itself.
    """
    if len(data) > limits.max_message_size:
        raise MessageTooLarge(f"message of {len(data)} bytes exceeds {limits.max_message_size}")
    # Keep-alives and leading blank lines precede messages on streams (RFC 5626 §3.5.1).
    data = data.lstrip(b"\r\n")
    if not data:
        raise NotSIP("empty message")
    parts = split_head(data)
    if parts is None:
        head, body = data, b""
        if not data.endswith((b"\n",)):
            # No end-of-headers at all: only a SIP-looking first line earns a 400.
            _first_line_kind(data.split(b"\n", 1)[0])
            raise BadRequest("message has no empty line ending the headers")
    else:
        head, body = parts
    lines = _unfold(head.decode("utf-8", "surrogateescape"))
    start = lines[0]
    kind = _first_line_kind(start.encode("utf-8", "surrogateescape"))
    if len(lines) - 1 > limits.max_headers:
        raise BadRequest(f"{len(lines) - 1} header lines exceed the limit of {limits.max_headers}")
    headers = Headers(_parse_header_line(line, number) for number, line in enumerate(lines[1:], 2))
    body = _body(headers, body, stream)
    if kind == "response":
        match = _STATUS_LINE.match(start)
        if not match:
            raise BadRequest(f"malformed status line {start!r}")
        return Response(
            headers=headers,
            body=body,
            status=int(match.group(2)),
            reason=match.group(3) or "",
            version=match.group(1).upper(),
        )
    return _request(start, headers, body)


def _first_line_kind(line: bytes) -> str:
    """Decide whether a first line is a SIP request, a SIP response, or not SIP."""
    text = line.rstrip(b"\r")
    if text.upper().startswith(b"SIP/"):
        return "response"
    if b"SIP/" in text.upper():
        return "request"
    raise NotSIP(f"first line {text[:80]!r} is neither a SIP request nor a SIP status line")


def _request(start: str, headers: Headers, body: bytes) -> Request:
    pieces = start.split(" ")
    if len(pieces) != 3:
        raise BadRequest(
            f"request line {start!r} must be 'Method SP Request-URI SP SIP-Version' "
            "with single spaces"
        )
    method, raw_uri, version = pieces
    if not TOKEN.match(method):
        raise BadRequest(f"bad method {method!r} in request line")
    if not _VERSION.match(version):
        raise BadRequest(f"bad SIP version {version!r} in request line")
    try:
        uri = parse_uri(raw_uri)
    except URIError as error:
        raise BadRequest(f"bad Request-URI: {error.reason}") from None
    return Request(
        headers=headers,
        body=body,
        method=method,
        uri=uri,
        version=version.upper(),
        raw_uri=raw_uri,
    )


def _unfold(head: str) -> list[str]:
    lines: list[str] = []
    for raw in re.split(r"\r?\n", head):
        if raw[:1] in (" ", "\t") and lines:
            # Folded continuation (RFC 3261 §7.3.1): replace the line break with one SP.
            lines[-1] = lines[-1].rstrip(" \t") + " " + raw.strip(" \t")
        else:
            lines.append(raw)
    return lines


def _parse_header_line(line: str, number: int) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    name = name.rstrip(" \t")
    if not colon or not name:
        raise BadRequest(f"line {number}: header line {line[:60]!r} has no name or no ':'")
    if not _HEADER_NAME.match(name):
        raise BadRequest(f"line {number}: bad header name {name[:60]!r}")
    return name, value.strip(" \t")


def _body(headers: Headers, body: bytes, stream: bool) -> bytes:
    raw = headers.get_raw("Content-Length")
    if not raw:
        return b"" if stream else body
    values = {v.strip() for v in raw}
    if len(values) > 1:
        raise BadRequest(f"conflicting Content-Length headers {sorted(values)}")
    value = values.pop()
    if not (value.isascii() and value.isdigit()):
        raise BadRequest(f"malformed Content-Length {value!r}")
    length = int(value)
    if length > len(body):
        raise BadRequest(f"Content-Length {length} exceeds the {len(body)} body bytes received")
    return body[:length]


# --- building responses ----------------------------------------------------------------------


def make_response(
    request: Request,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6: Via, From, Call-ID, CSeq copied; To tagged.

    Record-Route is copied into dialog-establishing responses (§12.1.1) by the dialog layer.
    """
    out = Headers()
    for value in request.headers.get_raw("Via"):
        out.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is not None:
            out.add(name, value)
    if to_tag is not None and status != 100:
        try:
            to = request.to
        except BadRequest:
            to = None
        if to is not None and to.tag is None:
            out.set("To", f"{request.headers.get('To')};tag={to_tag}")
    for name, value in headers or ():
        out.add(name, value)
    if content_type is not None:
        out.add("Content-Type", content_type)
    return Response(headers=out, body=body, status=status, reason=reason)


@dataclass
class ResponseSpec:
    """What an application hands the core: the core turns it into a :class:`Response`."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    content_type: str | None = None


REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
}
