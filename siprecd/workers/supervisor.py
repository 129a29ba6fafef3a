"""The parent of ``[service] workers = N``: owns the public SIP sockets, routes, restarts.

:class:`Router` stands where a single process's SIP stack stands behind the listeners: each
message goes, unparsed, to worker ``crc32(Call-ID) % N`` (:mod:`siprecd.workers.routing`) with
its real source address, transport, connection id and the parent's rate-limit verdict
(:mod:`siprecd.workers.relay`); what a worker sends comes back and leaves from the public socket
or connection.  Enforced here, once for every worker: TLS (handshake, client certificates),
[sip] max_connections and the stream framing limits, the per-source [sip] rate_limit (the
verdict; the worker's SIP core answers the 503), and the 400 to a request without a Call-ID.
Everything else (parsing, Via received/rport, transactions, dialogs, calls) is the worker's.

:class:`Supervisor` spawns the workers with the injected reactor's ``spawnProcess``, restarts
one that dies (back-off doubling from 1 s to 30 s, reset after a minute of running), publishes
them as a :class:`~siprecd.workers.directory.WorkerDirectory`, and on stop sends each worker
SIGTERM and waits until all have drained and exited.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from siprecd.errors import BadRequest
from siprecd.sip.message import Limits, Request
from siprecd.sip.ratelimit import RateLimiter
from siprecd.sip.source import Source
from siprecd.sip.stack import is_keepalive, parse_or_reject, send_rejection
from siprecd.sip.transport import StreamFactory, StreamProtocol, Transports
from siprecd.workers.child import RELAY_FD, One, WorkerRole
from siprecd.workers.directory import WorkerInfo
from siprecd.workers.relay import Closed, Frame, FrameDecoder, Hello, Inbound, Outbound, RelayError, encode
from siprecd.workers.routing import RATE_LIMITED_METHODS, peek, worker_for

log = Logger()

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0  # a worker that ran this long restarts after FIRST_BACKOFF again


class Link:
    """Where the router sends a worker's frames (a running :class:`WorkerProcess`)."""

    def send(self, frame: Frame) -> None: ...


class RoutedStreamFactory(StreamFactory):
    """A TCP/TLS listener whose connections the router numbers (the workers name them so)."""

    receiver: Router

    def connection_made(self, connection: StreamProtocol) -> None:
        super().connection_made(connection)
        self.receiver.connection_opened(connection)

    def connection_lost(self, connection: StreamProtocol) -> None:
        super().connection_lost(connection)
        self.receiver.connection_closed(connection)


class Router:
    """The receiver behind the parent's listeners (what :class:`SIPListeners` binds to)."""

    def __init__(
        self,
        count: int,
        limits: Limits,
        rate_limiter: RateLimiter,
        connect: Callable[..., Any] | None = None,
    ) -> None:
        self.count = count
        self.limits = limits
        self.rate_limiter = rate_limiter
        self.transports = Transports(connect)
        self.links: list[Link | None] = [None] * count
        self.counters: Counter[str] = Counter()
        self.local_addresses: dict[str, tuple[str, int]] = {}
        self._ids: dict[StreamProtocol, int] = {}
        self._connections: dict[int, StreamProtocol] = {}
        self._told: dict[int, set[int]] = {}  # connection id -> workers that have heard of it
        self._next_id = 1

    # SIPListeners reads stack.core.local_addresses and stops stack.layer: the router is both.
    @property
    def core(self) -> Router:
        return self

    @property
    def layer(self) -> Router:
        return self

    def stop(self) -> None:
        """Nothing to stop: transactions live in the workers."""

    # --- connections -----------------------------------------------------------------------------

    def connection_opened(self, connection: StreamProtocol) -> None:
        conn_id = self._next_id
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        self._ids[connection] = conn_id
        self._connections[conn_id] = connection

    def connection_closed(self, connection: StreamProtocol) -> None:
        conn_id = self._ids.pop(connection, None)
        if conn_id is None:
            return
        self._connections.pop(conn_id, None)
        for index in self._told.pop(conn_id, ()):
            link = self.links[index]
            if link is not None:
                link.send(Closed(conn_id))

    # --- inbound ---------------------------------------------------------------------------------

    def receive(self, data: bytes, source: Source) -> None:
        try:
            self._receive(data, source)
        except Exception:
            self.counters["internal_errors"] += 1
            log.failure("unexpected error routing a message from {source}", source=source)

    def _receive(self, data: bytes, source: Source) -> None:
        if is_keepalive(data, source):
            self.counters["keepalives"] += 1
            return
        peeked = peek(data)
        if peeked is not None and peeked.call_id is not None:
            self._route(data, source, peeked.call_id, peeked.needs_token)
            return
        # The rare path: what the quick look could not route gets the stack's full treatment.
        message = parse_or_reject(data, source, self.limits, self.counters, self._reject)
        if message is None:
            return
        needs_token = (
            isinstance(message, Request)
            and message.to.tag is None
            and message.method.encode() in RATE_LIMITED_METHODS
        )
        self._route(data, source, message.call_id.encode("utf-8", "surrogateescape"), needs_token)

    def _route(self, data: bytes, source: Source, call_id: bytes, needs_token: bool) -> None:
        index = worker_for(call_id, self.count)
        link = self.links[index]
        if link is None:
            # Restarting: UDP retransmissions (and the SRC's next try) reach it once it is back.
            self.counters["worker_down_dropped"] += 1
            log.debug("worker {index} is down: dropped a message from {source}", index=index, source=source)
            return
        rate_ok = self.rate_limiter.allow(source.host) if needs_token else True
        if not rate_ok:
            self.counters["rate_limited"] += 1
        conn_id = 0
        if source.connection is not None:
            conn_id = self._ids.get(source.connection, 0)  # type: ignore[call-overload]
            if conn_id:
                self._told.setdefault(conn_id, set()).add(index)
        self.counters["routed"] += 1
        link.send(Inbound(source.transport, source.host, source.port, conn_id, data, rate_ok))

    def _reject(self, data: bytes, source: Source, error: BadRequest) -> None:
        send_rejection(data, source, error, self.transports, self.counters)

    # --- outbound --------------------------------------------------------------------------------

    def send_out(self, frame: Outbound) -> None:
        """What a worker sends: over its connection while open, else to the address."""
        try:
            connection = self._connections.get(frame.conn_id) if frame.conn_id else None
            if connection is not None and connection.open:
                connection.write_message(frame.data)
                return
            self.transports.send_to(frame.data, frame.transport, frame.host, frame.port)
        except Exception:
            self.counters["internal_errors"] += 1
            log.failure("sending a worker's message to {host}:{port}", host=frame.host, port=frame.port)


class RelayEnd(Protocol):
    """The parent's end of a worker's relay socket."""

    def __init__(self, process: WorkerProcess) -> None:
        self.process = process

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.process.relay_data(data)


class WorkerProcess(ProcessProtocol):
    """One running worker: frames over its relay socket, its end."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.decoder = FrameDecoder()
        self.relay = RelayEnd(self)

    def send(self, frame: Frame) -> None:
        if self.relay.transport is not None and self.relay.connected:
            self.relay.transport.write(encode(frame))

    def relay_data(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except RelayError as error:
            log.error("worker {index} relay is corrupt ({error}): killing it", index=self.index, error=error)
            self.kill()
            return
        for frame in frames:
            if isinstance(frame, Outbound):
                self.supervisor.router.send_out(frame)
            elif isinstance(frame, Hello):
                self.supervisor.worker_hello(self.index, frame)
            else:
                log.warn("unexpected frame from worker {index}: {frame!r}", index=self.index, frame=frame)

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except Exception as error:  # already gone (ProcessExitedAlready) or no transport yet
            log.debug("signal {name} to worker {index}: {error}", name=name, index=self.index, error=error)

    def kill(self) -> None:
        self.signal("KILL")

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        if self.relay.transport is not None:
            self.relay.transport.loseConnection()
        self.supervisor.worker_ended(self.index, self, reason)


@dataclass
class WorkerState:
    index: int
    process: WorkerProcess | None = None
    pid: int | None = None
    web_port: int = 0
    alive: bool = False
    restarts: int = 0
    started_at: float = 0.0
    backoff: float = FIRST_BACKOFF
    restart_call: IDelayedCall | None = None

    def info(self) -> WorkerInfo:
        web = f"http://127.0.0.1:{self.web_port}" if self.alive and self.web_port else None
        return WorkerInfo(self.index, self.pid if self.process is not None else None, web, self.alive, self.restarts)


def how_it_ended(status: BaseException) -> str:
    if isinstance(status, ProcessDone):
        return "exited 0"
    signal = getattr(status, "signal", None)
    return f"killed by signal {signal}" if signal else f"exit code {getattr(status, 'exitCode', '?')}"


# (executable, argv, environment) that starts the worker of this role.
Command = Callable[[WorkerRole], tuple[str, list[str], dict[str, str]]]


class Supervisor(Service):
    """Starts, watches and restarts the workers; a :class:`WorkerDirectory` of them."""

    def __init__(self, reactor: Any, router: Router, command: Command, stop_timeout: float) -> None:
        self.reactor = reactor
        self.router = router
        self.command = command
        self.stop_timeout = stop_timeout
        self.states = [WorkerState(i) for i in range(router.count)]
        self.stopping = False
        self._ready: list[defer.Deferred[None]] = []
        self._was_ready = False
        self._stopped: defer.Deferred[None] | None = None
        self._kill_call: IDelayedCall | None = None

    # --- the directory ---------------------------------------------------------------------------

    def workers(self) -> Sequence[WorkerInfo]:
        return [state.info() for state in self.states]

    def when_ready(self) -> defer.Deferred[None]:
        """Fires once every worker has said it is up (the first time: READY=1)."""
        if self._was_ready:
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        self._ready.append(waiting)
        return waiting

    # --- lifecycle -------------------------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        super().startService()
        for state in self.states:
            self._spawn(state)

    def _spawn(self, state: WorkerState) -> None:
        state.restart_call = None
        if self.stopping:
            return
        role = WorkerRole(state.index, self.router.count, dict(self.router.local_addresses))
        executable, args, env = self.command(role)
        process = WorkerProcess(self, state.index)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            ours.setblocking(False)
            self.reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, One(process.relay))
            self.reactor.spawnProcess(
                process, executable, args, env=env,
                childFDs={0: 0, 1: 1, 2: 2, RELAY_FD: theirs.fileno()},
            )
        except Exception:
            log.failure("cannot start worker {index}", index=state.index)
            if process.relay.transport is not None:
                process.relay.transport.loseConnection()
            self._schedule_restart(state)
            return
        finally:
            ours.close()  # adopted as a duplicate
            theirs.close()  # the child has its own
        state.process = process
        state.pid = getattr(process.transport, "pid", None)
        state.alive = False
        state.started_at = self.reactor.seconds()
        self.router.links[state.index] = process
        log.info("worker {index} started (pid {pid})", index=state.index, pid=state.pid)

    def worker_hello(self, index: int, hello: Hello) -> None:
        state = self.states[index]
        state.alive = True
        state.pid = hello.pid
        state.web_port = hello.web_port
        log.info("worker {index} (pid {pid}) is up; web on port {web}", index=index, pid=hello.pid, web=hello.web_port)
        if not self._was_ready and all(s.alive for s in self.states):
            self._was_ready = True
            waiting, self._ready = self._ready, []
            for deferred in waiting:
                deferred.callback(None)

    def worker_ended(self, index: int, process: WorkerProcess, reason: Failure) -> None:
        state = self.states[index]
        if state.process is not process:
            return
        description = how_it_ended(reason.value)
        state.process = None
        state.pid = None
        state.alive = False
        self.router.links[index] = None
        if self.stopping:
            log.info("worker {index} stopped ({how})", index=index, how=description)
            self._check_stopped()
            return
        ran = self.reactor.seconds() - state.started_at
        if ran >= STABLE_AFTER:
            state.backoff = FIRST_BACKOFF
        log.error(
            "worker {index} died ({how}) after {ran:.1f}s: restarting it in {delay:g}s",
            index=index, how=description, ran=ran, delay=state.backoff,
        )
        self._schedule_restart(state)

    def _schedule_restart(self, state: WorkerState) -> None:
        if self.stopping:
            return
        delay = state.backoff
        state.backoff = min(MAX_BACKOFF, state.backoff * 2)

        def restart() -> None:
            state.restarts += 1
            self._spawn(state)

        state.restart_call = self.reactor.callLater(delay, restart)

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        super().stopService()
        self.stopping = True
        for state in self.states:
            if state.restart_call is not None and state.restart_call.active():
                state.restart_call.cancel()
            state.restart_call = None
        self._stopped = defer.Deferred()
        running = [s.process for s in self.states if s.process is not None]
        log.info("stopping {count} worker(s): each drains its calls", count=len(running))
        # The parent's own counts (also siprecd_parent_sip_messages_total in /metrics).
        log.info("SIP through the parent so far: {counters}", counters=dict(sorted(self.router.counters.items())))
        for process in running:
            process.signal("TERM")
        if running:
            self._kill_call = self.reactor.callLater(self.stop_timeout, self._kill_stragglers)
        stopped = self._stopped
        self._check_stopped()
        return stopped

    def _kill_stragglers(self) -> None:
        self._kill_call = None
        for state in self.states:
            if state.process is not None:
                log.error("worker {index} did not stop within {timeout:g}s: killing it", index=state.index, timeout=self.stop_timeout)
                state.process.kill()

    def _check_stopped(self) -> None:
        if self._stopped is None or any(s.process is not None for s in self.states):
            return
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        self._kill_call = None
        stopped, self._stopped = self._stopped, None
        stopped.callback(None)
