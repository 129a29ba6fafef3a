"""The service tree: children started in order, stopped in reverse (twistd drives it)."""

from __future__ import annotations

import os
from typing import Any

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
from siprecd.sip.message import Limits
from siprecd.sip.ratelimit import RateLimiter
from siprecd.sip.stack import SIPStack
from siprecd.sip.tls import server_options
from siprecd.sip.transaction import TimerSettings
from siprecd.sip.transport import StreamFactory, UDPTransport, stream_connector
from siprecd.sip.uas import Application, CoreSettings
from siprecd.web.health import root

log = Logger()


class SIPListeners(Service):
    """Binds UDP, TCP and TLS in privilegedStartService so ports below 1024 work under twistd."""

    def __init__(self, reactor: Any, stack: SIPStack, config: Config) -> None:
        self.reactor = reactor
        self.stack = stack
        self.config = config
        self.ports: dict[str, IListeningPort] = {}

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
            factory = StreamFactory("TCP", stack, limits, sip.max_connections)
            stack.transports.streams["TCP"] = factory
            self.ports["TCP"] = self.reactor.listenTCP(
                sip.tcp_port, factory, interface=sip.bind_address
            )
        if sip.tls_port:
            assert sip.tls_certificate and sip.tls_private_key
            options = server_options(sip.tls_certificate, sip.tls_private_key, sip.tls_ca_certificates)
            factory = StreamFactory("TLS", stack, limits, sip.max_connections)
            stack.transports.streams["TLS"] = factory
            self.ports["TLS"] = self.reactor.listenSSL(
                sip.tls_port, factory, options, interface=sip.bind_address
            )
        for transport, port in self.ports.items():
            address = port.getHost()
            stack.core.local_addresses[transport] = (address.host, address.port)
            log.info("SIP over {transport} listening on {host}:{port}", transport=transport, host=address.host, port=address.port)

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        super().stopService()
        self.stack.layer.stop()
        for factory in self.stack.transports.streams.values():
            factory.close_all()
        stopping = [defer.maybeDeferred(port.stopListening) for port in self.ports.values()]
        self.ports = {}
        return defer.gatherResults(stopping).addCallback(lambda _: None)


def build_stack(reactor: Any, config: Config, app: Application) -> SIPStack:
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
        rate_limiter=RateLimiter(reactor, sip.rate_limit, sip.rate_burst),
        connect=stream_connector(reactor, tls),
    )


def make_service(reactor: Any, config: Config) -> MultiService:
    from siprecd.siprec.controller import build_controller

    top = MultiService()
    at_rest = AtRest(None)
    if config.encryption.enabled:
        # Checked in preflight already; opened again here so the server owns its store.
        store = key_store_from_config(config.encryption, os.environ)
        at_rest = AtRest(
            store,
            config.encryption.algorithm,
            encrypt_metadata=config.encryption.encrypt_metadata,
            chunk_size=config.recording.chunk_size,
        )
        if config.encryption.rotation_interval:
            KeyRotation(store, reactor, config.encryption.rotation_interval).setServiceParent(top)
    controller, controller_service = build_controller(reactor, config, at_rest)
    stack = build_stack(reactor, config, controller)
    controller.attach(stack)
    # Stopped in reverse: the controller ends its sessions (BYE, files finalized) while the SIP
    # transports are still up, then the listeners close.
    SIPListeners(reactor, stack, config).setServiceParent(top)
    controller_service.setServiceParent(top)
    if config.web.port:
        endpoint = TCP4ServerEndpoint(reactor, config.web.port, interface=config.web.bind_address)
        StreamServerEndpointService(endpoint, Site(root(reactor))).setServiceParent(top)
    return top
