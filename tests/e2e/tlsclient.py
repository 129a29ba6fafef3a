"""A SIP-over-TLS client driven through ``openssl s_client`` (a real, independent TLS stack)."""

from __future__ import annotations

import os
import select
import subprocess
import time

from siprecd.sip.framing import Frame, StreamFramer
from siprecd.sip.message import Limits, Response, parse_message


class OpenSSLClient:
    def __init__(
        self,
        port: int,
        ca: str,
        certificate: str | None = None,
        key: str | None = None,
    ) -> None:
        command = [
            "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", ca,
            "-verify_return_error", "-verify_hostname", "localhost", "-quiet", "-ign_eof",
        ]
        if certificate and key:
            command += ["-cert", certificate, "-key", key]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.framer = StreamFramer(Limits())
        self.frames: list[bytes] = []
        self.closed = False
        self._stderr: str | None = None

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except BrokenPipeError:
            self.closed = True

    def read_response(self, timeout: float = 5.0) -> Response | None:
        """The next SIP response, or None when the connection closes or time runs out."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while not self.frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return None
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                self.closed = True
                return None
            self.frames.extend(e.data for e in self.framer.feed(chunk) if isinstance(e, Frame))
        message = parse_message(self.frames.pop(0), stream=True)
        assert isinstance(message, Response), message
        return message

    def final_response(self, timeout: float = 5.0) -> Response | None:
        while True:
            response = self.read_response(timeout)
            if response is None or response.status >= 200:
                return response

    def close(self) -> str:
        """Ends the client; returns what it wrote on stderr."""
        if self._stderr is not None:
            return self._stderr
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stderr is not None
        self._stderr = self.process.stderr.read().decode(errors="replace")
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return self._stderr
