"""The service tree of the parent of ``[service] workers = N`` (tap.py builds it).

Start order: SIP listeners (bound in privilegedStartService, as a single process binds them),
the workers, the web over all workers, SIGHUP reload (TLS certificates, rate limits: both are
the parent's), systemd notification.  Stop order is the reverse, one after the other:
STOPPING=1, web, every worker drains and exits, then the listeners close (they carry the
workers' SIP to the end of the drain).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger

from siprecd.config import Config
from siprecd.reload import ReloadService
from siprecd.service import SequentialService, SIPListeners
from siprecd.sip.message import Limits
from siprecd.sip.ratelimit import RateLimiter
from siprecd.sip.tls import server_options
from siprecd.sip.transport import stream_connector
from siprecd.systemd import Notifier, NotifyService
from siprecd.workers.supervisor import Command, RoutedStreamFactory, Router, Supervisor

log = Logger()

# After [service] drain_timeout the workers hang up (BYE, files final): room for that.
STOP_MARGIN = 60.0


class ParentNotify(NotifyService):
    """READY=1 once every worker is up (not when the parent's own services are)."""

    def __init__(self, notifier: Notifier, clock: Any, supervisor: Supervisor) -> None:
        super().__init__(notifier, clock)
        self.supervisor = supervisor

    def startService(self) -> None:  # noqa: N802
        self.running = 1
        ready = self.supervisor.when_ready()

        def up(_: object) -> None:
            if self.running:
                NotifyService.startService(self)

        ready.addCallback(up)
        ready.addErrback(lambda failure: log.failure("waiting for the workers", failure))


def make_parent_service(
    reactor: Any, config: Config, command: Command, environ: Mapping[str, str]
) -> tuple[MultiService, Supervisor]:
    sip = config.sip
    tls = None
    if sip.tls_port and sip.tls_certificate and sip.tls_private_key:
        tls = server_options(sip.tls_certificate, sip.tls_private_key, sip.tls_ca_certificates)
    router = Router(
        config.service.workers,
        Limits(max_message_size=sip.max_message_size, max_headers=sip.max_headers),
        RateLimiter(reactor, sip.rate_limit, sip.rate_burst),
        connect=stream_connector(reactor, tls),
    )
    top = SequentialService()
    listeners = SIPListeners(reactor, router, config, stream_factory=RoutedStreamFactory)  # type: ignore[arg-type]
    listeners.setServiceParent(top)
    supervisor = Supervisor(reactor, router, command, stop_timeout=config.service.drain_timeout + STOP_MARGIN)
    supervisor.setServiceParent(top)
    if config.web.port:
        try:
            from siprecd.web.cluster import build_cluster_site  # another branch's: not always there
        except ImportError:
            log.warn("web over workers not available: siprecd.web.cluster is missing; [web] port {port} is not served", port=config.web.port)
        else:
            from siprecd.service import recording_space_problem
            from siprecd.web.health import Check

            checks = [
                Check("sip_listeners", listeners.unbound),  # the parent's own, beside each worker's
                Check("recording_directory", lambda: recording_space_problem(config)),
            ]
            from siprecd.workers.metrics import RouterCollector

            site = build_cluster_site(
                reactor, config, supervisor, checks=checks, collectors=[RouterCollector(router.counters)]
            )
            endpoint = TCP4ServerEndpoint(reactor, config.web.port, interface=config.web.bind_address)
            StreamServerEndpointService(endpoint, site).setServiceParent(top)
    ReloadService(reactor, config, lambda: listeners.tls, router.rate_limiter).setServiceParent(top)
    ParentNotify(Notifier(environ), reactor, supervisor).setServiceParent(top)
    return top, supervisor
