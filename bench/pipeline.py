"""siprecd's per-packet path in one process, without sockets: a profile that is not at the
mercy of the machine's load (use it to check an optimisation; the figures that count come from
``python -m bench``).

    python -m bench.pipeline [--sessions 200] [--seconds 10] [--at-rest] [--batch K] [--profile FILE]

N two-stream PCMU sessions (SessionMedia with its recorders, files, stereo mix and tick on a
``task.Clock``) get 20 ms packets through ``RTPProtocol.datagramReceived``; the bare media path
of bench.receivers gets the same packets.  Prints CPU per packet of each and their ratio.
``--srtp`` protects every stream (AES_CM_128_HMAC_SHA1_80; packets are built and protected
before the timing, so only the receivers' cost counts).
``--batch K`` is siprecd's ``[media] packet_batch`` (default: the config's default); several,
comma-separated, run one after the other against the same bare-path figure.
"""

from __future__ import annotations

import argparse
import operator
import statistics
import time
import cProfile
import os
import pstats
import tempfile

from twisted.internet.task import Clock

from bench.receivers import MediaPath
from bench.rtp import StreamSender, stream_key
from siprecd.config import load_config
from siprecd.crypto.at_rest import AtRest
from siprecd.crypto.keystore import MemoryKeyStore
from siprecd.media.ports import PortPair
from siprecd.recording.session import RecordedStream, RecordingSession
from siprecd.sdp import parse, plan_streams
from siprecd.security.srtp import InboundSRTP
from siprecd.siprec.session_media import SessionMedia

SOURCE = ("192.0.2.10", 40000)
OFFER = ("v=0\r\no=SRC 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
         "m=audio 40000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n"
         "m=audio 40002 RTP/AVP 0\r\na=label:2\r\na=sendonly\r\n").encode()


class _Transport:
    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        pass


def make_sessions(count: int, directory: str, clock: Clock, at_rest: bool, batch: int | None = None,
                  srtp: bool = False, chunk_size: int | None = None) -> list[SessionMedia]:
    environ = {"SIPRECD_RECORDING_DIRECTORY": directory}
    if batch is not None:
        environ["SIPRECD_MEDIA_PACKET_BATCH"] = str(batch)
    if chunk_size is not None:
        environ["SIPRECD_RECORDING_CHUNK_SIZE"] = str(chunk_size)
    config = load_config(None, environ)
    # The server's AtRest takes [recording] chunk_size too (service.py).
    keys = AtRest(MemoryKeyStore(), "AES-256-GCM", chunk_size=config.recording.chunk_size) if at_rest else None
    offer = parse(OFFER)
    sessions = []
    for n in range(count):
        path = os.path.join(directory, f"s{n}")
        os.makedirs(path)
        session = RecordingSession(session_id=f"s{n}", call_id=f"c{n}", started_at=clock.seconds(), src={}, sip={},
                                   siprec=True, directory=path)
        media = SessionMedia(clock, config, session, lambda reason: None, at_rest=keys)
        for choice in plan_streams(offer, codec_preference=config.siprec.codec_preference):
            stream = RecordedStream(key=f"label:{choice.label}", choice=choice)
            stream.media = media.new_stream_media()
            stream.media.rtp.makeConnection(_Transport())
            stream.media.rtcp.makeConnection(_Transport())
            if srtp:
                key = stream_key(b"%d" % (2 * len(sessions) + choice.index))
                stream.media.secure(InboundSRTP("AES_CM_128_HMAC_SHA1_80", key[:16], key[16:]), None)
            stream.ports = PortPair(20000 + 2 * choice.index, 20001 + 2 * choice.index, None, None)  # type: ignore[arg-type]
            session.streams.append(stream)
        media.attach(session.streams, offer)
        media.start()
        sessions.append(media)
    return sessions


class FastClock(Clock):
    """``task.Clock`` that sorts its calls by their ``time`` attribute instead of a Python
    lambda per call and per sort (400 sessions' ticks made that a tenth of the figure; the
    reactor keeps a heap).  The harness does not use ``DelayedCall.delay``."""

    def _sortCalls(self) -> None:  # noqa: N802 - Twisted's name
        self.calls.sort(key=_TIME)


_TIME = operator.attrgetter("time")


def drive(receivers: list, seconds: float, clock: Clock, srtp: bool = False) -> float:
    """CPU seconds to deliver ``seconds`` of 20 ms packets to every receiver in turn (receiver
    ``i`` under the SRTP key ``stream_key(b"i")`` with ``srtp``).  The packets are built (and
    protected) before the clock starts: the figure is the receiver's alone."""
    senders = [StreamSender(0x100 + i, key=stream_key(b"%d" % i) if srtp else None) for i in range(len(receivers))]
    steps = [[sender.next_packet() for sender in senders] for _ in range(round(seconds / 0.02))]
    start, cpu = os.times(), time.process_time()
    for packets in steps:
        for receive, packet in zip(receivers, packets):
            receive(packet, SOURCE)
        clock.advance(0.02)
    end, cpu = os.times(), time.process_time() - cpu
    global last_system
    last_system = end.system - start.system  # os.times: 10 ms ticks, enough for a share
    return cpu


last_system = 0.0  # of the last drive(): the kernel's share (file writes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--at-rest", action="store_true")
    parser.add_argument("--srtp", action="store_true", help="SDES-style SRTP (AES_CM_128_HMAC_SHA1_80) on every stream")
    parser.add_argument("--batch", default="", help="[media] packet_batch, or several: 1,8")
    parser.add_argument("--chunk-size", type=int, help="[recording] chunk_size (default: the config's)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the --batch list, alternating; median per batch")
    parser.add_argument("--profile", help="write the siprecd run's cProfile stats here, print the top")
    args = parser.parse_args(argv)
    packets = 2 * args.sessions * round(args.seconds / 0.02)
    with tempfile.TemporaryDirectory() as directory:
        clock = FastClock()
        clock.advance(1_700_000_000)
        bare = [MediaPath(clock, os.path.join(directory, f"bare-{i}"), stream_key(b"%d" % i) if args.srtp else None)
                for i in range(2 * args.sessions)]
        bare_cpu = drive([p.datagramReceived for p in bare], args.seconds, clock, args.srtp)
        for path in bare:
            path.finish()
        results = []
        batches: list[int | None] = [int(b) for b in args.batch.split(",") if b] or [None]
        for run, batch in enumerate(batches * args.rounds):
            run_directory = os.path.join(directory, f"run-{run}")
            os.makedirs(run_directory)
            sessions = make_sessions(args.sessions, run_directory, clock, args.at_rest, batch, args.srtp,
                                     args.chunk_size)
            receivers = [s.media.rtp.datagramReceived for m in sessions for s in m.session.streams]
            profiler = cProfile.Profile() if args.profile else None
            if profiler:
                profiler.enable()
            ours = drive(receivers, args.seconds, clock, args.srtp)
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
                pstats.Stats(args.profile).sort_stats("tottime").print_stats(15)
            recorded = sum(s.recorder.counters.packets for m in sessions for s in m.session.streams)
            if recorded != packets:
                print(f"WARNING: the recordings took {recorded} of {packets} packets")
            for media in sessions:
                for stream in media.session.streams:
                    media.finish_stream(stream)
                    stream.ended = True
                media.stop()
            results.append((sessions[0].config.media.packet_batch, ours / packets * 1e6, last_system / packets * 1e6))
    bare_us = bare_cpu / packets * 1e6
    what = f"{packets} packets{', at rest' if args.at_rest else ''}{', SRTP' if args.srtp else ''}"
    by_batch: dict[int, list[tuple[float, float]]] = {}
    for batch, ours_us, system_us in results:
        by_batch.setdefault(batch, []).append((ours_us, system_us))
        if args.rounds > 1:
            print(f"  packet_batch {batch}: {ours_us:.2f} us/packet (kernel {system_us:.2f})")
    for batch, figures in by_batch.items():
        ours_us, system_us = statistics.median(f[0] for f in figures), statistics.median(f[1] for f in figures)
        rounds = f", median of {len(figures)}, min {min(f[0] for f in figures):.2f}" if len(figures) > 1 else ""
        print(f"summary: siprecd path {ours_us:.2f} us/packet (packet_batch {batch}; kernel {system_us:.2f}{rounds}), "
              f"bare media path {bare_us:.2f} us/packet, ratio {ours_us / max(bare_us, 1e-9):.2f}x ({what})")


if __name__ == "__main__":
    main()
