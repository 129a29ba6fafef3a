"""Real, independent SIP user agents as callers for end-to-end tests: linphonec and baresip.

Each driver writes its own configuration into a private directory (linphonec's ``HOME``,
baresip's ``-f`` directory), binds SIP and RTP to 127.0.0.1 on free ports, plays a WAV file as
its microphone, calls a URI, hangs up after a given time and quits.  The peer runs in its own
process group and is killed with it when anything goes wrong or takes too long (a hung peer
must never outlive its test): :meth:`call` always returns with the process gone, and ``kill``
is safe to register as a test cleanup.

What each peer said on the wire is kept: linphonec logs every SIP message it sends and
receives (``-d 6 -l FILE``), baresip prints them with ``-s``.  :func:`sip_messages` pulls the
messages out of either, so a test (or a person capturing offers) can read the exact INVITEs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tests.audio import tone
from tests.e2e.server import free_port, free_port_pair, read_text

LINPHONEC = "linphonec"
BARESIP = "baresip"
BARESIP_MODULES = "/usr/lib/baresip/modules"

# linphonec's console: one line per call state change ("Call 1 with sip:... connected.").
_CONNECTED = re.compile(r"Call \d+ with \S+ connected\.")
_FAILED = re.compile(r"Call \d+ (?:with|to) \S+ (?:error|declined|ended)|Error from linphone_core_invite")
_ENDED = re.compile(r"Call \d+ with \S+ ended")
# A SIP request or status line as it appears in either peer's trace.
_START_LINE = re.compile(
    r"^(?:(?:INVITE|ACK|BYE|CANCEL|UPDATE|INFO|OPTIONS|PRACK) sips?:\S+ SIP/2\.0|SIP/2\.0 \d{3} [^\r\n]*)\r?$", re.M
)


def peer_available(program: str) -> bool:
    return shutil.which(program) is not None


def write_tone(path: str, frequency: float, seconds: float, rate: int = 8000) -> str:
    """A mono 16-bit WAV of a sine at half scale (what the peers play as their microphone)."""
    with wave.open(path, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(tone(frequency, seconds, rate).tobytes())
    return path


def sip_messages(trace: str) -> list[str]:
    """The SIP messages (with their bodies, CRLF line ends) found in a peer's log or trace, in
    order, requests and responses alike.

    The body is cut at Content-Length, counted on the CRLF form, so trailing log lines are
    never taken for SDP."""
    found = []
    for match in _START_LINE.finditer(trace):
        rest = trace[match.start():]
        head, _, tail = rest.replace("\r\n", "\n").partition("\n\n")
        lines = head.split("\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() in ("content-length", "l") and value.strip().isdigit():
                length = int(value.strip())
        body = tail.replace("\n", "\r\n").encode()[:length].decode(errors="replace")
        found.append("\r\n".join(lines) + "\r\n\r\n" + body)
    return found


def sip_requests(trace: str, method: str | None = None) -> list[str]:
    """The requests among :func:`sip_messages` (only ``method`` ones if given)."""
    return [
        message
        for message in sip_messages(trace)
        if not message.startswith("SIP/") and (method is None or message.split(" ", 1)[0] == method)
    ]


def sip_responses(trace: str, status: int | None = None) -> list[str]:
    """The responses among :func:`sip_messages` (only ``status`` ones if given)."""
    return [
        message
        for message in sip_messages(trace)
        if message.startswith("SIP/") and (status is None or message.split(" ", 2)[1] == str(status))
    ]


@dataclass
class PeerCall:
    """What happened when a peer placed one call."""

    peer: str
    returncode: int | None
    connected: bool
    ended: bool
    timed_out: bool
    output: str
    trace: str
    command: list[str] = field(default_factory=list)

    def invites(self) -> list[str]:
        return sip_requests(self.trace, "INVITE")

    def answers(self) -> list[str]:
        """The 200 OK responses the peer saw (to its INVITEs, and to its BYE)."""
        return sip_responses(self.trace, 200)

    def explain(self) -> str:
        return (
            f"{self.peer}: exit {self.returncode}, connected={self.connected}, ended={self.ended}, "
            f"timed out={self.timed_out}\ncommand: {' '.join(self.command)}\n--- output (end)\n{self.output[-4000:]}"
            f"\n--- SIP trace (end)\n{self.trace[-6000:]}"
        )


class _Peer:
    """A peer process in its own session (process group), killed with all its children."""

    program = ""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.output_path = os.path.join(self.directory, "output.txt")

    def _spawn(self, command: list[str], env: Mapping[str, str], stdin: int | None) -> subprocess.Popen[bytes]:
        with open(self.output_path, "wb") as output:
            self.process = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=dict(env),
                start_new_session=True,
            )
        return self.process

    def output(self) -> str:
        return read_text(self.output_path)

    def _source(self, wav: str) -> str:
        """``wav`` under a short name relative to the peer's working directory: baresip cuts
        a device string at 128 bytes, and trial's temporary paths are longer than that."""
        link = os.path.join(self.directory, "source.wav")
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.abspath(wav), link)
        return "source.wav"

    def _wait(self, seconds: float) -> bool:
        """True if the process ended within ``seconds``."""
        assert self.process is not None
        try:
            self.process.wait(max(seconds, 0.0))
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        """Kill the whole process group (idempotent; safe as a cleanup)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()
        if process.stdin is not None:
            process.stdin.close()


class Linphone(_Peer):
    """linphonec 5.x (Debian ``linphone-cli``) driven on stdin.

    ``encryption``: ``none``, ``srtp`` (SDES, with ``suites`` in preference order), ``dtls``
    or ``zrtp``; a secured call is mandatory (no fallback to RTP) unless ``mandatory`` is
    False.  ``options`` adds or overrides linphonerc keys per section.
    """

    program = LINPHONEC

    def __init__(
        self,
        directory: str,
        *,
        encryption: str = "none",
        suites: Sequence[str] = (),
        mandatory: bool = True,
        options: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(directory)
        self.encryption = encryption
        self.suites = tuple(suites)
        self.mandatory = mandatory
        self.options = options or {}
        self.sip_port = free_port((socket.SOCK_DGRAM,))
        self.rtp_port = free_port_pair()
        self.config_path = os.path.join(self.directory, ".linphonerc")
        self.log_path = os.path.join(self.directory, "linphonec.log")

    def config_text(self) -> str:
        sections: dict[str, dict[str, str]] = {
            "sip": {
                "sip_port": str(self.sip_port),
                "bind_address": "127.0.0.1",  # otherwise SIP listens on [::]
                "sip_tcp_port": "0",
                "sip_tls_port": "0",
                "use_ipv6": "0",
                "contact": '"linphonec" <sip:linphonec@127.0.0.1>',
                "media_encryption": self.encryption,
                "media_encryption_mandatory": "1" if self.mandatory and self.encryption != "none" else "0",
                # Without registration nothing is gained by guessing a public address.
                "guess_hostname": "0",
                "register_only_when_network_is_up": "0",
            },
            "net": {"nat_address": "127.0.0.1", "firewall_policy": "0", "mtu": "1300"},
            "rtp": {"audio_rtp_port": str(self.rtp_port), "bind_address": "127.0.0.1"},
            "video": {"enabled": "0", "capture": "0", "display": "0"},
            "sound": {"echocancellation": "0"},
        }
        if self.suites:
            sections["sip"]["srtp_crypto_suites"] = ",".join(self.suites)
        for name, values in self.options.items():
            sections.setdefault(name, {}).update(values)
        return "".join(
            f"[{name}]\n" + "".join(f"{key}={value}\n" for key, value in values.items()) + "\n"
            for name, values in sections.items()
        )

    def trace(self) -> str:
        return read_text(self.log_path)

    def call(self, uri: str, wav: str, seconds: float, timeout: float = 30.0) -> PeerCall:
        """Call ``uri`` playing ``wav``; hang up ``seconds`` after the call is connected."""
        # linphonec keeps its databases there; without it "call" fails at once with
        # "Error from linphone_core_invite."
        os.makedirs(os.path.join(self.directory, ".local", "share", "linphone"), exist_ok=True)
        with open(self.config_path, "w") as handle:
            handle.write(self.config_text())
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        env["HOME"] = self.directory
        command = [LINPHONEC, "-c", self.config_path, "-d", "6", "-l", self.log_path]
        deadline = time.monotonic() + timeout
        process = self._spawn(command, env, subprocess.PIPE)
        connected = ended = timed_out = False
        try:

            def say(line: str) -> None:
                assert process.stdin is not None
                try:
                    process.stdin.write(line.encode() + b"\n")
                    process.stdin.flush()
                except BrokenPipeError:
                    pass

            def wait_for(pattern: re.Pattern[str], until: float) -> re.Match[str] | None:
                while time.monotonic() < until and process.poll() is None:
                    found = pattern.search(self.output())
                    if found:
                        return found
                    time.sleep(0.05)
                return pattern.search(self.output())

            say("soundcard use files")
            say(f"play {self._source(wav)}")
            say(f"call {uri}")
            either = re.compile(f"{_CONNECTED.pattern}|{_FAILED.pattern}")
            outcome = wait_for(either, deadline)
            connected = bool(outcome and _CONNECTED.fullmatch(outcome.group(0)))
            if connected:
                hang_up = min(time.monotonic() + seconds, deadline)
                while time.monotonic() < hang_up and process.poll() is None and not _ENDED.search(self.output()):
                    time.sleep(0.05)
                say("terminate all")
                ended = wait_for(_ENDED, deadline) is not None
            say("quit")
            if not self._wait(min(10.0, deadline - time.monotonic())):
                timed_out = True
        finally:
            returncode = process.poll()
            self.kill()
        return PeerCall(self.program, returncode, connected, ended, timed_out, self.output(), self.trace(), command)


class Baresip(_Peer):
    """baresip 1.x (Debian ``baresip-core``): ``-e "/dial URI" -t SECONDS``, no console.

    SIP listens on 127.0.0.1 and the SDP says 127.0.0.1; baresip 1.0 has no setting for the
    RTP sockets' address, so those (and its DNS client's) are bound to the wildcard address.

    ``mediaenc``: None (plain RTP) or a baresip media encryption (``srtp``, ``srtp-mand``,
    ``srtp-mandf``, ``dtls_srtp``, ...) set on the account.  ``options`` adds or overrides
    config lines.
    """

    program = BARESIP

    def __init__(
        self, directory: str, *, mediaenc: str | None = None, options: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(directory)
        self.mediaenc = mediaenc
        self.options = options or {}
        # sip_listen opens UDP and TCP on the port and TLS on the next one.
        self.sip_port = free_port_pair((socket.SOCK_STREAM, socket.SOCK_DGRAM))
        self.rtp_port = free_port_pair()

    def config_text(self, wav: str) -> str:
        values = {
            "poll_method": "epoll",
            "sip_listen": f"127.0.0.1:{self.sip_port}",
            "net_interface": "127.0.0.1",
            # Names relative to baresip's working directory (see _source).
            "audio_source": f"aufile,{wav}",
            # What siprecd sends back (nothing: it only receives) goes to a file, not a card.
            "audio_player": "aufile,played.wav",
            "audio_alert": "aufile,alert.wav",
            "audio_srate": "8000",
            "audio_channels": "1",
            "rtp_ports": f"{self.rtp_port}-{self.rtp_port + 1}",
            "rtcp_mux": "no",
            "module_path": BARESIP_MODULES,
        }
        values.update(self.options)
        lines = [f"{key}\t{value}" for key, value in values.items()]
        lines += [f"module\t{name}" for name in ("g711.so", "aufile.so", "srtp.so", "dtls_srtp.so")]
        lines += ["module_app\taccount.so", "module_app\tmenu.so"]
        return "\n".join(lines) + "\n"

    def account_text(self) -> str:
        parameters = ";regint=0;audio_codecs=PCMU"
        if self.mediaenc:
            parameters += f";mediaenc={self.mediaenc}"
        return f"<sip:baresip@127.0.0.1>{parameters}\n"

    def call(self, uri: str, wav: str, seconds: float, timeout: float = 30.0) -> PeerCall:
        """Call ``uri`` playing ``wav``; baresip hangs up and quits ``seconds`` after start.

        A port found free can be taken by another process before baresip binds it (the machine
        is shared): baresip then exits at once with "init failed", and is started again on
        fresh ports."""
        deadline = time.monotonic() + timeout
        for attempt in range(3):
            call = self._run(uri, wav, seconds, deadline)
            if "ua: init failed" not in call.output or attempt == 2:
                return call
            self.sip_port = free_port_pair((socket.SOCK_STREAM, socket.SOCK_DGRAM))
            self.rtp_port = free_port_pair()
        raise AssertionError("unreachable")

    def _run(self, uri: str, wav: str, seconds: float, deadline: float) -> PeerCall:
        with open(os.path.join(self.directory, "config"), "w") as handle:
            handle.write(self.config_text(self._source(wav)))
        with open(os.path.join(self.directory, "accounts"), "w") as handle:
            handle.write(self.account_text())
        env = dict(os.environ)
        env["HOME"] = self.directory
        command = [BARESIP, "-4", "-s", "-f", self.directory, "-e", f"/dial {uri}", "-t", str(max(1, round(seconds)))]
        process = self._spawn(command, env, subprocess.DEVNULL)
        timed_out = False
        try:
            timed_out = not self._wait(deadline - time.monotonic())
        finally:
            returncode = process.poll()
            self.kill()
        output = _strip_ansi(self.output())
        connected = "Call established" in output
        ended = bool(re.search(r"Call with \S+ terminated", output))
        return PeerCall(self.program, returncode, connected, ended, timed_out, output, output, command)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
