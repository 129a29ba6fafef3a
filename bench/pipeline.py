"""siprecd's per-packet path in one process, without sockets: a profile that is not at the
mercy of the machine's load (use it to check an optimisation; the figures that count come from
``python -m bench``).

    python -m bench.pipeline [--sessions 200] [--seconds 10] [--at-rest] [--batch K] [--profile FILE]

N two-stream PCMU sessions (SessionMedia with its recorders, files, stereo mix and tick on a
``task.Clock``) get 20 ms packets through ``RTPProtocol.datagramReceived``; the bare media path
of bench.receivers gets the same packets.  Prints CPU per packet of each and their ratio.
``--batch K`` is siprecd's ``[media] packet_batch`` (default: the config's default); several,
comma-separated, run one after the other against the same bare-path figure.
"""

from __future__ import annotations

import argparse
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


def drive(receivers: list, seconds: float, clock: Clock, srtp: bool = False) -> float:
    """CPU seconds to deliver ``seconds`` of 20 ms packets to every receiver in turn (receiver
    ``i`` under the SRTP key ``stream_key(b"i")`` with ``srtp``)."""
    senders = [StreamSender(0x100 + i, key=stream_key(b"%d" % i) if srtp else None) for i in range(len(receivers))]
    start = os.times()
    for _ in range(round(seconds / 0.02)):
        for receive, sender in zip(receivers, senders):
            receive(sender.next_packet(), SOURCE)
        clock.advance(0.02)
    end = os.times()
    global last_system
    last_system = end.system - start.system
    return end.user + end.system - start.user - start.system


last_system = 0.0  # of the last drive(): the kernel's share (file writes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--at-rest", action="store_true")
    parser.add_argument("--srtp", action="store_true", help="SDES-style SRTP (AES_CM_128_HMAC_SHA1_80) on every stream")
    parser.add_argument("--batch", default="", help="[media] packet_batch, or several: 1,8")
    parser.add_argument("--chunk-size", type=int, help="[recording] chunk_size (default: the config's)")
    parser.add_argument("--profile", help="write the siprecd run's cProfile stats here, print the top")
    args = parser.parse_args(argv)
    packets = 2 * args.sessions * round(args.seconds / 0.02)
    with tempfile.TemporaryDirectory() as directory:
        clock = Clock()
        clock.advance(1_700_000_000)
        bare = [MediaPath(clock, os.path.join(directory, f"bare-{i}"), stream_key(b"%d" % i) if args.srtp else None)
                for i in range(2 * args.sessions)]
        bare_cpu = drive([p.datagramReceived for p in bare], args.seconds, clock, args.srtp)
        for path in bare:
            path.finish()
        results = []
        for run, batch in enumerate([int(b) for b in args.batch.split(",") if b] or [None]):
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
    for batch, ours_us, system_us in results:
        print(f"summary: siprecd path {ours_us:.2f} us/packet (packet_batch {batch}; kernel {system_us:.2f}), bare media path "
              f"{bare_us:.2f} us/packet, ratio {ours_us / bare_us:.2f}x ({packets} packets{', at rest' if args.at_rest else ''}{', SRTP' if args.srtp else ''})")


if __name__ == "__main__":
    main()
