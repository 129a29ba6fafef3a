"""Fakes and message builders shared by the SIP core's unit tests."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from siprecd.sip.message import Request, Response, ResponseSpec, parse_message
from siprecd.sip.source import Source

SRC_HOST = "192.0.2.1"
SRS_URI = "sip:srs@192.0.2.10:5060"


def build_request(
    method: str = "INVITE",
    uri: str = SRS_URI,
    *,
    branch: str = "z9hG4bK-1",
    via: str | None = None,
    transport: str = "UDP",
    via_host: str = SRC_HOST,
    via_port: int | None = 5060,
    call_id: str = "call-1@192.0.2.1",
    from_tag: str | None = "src-tag",
    to_tag: str | None = None,
    cseq: int = 1,
    cseq_method: str | None = None,
    contact: str | None = "<sip:src@192.0.2.1:5060>",
    extra: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    content_type: str | None = None,
    version: str = "SIP/2.0",
    content_length: bool = True,
) -> bytes:
    """A well-formed request as bytes; each argument changes one thing."""
    if via is None:
        port = f":{via_port}" if via_port is not None else ""
        via = f"SIP/2.0/{transport} {via_host}{port};branch={branch}"
    from_value = "<sip:src@example.com>" + (f";tag={from_tag}" if from_tag else "")
    to_value = "<sip:srs@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} {version}",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: {from_value}",
        f"To: {to_value}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
    ]
    if contact is not None and method in ("INVITE", "UPDATE"):
        lines.append(f"Contact: {contact}")
    lines.extend(f"{name}: {value}" for name, value in extra)
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def request(*args: Any, **kwargs: Any) -> Request:
    message = parse_message(build_request(*args, **kwargs))
    assert isinstance(message, Request)
    message.validate()
    return message


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response), data
    return message


class FakeUDP:
    """Stands in for ``UDPTransport`` in ``Transports.udp``: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, int]] = []

    def send(self, data: bytes, host: str, port: int) -> None:
        self.sent.append((data, host, port))

    def responses(self) -> list[Response]:
        return [parse_response(data) for data, _, _ in self.sent if data.startswith(b"SIP/")]

    def statuses(self) -> list[int]:
        return [r.status for r in self.responses()]

    def requests(self) -> list[Request]:
        out = []
        for data, _, _ in self.sent:
            if not data.startswith(b"SIP/"):
                message = parse_message(data)
                assert isinstance(message, Request)
                out.append(message)
        return out


class FakeConnection:
    """A stream connection as ``Source.connection`` sees it."""

    def __init__(self, open: bool = True) -> None:
        self.open = open
        self.written: list[bytes] = []

    def write_message(self, data: bytes) -> None:
        assert self.open, "write on a closed connection"
        self.written.append(data)

    def statuses(self) -> list[int]:
        return [parse_response(d).status for d in self.written if d.startswith(b"SIP/")]


class FakeSender:
    """The transaction layer's ``Sender``: records (time, message, source)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.responses: list[tuple[float, Response, Source]] = []
        self.requests: list[tuple[float, Request, Source]] = []

    def send_response(self, response: Response, source: Source) -> None:
        self.responses.append((self.clock.seconds(), response, source))

    def send_request(self, request: Request, source: Source) -> None:
        self.requests.append((self.clock.seconds(), request, source))

    def statuses(self) -> list[int]:
        return [r.status for _, r, _ in self.responses]

    def times(self, status: int) -> list[float]:
        return [t for t, r, _ in self.responses if r.status == status]


class FakeTU:
    """The transaction user: records what the transaction layer tells it."""

    def __init__(self) -> None:
        self.requests: list[tuple[Request, Any]] = []
        self.acks: list[tuple[Request, Source]] = []
        self.timed_out: list[Any] = []

    def request_received(self, request: Request, transaction: Any) -> None:
        self.requests.append((request, transaction))

    def ack_received(self, request: Request, source: Source) -> None:
        self.acks.append((request, source))

    def ack_timed_out(self, transaction: Any) -> None:
        self.timed_out.append(transaction)


class FakeApp:
    """A SIPREC application stand-in; ``result`` decides what ``invite`` returns.

    ``result`` may be a ResponseSpec, a Deferred, or an exception instance to raise.
    """

    def __init__(self) -> None:
        self.result: Any = None
        self.reinvite_result: Any = None
        self.invites: list[tuple[Request, Any]] = []
        self.reinvites: list[tuple[Request, Any]] = []
        self.updates: list[Request] = []
        self.byes: list[tuple[Request, Any]] = []
        self.acked_dialogs: list[Any] = []
        self.ended: list[tuple[Any, str]] = []

    @staticmethod
    def _outcome(result: Any) -> ResponseSpec | Deferred[ResponseSpec]:
        if isinstance(result, BaseException):
            raise result
        if result is None:
            return ResponseSpec(200, "OK", body=b"v=0\r\n", content_type="application/sdp")
        return result  # type: ignore[no-any-return]

    def invite(self, request: Request, dialog: Any) -> Any:
        self.invites.append((request, dialog))
        return self._outcome(self.result)

    def reinvite(self, request: Request, dialog: Any) -> Any:
        self.reinvites.append((request, dialog))
        return self._outcome(self.reinvite_result)

    def update(self, request: Request, dialog: Any) -> Any:
        self.updates.append(request)
        return ResponseSpec(200, "OK")

    def info(self, request: Request, dialog: Any) -> Any:
        return ResponseSpec(200, "OK")

    def bye(self, request: Request, dialog: Any) -> None:
        self.byes.append((request, dialog))

    def acked(self, dialog: Any) -> None:
        self.acked_dialogs.append(dialog)

    def dialog_ended(self, dialog: Any, reason: str) -> None:
        self.ended.append((dialog, reason))


__all__ = [
    "FakeApp",
    "FakeConnection",
    "FakeSender",
    "FakeTU",
    "FakeUDP",
    "build_request",
    "parse_response",
    "request",
]
