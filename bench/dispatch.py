"""What one datagram costs the reactor before siprecd's media path sees it, three ways.

    python -m bench.dispatch [--ports 1000] [--seconds 9] [--rounds 2] [--port 28500]

Each variant runs in a process of its own (a reactor per process): ``--ports`` UDP ports on
loopback with a protocol that only counts, fed one 172-byte datagram per port every 20 ms by a
sender process, and the receiver's CPU time per datagram over the steady window:

* ``twisted``: Twisted's ``udp.Port`` (reads until EAGAIN) and its epoll dispatch;
* ``media``: :class:`siprecd.media.udp_port.MediaPort` (one datagram per readiness);
* ``direct``: MediaPort and :func:`~siprecd.media.udp_port.dispatch_media_directly` (what
  ``twistd siprec`` runs).

Variants alternate over ``--rounds`` so the machine's load hits them alike.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

VARIANTS = ("twisted", "media", "direct")

_SENDER = """
import socket, sys, time
ports, first, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
datagram = bytes(172)
addresses = [("127.0.0.1", first + i) for i in range(ports)]
due = time.monotonic()
end = due + seconds
while due < end:
    for address in addresses:
        sender.sendto(datagram, address)
    due += 0.02
    time.sleep(max(0.0, due - time.monotonic()))
"""


def receive(variant: str, ports: int, first: int, seconds: float) -> float:
    """Run in the variant's own process: CPU microseconds per datagram received."""
    import time  # noqa: PLC0415

    from twisted.internet import epollreactor  # noqa: PLC0415

    epollreactor.install()
    from twisted.internet import reactor, udp  # noqa: PLC0415
    from twisted.internet.protocol import DatagramProtocol  # noqa: PLC0415

    from siprecd.media.udp_port import MediaPort, dispatch_media_directly  # noqa: PLC0415

    class Count(DatagramProtocol):
        received = 0

        def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
            Count.received += 1

    port_class = udp.Port if variant == "twisted" else MediaPort
    if variant == "direct":
        dispatch_media_directly(reactor)
    for n in range(ports):
        port_class(first + n, Count(), "127.0.0.1", reactor=reactor).startListening()
    sender = subprocess.Popen([sys.executable, "-c", _SENDER, str(ports), str(first), str(seconds + 3)])
    window: dict[str, float] = {}

    def start() -> None:
        window["received"], window["cpu"] = Count.received, time.process_time()

    def stop() -> None:
        window["us"] = (time.process_time() - window["cpu"]) / max(1, Count.received - window["received"]) * 1e6
        reactor.stop()

    reactor.callLater(1.5, start)
    reactor.callLater(1.5 + seconds, stop)
    reactor.run()
    sender.wait()
    return window["us"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=9)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=28500, help="first UDP port (below the ephemeral range)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # the child's
    args = parser.parse_args(argv)
    if args.variant:
        print(f"{receive(args.variant, args.ports, args.port, args.seconds):.3f}")
        return
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            out = subprocess.run(
                [sys.executable, "-m", "bench.dispatch", "--variant", variant, "--ports", str(args.ports),
                 "--seconds", str(args.seconds), "--port", str(args.port)],
                check=True, capture_output=True, text=True,
            ).stdout
            results[variant].append(float(out.split()[-1]))
            print(f"{variant:8} {results[variant][-1]:.2f} us/datagram", flush=True)
    best = {v: min(r) for v, r in results.items()}
    print("summary: " + ", ".join(
        f"{v} {best[v]:.2f} us/datagram ({best[v] / best['twisted']:.2f}x)" for v in VARIANTS
    ) + f" ({args.ports} ports, 50 datagrams/s each, best of {args.rounds})")


if __name__ == "__main__":
    main()
