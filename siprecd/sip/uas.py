"""The UAS core (RFC 3261 §8.2, §12-15): request checks, dialogs, OPTIONS, CANCEL, BYE.

This is the one place where typed :class:`~siprecd.errors.SIPError`\\ s become responses.  The
application (the SIPREC controller) only sees requests that passed every generic check and
returns a :class:`ResponseSpec` (or a Deferred of one), or raises a ``SIPError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from siprecd.errors import BadRequest, SIPError
from siprecd.sip.dialog import Dialog, DialogState, DialogTable
from siprecd.sip.headers import parse_name_addr
from siprecd.sip.message import REASONS, Request, Response, ResponseSpec, make_response
from siprecd.sip.ratelimit import RateLimiter
from siprecd.sip.source import Source
from siprecd.sip.transport import is_ip_literal
from siprecd.sip.transaction import ServerTransaction, TransactionLayer, new_branch
from siprecd.sip.uri import AbsoluteURI, SipURI

log = Logger()

ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO")
# Methods this server knows but does not serve: 405 with Allow (RFC 3261 §8.2.1), not 501.
KNOWN_METHODS = ("REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH", "PRACK")
ACCEPTED_TYPES = (
    "application/sdp",
    "application/rs-metadata+xml",
    "application/rs-metadata",
    "multipart/mixed",
)


class Application(Protocol):
    """What the UAS core calls for requests that passed every generic check."""

    def invite(self, request: Request, dialog: Dialog) -> ResponseSpec | Deferred[ResponseSpec]: ...

    def reinvite(self, request: Request, dialog: Dialog) -> ResponseSpec | Deferred[ResponseSpec]: ...

    def update(self, request: Request, dialog: Dialog) -> ResponseSpec | Deferred[ResponseSpec]: ...

    def info(self, request: Request, dialog: Dialog) -> ResponseSpec | Deferred[ResponseSpec]: ...

    def bye(self, request: Request, dialog: Dialog) -> None | Deferred[None]: ...

    def acked(self, dialog: Dialog) -> None: ...

    def dialog_ended(self, dialog: Dialog, reason: str) -> None: ...


@dataclass(frozen=True)
class CoreSettings:
    user_agent: str = "siprecd"
    supported: tuple[str, ...] = ("siprec", "replaces")
    contact_user: str = "srs"
    contact_params: str = ";+sip.srs"
    advertised_address: str | None = None
    max_forwards_required: bool = False


class UASCore:
    def __init__(
        self,
        clock: IReactorTime,
        app: Application,
        settings: CoreSettings,
        rate_limiter: RateLimiter,
    ) -> None:
        self.clock = clock
        self.app = app
        self.settings = settings
        self.rate_limiter = rate_limiter
        self.dialogs = DialogTable()
        self.layer: TransactionLayer | None = None
        self.draining = False
        self.counters: dict[str, int] = {}
        self.local_addresses: dict[str, tuple[str, int]] = {}
        self._early: dict[tuple[str, ...], Dialog] = {}

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # --- TransactionUser --------------------------------------------------------------------

    def request_received(self, request: Request, transaction: ServerTransaction) -> None:
        try:
            self._dispatch(request, transaction)
        except SIPError as error:
            self._respond_error(transaction, error)
        except Exception:
            self._count("internal_errors")
            log.failure("handling {method} {call_id}", method=request.method, call_id=request.call_id)
            self._respond_error(transaction, SIPError("Server Internal Error", code=500))

    def ack_received(self, request: Request, source: Source) -> None:
        try:
            dialog = self.dialogs.find(request)
        except BadRequest:
            return
        if dialog is not None and dialog.state == DialogState.CONFIRMED:
            self._call_app(self.app.acked, dialog)

    def ack_timed_out(self, transaction: ServerTransaction) -> None:
        dialog = self._dialog_of(transaction)
        if dialog is not None:
            log.warn("no ACK for 2xx of {call_id}: ending the dialog with BYE", call_id=dialog.call_id)
            self.hang_up(dialog, "no ACK for 2xx")

    # --- dispatch ---------------------------------------------------------------------------

    def _dispatch(self, request: Request, transaction: ServerTransaction) -> None:
        method = request.method
        if request.version != "SIP/2.0":
            raise SIPError(f"SIP version {request.version} is not supported", code=505)
        if method not in ALLOWED_METHODS:
            if method in KNOWN_METHODS:
                raise SIPError(
                    f"{method} is not allowed here",
                    code=405,
                    headers=[("Allow", ", ".join(ALLOWED_METHODS))],
                )
            raise SIPError(f"method {method} is not implemented", code=501)
        if isinstance(request.uri, AbsoluteURI):
            raise SIPError(f"URI scheme {request.uri.scheme!r} is not supported", code=416)
        if method != "CANCEL":
            required = [tag for tag in request.headers.tokens("Require") if tag not in self.settings.supported]
            if required:
                raise SIPError(
                    "Bad Extension",
                    code=420,
                    headers=[("Unsupported", ", ".join(required))],
                )
        self._check_content(request)
        if method == "CANCEL":
            self._cancel(request, transaction)
            return
        if request.to.tag is not None:
            self._in_dialog(request, transaction)
            return
        if method != "OPTIONS" and not self.rate_limiter.allow(transaction.source.host):
            self._count("rate_limited")
            raise SIPError(
                "Rate limit exceeded",
                code=503,
                headers=[("Retry-After", str(self.rate_limiter.retry_after()))],
            )
        if method == "OPTIONS":
            transaction.reply(200, "OK", headers=self._capabilities())
            return
        if method == "INVITE":
            self._initial_invite(request, transaction)
            return
        # BYE, UPDATE, INFO outside a dialog.
        raise SIPError(f"{method} outside of a dialog", code=481)

    def _check_content(self, request: Request) -> None:
        if request.method == "INVITE" and "Accept" in request.headers:
            accepted = request.headers.tokens("Accept")
            if not any(a.split(";")[0].strip() in ("application/sdp", "application/*", "*/*") for a in accepted):
                # The answer would be SDP, which the offerer says it cannot take (RFC 3261 §21.4.7).
                raise SIPError(
                    "Not Acceptable: the answer is application/sdp, not in the request's Accept",
                    code=406,
                )
        if not request.body:
            return
        content_type = request.content_type
        if content_type is None and request.method in ("INVITE", "UPDATE"):
            # RFC 3261 §20.15: a body needs a type; guessing would misread an offer.
            raise BadRequest(f"{request.method} has a {len(request.body)}-byte body but no Content-Type")
        if content_type is not None and content_type not in ACCEPTED_TYPES and request.method in (
            "INVITE",
            "UPDATE",
        ):
            raise SIPError(
                f"Content-Type {content_type} is not accepted",
                code=415,
                headers=[("Accept", ", ".join(ACCEPTED_TYPES))],
            )
        encoding = request.headers.get("Content-Encoding")
        if encoding and encoding.strip().lower() != "identity":
            raise SIPError(
                f"Content-Encoding {encoding} is not supported",
                code=415,
                headers=[("Accept-Encoding", "identity")],
            )

    def _capabilities(self) -> list[tuple[str, str]]:
        return [
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Accept", ", ".join(ACCEPTED_TYPES)),
            ("Accept-Encoding", "identity"),
            ("Supported", ", ".join(self.settings.supported)),
            ("Server", self.settings.user_agent),
        ]

    def _initial_invite(self, request: Request, transaction: ServerTransaction) -> None:
        if self.draining:
            raise SIPError("Draining", code=503, headers=[("Retry-After", "30")])
        dialog = Dialog.from_invite(request, transaction.source)
        transaction.to_tag = dialog.local_tag
        # Until its 2xx the dialog is early and reachable only through its transaction (CANCEL).
        self._early[transaction.key] = dialog
        self._answer(transaction, dialog, self.app.invite, initial=True)

    def _in_dialog(self, request: Request, transaction: ServerTransaction) -> None:
        dialog = self.dialogs.find(request)
        if dialog is None or dialog.state == DialogState.TERMINATED:
            raise SIPError("Call/Transaction Does Not Exist", code=481)
        transaction.to_tag = dialog.local_tag
        dialog.check_in_dialog(request)
        method = request.method
        if method == "INVITE":
            if dialog.invite_pending:
                raise SIPError(
                    "a previous INVITE is still pending", code=500, headers=[("Retry-After", "1")]
                )
            dialog.invite_pending = True
            self._answer(transaction, dialog, self.app.reinvite, initial=False)
        elif method == "UPDATE":
            self._answer(transaction, dialog, self.app.update, initial=False)
        elif method == "INFO":
            self._answer(transaction, dialog, self.app.info, initial=False)
        elif method == "BYE":
            self._bye(request, transaction, dialog)
        elif method == "OPTIONS":
            transaction.reply(200, "OK", headers=self._capabilities())
        else:
            raise SIPError(f"{method} is not allowed in a dialog", code=405, headers=[("Allow", ", ".join(ALLOWED_METHODS))])

    def _answer(self, transaction: ServerTransaction, dialog: Dialog, handler, initial: bool) -> None:  # type: ignore[no-untyped-def]
        request = transaction.request
        result = maybeDeferred(handler, request, dialog)

        def done(spec: ResponseSpec) -> None:
            if request.method == "INVITE":
                dialog.invite_pending = False
            if initial:
                self._early.pop(transaction.key, None)
            if transaction.final_sent or dialog.ended_reason is not None:
                return  # CANCELled meanwhile; the application was told
            transaction.respond(self._build(transaction, spec, dialog))
            if initial and 200 <= spec.status < 300:
                dialog.state = DialogState.CONFIRMED
                self.dialogs.add(dialog)
            elif initial and spec.status >= 300:
                self._end(dialog, f"rejected with {spec.status}")

        def failed(failure: Failure) -> None:
            if request.method == "INVITE":
                dialog.invite_pending = False
            if initial:
                self._early.pop(transaction.key, None)
            if failure.check(SIPError):
                error = failure.value
            else:
                self._count("internal_errors")
                log.failure("{method} {call_id} failed", failure, method=request.method, call_id=dialog.call_id)
                error = SIPError("Server Internal Error", code=500)
            if not transaction.final_sent:
                self._respond_error(transaction, error)
            if initial:
                self._end(dialog, f"rejected with {error.code}")

        result.addCallbacks(done, failed)
        result.addErrback(lambda f: log.failure("responding to {method}", f, method=request.method))

    def _build(self, transaction: ServerTransaction, spec: ResponseSpec, dialog: Dialog) -> Response:
        request = transaction.request
        headers = list(spec.headers)
        names = {name.lower() for name, _ in headers}
        if request.method == "INVITE" and 200 <= spec.status < 300 or request.method == "UPDATE":
            if "contact" not in names:
                headers.append(("Contact", self.contact(request, transaction.source)))
        if request.method == "INVITE" and spec.status < 300:
            # Record-Route is copied into dialog-establishing responses (RFC 3261 §12.1.1).
            for value in request.headers.get_raw("Record-Route"):
                headers.append(("Record-Route", value))
            if "allow" not in names:
                headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
            if "supported" not in names:
                headers.append(("Supported", ", ".join(self.settings.supported)))
        headers.append(("Server", self.settings.user_agent))
        return make_response(
            request,
            spec.status,
            spec.reason,
            to_tag=dialog.local_tag,
            headers=headers,
            body=spec.body,
            content_type=spec.content_type,
        )

    def _cancel(self, request: Request, transaction: ServerTransaction) -> None:
        assert self.layer is not None
        invite = self.layer.find_invite(request)
        if invite is None:
            raise SIPError("Call/Transaction Does Not Exist", code=481)
        transaction.to_tag = invite.to_tag
        transaction.reply(200, "OK")
        if invite.final_sent:
            return
        invite.reply(487, "Request Terminated")
        dialog = self._early.pop(invite.key, None)
        if dialog is not None:
            self._end(dialog, "cancelled")

    def _bye(self, request: Request, transaction: ServerTransaction, dialog: Dialog) -> None:
        result = maybeDeferred(self.app.bye, request, dialog)

        def done(_: object) -> None:
            transaction.reply(200, "OK")
            self._end(dialog, "BYE from the SRC")

        def failed(failure: Failure) -> None:
            self._count("internal_errors")
            log.failure("BYE handling for {call_id} failed", failure, call_id=dialog.call_id)
            transaction.reply(200, "OK")
            self._end(dialog, "BYE from the SRC")

        result.addCallbacks(done, failed)

    def _end(self, dialog: Dialog, reason: str) -> None:
        """Terminate a dialog once; the application hears of it exactly once."""
        if dialog.ended_reason is not None:
            return
        dialog.ended_reason = reason
        dialog.state = DialogState.TERMINATED
        self.dialogs.remove(dialog)
        self._call_app(self.app.dialog_ended, dialog, reason)

    def _dialog_of(self, transaction: ServerTransaction) -> Dialog | None:
        request = transaction.request
        return self.dialogs.get((request.call_id, transaction.to_tag or "", request.from_.tag or ""))

    def _respond_error(self, transaction: ServerTransaction, error: SIPError) -> None:
        self._count(f"response_{error.code}")
        reason = error.reason or REASONS.get(error.code, "Error")
        transaction.reply(error.code, _phrase(reason), headers=error.headers + [("Server", self.settings.user_agent)])

    def _call_app(self, method, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            result = method(*args)
        except Exception:
            self._count("internal_errors")
            log.failure("application callback {name} failed", name=getattr(method, "__name__", method))
            return
        if isinstance(result, Deferred):

            def failed(failure: Failure) -> None:
                self._count("internal_errors")
                log.failure("application callback failed", failure)

            result.addErrback(failed)

    # --- requests the SRS sends -------------------------------------------------------------

    def contact(self, request: Request | None, source: Source) -> str:
        host, port = self.local_address(source, request)
        transport = "" if source.transport == "UDP" else f";transport={source.transport.lower()}"
        scheme = "sips" if source.transport == "TLS" else "sip"
        return f"<{scheme}:{self.settings.contact_user}@{host}:{port}{transport}>{self.settings.contact_params}"

    def local_address(self, source: Source, request: Request | None = None) -> tuple[str, int]:
        host, port = self.local_addresses.get(source.transport, ("127.0.0.1", 5060))
        if self.settings.advertised_address:
            host = self.settings.advertised_address
        elif host in ("0.0.0.0", "::", ""):
            # A wildcard bind has no address to advertise: the SRC reached us at the
            # Request-URI's host, so that is where it can reach us again.
            uri = request.uri if request is not None else None
            host = uri.host if isinstance(uri, SipURI) else "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return host, port

    def forget(self, dialog: Dialog, reason: str) -> None:
        """End a dialog that is not ours to end with a BYE (another node took it over)."""
        self._end(dialog, reason)

    def hang_up(self, dialog: Dialog, reason: str) -> Deferred[Response]:
        """End a dialog from the SRS side: BYE to the SRC, then the application finalizes."""
        sent = self.send_bye(dialog)
        self._end(dialog, reason)
        return sent

    def send_bye(self, dialog: Dialog) -> Deferred[Response]:
        """End a dialog from the SRS side (drain, orphan, missing ACK)."""
        assert self.layer is not None
        target = self._target(dialog)
        host, port = self.local_address(target)
        via = f"SIP/2.0/{target.transport} {host}:{port};branch={new_branch()};rport"
        headers = dialog.request_headers("BYE", via)
        headers.add("User-Agent", self.settings.user_agent)
        request = Request(headers=headers, body=b"", method="BYE", uri=dialog.remote_target, raw_uri=str(dialog.remote_target))
        return self.layer.send_request(request, target)

    def _target(self, dialog: Dialog) -> Source:
        source = dialog.source
        if source.connection is not None and source.connection.open:
            return source
        uri = dialog.remote_target
        if dialog.route_set:
            # RFC 3261 §12.2.1.1 and §8.1.2: with a route set the request goes to the first
            # route (a loose router, typically the proxy the INVITE came through), not straight
            # to the remote target, which may not be reachable from here.
            try:
                uri = parse_name_addr(dialog.route_set[0], "Route").uri
            except BadRequest:
                return Source(source.transport, source.host, source.port)
        if isinstance(uri, SipURI) and is_ip_literal(uri.host):
            transport = uri.transport or source.transport
            default = 5061 if transport == "TLS" else 5060
            return Source(transport, uri.host.strip("[]"), uri.port or default)
        return Source(source.transport, source.host, source.port)


def _phrase(reason: str) -> str:
    """A reason phrase is one line of text: strip anything that would break the status line."""
    text = " ".join(reason.replace("\r", " ").replace("\n", " ").split())
    return text[:200] or "Error"


