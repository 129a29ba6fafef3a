"""``twistd siprec``: options and makeService.  The only module that imports the global reactor."""

from __future__ import annotations

import os

from twisted.application.service import IService
from twisted.python import usage

from siprecd import __version__
from siprecd.config import ConfigError, load_config
from siprecd.preflight import preflight


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "siprecd: a SIPREC Session Recording Server (RFC 7866). Reads an INI config file "
        "(embedded defaults when --config is not given); every key can be overridden with an "
        "environment variable SIPRECD_<SECTION>_<KEY>, e.g. SIPRECD_SIP_UDP_PORT=5080. "
        "Configuration errors are all reported at once and make twistd exit non-zero."
    )
    optParameters = [
        ["config", "c", None, "Path to the INI configuration file (see etc/siprecd.conf)."],
    ]

    def opt_version(self) -> None:
        print(f"siprecd {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:  # noqa: N802
        try:
            self.config = load_config(self["config"], os.environ)
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None
        problems = preflight(self.config)
        if problems:
            raise usage.UsageError("cannot start:\n  " + "\n  ".join(problems))


def makeService(options: Options) -> IService:  # noqa: N802
    from twisted.internet import reactor

    from siprecd.media.udp_port import dispatch_media_directly
    from siprecd.service import make_service

    # twistd re-raises the SIGTERM/SIGINT that stopped it, so the exit status would be -15.  The
    # stop is graceful (calls drained, every file final), so exit 0 as an orderly stop should.
    # _exitSignal is the reactor's documented hook for that (_ISupportsExitSignalCapturing).
    def orderly_exit() -> None:
        if hasattr(reactor, "_exitSignal"):
            reactor._exitSignal = None

    reactor.addSystemEventTrigger("after", "shutdown", orderly_exit)
    dispatch_media_directly(reactor)  # RTP/RTCP readiness without a logging context per datagram
    return make_service(reactor, options.config)
