"""SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state), on an injected clock.

Server transactions: INVITE (100 Trying at once; final responses retransmitted with timer G over
unreliable transports until ACK; timer H; timer I; 2xx retransmitted until the ACK with timer L
as the limit) and non-INVITE (timer J).  Client transactions: non-INVITE only (the SRS never
sends INVITE), with timers E, F and K.  Every timer is owned by its transaction and cancelled
when the transaction ends, so a quiet layer leaves no delayed calls behind.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from siprecd.sip.dialog import new_tag
from siprecd.sip.message import Request, Response, make_response
from siprecd.sip.source import Source

if TYPE_CHECKING:
    from siprecd.metrics import Metrics

MAGIC_COOKIE = "z9hG4bK"

log = Logger()


@dataclass(frozen=True)
class TimerSettings:
    """RFC 3261 §17.1.1.1 / Table 4 base values, in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H, J and L."""
        return 64 * self.t1


class Sender(Protocol):
    """What the transaction layer needs from the transports."""

    def send_response(self, response: Response, source: Source) -> None: ...

    def send_request(self, request: Request, source: Source) -> None: ...


class TransactionUser(Protocol):
    """The UAS core above the transaction layer."""

    def request_received(self, request: Request, transaction: ServerTransaction) -> None: ...

    def ack_received(self, request: Request, source: Source) -> None: ...

    def ack_timed_out(self, transaction: ServerTransaction) -> None: ...


class State(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def server_key(request: Request) -> tuple[str, ...]:
    """RFC 3261 §17.2.3 matching key; ACK matches the INVITE it acknowledges."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return (branch, via.host.lower(), str(via.port or ""), method)
    # RFC 2543 peers: match on the request's identifying fields instead of the branch.
    to_tag = "" if request.method == "ACK" else (request.to.tag or "")
    return (
        "2543",
        request.raw_uri,
        request.from_.tag or "",
        to_tag,
        request.call_id,
        str(request.cseq.number),
        str(via),
        method,
    )


class _Timers:
    """Named timers owned by one transaction; all cancelled together."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._calls: dict[str, IDelayedCall] = {}

    def start(self, name: str, delay: float, action: Callable[[], None]) -> None:
        self.stop(name)

        def fire() -> None:
            self._calls.pop(name, None)
            action()

        self._calls[name] = self._clock.callLater(delay, fire)

    def stop(self, name: str) -> None:
        call = self._calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def stop_all(self) -> None:
        for name in list(self._calls):
            self.stop(name)

    def running(self, name: str) -> bool:
        return name in self._calls


class ServerTransaction:
    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        source: Source,
        key: tuple[str, ...],
    ) -> None:
        self.layer = layer
        self._request: Request | None = request
        # Kept apart from the request, which an acknowledged INVITE transaction lets go of.
        self.method = request.method
        self.call_id = request.call_id
        self.source = source
        self.key = key
        self.is_invite = request.method == "INVITE"
        self.state = State.PROCEEDING if self.is_invite else State.TRYING
        self.last_response: Response | None = None
        self.timers = _Timers(layer.clock)
        self._interval = layer.timers.t1
        # RFC 3261 §8.2.6.2: every response but 100 carries a To tag; the UAS core replaces
        # this one with the dialog's local tag when the request creates or is in a dialog.
        self.to_tag: str | None = request.to.tag or new_tag()
        self.acked = False

    @property
    def request(self) -> Request:
        """The request; gone once a 2xx to an INVITE is acknowledged (nothing needs it then)."""
        if self._request is None:
            raise RuntimeError(f"{self.method} {self.call_id}: request dropped after the ACK")
        return self._request

    @property
    def final_sent(self) -> bool:
        return self.state not in (State.TRYING, State.PROCEEDING)

    def respond(self, response: Response) -> None:
        """Send a response from the TU; a second final response is refused loudly."""
        if self.state == State.TERMINATED or self.final_sent:
            log.warn(
                "dropping {status} for {method} {call_id}: transaction already {state}",
                status=response.status,
                method=self.method,
                call_id=self.call_id,
                state=self.state.value,
            )
            return
        self.last_response = response
        self.layer.sender.send_response(response, self.source)
        if self.layer.metrics is not None:
            self.layer.metrics.sip_response(self.method, response.status)
        if response.status < 200:
            if self.state == State.TRYING:
                self.state = State.PROCEEDING
            return
        t = self.layer.timers
        if not self.is_invite:
            self.state = State.COMPLETED
            self._wait_then_terminate("J", 0 if self.source.reliable else t.timeout)
        elif response.status < 300:
            self.state = State.ACCEPTED
            self.layer.expect_ack(self)
            if not self.source.reliable:
                self.timers.start("G2xx", self._interval, self._retransmit_2xx)
            self.timers.start("L", t.timeout, self._timer_l)
        else:
            self.state = State.COMPLETED
            if not self.source.reliable:
                self.timers.start("G", self._interval, self._timer_g)
            self.timers.start("H", t.timeout, self._timer_h)

    def reply(self, status: int, reason: str, **kwargs: object) -> Response:
        response = make_response(self.request, status, reason, to_tag=self.to_tag, **kwargs)  # type: ignore[arg-type]
        self.respond(response)
        return response

    def retransmission(self, request: Request) -> None:
        """The same request again (or the ACK for a non-2xx final response)."""
        if request.method == "ACK":
            if self.state == State.COMPLETED:
                self.state = State.CONFIRMED
                self.timers.stop("G")
                self.timers.stop("H")
                self._wait_then_terminate(
                    "I", 0 if self.source.reliable else self.layer.timers.t4
                )
            return
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            self.layer.sender.send_response(self.last_response, self.source)

    def ack_for_2xx(self) -> None:
        # RFC 6026 §8.7: stay Accepted until timer L so a late copy of the INVITE is absorbed
        # here instead of starting a second dialog (and a second recording).
        self.acked = True
        self.timers.stop("G2xx")
        # What Accepted still does until timer L (absorb copies of the INVITE and of the ACK)
        # needs only the key and the state: the INVITE (its multipart body, parsed headers)
        # and the 2xx (its SDP) would otherwise stay for 64*T1 (32 s) per call.
        self._request = None
        self.last_response = None

    def terminate(self) -> None:
        if self.state == State.TERMINATED:
            return
        self.state = State.TERMINATED
        self.timers.stop_all()
        self.layer.forget(self)

    def _wait_then_terminate(self, name: str, delay: float) -> None:
        if delay <= 0:
            self.terminate()
        else:
            self.timers.start(name, delay, self.terminate)

    def _timer_g(self) -> None:
        assert self.last_response is not None
        self.layer.sender.send_response(self.last_response, self.source)
        self._interval = min(2 * self._interval, self.layer.timers.t2)
        self.timers.start("G", self._interval, self._timer_g)

    def _retransmit_2xx(self) -> None:
        # RFC 3261 §13.3.1.4: the 2xx is the UAS core's to retransmit; it lives here so that
        # one owner cancels it.
        assert self.last_response is not None
        self.layer.sender.send_response(self.last_response, self.source)
        self._interval = min(2 * self._interval, self.layer.timers.t2)
        self.timers.start("G2xx", self._interval, self._retransmit_2xx)

    def _timer_h(self) -> None:
        log.warn(
            "timer H: no ACK for {status} to INVITE {call_id} from {source}",
            status=self.last_response.status if self.last_response else 0,
            call_id=self.call_id,
            source=self.source,
        )
        self.terminate()

    def _timer_l(self) -> None:
        self.terminate()
        if not self.acked:
            self.layer.tu.ack_timed_out(self)


class ClientTransaction:
    """Non-INVITE client transaction (BYE and OPTIONS sent by the SRS)."""

    def __init__(self, layer: TransactionLayer, request: Request, target: Source) -> None:
        self.layer = layer
        self.request = request
        self.target = target
        self.state = State.TRYING
        self.result: Deferred[Response] = Deferred()
        self.timers = _Timers(layer.clock)
        self._interval = layer.timers.t1

    def start(self) -> None:
        self.layer.sender.send_request(self.request, self.target)
        if not self.target.reliable:
            self.timers.start("E", self._interval, self._timer_e)
        self.timers.start("F", self.layer.timers.timeout, self._timer_f)

    def response_received(self, response: Response) -> None:
        if self.state in (State.COMPLETED, State.TERMINATED):
            return
        if response.status < 200:
            self.state = State.PROCEEDING
            return
        self.state = State.COMPLETED
        self.timers.stop("E")
        self.timers.stop("F")
        if self.target.reliable:
            self._terminate()
        else:
            self.timers.start("K", self.layer.timers.t4, self._terminate)
        self.result.callback(response)

    def transport_failed(self, reason: str) -> None:
        self._fail(503, f"transport error: {reason}")

    def _timer_e(self) -> None:
        self.layer.sender.send_request(self.request, self.target)
        t = self.layer.timers
        self._interval = t.t2 if self.state == State.PROCEEDING else min(2 * self._interval, t.t2)
        self.timers.start("E", self._interval, self._timer_e)

    def _timer_f(self) -> None:
        self._fail(408, "Request Timeout")

    def _fail(self, status: int, reason: str) -> None:
        if self.state == State.TERMINATED:
            return
        self._terminate()
        if not self.result.called:
            self.result.callback(make_response(self.request, status, reason))

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self.timers.stop_all()
        self.layer.forget_client(self)


class TransactionLayer:
    def __init__(
        self,
        clock: IReactorTime,
        sender: Sender,
        tu: TransactionUser,
        timers: TimerSettings = TimerSettings(),
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.clock = clock
        self.sender = sender
        self.tu = tu
        self.timers = timers
        self.metrics = metrics  # counts each response sent (not its retransmissions)
        self._server: dict[tuple[str, ...], ServerTransaction] = {}
        self._awaiting_ack: dict[tuple[str, int, str], ServerTransaction] = {}
        self._client: dict[tuple[str, str], ClientTransaction] = {}

    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    # --- server side

    def request_received(self, request: Request, source: Source) -> None:
        key = server_key(request)
        transaction = self._server.get(key)
        if transaction is not None:
            if request.method == "ACK" and transaction.state == State.ACCEPTED:
                # RFC 6026 §7.1: an ACK that matches an INVITE transaction in Accepted (a peer
                # reusing the INVITE's branch, or an RFC 2543 peer) is the 2xx's ACK: TU.
                transaction.ack_for_2xx()
                self.tu.ack_received(request, source)
                return
            transaction.retransmission(request)
            return
        if request.method == "ACK":
            pending = self._awaiting_ack.get(self._ack_key(request, request.to.tag or ""))
            if pending is not None:
                pending.ack_for_2xx()
            self.tu.ack_received(request, source)
            return
        transaction = ServerTransaction(self, request, source, key)
        self._server[key] = transaction
        if transaction.is_invite:
            transaction.reply(100, "Trying")
        self.tu.request_received(request, transaction)

    def find_invite(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 §9.2)."""
        key = server_key(cancel)
        return self._server.get(key[:-1] + ("INVITE",))

    @staticmethod
    def _ack_key(request: Request, to_tag: str) -> tuple[str, int, str]:
        return (request.call_id, request.cseq.number, to_tag)

    def expect_ack(self, transaction: ServerTransaction) -> None:
        response = transaction.last_response
        assert response is not None
        to_tag = response.to.tag or ""
        self._awaiting_ack[self._ack_key(transaction.request, to_tag)] = transaction

    def forget(self, transaction: ServerTransaction) -> None:
        if self._server.get(transaction.key) is transaction:
            del self._server[transaction.key]
        for key, pending in list(self._awaiting_ack.items()):
            if pending is transaction:
                del self._awaiting_ack[key]

    # --- client side

    def send_request(self, request: Request, target: Source) -> Deferred[Response]:
        transaction = ClientTransaction(self, request, target)
        branch = request.top_via.branch or ""
        self._client[(branch, request.cseq.method)] = transaction
        transaction.start()
        return transaction.result

    def response_received(self, response: Response, source: Source) -> None:
        key = (response.top_via.branch or "", response.cseq.method)
        transaction = self._client.get(key)
        if transaction is None:
            log.debug(
                "stray {status} response for {method} from {source}",
                status=response.status,
                method=response.cseq.method,
                source=source,
            )
            return
        transaction.response_received(response)

    def forget_client(self, transaction: ClientTransaction) -> None:
        key = (transaction.request.top_via.branch or "", transaction.request.cseq.method)
        if self._client.get(key) is transaction:
            del self._client[key]

    def stop(self) -> None:
        """Drop every transaction and its timers (service shutdown)."""
        for transaction in list(self._server.values()):
            transaction.terminate()
        for client in list(self._client.values()):
            client._fail(503, "shutting down")
