"""Baseline receivers on the same ports and traffic as siprecd, run as their own process:

    python -m bench.receivers count|media --port P --streams N [--srtp] --result FILE

``count``: a bare Twisted DatagramProtocol per port that only counts datagrams.
``media``: the bare media path the issue sets as the CPU yardstick: parse the RTP header,
unprotect SRTP with pylibsrtp, RFC 3550 jitter, append the payload to a buffer and write each
stream's file when it holds about a second of audio (size-triggered, so naturally staggered).
Stream s listens on P + 2s (the generator's direct mode sends there).  On SIGTERM the process
writes {"packets", "bad", "jitter_ms"} as JSON to FILE and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import pylibsrtp
from twisted.internet.protocol import DatagramProtocol

from bench.rtp import PACKET_TIME, SAMPLES, Jitter, stream_key

FLUSH_BYTES = int(SAMPLES / PACKET_TIME)  # one second of PCMU


class Counter(DatagramProtocol):
    noisy = False

    def __init__(self) -> None:
        self.packets = 0
        self.bad = 0

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        self.packets += 1

    def finish(self) -> None:
        pass


class MediaPath(Counter):
    def __init__(self, clock: object, path: str, key: bytes | None) -> None:
        super().__init__()
        self.clock = clock
        self.jitter = Jitter()
        self.buffer = bytearray()
        self.file = open(path, "wb", buffering=0)  # noqa: SIM115 (closed in finish)
        self.srtp = None
        if key is not None:
            self.srtp = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        if self.srtp is not None:
            try:
                datagram = self.srtp.unprotect(datagram)
            except pylibsrtp.Error:
                self.bad += 1
                return
        if len(datagram) < 12 or datagram[0] & 0xC0 != 0x80:
            self.bad += 1
            return
        self.packets += 1
        self.jitter.update(self.clock.seconds(), int.from_bytes(datagram[4:8], "big"))  # type: ignore[attr-defined]
        buffer = self.buffer
        buffer += memoryview(datagram)[12:]
        if len(buffer) >= FLUSH_BYTES:
            self.file.write(buffer)
            buffer.clear()

    def finish(self) -> None:
        self.file.write(self.buffer)
        self.file.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("count", "media"))
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--srtp", action="store_true")
    parser.add_argument("--directory", default=".")
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)

    from twisted.internet import reactor  # a benchmark's own process: it owns its reactor

    protocols: list[Counter] = []
    for stream in range(args.streams):
        if args.kind == "count":
            protocol: Counter = Counter()
        else:
            key = stream_key(f"{stream // 2}-{stream % 2}".encode()) if args.srtp else None
            protocol = MediaPath(reactor, os.path.join(args.directory, f"stream-{stream}.raw"), key)
        reactor.listenUDP(args.port + 2 * stream, protocol, interface=args.address)  # type: ignore[attr-defined]
        protocols.append(protocol)

    def write_result() -> None:
        for protocol in protocols:
            protocol.finish()
        jitters = [p.jitter.milliseconds for p in protocols if isinstance(p, MediaPath) and p.packets]
        result = {
            "packets": sum(p.packets for p in protocols),
            "bad": sum(p.bad for p in protocols),
            "jitter_ms": sum(jitters) / len(jitters) if jitters else None,
        }
        with open(args.result, "w") as handle:
            json.dump(result, handle)

    reactor.addSystemEventTrigger("before", "shutdown", write_result)  # type: ignore[attr-defined]
    reactor.callWhenRunning(lambda: print("listening", flush=True))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
