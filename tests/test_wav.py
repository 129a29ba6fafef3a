"""WAV writer (valid while growing, atomic finalize, typed write errors) and crash recovery."""

from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import textwrap
import wave

from twisted.trial import unittest

from siprecd.recording import recovery, wav
from siprecd.recording.wav import MAX_WAV_DATA, RecordingSizeLimit, RecordingWriteError, WavWriter


def read_wav(path: str) -> tuple[wave._wave_params, bytes]:
    with wave.open(path, "rb") as reader:
        params = reader.getparams()
        return params, reader.readframes(params.nframes)


def ramp(frames: int, start: int = 0, channels: int = 1) -> bytes:
    """Distinct 16-bit samples, so a lost or shifted chunk shows."""
    return b"".join(struct.pack("<h", (start + i) % 30000) * channels for i in range(frames))


class WavWriterTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "stream-a.wav")

    def test_header_valid_after_each_flush(self) -> None:
        writer = WavWriter(self.path, sample_rate=8000, chunk_size=1000, first_chunk=1000)
        self.assertEqual(writer.part_path, self.path + ".part")
        self.assertFalse(os.path.exists(self.path))
        params, _ = read_wav(writer.part_path)  # a valid empty WAV from the start
        self.assertEqual((params.nchannels, params.sampwidth, params.framerate, params.nframes), (1, 2, 8000, 0))
        written = b""
        flushes = 0
        for n in range(40):
            chunk = ramp(160, start=160 * n)  # one 20 ms packet
            writer.write(chunk)
            written += chunk
            on_disk = os.path.getsize(writer.part_path) - 44
            self.assertEqual(on_disk, writer.data_size)
            self.assertEqual(on_disk + writer.buffered, len(written))
            self.assertLess(writer.buffered, 1000)  # size-triggered: never holds a full chunk
            params, frames = read_wav(writer.part_path)  # the file is open and growing
            self.assertEqual(params.nframes, on_disk // 2)
            self.assertEqual(frames, written[:on_disk])
            flushes += on_disk != 0 and on_disk == len(written)
        self.assertGreater(flushes, 5)
        self.assertEqual(writer.finalize(), self.path)
        params, frames = read_wav(self.path)
        self.assertEqual(frames, written)
        self.assertEqual(params.framerate, 8000)

    def test_buffered_pcm_from_a_reused_buffer_is_copied(self) -> None:
        # Buffered pieces are kept as given when they are bytes; a bytearray or memoryview the
        # caller refills after write() returns must not change what reaches the file.
        writer = WavWriter(self.path, sample_rate=8000, chunk_size=1000, first_chunk=1000)
        scratch = bytearray(ramp(160))
        writer.write(scratch)
        writer.write(memoryview(scratch)[:160])
        piece = ramp(80, start=500)
        writer.write(piece)
        self.assertEqual(writer.buffered, 320 + 160 + 160)
        self.assertEqual(writer.frames, 320)
        expected = bytes(scratch) + bytes(scratch[:160]) + piece
        scratch[:] = bytes(len(scratch))
        writer.finalize()
        self.assertEqual(read_wav(self.path)[1], expected)

    def test_first_chunk_is_staggered(self) -> None:
        sizes = set()
        for n in range(20):
            writer = WavWriter(os.path.join(self.directory, f"s{n}.wav"), sample_rate=8000, chunk_size=16384)
            while writer.data_size == 0:
                writer.write(bytes(320))
            sizes.add(writer.data_size)
            self.assertTrue(8192 <= writer.data_size < 16384 + 320)
            writer.close()
        self.assertGreater(len(sizes), 1)

    def test_stereo(self) -> None:
        writer = WavWriter(self.path, sample_rate=16000, channels=2, chunk_size=4096)
        data = ramp(3000, channels=2)
        writer.write(data)
        self.assertRaises(ValueError, writer.write, b"\0\0")  # half a stereo frame
        writer.finalize()
        params, frames = read_wav(self.path)
        self.assertEqual((params.nchannels, params.framerate, params.nframes), (2, 16000, 3000))
        self.assertEqual(frames, data)

    def test_finalize_is_atomic_and_idempotent(self) -> None:
        writer = WavWriter(self.path, sample_rate=8000, chunk_size=100000)
        writer.write(ramp(800))
        self.assertEqual(os.listdir(self.directory), ["stream-a.wav.part"])
        writer.finalize()
        self.assertEqual(os.listdir(self.directory), ["stream-a.wav"])
        self.assertEqual(writer.finalize(), self.path)
        self.assertEqual(read_wav(self.path)[1], ramp(800))
        self.assertRaises(ValueError, writer.write, b"\0\0")

    def test_failed_fsync_publishes_nothing(self) -> None:
        writer = WavWriter(self.path, sample_rate=8000)
        writer.write(ramp(800))

        def fsync(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        self.patch(os, "fsync", fsync)
        error = self.assertRaises(RecordingWriteError, writer.finalize)
        self.assertEqual(error.errno, errno.EIO)
        self.assertFalse(os.path.exists(self.path))
        self.assertTrue(os.path.exists(writer.part_path))

    def test_never_replaces_an_existing_recording(self) -> None:
        with open(self.path, "wb") as existing:
            existing.write(b"earlier recording")
        writer = WavWriter(self.path, sample_rate=8000)
        writer.write(ramp(10))
        error = self.assertRaises(RecordingWriteError, writer.finalize)
        self.assertEqual(error.errno, errno.EEXIST)
        with open(self.path, "rb") as existing:
            self.assertEqual(existing.read(), b"earlier recording")
        self.assertTrue(os.path.exists(writer.part_path))

    def test_existing_part_file_is_an_error(self) -> None:
        WavWriter(self.path, sample_rate=8000).close()
        error = self.assertRaises(RecordingWriteError, WavWriter, self.path, sample_rate=8000)
        self.assertEqual(error.errno, errno.EEXIST)

    def test_enospc_simulated(self) -> None:
        writer = WavWriter(self.path, sample_rate=8000, chunk_size=1000, first_chunk=1000)
        writer.write(ramp(600))  # 1200 bytes: first flush succeeds
        self.assertEqual(writer.data_size, 1200)
        real_write = os.write
        calls = []

        def write(fd: int, data: bytes) -> int:
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data)[:301])  # short write: 150.5 frames reach the disk
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "write", write)
        error = self.assertRaises(RecordingWriteError, writer.write, ramp(600, start=600))
        self.assertTrue(error.disk_full)
        self.assertEqual(error.errno, errno.ENOSPC)
        self.assertEqual(error.path, writer.part_path)
        self.assertIs(writer.failed, error)
        # The writer refuses more without touching the disk again.
        self.assertRaises(RecordingWriteError, writer.write, ramp(10))
        self.assertEqual(len(calls), 2)
        # Ending the session cleanly: whole frames on disk are kept and published.
        writer.finalize()
        params, frames = read_wav(self.path)
        self.assertEqual(params.nframes, 600 + 150)
        self.assertEqual(frames, ramp(750))

    def test_enospc_real(self) -> None:
        # /dev/full fails every write with ENOSPC: put it under the writer's descriptor.
        writer = WavWriter(self.path, sample_rate=8000, chunk_size=640, first_chunk=640)
        full = os.open("/dev/full", os.O_WRONLY)
        self.addCleanup(os.close, full)
        saved = os.dup(writer._file._fd)
        self.addCleanup(os.close, saved)
        os.dup2(full, writer._file._fd)
        error = self.assertRaises(RecordingWriteError, writer.write, bytes(640))
        self.assertTrue(error.disk_full)
        os.dup2(saved, writer._file._fd)
        writer.finalize()
        self.assertEqual(read_wav(self.path)[0].nframes, 0)

    def test_size_limit(self) -> None:
        writer = WavWriter(self.path, sample_rate=8000, chunk_size=10**9)
        writer.write(bytes(8))
        writer.data_size = MAX_WAV_DATA - 10  # as if 4 GiB had been written
        error = self.assertRaises(RecordingSizeLimit, writer.write, bytes(4))
        self.assertEqual(error.errno, errno.EFBIG)
        self.assertIsInstance(error, RecordingWriteError)
        self.assertEqual(writer.buffered, 8)  # the refused data was not taken
        writer.write(bytes(2))
        writer.close()

    def test_header_bytes(self) -> None:
        header = wav.wav_header(16000, 2, 1000)
        self.assertEqual(len(header), 44)
        self.assertEqual(
            struct.unpack("<4sI4s4sIHHIIHH4sI", header),
            (b"RIFF", 1036, b"WAVE", b"fmt ", 16, 1, 2, 16000, 64000, 4, 16, b"data", 1000),
        )


CHILD = textwrap.dedent(
    """
    import os, struct, sys, time
    from siprecd.recording.wav import WavWriter
    writer = WavWriter(sys.argv[1], sample_rate=8000, chunk_size=1600, first_chunk=1600)
    for n in range(23):
        writer.write(b"".join(struct.pack("<h", 160 * n + i) for i in range(160)))
    sys.stdout.write(f"{writer.data_size} {writer.buffered}\\n")
    sys.stdout.flush()
    time.sleep(60)
    """
)


class KillTests(unittest.TestCase):
    def test_kill_9_leaves_a_playable_file_that_recovery_publishes(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "stream-x.wav")
        root = os.path.dirname(os.path.dirname(os.path.abspath(wav.__file__)))
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, path],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": root},
            text=True,
        )
        try:
            flushed, buffered = map(int, child.stdout.readline().split())
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        self.assertEqual((flushed, buffered), (6400, 960))
        params, frames = read_wav(path + ".part")
        self.assertEqual(params.nframes, 3200)
        self.assertEqual(frames, ramp(3200))
        results = recovery.recover_directory(directory)
        self.assertEqual([(r.outcome, r.kind, r.audio_bytes, r.removed_bytes) for r in results],
                         [("recovered", "wav", 6400, 0)])
        self.assertEqual(os.listdir(directory), ["stream-x.wav"])
        self.assertEqual(read_wav(path)[1], ramp(3200))


class RecoveryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    def stale_part(self, name: str, frames: int, extra: bytes = b"", channels: int = 1) -> str:
        """A .part file whose header says 0 bytes of data (as right after creation)."""
        path = os.path.join(self.directory, name + ".part")
        with open(path, "wb") as handle:
            handle.write(wav.wav_header(8000, channels, 0) + ramp(frames, channels=channels) + extra)
        return path

    def test_stale_header_and_torn_sample(self) -> None:
        self.stale_part("stream-a.wav", 1000, extra=b"\x01")
        self.stale_part("mix.wav", 500, extra=b"\x01\x02\x03", channels=2)
        results = recovery.recover_directory(self.directory)
        self.assertEqual(
            [(os.path.basename(r.path), r.outcome, r.audio_bytes, r.removed_bytes) for r in results],
            [("mix.wav", "recovered", 2000, 3), ("stream-a.wav", "recovered", 2000, 1)],
        )
        params, frames = read_wav(os.path.join(self.directory, "stream-a.wav"))
        self.assertEqual(frames, ramp(1000))
        params, frames = read_wav(os.path.join(self.directory, "mix.wav"))
        self.assertEqual((params.nchannels, params.nframes), (2, 500))
        self.assertEqual(sorted(os.listdir(self.directory)), ["mix.wav", "stream-a.wav"])
        with open(os.path.join(self.directory, "stream-a.wav"), "rb") as handle:
            riff_size = struct.unpack_from("<I", handle.read(8), 4)[0]
        self.assertEqual(riff_size, 36 + 2000)

    def test_header_only(self) -> None:
        self.stale_part("empty.wav", 0)
        (result,) = recovery.recover_directory(self.directory)
        self.assertEqual((result.outcome, result.audio_bytes), ("recovered", 0))
        self.assertEqual(read_wav(result.path)[0].nframes, 0)

    def test_what_is_left_alone(self) -> None:
        with open(os.path.join(self.directory, "notes.txt.part"), "wb") as handle:
            handle.write(b"not audio")
        with open(os.path.join(self.directory, "short.wav.part"), "wb") as handle:
            handle.write(b"RIFF\0\0\0\0WAVEfmt ")
        self.stale_part("taken.wav", 10)
        with open(os.path.join(self.directory, "taken.wav"), "wb") as handle:
            handle.write(b"another file")
        with open(os.path.join(self.directory, "done.wav"), "wb") as handle:
            handle.write(wav.wav_header(8000, 1, 0))
        results = {os.path.basename(r.part): r.outcome for r in recovery.recover_directory(self.directory)}
        self.assertEqual(
            results,
            {"notes.txt.part": "unrecognised", "short.wav.part": "unrecognised", "taken.wav.part": "conflict"},
        )
        self.assertEqual(
            sorted(os.listdir(self.directory)),
            ["done.wav", "notes.txt.part", "short.wav.part", "taken.wav", "taken.wav.part"],
        )

    def test_crash_between_link_and_unlink(self) -> None:
        part = self.stale_part("s.wav", 10)
        os.link(part, os.path.join(self.directory, "s.wav"))
        (result,) = recovery.recover_directory(self.directory)
        self.assertEqual(result.outcome, "duplicate")
        self.assertEqual(os.listdir(self.directory), ["s.wav"])

    def test_missing_directory(self) -> None:
        self.assertEqual(recovery.recover_directory(os.path.join(self.directory, "gone")), [])
