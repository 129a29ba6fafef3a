"""Which worker a SIP message belongs to: its Call-ID, hashed.  Pure functions over bytes.

The parent of ``[service] workers = N`` reads only what routing needs from each message (the
Call-ID, whether it is a request and of which method, whether the To header has a tag) without
parsing it: the worker that owns the call parses it fully, exactly as a single process would.
``crc32(Call-ID) % N`` depends on nothing but the Call-ID and N, so every message of a call
(retransmissions, re-INVITEs, the BYE, the answers to the worker's own requests) reaches the
same worker, and still does after that worker or the whole server restarts.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from siprecd.sip.uas import ALLOWED_METHODS

# The first line of a request ("INVITE sip:x SIP/2.0") or a response ("SIP/2.0 200 OK").
_REQUEST_LINE = re.compile(rb"^([A-Za-z!%*_+`'~.-]+) +\S+ +SIP/\d+\.\d+$")
_STATUS_LINE = re.compile(rb"^SIP/\d+\.\d+ +\d{3}(?: .*)?$")
_LINES = re.compile(rb"\r?\n")
_HEAD_END = re.compile(rb"\r?\n\r?\n")

CALL_ID_NAMES = (b"call-id", b"i")  # RFC 3261 §7.3.3: "i" is the compact form
TO_NAMES = (b"to", b"t")

# The requests UASCore counts against [sip] rate_limit: new (no To tag) and not OPTIONS or
# CANCEL (ACK never reaches it).  Other methods get 405/501 before the limit is looked at.
RATE_LIMITED_METHODS = frozenset(m.encode() for m in ALLOWED_METHODS) - {b"OPTIONS", b"CANCEL", b"ACK"}


@dataclass(frozen=True)
class Peek:
    call_id: bytes | None  # None when the message has no (or an empty) Call-ID
    method: bytes | None  # None for a response
    to_tagged: bool  # the To header carries a tag: in-dialog

    @property
    def needs_token(self) -> bool:
        """Whether this message counts against the per-source rate limit."""
        return self.method is not None and not self.to_tagged and self.method.upper() in RATE_LIMITED_METHODS


def peek(data: bytes) -> Peek | None:
    """What routing needs from one message, or None when it is not SIP at all.

    Tolerates what the full parser tolerates around headers: leading CRLFs, bare LF line ends,
    any case in header names, blanks before the colon, folded (continued) header lines.
    """
    head = _HEAD_END.split(data.lstrip(b"\r\n"), 1)[0]
    lines = _LINES.split(head)
    first = lines[0].strip()
    if _STATUS_LINE.match(first):
        method = None
    else:
        match = _REQUEST_LINE.match(first)
        if match is None:
            return None
        method = match.group(1)
    call_id: bytes | None = None
    to_tagged = False
    for name, value in _headers(lines[1:]):
        if name in CALL_ID_NAMES and call_id is None:
            call_id = value or None
        elif name in TO_NAMES:
            to_tagged = to_tagged or _has_tag(value)
    return Peek(call_id, method, to_tagged)


def _headers(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and out:
            name, value = out[-1]
            out[-1] = (name, (value + b" " + line.strip()).strip())
            continue
        name, colon, value = line.partition(b":")
        if colon:
            out.append((name.strip().lower(), value.strip()))
    return out


def _has_tag(value: bytes) -> bool:
    # Parameters inside <...> belong to the URI, not to the header.
    params = value.rsplit(b">", 1)[1] if b">" in value else value
    return b";tag=" in params.replace(b" ", b"").replace(b"\t", b"").lower()


def worker_for(call_id: bytes, count: int) -> int:
    """The index (0 .. count-1) of the worker that owns every message of this Call-ID."""
    if count < 1:
        raise ValueError(f"worker count must be at least 1, not {count}")
    return zlib.crc32(call_id) % count
