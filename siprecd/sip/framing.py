"""Stream framing for SIP over TCP and TLS (RFC 3261 §18.3, RFC 5626 §3.5.1 keep-alives).

A pure, incremental state machine: feed it bytes in any split, get back complete messages,
keep-alive pings and framing errors.  Memory per connection is bounded by the message size limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from siprecd.sip.message import Limits, head_end

# ``$`` under re.M matches before LF only: ``\r?`` lets CRLF-terminated lines match too.
_CONTENT_LENGTH = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$", re.I | re.M
)


@dataclass(frozen=True)
class Frame:
    data: bytes


@dataclass(frozen=True)
class KeepAlive:
    """A CRLFCRLF ping (RFC 5626); the transport answers with a single CRLF pong."""


@dataclass(frozen=True)
class FramingError:
    """The stream cannot be framed any more; the connection must be closed."""

    reason: str


Event = Frame | KeepAlive | FramingError


class StreamFramer:
    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buffer = bytearray()
        self._failed = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        if self._failed:
            return []
        self._buffer += data
        events: list[Event] = []
        while True:
            event = self._next()
            if event is None:
                break
            events.append(event)
            if isinstance(event, FramingError):
                self._failed = True
                self._buffer.clear()
                break
        return events

    def _next(self) -> Event | None:
        buffer = self._buffer
        # Leading CRLFs are keep-alives, not part of a message.
        stripped = 0
        while stripped < len(buffer) and buffer[stripped] in (13, 10):
            stripped += 1
        if stripped:
            # One event per CRLFCRLF ping, however the reads split them; anything else in the
            # run is a stray line end.
            ping = buffer.find(b"\r\n\r\n", 0, stripped)
            if ping >= 0:
                del buffer[: ping + 4]
                return KeepAlive()
            if stripped == len(buffer):
                # Perhaps a ping split across reads: keep the tail that could still complete it
                # (never more than 3 bytes), and wait.
                del buffer[: max(0, stripped - 3)]
                return None
            del buffer[:stripped]
        if not buffer:
            return None
        end = head_end(buffer)
        if end is None:
            if len(buffer) > self._limits.max_message_size:
                return FramingError(
                    f"no end of headers within {self._limits.max_message_size} bytes"
                )
            return None
        head, head_length = bytes(buffer[: end[0]]), end[1]
        lengths = {int(m.group(1)) for m in _CONTENT_LENGTH.finditer(head)}
        if len(lengths) > 1:
            return FramingError(f"conflicting Content-Length values {sorted(lengths)}")
        # RFC 3261 §18.3 makes Content-Length mandatory on streams; a missing one means no body.
        body_length = lengths.pop() if lengths else 0
        total = head_length + body_length
        if total > self._limits.max_message_size:
            return FramingError(
                f"message of {total} bytes exceeds the limit of {self._limits.max_message_size}"
            )
        if len(buffer) < total:
            return None
        frame = bytes(buffer[:total])
        del buffer[:total]
        return Frame(frame)
