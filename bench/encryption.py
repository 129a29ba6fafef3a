"""CPU cost of encryption at rest on the recording path, as a ratio to the same run in clear.

Writes the same PCM (20 ms G.711-rate frames, as the recorder appends them) through the WAV
writer with a plain file, then through the encrypting file with each algorithm, flushing once
per second of audio as the recorder's tick does.  Every variant runs in the same process, on
the same data, interleaved over several rounds; the figure is the median CPU time of each and
its ratio to the clear baseline measured in this run.

    .venv/bin/python -m bench.encryption [--streams 200] [--seconds 60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from siprecd.crypto.at_rest import AtRest
from siprecd.crypto.keystore import MemoryKeyStore
from siprecd.recording.wav import WavWriter

FRAME = bytes(range(256)) * 1 + bytes(64)  # 320 bytes: 20 ms of 8 kHz 16-bit PCM
FRAMES_PER_SECOND = 50


def run(directory: str, streams: int, seconds: int, open_file: object) -> float:
    writers = [
        WavWriter(os.path.join(directory, f"s{i}.wav"), sample_rate=8000, first_chunk=16384, open_file=open_file)  # type: ignore[arg-type]
        for i in range(streams)
    ]
    start = time.process_time()
    for _ in range(seconds):
        for _ in range(FRAMES_PER_SECOND):
            for writer in writers:
                writer.write(FRAME)
        for writer in writers:
            writer.flush()
    for writer in writers:
        writer.finalize()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    store = MemoryKeyStore()
    variants = {
        "clear": None,
        "AES-256-GCM": AtRest(store, "AES-256-GCM").open_audio(),
        "ChaCha20-Poly1305": AtRest(store, "ChaCha20-Poly1305").open_audio(),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, open_file in variants.items():
            with tempfile.TemporaryDirectory() as directory:
                times[name].append(run(directory, args.streams, args.seconds, open_file))
    baseline = statistics.median(times["clear"])
    stream_seconds = args.streams * args.seconds
    print(f"{args.streams} streams x {args.seconds} s of 8 kHz PCM, {args.rounds} rounds, median CPU:")
    parts = []
    for name, values in times.items():
        median = statistics.median(values)
        per = median / stream_seconds * 1e6
        print(f"  {name:18} {median:7.3f} s  ({per:6.1f} us CPU per stream-second)  ratio {median / baseline:5.2f}x")
        parts.append(f"{name} {median / baseline:.2f}x")
    print("summary: encryption CPU vs clear baseline: " + ", ".join(parts[1:]))


if __name__ == "__main__":
    main()
