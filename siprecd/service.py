"""The service tree: children started in order, stopped in reverse (twistd drives it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.server import Site

from siprecd.config import Config
from siprecd.crypto.at_rest import AtRest
from siprecd.crypto.rotation import KeyRotation
from siprecd.crypto.stores import key_store_from_config
from siprecd.durable import DurableWriterService
from siprecd.heap import HeapTrim
from siprecd.metrics import Metrics
from siprecd.preflight import directory_problem
from siprecd.recording.files import disk_free
from siprecd.reload import ReloadService, SwappableTLS
from siprecd.sip.message import Limits
from siprecd.sip.ratelimit import RateLimiter
from siprecd.sip.stack import SIPStack
from siprecd.sip.tls import server_options
from siprecd.sip.transaction import TimerSettings
from siprecd.sip.transport import StreamFactory, Transports, UDPTransport, stream_connector
from siprecd.sip.uas import Application, CoreSettings
from siprecd.state.factory import state_store_from_config
from siprecd.systemd import Notifier, NotifyService
from siprecd.web.health import Check
from siprecd.web.api import ApiResource
from siprecd.web.auth import protect
from siprecd.web.catalog import RecordingCatalog
from siprecd.web.dashboard import dashboard_resource
from siprecd.web.metrics import MetricsResource
from siprecd.web.root import access_log_formatter, build_root

if TYPE_CHECKING:
    from siprecd.workers.child import WorkerSide

log = Logger()


class SIPListeners(Service):
    """Binds UDP, TCP and TLS in privilegedStartService so ports below 1024 work under twistd."""

    def __init__(
        self, reactor: Any, stack: SIPStack, config: Config, stream_factory: type[StreamFactory] = StreamFactory
    ) -> None:
        self.reactor = reactor
        self.stack = stack
        # The workers' parent counts its connections (ids the workers name them by).
        self.stream_factory = stream_factory
        self.config = config
        self.ports: dict[str, IListeningPort] = {}
        self.tls: SwappableTLS | None = None

    def privilegedStartService(self) -> None:  # noqa: N802
        super().privilegedStartService()
        sip = self.config.sip
        stack = self.stack
        limits = stack.limits
        if sip.udp_port:
            stack.transports.udp = UDPTransport(stack)
            self.ports["UDP"] = self.reactor.listenUDP(
                sip.udp_port, stack.transports.udp, interface=sip.bind_address, maxPacketSize=65535
            )
        if sip.tcp_port:
            factory = self.stream_factory("TCP", stack, limits, sip.max_connections)
            stack.transports.streams["TCP"] = factory
            self.ports["TCP"] = self.reactor.listenTCP(
                sip.tcp_port, factory, interface=sip.bind_address
            )
        if sip.tls_port:
            assert sip.tls_certificate and sip.tls_private_key
            options = server_options(sip.tls_certificate, sip.tls_private_key, sip.tls_ca_certificates)
            factory = self.stream_factory("TLS", stack, limits, sip.max_connections)
            stack.transports.streams["TLS"] = factory
            self.tls = SwappableTLS(options)
            self.ports["TLS"] = self.reactor.listenSSL(
                sip.tls_port, factory, self.tls, interface=sip.bind_address
            )
        for transport, port in self.ports.items():
            address = port.getHost()
            stack.core.local_addresses[transport] = (address.host, address.port)
            log.info("SIP over {transport} listening on {host}:{port}", transport=transport, host=address.host, port=address.port)

    def unbound(self) -> str | None:
        """Readiness: every configured transport is listening."""
        sip = self.config.sip
        wanted = [t for t, port in (("UDP", sip.udp_port), ("TCP", sip.tcp_port), ("TLS", sip.tls_port)) if port]
        missing = [t for t in wanted if t not in self.ports]
        return f"not listening on {', '.join(missing)}" if missing else None

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        super().stopService()
        self.stack.layer.stop()
        for factory in self.stack.transports.streams.values():
            factory.close_all()
        stopping = [defer.maybeDeferred(port.stopListening) for port in self.ports.values()]
        self.ports = {}
        return defer.gatherResults(stopping).addCallback(lambda _: None)


class SequentialService(MultiService):
    """Stops its children one after the other, in reverse order, each waiting for the last.

    (MultiService stops them all at once: the SIP listeners would close while the controller is
    still draining its calls.)
    """

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        Service.stopService(self)
        chain: defer.Deferred[None] = defer.succeed(None)
        for child in reversed(list(self)):
            chain.addCallback(lambda _, child=child: defer.maybeDeferred(child.stopService))
            chain.addErrback(lambda failure: log.failure("stopping a service", failure))
        return chain


def build_stack(
    reactor: Any,
    config: Config,
    app: Application,
    metrics: Metrics | None = None,
    transports: Transports | None = None,
    rate_limiter: RateLimiter | None = None,
) -> SIPStack:
    sip = config.sip
    tls = None
    if sip.tls_port and sip.tls_certificate and sip.tls_private_key:
        tls = server_options(sip.tls_certificate, sip.tls_private_key, sip.tls_ca_certificates)
    return SIPStack(
        reactor,
        app,
        limits=Limits(max_message_size=sip.max_message_size, max_headers=sip.max_headers),
        timers=TimerSettings(t1=sip.t1, t2=sip.t2, t4=sip.t4),
        settings=CoreSettings(user_agent=sip.user_agent, advertised_address=sip.advertised_address),
        rate_limiter=rate_limiter or RateLimiter(reactor, sip.rate_limit, sip.rate_burst),
        connect=stream_connector(reactor, tls),
        metrics=metrics,
        transports=transports,
    )


def recording_space_problem(config: Config) -> str | None:
    directory = config.recording.directory
    problem = directory_problem(directory)
    if problem:
        return problem
    free = disk_free(directory)
    if free is not None and free < config.recording.min_free_space:
        return f"{free} bytes free, below [recording] min_free_space = {config.recording.min_free_space}"
    return None


def make_service(
    reactor: Any, config: Config, environ: Mapping[str, str] | None = None, worker: WorkerSide | None = None
) -> MultiService:
    """The whole server.  Start order: key rotation, SIP listeners, web, controller, systemd
    notification (READY=1 once all is bound); stop order is the reverse, one after the other:
    STOPPING=1, drain the calls, stop the web, close the listeners.

    ``worker``: one of [service] workers processes (see :mod:`siprecd.workers.child`): SIP over
    the relay to the parent instead of listeners, the web on an ephemeral loopback port, no
    SIGHUP reload or systemd notification (the parent's), key rotation only in worker 0."""
    from siprecd.siprec.controller import build_controller

    environ = dict(os.environ) if environ is None else dict(environ)
    top = SequentialService()
    metrics = Metrics()
    # session.json, metadata, SDP files and the active index, off the reactor thread.
    durable = DurableWriterService(reactor)
    durable.setServiceParent(top)
    at_rest = AtRest(None, durable=durable.writer)
    store = None
    if config.encryption.enabled:
        # Checked in preflight already; opened again here so the server owns its store.
        store = key_store_from_config(config.encryption, environ)
        at_rest = AtRest(
            store,
            config.encryption.algorithm,
            encrypt_metadata=config.encryption.encrypt_metadata,
            chunk_size=config.recording.chunk_size,
            durable=durable.writer,
        )
        # One rotation for the whole machine: the file key store is shared by the workers.
        rotates = worker is None or worker.role.index == 0
        if config.encryption.rotation_interval and rotates:
            KeyRotation(store, reactor, config.encryption.rotation_interval, metrics=metrics).setServiceParent(top)
    HeapTrim(reactor, config.service.heap_trim_interval).setServiceParent(top)
    state = state_store_from_config(reactor, config, metrics)
    if hasattr(state, "setServiceParent"):
        state.setServiceParent(top)  # the Redis connection and the ownership heartbeat
    controller, controller_service = build_controller(reactor, config, at_rest, metrics, state)
    listeners: SIPListeners | None = None
    if worker is None:
        stack = build_stack(reactor, config, controller, metrics)
        listeners = SIPListeners(reactor, stack, config)
        listeners.setServiceParent(top)
        sip_problem = listeners.unbound
    else:
        verdict = worker.verdict(config)
        stack = build_stack(reactor, config, controller, metrics, transports=worker.transports, rate_limiter=verdict)
        stack.core.local_addresses.update(worker.role.addresses)
        worker.relay.attach(stack, verdict)
        worker.service.setServiceParent(top)
        sip_problem = worker.service.unbound
    controller.attach(stack)
    if config.web.port:
        checks = [
            Check("sip_listeners", sip_problem),
            Check("recording_directory", lambda: recording_space_problem(config)),
            Check("key_store", lambda: key_store_problem(store) if config.encryption.enabled else None),
            Check("state_store", state.problem),
        ]
        if config.state.backend == "redis":
            checks.append(Check("state_store_redis", state.shared_problem, critical=False))
        web = config.web
        tokens = [web.api_token] if web.api_token else []
        catalog = RecordingCatalog(config.recording.directory, store)
        site = Site(
            build_root(
                reactor,
                checks,
                metrics=MetricsResource(metrics),
                api=ApiResource(controller, catalog, at_rest, reactor),
                dashboard=dashboard_resource(),
                protect=lambda resource: protect(resource, tokens, web.users),
                protect_health=web.protect_health,
                protect_metrics=web.protect_metrics,
            ),
            logFormatter=access_log_formatter,
        )
        if worker is None:
            endpoint = TCP4ServerEndpoint(reactor, config.web.port, interface=config.web.bind_address)
            StreamServerEndpointService(endpoint, site).setServiceParent(top)
        else:
            worker.web_service(site).setServiceParent(top)
    controller_service.setServiceParent(top)
    if listeners is not None:
        tls_of = listeners
        ReloadService(reactor, config, lambda: tls_of.tls, stack.core.rate_limiter).setServiceParent(top)
        NotifyService(Notifier(environ), reactor).setServiceParent(top)
    else:
        assert worker is not None
        worker.hello().setServiceParent(top)
    return top


def key_store_problem(store: Any) -> str | None:
    try:
        store.current()
    except Exception as error:
        return f"key store not usable: {error}"
    return None
