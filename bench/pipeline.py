"""siprecd's per-packet path in one process, without sockets: a profile that is not at the
mercy of the machine's load (use it to check an optimisation; the figures that count come from
``python -m bench``).

    python -m bench.pipeline [--sessions 200] [--seconds 10] [--at-rest] [--profile FILE]

N two-stream PCMU sessions (SessionMedia with its recorders, files, stereo mix and tick on a
``task.Clock``) get 20 ms packets through ``RTPProtocol.datagramReceived``; the bare media path
of bench.receivers gets the same packets.  Prints CPU per packet of each and their ratio.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time

from twisted.internet.task import Clock

from bench.receivers import MediaPath
from bench.rtp import StreamSender
from siprecd.config import load_config
from siprecd.crypto.at_rest import AtRest
from siprecd.crypto.keystore import MemoryKeyStore
from siprecd.media.ports import PortPair
from siprecd.recording.session import RecordedStream, RecordingSession
from siprecd.sdp import parse, plan_streams
from siprecd.siprec.session_media import SessionMedia

SOURCE = ("192.0.2.10", 40000)
OFFER = ("v=0\r\no=SRC 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
         "m=audio 40000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n"
         "m=audio 40002 RTP/AVP 0\r\na=label:2\r\na=sendonly\r\n").encode()


class _Transport:
    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        pass


def make_sessions(count: int, directory: str, clock: Clock, at_rest: bool) -> list[SessionMedia]:
    config = load_config(None, {"SIPRECD_RECORDING_DIRECTORY": directory})
    keys = AtRest(MemoryKeyStore(), "AES-256-GCM") if at_rest else None
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
            stream.ports = PortPair(20000 + 2 * choice.index, 20001 + 2 * choice.index, None, None)  # type: ignore[arg-type]
            session.streams.append(stream)
        media.attach(session.streams, offer)
        media.start()
        sessions.append(media)
    return sessions


def drive(receivers: list, seconds: float, clock: Clock) -> float:
    """CPU seconds to deliver ``seconds`` of 20 ms packets to every receiver in turn."""
    senders = [StreamSender(0x100 + i) for i in range(len(receivers))]
    start = time.process_time()
    for _ in range(round(seconds / 0.02)):
        for receive, sender in zip(receivers, senders):
            receive(sender.next_packet(), SOURCE)
        clock.advance(0.02)
    return time.process_time() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--at-rest", action="store_true")
    parser.add_argument("--profile", help="write the siprecd run's cProfile stats here, print the top")
    args = parser.parse_args(argv)
    packets = 2 * args.sessions * round(args.seconds / 0.02)
    with tempfile.TemporaryDirectory() as directory:
        clock = Clock()
        clock.advance(1_700_000_000)
        bare = [MediaPath(clock, os.path.join(directory, f"bare-{i}"), None) for i in range(2 * args.sessions)]
        bare_cpu = drive([p.datagramReceived for p in bare], args.seconds, clock)
        for path in bare:
            path.finish()
        sessions = make_sessions(args.sessions, directory, clock, args.at_rest)
        receivers = [s.media.rtp.datagramReceived for m in sessions for s in m.session.streams]
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        ours = drive(receivers, args.seconds, clock)
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
            pstats.Stats(args.profile).sort_stats("tottime").print_stats(15)
        for media in sessions:
            for stream in media.session.streams:
                media.finish_stream(stream)
                stream.ended = True
            media.stop()
    ours_us, bare_us = ours / packets * 1e6, bare_cpu / packets * 1e6
    print(f"summary: siprecd path {ours_us:.2f} us/packet, bare media path {bare_us:.2f} us/packet, "
          f"ratio {ours_us / bare_us:.2f}x ({packets} packets{', at rest' if args.at_rest else ''})")


if __name__ == "__main__":
    main()
