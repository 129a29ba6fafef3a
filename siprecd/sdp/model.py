"""The SDP data model (RFC 8866) and the derived views the recorder needs.

The model keeps what the offerer sent (attribute order, unknown attributes, several c= lines)
so that an answer can echo it and a log can show it; the derived helpers (``rtpmaps``,
``direction`` ...) read it without changing it.  Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from siprecd.errors import NotAcceptableHere

__all__ = [
    "Bandwidth",
    "Connection",
    "DIRECTIONS",
    "MediaDescription",
    "Origin",
    "Rtcp",
    "RtpMap",
    "SDPError",
    "STATIC_PAYLOAD_TYPES",
    "SessionDescription",
    "Timing",
]


class SDPError(NotAcceptableHere):
    """The SDP cannot be used: 488 with a Warning that says what was wrong and where."""

    def __str__(self) -> str:
        # The SIP status alone ("488 Not Acceptable Here") is useless in logs and test output.
        return self.warning


DIRECTIONS: frozenset[str] = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})


@dataclass(slots=True)
class Origin:
    """o= line.  ``sess_id``/``sess_version`` stay strings: they are opaque to us and may
    exceed 64 bits or carry leading zeros that must survive an echo."""

    username: str
    sess_id: str
    sess_version: str
    nettype: str
    addrtype: str
    address: str


@dataclass(slots=True)
class Connection:
    """c= line; ``ttl``/``count`` only appear for multicast (``224.2.1.1/127/3``)."""

    nettype: str
    addrtype: str
    address: str
    ttl: int | None = None
    count: int | None = None


@dataclass(slots=True)
class Bandwidth:
    """b= line, e.g. ``AS:84`` or ``TIAS:64000``."""

    bwtype: str
    bandwidth: int


@dataclass(slots=True)
class Timing:
    """t= line with the r= lines that belong to it (kept verbatim: nobody records by schedule)."""

    start: int
    stop: int
    repeats: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RtpMap:
    """What a payload type carries: a=rtpmap, or the static table of RFC 3551."""

    encoding: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        # The a=rtpmap value form; channels are only written when not mono (RFC 8866 §6.6).
        base = f"{self.encoding}/{self.clock_rate}"
        return base if self.channels == 1 else f"{base}/{self.channels}"


@dataclass(frozen=True, slots=True)
class Rtcp:
    """a=rtcp (RFC 3605): the port, and an address only when it differs from c=."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None


# RFC 3551 table 4, limited to the audio payload types SRCs actually send without a=rtpmap.
# G722's RTP clock is 8000 although it samples at 16 kHz (an RFC 1890 mistake kept for
# compatibility), so the clock here is the RTP one, not the audio one.
STATIC_PAYLOAD_TYPES: dict[str, RtpMap] = {
    "0": RtpMap("PCMU", 8000),
    "3": RtpMap("GSM", 8000),
    "4": RtpMap("G723", 8000),
    "8": RtpMap("PCMA", 8000),
    "9": RtpMap("G722", 8000),
    "13": RtpMap("CN", 8000),
    "18": RtpMap("G729", 8000),
}


def parse_rtpmap_value(value: str) -> tuple[str, RtpMap] | None:
    """``"101 telephone-event/8000"`` -> ``("101", RtpMap(...))``; None when malformed.

    A broken rtpmap for one payload type must not sink the whole offer: the caller simply
    does not know that payload type, and codec choice moves on to the next one.
    """
    pt, _, rest = value.strip().partition(" ")
    parts = rest.strip().split("/")
    # RTP payload types are 7 bits (RFC 3550); anything larger can never match a packet.
    if not pt.isdigit() or int(pt) > 127 or len(parts) not in (2, 3) or not parts[0]:
        return None
    try:
        clock = int(parts[1])
        channels = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        return None
    if clock <= 0 or channels <= 0:
        return None
    return pt, RtpMap(parts[0], clock, channels)


def _first(attributes: list[tuple[str, str | None]], name: str) -> str | None:
    for attr_name, value in attributes:
        if attr_name == name:
            return value
    return None


class _Described:
    """Attribute and connection access shared by the session and each media description."""

    __slots__ = ()
    attributes: list[tuple[str, str | None]]
    connections: list[Connection]

    def attribute(self, name: str) -> str | None:
        """Value of the first a=<name>[:value]; None if absent or valueless."""
        return _first(self.attributes, name)

    def attribute_values(self, name: str) -> list[str | None]:
        return [value for attr_name, value in self.attributes if attr_name == name]

    def has_attribute(self, name: str) -> bool:
        return any(attr_name == name for attr_name, _ in self.attributes)

    @property
    def connection(self) -> Connection | None:
        """The first c= (more than one only happens with layered multicast)."""
        return self.connections[0] if self.connections else None


def _own_direction(attributes: list[tuple[str, str | None]]) -> str | None:
    # RFC 8866 allows one direction attribute per level; if a sloppy SRC sends several, the
    # first wins, which is what most stacks do.  Unknown ones (a=direction:both, RFC 4145's
    # TCP setup attribute that SEMS sends) are not media directions and are ignored here.
    for name, value in attributes:
        if value is None and name in DIRECTIONS:
            return name
    return None


def _is_unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


@dataclass(slots=True)
class MediaDescription(_Described):
    """One m= section with its c=, b= and a= lines in the order they came."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int = 1
    title: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    # -- derived views ---------------------------------------------------------------------

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    @property
    def rtpmaps(self) -> dict[str, RtpMap]:
        """Payload type -> encoding for every offered format whose encoding is known, in the
        order of the m= line.  a=rtpmap wins over the static table (RFC 3551 allows it)."""
        if not self.is_rtp:
            return {}
        declared: dict[str, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            parsed = parse_rtpmap_value(value or "")
            if parsed is not None and parsed[0] not in declared:
                declared[parsed[0]] = parsed[1]
        result: dict[str, RtpMap] = {}
        for pt in self.formats:
            known = declared.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
            if known is not None:
                result[pt] = known
        return result

    @property
    def fmtp(self) -> dict[str, str]:
        """Payload type -> format parameters (first a=fmtp per payload type)."""
        result: dict[str, str] = {}
        for value in self.attribute_values("fmtp"):
            pt, _, params = (value or "").strip().partition(" ")
            if pt and pt not in result:
                result[pt] = params.strip()
        return result

    @property
    def own_direction(self) -> str | None:
        """The media-level direction attribute, None if this m= section has none."""
        return _own_direction(self.attributes)

    def direction(self, session: SessionDescription) -> str:
        """Effective direction: media level, else session level, else sendrecv (RFC 8866 §6.7)."""
        return self.own_direction or session.own_direction or "sendrecv"

    @property
    def label(self) -> str | None:
        """a=label (RFC 4574): an arbitrary string the metadata refers to; often absent."""
        return self.attribute("label")

    def connection_address(self, session: SessionDescription) -> str | None:
        """Where the offerer's media comes from: media c= overrides session c=."""
        conn = self.connection or session.connection
        return conn.address if conn is not None else None

    def on_hold(self, session: SessionDescription) -> bool:
        """RFC 2543-style hold: the connection address is 0.0.0.0 or ::."""
        address = self.connection_address(session)
        return address is not None and _is_unspecified(address)

    @property
    def rtcp(self) -> Rtcp | None:
        """a=rtcp (RFC 3605); None if absent or malformed (then RTCP is on port+1)."""
        value = self.attribute("rtcp")
        if value is None:
            return None
        parts = value.split()
        if not parts or not parts[0].isdigit() or int(parts[0]) > 65535:
            return None
        if len(parts) == 4:
            return Rtcp(int(parts[0]), parts[1], parts[2], parts[3])
        return Rtcp(int(parts[0]))

    @property
    def ptime(self) -> int | None:
        """a=ptime in milliseconds; some SRCs write ``20.0``, so fractions are rounded."""
        value = self.attribute("ptime")
        if value is None:
            return None
        try:
            ms = round(float(value))
        except ValueError:
            return None
        return ms if ms > 0 else None


@dataclass(slots=True)
class SessionDescription(_Described):
    """A whole SDP body.  Optional RFC 8866 lines nobody here acts on (u=, e=, p=, z=, k=) are
    kept so that nothing an SRC sent vanishes from logs or round trips."""

    origin: Origin
    name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timing: list[Timing] = field(default_factory=list)
    zone: str | None = None
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    @property
    def own_direction(self) -> str | None:
        """The session-level direction attribute, None if absent."""
        return _own_direction(self.attributes)
