"""SIGHUP: reload the TLS certificates and the safe settings without dropping a call.

What reloads: the TLS certificate, key and CA bundle (new connections use them, open ones keep
theirs) and the per-source rate limit.  Everything else needs a restart (ports, directories,
keys); a changed value there is logged as ignored.  A config that does not load is logged and
the running one kept.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.application.service import Service
from twisted.internet import ssl
from twisted.logger import Logger

from siprecd.config import Config, ConfigError, load_config
from siprecd.sip.ratelimit import RateLimiter
from siprecd.sip.tls import TLSConfigError, server_options

log = Logger()


class SwappableTLS:
    """A server context factory whose certificate can be replaced while listening.

    Twisted asks ``getContext()`` for every new connection, so swapping ``options`` affects new
    connections only.
    """

    def __init__(self, options: ssl.CertificateOptions) -> None:
        self.options = options

    def getContext(self) -> SSL.Context:  # noqa: N802
        return self.options.getContext()


class ReloadService(Service):
    def __init__(
        self,
        reactor: Any,
        config: Config,
        tls: Callable[[], SwappableTLS | None],
        rate_limiter: RateLimiter,
        environ: Callable[[], dict[str, str]] = lambda: dict(os.environ),
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.tls = tls
        self.rate_limiter = rate_limiter
        self.environ = environ
        self.reloads = 0
        self._previous: Any = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        # The handler only schedules: the reload runs in the reactor, never inside the signal.
        self._previous = signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def reload(self) -> bool:
        path = None if self.config.source == "embedded defaults" else self.config.source
        try:
            new = load_config(path, self.environ())
        except ConfigError as error:
            log.error("SIGHUP: configuration not reloaded, the running one stays: {error}", error=error)
            return False
        sip = new.sip
        tls = self.tls()
        if tls is not None and sip.tls_port and sip.tls_certificate and sip.tls_private_key:
            try:
                tls.options = server_options(sip.tls_certificate, sip.tls_private_key, sip.tls_ca_certificates)
            except TLSConfigError as error:
                log.error("SIGHUP: TLS certificates not reloaded, the running ones stay: {error}", error=error)
                return False
        self.rate_limiter.rate = sip.rate_limit
        self.rate_limiter.burst = max(sip.rate_burst, 1.0)
        ignored = [
            f"[{section}]"
            for section in ("media", "recording", "encryption", "web", "siprec", "service")
            if getattr(new, section) != getattr(self.config, section)
        ]
        if (sip.bind_address, sip.udp_port, sip.tcp_port, sip.tls_port) != (
            self.config.sip.bind_address,
            self.config.sip.udp_port,
            self.config.sip.tcp_port,
            self.config.sip.tls_port,
        ):
            ignored.append("[sip] addresses and ports")
        self.config = new
        self.reloads += 1
        log.info(
            "SIGHUP: reloaded TLS certificates and rate limits{ignored}",
            ignored=f"; changes to {', '.join(ignored)} need a restart" if ignored else "",
        )
        return True
