"""SDP bytes <-> :class:`SessionDescription` (RFC 8866, the successor of RFC 4566).

Tolerant where SRCs are sloppy and nothing depends on it: LF or CRLF, trailing whitespace,
blank lines, lines out of the canonical order, unknown attributes (kept), unknown line types
(ignored, as RFC 8866 §5 allows), a missing s= or t= line.  Strict where a mistake would make
us record the wrong thing or nothing: the v=0 start, o=, c=, m=, b= and t= syntax, and the size
limits that keep a hostile body from costing us memory and time.
"""

from __future__ import annotations

from collections.abc import Iterator

from siprecd.sdp.model import (
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SDPError,
    SessionDescription,
    Timing,
)

__all__ = ["MAX_MEDIA", "MAX_SDP_BYTES", "parse", "serialize"]

MAX_SDP_BYTES = 64 * 1024
MAX_MEDIA = 64

# Lines that describe the session as a whole; inside an m= section they mean the body is two
# SDPs glued together or garbage, and guessing which half is meant would be worse than a 488.
_SESSION_ONLY = frozenset("vosuetprz")


def _show(text: str, limit: int = 80) -> str:
    """Quote a line for an error message without letting a huge line flood the Warning."""
    return "'" + (text if len(text) <= limit else text[:limit] + "...") + "'"


def _decode(raw: bytes) -> str:
    # SDP is UTF-8 by default (RFC 8866 §5.2), but some SBCs put Latin-1 into s= or a label.
    # Decoding line by line keeps one such line from spoiling the rest, and Latin-1 cannot fail.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _lines(data: bytes) -> Iterator[tuple[int, str, str, str]]:
    """Yield (line number, type letter, value, whole line) for every non-blank line."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = _decode(raw).strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SDPError(f"line {number}: expected '<type>=<value>', got {_show(line)}")
        yield number, line[0], line[2:], line


def _parse_origin(number: int, value: str, line: str) -> Origin:
    fields = value.split()
    if len(fields) != 6:
        raise SDPError(
            f"line {number}: o= line needs 'username sess-id sess-version nettype addrtype "
            f"address', got {_show(line)}"
        )
    username, sess_id, sess_version, nettype, addrtype, address = fields
    # RFC 3264 §8 compares sess-version numerically to spot a changed re-offer, so both
    # numbers must be numbers.
    for what, text in (("sess-id", sess_id), ("sess-version", sess_version)):
        if not text.isdigit():
            raise SDPError(f"line {number}: o= {what} must be digits, got {_show(text)}")
    return Origin(username, sess_id, sess_version, nettype, addrtype, address)


def _parse_connection(number: int, value: str, line: str) -> Connection:
    fields = value.split()
    if len(fields) != 3:
        raise SDPError(
            f"line {number}: c= line needs 'nettype addrtype address', got {_show(line)}"
        )
    nettype, addrtype, address = fields
    ttl: int | None = None
    count: int | None = None
    if addrtype.upper() in ("IP4", "IP6") and "/" in address:
        # Multicast suffixes: IP4 "addr/ttl[/count]", IP6 "addr[/count]" (RFC 8866 §5.7).
        address, *suffix = address.split("/")
        limit = 2 if addrtype.upper() == "IP4" else 1
        if not address or len(suffix) > limit or not all(s.isdigit() for s in suffix):
            raise SDPError(f"line {number}: c= address has a malformed suffix in {_show(line)}")
        numbers = [int(s) for s in suffix]
        if addrtype.upper() == "IP4":
            ttl = numbers[0]
            count = numbers[1] if len(numbers) == 2 else None
        else:
            count = numbers[0]
    return Connection(nettype, addrtype, address, ttl, count)


def _parse_bandwidth(number: int, value: str, line: str) -> Bandwidth:
    bwtype, sep, amount = value.partition(":")
    if not sep or not bwtype or not amount.strip().isdigit():
        raise SDPError(f"line {number}: b= line needs 'bwtype:bandwidth', got {_show(line)}")
    return Bandwidth(bwtype, int(amount))


def _parse_timing(number: int, value: str, line: str) -> Timing:
    fields = value.split()
    if len(fields) != 2 or not all(f.isdigit() for f in fields):
        raise SDPError(f"line {number}: t= line needs 'start-time stop-time', got {_show(line)}")
    return Timing(int(fields[0]), int(fields[1]))


def _parse_media(number: int, value: str, line: str) -> MediaDescription:
    fields = value.split()
    if len(fields) < 4:
        raise SDPError(f"line {number}: m= line needs 'media port proto fmt...', got {_show(line)}")
    media, port_text, proto, *formats = fields
    port_part, sep, count_part = port_text.partition("/")
    if not port_part.isdigit() or int(port_part) > 65535:
        raise SDPError(
            f"line {number}: m= port must be a number from 0 to 65535, got {_show(port_part)}"
        )
    port_count = 1
    if sep:
        if not count_part.isdigit() or int(count_part) == 0:
            raise SDPError(
                f"line {number}: m= port count must be a positive number, got {_show(count_part)}"
            )
        port_count = int(count_part)
    return MediaDescription(media, int(port_part), proto, formats, port_count=port_count)


def _attribute(value: str) -> tuple[str, str | None]:
    # "a=sendonly" has no value, "a=label:" has an empty one; keeping the difference lets a
    # round trip reproduce exactly what came in.
    name, sep, rest = value.partition(":")
    return name, (rest if sep else None)


def parse(data: bytes) -> SessionDescription:
    """Parse an SDP body; raise :class:`SDPError` naming the line for anything unusable."""
    if len(data) > MAX_SDP_BYTES:
        raise SDPError(f"SDP is {len(data)} bytes, over the {MAX_SDP_BYTES}-byte limit")
    lines = _lines(data)
    first = next(lines, None)
    if first is None:
        raise SDPError("SDP body is empty")
    number, kind, value, line = first
    if kind != "v":
        raise SDPError(f"line {number}: SDP must start with 'v=0', got {_show(line)}")
    if value.strip() != "0":
        raise SDPError(f"line {number}: unsupported SDP version {_show(value)} (only v=0 exists)")

    origin: Origin | None = None
    name: str | None = None
    session = SessionDescription(origin=Origin("", "0", "0", "", "", ""))  # origin set below
    current: MediaDescription | None = None
    media_line = 0

    for number, kind, value, line in lines:
        if current is not None and kind in _SESSION_ONLY:
            raise SDPError(
                f"line {number}: {kind}= is a session-level line but appears in the m= "
                f"section that starts on line {media_line}"
            )
        if kind == "m":
            if len(session.media) >= MAX_MEDIA:
                raise SDPError(f"line {number}: more than {MAX_MEDIA} m= lines")
            current = _parse_media(number, value, line)
            session.media.append(current)
            media_line = number
        elif kind == "a":
            (current or session).attributes.append(_attribute(value))
        elif kind == "c":
            (current or session).connections.append(_parse_connection(number, value, line))
        elif kind == "b":
            (current or session).bandwidths.append(_parse_bandwidth(number, value, line))
        elif kind == "i":
            # Repeated single-instance lines are harmless to us: keep the first, drop the rest.
            if current is not None:
                current.title = value if current.title is None else current.title
            elif session.information is None:
                session.information = value
        elif kind == "k":
            if current is not None:
                current.key = value if current.key is None else current.key
            elif session.key is None:
                session.key = value
        elif kind == "v":
            raise SDPError(f"line {number}: second v= line (two SDP bodies glued together?)")
        elif kind == "o":
            if origin is not None:
                raise SDPError(f"line {number}: second o= line")
            origin = _parse_origin(number, value, line)
        elif kind == "s":
            name = value if name is None else name
        elif kind == "u":
            session.uri = value if session.uri is None else session.uri
        elif kind == "e":
            session.emails.append(value)
        elif kind == "p":
            session.phones.append(value)
        elif kind == "t":
            session.timing.append(_parse_timing(number, value, line))
        elif kind == "r":
            if not session.timing:
                raise SDPError(f"line {number}: r= line must follow a t= line")
            session.timing[-1].repeats.append(value)
        elif kind == "z":
            session.zone = value if session.zone is None else session.zone
        # Any other type letter is unknown to RFC 8866; §5 lets a parser ignore it.

    if origin is None:
        raise SDPError("SDP has no o= line")
    session.origin = origin
    # A missing s= is a protocol violation that costs us nothing; "" is what "s= " also gives.
    session.name = name if name is not None else ""
    return session


def _connection(conn: Connection) -> str:
    address = conn.address
    if conn.ttl is not None:
        address += f"/{conn.ttl}"
    if conn.count is not None:
        address += f"/{conn.count}"
    return f"c={conn.nettype} {conn.addrtype} {address}"


def _attributes(attributes: list[tuple[str, str | None]]) -> Iterator[str]:
    for name, value in attributes:
        yield f"a={name}" if value is None else f"a={name}:{value}"


def serialize(sdp: SessionDescription) -> bytes:
    """Write ``sdp`` with CRLF in the canonical order of RFC 8866 §5.

    Raises ValueError if a field holds CR, LF or NUL: those would let text taken from a peer
    inject lines into the SDP we send.
    """
    o = sdp.origin
    out = [
        f"v={sdp.version}",
        f"o={o.username} {o.sess_id} {o.sess_version} {o.nettype} {o.addrtype} {o.address}",
        # RFC 8866 §5.3: an empty session name is written as a single space.
        f"s={sdp.name or ' '}",
    ]
    if sdp.information is not None:
        out.append(f"i={sdp.information}")
    if sdp.uri is not None:
        out.append(f"u={sdp.uri}")
    out.extend(f"e={email}" for email in sdp.emails)
    out.extend(f"p={phone}" for phone in sdp.phones)
    out.extend(_connection(conn) for conn in sdp.connections)
    out.extend(f"b={bw.bwtype}:{bw.bandwidth}" for bw in sdp.bandwidths)
    for timing in sdp.timing:
        out.append(f"t={timing.start} {timing.stop}")
        out.extend(f"r={repeat}" for repeat in timing.repeats)
    if sdp.zone is not None:
        out.append(f"z={sdp.zone}")
    if sdp.key is not None:
        out.append(f"k={sdp.key}")
    out.extend(_attributes(sdp.attributes))
    for m in sdp.media:
        port = f"{m.port}/{m.port_count}" if m.port_count != 1 else str(m.port)
        out.append(" ".join([f"m={m.media}", port, m.proto, *m.formats]))
        if m.title is not None:
            out.append(f"i={m.title}")
        out.extend(_connection(conn) for conn in m.connections)
        out.extend(f"b={bw.bwtype}:{bw.bandwidth}" for bw in m.bandwidths)
        if m.key is not None:
            out.append(f"k={m.key}")
        out.extend(_attributes(m.attributes))
    for line in out:
        if any(ch in line for ch in "\r\n\0"):
            raise ValueError(f"SDP field contains CR, LF or NUL: {line!r}")
    return ("\r\n".join(out) + "\r\n").encode("utf-8")
