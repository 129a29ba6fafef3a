"""HTTP requests from the parent of ``[service] workers = N`` to its workers' own web servers.

Every request has a deadline (the injected reactor's clock): a worker that is dead, refuses the
connection or does not answer in time becomes a one-line problem that names it, never a hang.
Connections are not kept alive: the workers are on loopback (a connection costs little) and a
restarted worker would otherwise leave dead connections in a pool.

:func:`relay` streams a worker's response body to the parent's client as it arrives, with flow
control both ways (a slow client pauses the worker's connection; a client that leaves closes it),
so a recording is never held whole in the parent's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred, TimeoutError as DeferredTimeout, gatherResults
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed, _HTTP11ClientFactory, readBody
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from siprecd.workers.directory import WorkerDirectory, WorkerInfo

log = Logger()

DEFAULT_TIMEOUT = 5.0  # seconds for a worker to answer (headers and, for JSON, the whole body)

# What a client's request may carry on to a worker: credentials, content negotiation, ranges.
FORWARDED_REQUEST_HEADERS = (b"authorization", b"accept", b"range", b"if-range", b"if-none-match", b"if-modified-since")
# What a worker's response carries back (hop-by-hop headers and Date/Server stay the parent's).
RELAYED_RESPONSE_HEADERS = (
    b"content-type", b"content-length", b"content-range", b"accept-ranges", b"content-disposition",
    b"cache-control", b"etag", b"last-modified", b"allow", b"www-authenticate", b"x-content-type-options",
)
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"  # already-escaped request paths pass unchanged; anything else is escaped


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False  # else every request to a worker logs "Starting factory" and "Stopping factory"


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietFactory


class Unavailable(Exception):
    """A worker that could not be asked; ``str()`` names it and says why."""


@dataclass(frozen=True)
class Answer:
    worker: WorkerInfo
    status: int
    headers: Headers
    body: bytes


class Upstream:
    def __init__(self, reactor: Any, timeout: float = DEFAULT_TIMEOUT, credentials: bytes | None = None) -> None:
        """``credentials``: an ``Authorization`` value used when the client's request has none
        (the parent's own ``api_token``), so that protected workers still answer."""
        self._reactor = reactor
        self.timeout = timeout
        self._credentials = credentials
        self._agent = Agent(reactor, connectTimeout=timeout, pool=_QuietPool(reactor, persistent=False))

    def headers_for(self, request: Request | None, names: Iterable[bytes] = (b"authorization",)) -> Headers:
        headers = Headers()
        if request is not None:
            for name in names:
                value = request.getHeader(name)
                if value is not None:
                    headers.setRawHeaders(name, [value])
        if not headers.hasHeader(b"authorization") and self._credentials:
            headers.setRawHeaders(b"authorization", [self._credentials])
        return headers

    def open(self, worker: WorkerInfo, path: bytes, headers: Headers, method: bytes = b"GET") -> Deferred[IResponse]:
        """The worker's response once its headers are in (the body is still to be read)."""
        problem = worker.problem()
        if problem is not None:
            return _failed(Unavailable(problem))
        route, mark, query = path.partition(b"?")
        escaped = quote(route, safe=_PATH_SAFE) + mark.decode() + quote(query, safe=_PATH_SAFE + "?")
        url = worker.web_url.rstrip("/").encode("ascii") + escaped.encode("ascii")  # type: ignore[union-attr]
        d = self._agent.request(method, url, headers)
        d.addTimeout(self.timeout, self._reactor)
        return d.addErrback(self._unavailable, worker)

    def ask(self, worker: WorkerInfo, path: bytes, headers: Headers) -> Deferred[Answer]:
        """The worker's whole response, headers and body, within the timeout."""

        async def whole() -> Answer:
            response = await self._agent.request(b"GET", url, headers)
            body = await readBody(response)
            return Answer(worker, response.code, response.headers, body)

        problem = worker.problem()
        if problem is not None:
            return _failed(Unavailable(problem))
        url = worker.web_url.rstrip("/").encode("ascii") + path  # type: ignore[union-attr]
        d = Deferred.fromCoroutine(whole())
        d.addTimeout(self.timeout, self._reactor)
        return d.addErrback(self._unavailable, worker)

    def ask_all(
        self, workers: Sequence[WorkerInfo], path: bytes, headers: Headers
    ) -> Deferred[list[Answer | Unavailable]]:
        """Every worker at once; each result is its answer or why it has none, in index order."""

        def settle(result: Answer | Failure) -> Answer | Unavailable:
            if isinstance(result, Failure):
                return result.value if isinstance(result.value, Unavailable) else Unavailable(str(result.value))
            return result

        return gatherResults([self.ask(w, path, headers).addBoth(settle) for w in workers])

    async def discard(self, response: IResponse) -> bytes:
        """The body of a response that will not be relayed (read, so the connection is freed),
        or b"" when it does not come within the timeout."""
        d = readBody(response)
        d.addTimeout(self.timeout, self._reactor)
        try:
            return await d
        except Exception:
            return b""

    def _unavailable(self, failure: Failure, worker: WorkerInfo) -> Failure:
        if failure.check(Unavailable):
            return failure
        return Failure(Unavailable(f"worker {worker.index} (pid {worker.pid}): {self._describe(failure)}"))

    def _describe(self, failure: Failure) -> str:
        if failure.check(DeferredTimeout, net_error.TimeoutError):
            return f"no answer within {self.timeout:g} s"
        if failure.check(net_error.ConnectionRefusedError):
            return "refused the connection"
        if failure.check(ResponseFailed):  # ResponseNeverReceived too
            reasons = getattr(failure.value, "reasons", None) or []
            if any(r.check(CancelledError) for r in reasons):
                return f"no answer within {self.timeout:g} s"  # only the timeout cancels
            return "the connection failed: " + "; ".join(str(r.value) for r in reasons)
        if failure.check(net_error.ConnectError):
            return f"cannot connect: {failure.value}"
        log.failure("asking a worker", failure)
        return f"unexpected error: {failure.getErrorMessage()}"


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(error))
    return d


# --- answering the parent's client ------------------------------------------------------------


class _Finished:
    """Whether the client is still there: a response to a client that left is dropped."""

    def __init__(self, request: Request) -> None:
        self.gone = False
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, _: Failure) -> None:
        self.gone = True


def render_later(request: Request, work: Callable[[], Coroutine[Any, Any, bytes | None]]) -> int:
    """Render with ``await work()``: its bytes are the body (None: it answered by itself).

    Whatever goes wrong is logged and answered 500 with the reason in the log, once; a client
    that left in the meantime gets nothing."""
    state = _Finished(request)

    def done(body: bytes | None) -> None:
        if body is not None and not state.gone:
            if not request.responseHeaders.hasHeader(b"content-length"):
                request.setHeader(b"content-length", b"%d" % len(body))  # not chunked: one known body
            request.write(body)
            request.finish()

    def failed(failure: Failure) -> None:
        log.failure("answering {uri} from the workers", failure, uri=request.uri)
        if state.gone or request.startedWriting:
            if not state.gone:
                request.loseConnection()
            return
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"application/json")
        request.write(b'{"error": "internal error; the server log has the details"}')
        request.finish()

    Deferred.fromCoroutine(work()).addCallbacks(done, failed)
    return NOT_DONE_YET


class FanOut(Resource):
    """A resource whose GET is answered by ``await self.answer(request)`` over the workers."""

    isLeaf = True

    def __init__(self, directory: WorkerDirectory, upstream: Upstream) -> None:
        super().__init__()
        self.directory = directory
        self.upstream = upstream

    def render_GET(self, request: Request) -> int:  # noqa: N802
        return render_later(request, lambda: self.answer(request))

    async def answer(self, request: Request) -> bytes | None:
        raise NotImplementedError

    async def ask_workers(self, request: Request, path: bytes) -> list[tuple[WorkerInfo, Answer | Unavailable]]:
        """Every configured worker's answer to ``path`` (or why there is none), in index order,
        with the client's credentials."""
        workers = list(self.directory.workers())
        return list(zip(workers, await self.upstream.ask_all(workers, path, self.upstream.headers_for(request))))


@implementer(IPushProducer)
class _Relay(Protocol):
    """A worker's body, written to the client as it arrives.

    The client's request holds this as its producer: its pause/resume reach the worker's
    connection.  While not paused, a worker silent for ``idle`` seconds is cut off (the client
    sees a short body), so a stuck worker never holds a client forever."""

    def __init__(self, request: Request, reactor: Any, idle: float) -> None:
        self._request = request
        self._reactor = reactor
        self._idle = idle
        self._timer: IDelayedCall | None = None
        self._paused = False
        self.done: Deferred[None] = Deferred()
        self._state = _Finished(request)

    def connectionMade(self) -> None:  # noqa: N802
        self._request.registerProducer(self, True)
        self._arm()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if not self._state.gone:
            self._request.write(data)
        self._arm()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: N802
        self._disarm()
        if not self._state.gone:
            self._request.unregisterProducer()
            if reason.check(ResponseDone, PotentialDataLoss):
                self._request.finish()
            else:
                # Cut short by the worker (or by the idle timer): close without finishing, so
                # the client sees fewer bytes than Content-Length, never a body that looks whole.
                log.warn("relaying {uri}: the worker's body ended early: {why}", uri=self._request.uri,
                         why=reason.getErrorMessage())
                self._request.loseConnection()
        self.done.callback(None)

    # IPushProducer, for the client's request
    def pauseProducing(self) -> None:  # noqa: N802
        self._paused = True
        self._disarm()
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        self._arm()
        self.transport.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802
        self._disarm()
        self.transport.stopProducing()

    def _arm(self) -> None:
        self._disarm()
        if not self._paused:
            self._timer = self._reactor.callLater(self._idle, self._silent)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _silent(self) -> None:
        self._timer = None
        log.warn("relaying {uri}: the worker sent nothing for {idle} s", uri=self._request.uri, idle=self._idle)
        self.transport.stopProducing()


async def relay(request: Request, response: IResponse, reactor: Any, idle: float) -> None:
    """The worker's ``response`` as the answer to ``request``: status, headers, streamed body."""
    request.setResponseCode(response.code)
    for name in RELAYED_RESPONSE_HEADERS:
        values = response.headers.getRawHeaders(name)
        if values:
            request.responseHeaders.setRawHeaders(name, values)
    # Twisted's client keeps a GET's Content-Length apart from the headers (a HEAD's stays in).
    if isinstance(response.length, int) and request.method != b"HEAD":
        request.setHeader(b"content-length", b"%d" % response.length)
    protocol = _Relay(request, reactor, idle)
    response.deliverBody(protocol)
    await protocol.done
