"""Framing of what the parent and a worker say to each other over the worker's relay socket.

Every frame is a 4-byte big-endian length, then a one-byte kind, then the kind's fields.
Encoding and decoding are pure; :class:`FrameDecoder` takes the byte stream in pieces of any size.

- ``Inbound`` (parent -> worker): a SIP message as the parent's public socket received it, with
  the real source address, transport, the id of the TCP/TLS connection (0 for UDP) and the
  parent's rate-limit verdict, so the worker's SIP core sees what a single process would.
- ``Outbound`` (worker -> parent): bytes to send, over connection ``conn_id`` while the parent
  still has it open, otherwise to ``host:port`` over ``transport`` (as ``Transports`` does).
- ``Closed`` (parent -> worker): connection ``conn_id`` has gone.
- ``Hello`` (worker -> parent): the worker is up (its calls resumed); where its web server is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_FRAME = 4 * 1024 * 1024  # far above [sip] max_message_size's ceiling (1 MiB)

_LENGTH = struct.Struct("!I")
_MESSAGE = struct.Struct("!BIHBB")  # transport, conn_id, port, flags, host length
_CLOSED = struct.Struct("!I")
_HELLO = struct.Struct("!IH")  # pid, web port (0: none)

TRANSPORT_CODES = {"UDP": 1, "TCP": 2, "TLS": 3}
TRANSPORT_NAMES = {code: name for name, code in TRANSPORT_CODES.items()}

INBOUND, OUTBOUND, CLOSED, HELLO = b"I", b"O", b"C", b"H"
RATE_OK = 1


class RelayError(Exception):
    """The byte stream is not frames of this protocol: the relay is unusable from here on."""


@dataclass(frozen=True)
class Inbound:
    transport: str
    host: str
    port: int
    conn_id: int
    data: bytes
    rate_ok: bool = True


@dataclass(frozen=True)
class Outbound:
    transport: str
    host: str
    port: int
    conn_id: int
    data: bytes


@dataclass(frozen=True)
class Closed:
    conn_id: int


@dataclass(frozen=True)
class Hello:
    pid: int
    web_port: int


Frame = Inbound | Outbound | Closed | Hello


def encode(frame: Frame) -> bytes:
    if isinstance(frame, (Inbound, Outbound)):
        host = frame.host.encode("ascii")
        if len(host) > 255:
            raise ValueError(f"host {frame.host!r} is too long")
        flags = RATE_OK if isinstance(frame, Outbound) or frame.rate_ok else 0
        kind = INBOUND if isinstance(frame, Inbound) else OUTBOUND
        body = kind + _MESSAGE.pack(TRANSPORT_CODES[frame.transport], frame.conn_id, frame.port, flags, len(host)) + host + frame.data
    elif isinstance(frame, Closed):
        body = CLOSED + _CLOSED.pack(frame.conn_id)
    elif isinstance(frame, Hello):
        body = HELLO + _HELLO.pack(frame.pid, frame.web_port)
    else:
        raise TypeError(f"not a relay frame: {frame!r}")
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame of {len(body)} bytes is over {MAX_FRAME}")
    return _LENGTH.pack(len(body)) + body


def decode(body: bytes) -> Frame:
    """One frame's body (after the length)."""
    kind, rest = body[:1], body[1:]
    try:
        if kind in (INBOUND, OUTBOUND):
            code, conn_id, port, flags, host_length = _MESSAGE.unpack_from(rest)
            start = _MESSAGE.size
            if len(rest) < start + host_length:
                raise RelayError("message frame shorter than its host")
            host = rest[start:start + host_length].decode("ascii")
            data = rest[start + host_length:]
            transport = TRANSPORT_NAMES.get(code)
            if transport is None:
                raise RelayError(f"unknown transport code {code}")
            if kind == INBOUND:
                return Inbound(transport, host, port, conn_id, data, bool(flags & RATE_OK))
            return Outbound(transport, host, port, conn_id, data)
        if kind == CLOSED and len(rest) == _CLOSED.size:
            return Closed(*_CLOSED.unpack(rest))
        if kind == HELLO and len(rest) == _HELLO.size:
            return Hello(*_HELLO.unpack(rest))
    except (struct.error, UnicodeDecodeError) as error:
        raise RelayError(f"malformed {kind!r} frame: {error}") from None
    raise RelayError(f"unknown or malformed frame kind {kind!r} ({len(body)} bytes)")


class FrameDecoder:
    """Frames out of a byte stream fed in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.failed: str | None = None

    def feed(self, data: bytes) -> list[Frame]:
        if self.failed is not None:
            raise RelayError(self.failed)
        self._buffer += data
        frames = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length == 0 or length > MAX_FRAME:
                self.failed = f"frame length {length} out of range"
                raise RelayError(self.failed)
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[_LENGTH.size:end])
            del self._buffer[:end]
            try:
                frames.append(decode(body))
            except RelayError as error:
                self.failed = str(error)
                raise
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)
