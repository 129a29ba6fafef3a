"""SIP header fields: names (with compact forms), an ordered container, and typed values.

Typed values (Via, name-addr, CSeq) are parsed by pure functions that raise
:class:`~siprecd.errors.BadRequest` with the header's name in the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from siprecd.errors import BadRequest
from siprecd.sip.uri import URI, SipURI, URIError, parse_host, parse_uri

# RFC 3261 §7.3.3 and later RFCs' compact forms.
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_SPECIAL_CASE = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1); others (e.g. Date,
# WWW-Authenticate) contain commas that are not separators.
LIST_HEADERS = frozenset(
    {
        "Via",
        "Contact",
        "Route",
        "Record-Route",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Content-Encoding",
        "Allow-Events",
        "In-Reply-To",
        "Path",
    }
)

TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


def canonical_name(name: str) -> str:
    """``v`` -> ``Via``, ``call-id`` -> ``Call-ID``, ``content-type`` -> ``Content-Type``."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    if lower in _SPECIAL_CASE:
        return _SPECIAL_CASE[lower]
    return "-".join(part.capitalize() for part in lower.split("-"))


def split_list(value: str) -> list[str]:
    """Split a header value at commas outside quotes and angle brackets."""
    items: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for index, char in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            depth += 1
        elif char == ">":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append(value[start:index].strip())
            start = index + 1
    items.append(value[start:].strip())
    return [item for item in items if item]


class Headers:
    """Ordered header fields with case-insensitive, compact-form-aware lookup.

    Each field keeps its canonical name and its value exactly as received (unfolded), so a
    message can be re-serialized faithfully.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in fields]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        name = canonical_name(name)
        for key, value in self._fields:
            if key == name:
                return value
        return default

    def get_raw(self, name: str) -> list[str]:
        """Every field value of ``name`` as received, one entry per header line."""
        name = canonical_name(name)
        return [value for key, value in self._fields if key == name]

    def get_list(self, name: str) -> list[str]:
        """All values of a list header, split at commas, across repeated lines."""
        out: list[str] = []
        for value in self.get_raw(name):
            out.extend(split_list(value))
        return out

    def tokens(self, name: str) -> list[str]:
        """Option tags and methods (Require, Supported, Allow), lower-cased."""
        return [item.lower() for item in self.get_list(name)]

    def add(self, name: str, value: str) -> None:
        self._fields.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every field of ``name`` with one, at the first one's position."""
        name = canonical_name(name)
        for index, (key, _) in enumerate(self._fields):
            if key == name:
                self._fields[index] = (name, value)
                self._fields = [
                    f for i, f in enumerate(self._fields) if i <= index or f[0] != name
                ]
                return
        self._fields.append((name, value))

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first field of ``name`` in place, keeping the others."""
        name = canonical_name(name)
        for index, (key, _) in enumerate(self._fields):
            if key == name:
                self._fields[index] = (name, value)
                return
        self._fields.append((name, value))

    def remove(self, name: str) -> None:
        name = canonical_name(name)
        self._fields = [f for f in self._fields if f[0] != name]

    def copy(self) -> Headers:
        copy = Headers()
        copy._fields = list(self._fields)
        return copy


# --- typed values ---------------------------------------------------------------------------


Params = tuple[tuple[str, str | None], ...]


def parse_params(text: str, where: str) -> Params:
    """``;a=b;c`` -> ``(("a", "b"), ("c", None))``; quoted values keep their quotes."""
    params: list[tuple[str, str | None]] = []
    for item in _split_semicolons(text):
        item = item.strip()
        if not item:
            raise BadRequest(f"empty parameter in {where}")
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not TOKEN.match(key):
            raise BadRequest(f"bad parameter name {key!r} in {where}")
        if sep and not value:
            raise BadRequest(f"parameter {key!r} without value in {where}")
        params.append((key, value if sep else None))
    return tuple(params)


def _split_semicolons(text: str) -> list[str]:
    parts, quoted, start = [], False, 0
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def get_param(params: Params, name: str) -> str | None:
    name = name.lower()
    for key, value in params:
        if key.lower() == name:
            return "" if value is None else value
    return None


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


@dataclass(frozen=True)
class Via:
    protocol: str  # "SIP/2.0"
    transport: str  # upper case: UDP, TCP, TLS, SCTP, WS, WSS
    host: str
    port: int | None
    params: Params = ()

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return get_param(self.params, "received")

    @property
    def rport(self) -> str | None:
        """``None`` without rport, ``""`` for a bare rport (RFC 3581), else the port text."""
        return get_param(self.params, "rport")

    @property
    def maddr(self) -> str | None:
        return get_param(self.params, "maddr")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def with_params(self, params: Params) -> Via:
        return Via(self.protocol, self.transport, self.host, self.port, params)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


_VIA = re.compile(
    r"^\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([0-9.]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+"
    r"(\[[^\]]*\]|[^\s;:]+)(?:\s*:\s*([0-9]+))?\s*((?:;.*)?)$",
    re.S,
)


def parse_via(value: str) -> Via:
    match = _VIA.match(value)
    if not match:
        raise BadRequest(f"malformed Via {value!r}")
    name, version, transport, host, port_text, params = match.groups()
    where = f"Via {value!r}"
    host, _ = parse_host(host, where)
    port = None
    if port_text is not None:
        port = int(port_text)
        if not 0 < port < 65536:
            raise BadRequest(f"port out of range in {where}")
    parsed = parse_params(params[1:], where) if params else ()
    branch = get_param(parsed, "branch")
    if branch is not None and not branch:
        raise BadRequest(f"empty branch in {where}")
    return Via(f"{name.upper()}/{version}", transport.upper(), host, port, parsed)


@dataclass(frozen=True)
class NameAddr:
    """From, To, Contact, Route and Record-Route values: display name, URI, header params."""

    uri: URI
    display_name: str | None = None
    params: Params = ()
    bracketed: bool = True

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        params = tuple(p for p in self.params if p[0].lower() != "tag") + (("tag", tag),)
        return NameAddr(self.uri, self.display_name, params, self.bracketed)

    def __str__(self) -> str:
        display = ""
        if self.display_name is not None:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(value: str, header: str) -> NameAddr:
    """Parse ``"Name" <uri>;params``, ``Name <uri>``, or an addr-spec ``uri;params``."""
    text = value.strip()
    where = f"{header} {value!r}"
    display: str | None = None
    if text.startswith('"'):
        index, chars = 1, []
        while index < len(text):
            char = text[index]
            if char == "\\" and index + 1 < len(text):
                chars.append(text[index + 1])
                index += 2
                continue
            if char == '"':
                break
            chars.append(char)
            index += 1
        else:
            raise BadRequest(f"unterminated quoted display name in {where}")
        display = "".join(chars)
        text = text[index + 1:].lstrip()
        if not text.startswith("<"):
            raise BadRequest(f"display name not followed by <URI> in {where}")
    if "<" in text:
        before, _, after = text.partition("<")
        if display is None and before.strip():
            display = " ".join(before.split())
        uri_text, closed, rest = after.partition(">")
        if not closed:
            raise BadRequest(f"unterminated <URI> in {where}")
        if uri_text != uri_text.strip():
            raise BadRequest(f"whitespace inside <URI> in {where}")
        uri = _uri(uri_text, where)
        rest = rest.strip()
        if rest and not rest.startswith(";"):
            raise BadRequest(f"unexpected text {rest!r} after URI in {where}")
        params = parse_params(rest[1:], where) if rest else ()
        return NameAddr(uri, display, params, True)
    # addr-spec: parameters after the URI belong to the header field (RFC 3261 §20).
    uri_text, semi, rest = text.partition(";")
    uri_text = uri_text.strip()  # LWS before the ';' of a header param is legal (RFC 4475 wsinv)
    if not uri_text or any(c.isspace() for c in uri_text):
        raise BadRequest(f"malformed address in {where}")
    params = parse_params(rest, where) if semi else ()
    return NameAddr(_uri(uri_text, where), None, params, False)


def _uri(text: str, where: str) -> URI:
    try:
        return parse_uri(text)
    except URIError as error:
        raise BadRequest(f"{error.reason} in {where}") from None


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    # isdigit() alone admits "\u00b2", on which int() raises: only ASCII digits are numbers.
    if (
        len(parts) != 2
        or not (parts[0].isascii() and parts[0].isdigit())
        or not TOKEN.match(parts[1])
    ):
        raise BadRequest(f"malformed CSeq {value!r}")
    number = int(parts[0])
    if number >= 2**31:
        raise BadRequest(f"CSeq number {parts[0]} exceeds 2**31 - 1")
    return CSeq(number, parts[1])


def contact_has_feature(contact: NameAddr, feature: str) -> bool:
    """Whether a Contact carries a feature tag such as ``+sip.src`` (RFC 3840 / 7866)."""
    return get_param(contact.params, feature) is not None


def sip_uri_of(addr: NameAddr) -> SipURI | None:
    return addr.uri if isinstance(addr.uri, SipURI) else None
