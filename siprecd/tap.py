"""``twistd siprec``: options and makeService.  The only module that imports the global reactor."""

from __future__ import annotations

import os
import sys

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
        # Internal: how the parent of [service] workers = N starts each worker.
        ["worker", None, None, "(internal) run as one worker of [service] workers: its role as JSON."],
    ]

    def opt_version(self) -> None:
        print(f"siprecd {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:  # noqa: N802
        try:
            self.config = load_config(self["config"], os.environ)
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None
        if self["worker"]:
            from siprecd.workers.child import WorkerRole, worker_config

            try:
                self.role = WorkerRole.from_json(self["worker"])
            except (ValueError, KeyError, TypeError) as error:
                raise usage.UsageError(f"--worker: {error}") from None
            # The parent ran preflight (and holds the SIP ports it would probe).
            self.config = worker_config(self.config, self.role.index)
            return
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
    config = options.config
    if options["worker"]:
        from siprecd.workers.child import WorkerRelay, WorkerSide

        dispatch_media_directly(reactor)  # RTP/RTCP readiness without a logging context per datagram
        relay = WorkerRelay(on_parent_lost=parent_lost)
        return make_service(reactor, config, worker=WorkerSide(reactor, options.role, relay))
    if config.service.workers > 1:
        from siprecd.workers.parent import make_parent_service

        # No media in the parent: SIP only; each worker dispatches its own media directly.
        top, _ = make_parent_service(reactor, config, worker_command(options, sys.argv), dict(os.environ))
        return top
    dispatch_media_directly(reactor)  # RTP/RTCP readiness without a logging context per datagram
    return make_service(reactor, config)


def parent_lost() -> None:
    """A worker whose parent is gone can neither hear nor answer its SRCs (the parent held the
    SIP sockets), and the next parent's worker will want its media ports: leave at once, as a
    crash would, so that worker resumes the calls from the state store (written as calls
    change; files are flushed every [recording] flush_interval)."""
    from twisted.logger import Logger

    Logger().critical("the parent process is gone: exiting so that a new worker resumes the calls")
    os._exit(70)  # EX_SOFTWARE; no reactor shutdown: a drain could reach nobody


# twistd options a worker inherits from the parent's command line (with a value, or without).
_INHERITED = {"--logger": True, "--reactor": True, "-r": True, "--logfile": True, "-l": True}
_NOT_IN_ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def twistd_options(argv: list[str]) -> dict[str, str]:
    """The parent's --logger, --reactor and --logfile (the twistd options before ``siprec``)."""
    found: dict[str, str] = {}
    words = argv[1:]
    i = 0
    while i < len(words) and words[i] != "siprec":
        word = words[i]
        name, equals, value = word.partition("=")
        if name in _INHERITED and not equals:
            value = words[i + 1] if i + 1 < len(words) else ""
            i += 1
        elif not equals and word.startswith(("-l", "-r")) and len(word) > 2:
            name, value = word[:2], word[2:]
        if name in _INHERITED:
            found[{"-l": "--logfile", "-r": "--reactor"}.get(name, name)] = value
        i += 1
    return found


def worker_command(options: Options, argv: list[str]):  # type: ignore[no-untyped-def]
    """How the parent starts each worker: twistd again, in the foreground, with --worker."""
    import siprecd
    from siprecd.workers.child import WorkerRole

    inherited = twistd_options(argv)
    source = os.path.dirname(os.path.dirname(os.path.abspath(siprecd.__file__)))
    config_path = os.path.abspath(options["config"]) if options["config"] else None

    def command(role: WorkerRole) -> tuple[str, list[str], dict[str, str]]:
        logfile = inherited.get("--logfile", "")
        # Each worker its own log file beside the parent's (twistd rotates a file it owns);
        # to stdout (the journal) when the parent logs there.
        worker_log = f"{logfile}.worker{role.index}" if logfile and logfile != "-" else "-"
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "--nodaemon", "--pidfile=", f"--logfile={worker_log}"]
        for name in ("--logger", "--reactor"):
            if inherited.get(name):
                args.append(f"{name}={inherited[name]}")
        args.append("siprec")
        if config_path:
            args += ["--config", config_path]
        args += ["--worker", role.to_json()]
        env = {k: v for k, v in os.environ.items() if k not in _NOT_IN_ENVIRONMENT}
        env["PYTHONPATH"] = os.pathsep.join([source] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        return sys.executable, args, env

    return command
