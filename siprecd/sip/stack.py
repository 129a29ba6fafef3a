"""One SIP stack behind every transport: parse, stamp Via, hand to the transaction layer.

Nothing raises out of :meth:`SIPStack.receive`: input that is not SIP is dropped and counted, a
malformed request gets a stateless 400 whose reason phrase says what was wrong, a malformed
response is dropped, and an unexpected error is logged with its traceback.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from siprecd.errors import BadRequest
from siprecd.sip.dialog import new_tag
from siprecd.sip.headers import canonical_name, split_list
from siprecd.sip.message import (
    Limits,
    Message,
    NotSIP,
    Request,
    Response,
    parse_message,
)
from siprecd.sip.ratelimit import RateLimiter
from siprecd.sip.source import Source
from siprecd.sip.transaction import TimerSettings, TransactionLayer
from siprecd.sip.transport import StreamFactory, StreamProtocol, Transports
from siprecd.sip.uas import Application, CoreSettings, UASCore, _phrase

if TYPE_CHECKING:
    from siprecd.metrics import Metrics

log = Logger()


class SIPStack:
    def __init__(
        self,
        clock: IReactorTime,
        app: Application,
        *,
        limits: Limits = Limits(),
        timers: TimerSettings = TimerSettings(),
        settings: CoreSettings = CoreSettings(),
        rate_limiter: RateLimiter | None = None,
        connect: Callable[[str, str, int, StreamFactory], Deferred[StreamProtocol]] | None = None,
        metrics: Metrics | None = None,
        transports: Transports | None = None,
    ) -> None:
        self.limits = limits
        self.counters: Counter[str] = Counter()
        self.metrics = metrics
        # A worker of [service] workers sends through its parent's sockets instead.
        self.transports = transports if transports is not None else Transports(connect)
        self.core = UASCore(clock, app, settings, rate_limiter or RateLimiter(clock, 0, 1))
        self.layer = TransactionLayer(clock, self.transports, self.core, timers, metrics=metrics)
        self.core.layer = self.layer
        if metrics is not None:
            metrics.watch_stack(self)

    def receive(self, data: bytes, source: Source) -> None:
        try:
            self._receive(data, source)
        except Exception:
            self.counters["internal_errors"] += 1
            log.failure("unexpected error handling a message from {source}", source=source)

    def _receive(self, data: bytes, source: Source) -> None:
        if is_keepalive(data, source):
            self.counters["keepalives"] += 1
            return
        message = parse_or_reject(data, source, self.limits, self.counters, self._reject)
        if message is None:
            return
        if isinstance(message, Response):
            self.counters["responses_received"] += 1
            self.layer.response_received(message, source)
            return
        self.counters["requests_received"] += 1
        if self.metrics is not None:
            self.metrics.sip_request(message.method, source.transport)
        stamp_via(message, source)
        self.layer.request_received(message, source)

    def _reject(self, data: bytes, source: Source, error: BadRequest) -> None:
        if not send_rejection(data, source, error, self.transports, self.counters):
            return
        if self.metrics is not None:
            method = data.lstrip(b"\r\n").split(b" ", 1)[0].decode("ascii", "replace")
            self.metrics.sip_response(method, error.code)


def is_keepalive(data: bytes, source: Source) -> bool:
    """A UDP keep-alive (CRLF, or a NUL byte): counted, never answered."""
    return not source.reliable and data.strip(b"\r\n\x00 ") == b""


def parse_or_reject(
    data: bytes,
    source: Source,
    limits: Limits,
    counters: Counter[str],
    reject: Callable[[bytes, Source, BadRequest], None],
) -> Message | None:
    """The front of every SIP receiver (the stack, and the parent of [service] workers): the
    parsed and validated message, or None once non-SIP input is dropped or a malformed message
    handed to ``reject`` (each counted and logged with its source)."""
    try:
        message = parse_message(data, limits=limits, stream=source.reliable)
        message.validate()
    except NotSIP as error:
        counters["not_sip_dropped"] += 1
        log.info("dropped non-SIP input from {source}: {error}", source=source, error=error)
        return None
    except BadRequest as error:
        counters["malformed"] += 1
        log.info("malformed message from {source}: {reason}", source=source, reason=error.reason)
        reject(data, source, error)
        return None
    return message


def send_rejection(data: bytes, source: Source, error: BadRequest, transports: Transports, counters: Counter[str]) -> bool:
    """Answer a malformed message statelessly where it came from; False when it cannot be
    answered (counted as malformed_dropped) or there is no way back."""
    response = stateless_error(data, error.code, _phrase(error.reason))
    if response is None:
        counters["malformed_dropped"] += 1
        return False
    if source.connection is not None and source.connection.open:
        source.connection.write_message(response)
    elif transports.udp is not None and source.transport == "UDP":
        transports.udp.send(response, source.host, source.port)
    else:
        return False
    return True


def stamp_via(request: Request, source: Source) -> None:
    """Add ``received`` and fill ``rport`` in the top Via (RFC 3261 §18.2.1, RFC 3581 §4)."""
    via = request.top_via
    params = list(via.params)
    names = [key.lower() for key, _ in params]
    changed = False
    if via.rport is not None:
        params[names.index("rport")] = ("rport", str(source.port))
        changed = True
    # A received the sender wrote itself is never trusted: it would steer our responses (and
    # their retransmissions) to a third party.
    stale = via.received is not None and via.received != source.host
    if via.host.strip("[]") != source.host or via.rport is not None or stale:
        params = [p for p in params if p[0].lower() != "received"]
        params.append(("received", source.host))
        changed = True
    if not changed:
        return
    first, *rest = request.headers.get_raw("Via")
    items = split_list(first)
    items[0] = str(via.with_params(tuple(params)))
    request.headers.replace_first("Via", ", ".join(items))
    request.__dict__.pop("vias", None)  # drop the cached parse of the old value


_LINE = re.compile(r"\r?\n")


def stateless_error(data: bytes, code: int, phrase: str) -> bytes | None:
    """A response to a request too malformed to parse, built from what can still be read.

    Returns None for responses, ACKs, and requests without a Via (there is nobody to answer).
    """
    head = data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = _LINE.split(head.decode("utf-8", "replace"))
    first = lines[0]
    if first.upper().startswith("SIP/") or first.split(" ", 1)[0].upper() == "ACK":
        return None
    copied: list[str] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name = canonical_name(name.strip())
        if name in ("Via", "From", "Call-ID", "CSeq"):
            copied.append(f"{name}: {value.strip()}")
        elif name == "To":
            value = value.strip()
            # Every final response carries a To tag (RFC 3261 §8.2.6.2).
            tagged = ";tag=" in value.replace(" ", "").lower()
            copied.append(f"To: {value}" if tagged else f"To: {value};tag={new_tag()}")
    if not any(line.startswith("Via:") for line in copied):
        return None
    out = [f"SIP/2.0 {code} {phrase}"] + copied + ["Server: siprecd", "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode("utf-8", "replace")
