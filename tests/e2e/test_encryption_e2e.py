"""Encryption at rest end to end: a call recorded by ``twistd -n siprec`` with [encryption] on,
then ``siprecctl`` (a separate process, the operator's tool) verifies and decrypts the files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave

import numpy as np

from tests.audio import assert_near, dominant_frequency, read_wav
from tests.e2e.server import REPOSITORY, Server
from tests.e2e.test_media_e2e import TONE_A, TONE_B, MediaTestCase, stream

PASSPHRASE = "correct horse battery staple"


def encryption_section(directory: str, **changes: str) -> dict[str, str]:
    """[encryption] on, a file key store under ``directory``, a cheap KDF for tests."""
    keys = os.path.join(os.path.abspath(directory), "keys")
    return {"enabled": "true", "key_directory": keys, "kdf_cost": "10", **changes}


def siprecctl(server: Server, *arguments: str, passphrase: str = PASSPHRASE) -> subprocess.CompletedProcess[str]:
    """The operator's tool against ``server``'s configuration, as a separate process."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SIPRECD_")}
    environment.update(PYTHONPATH=REPOSITORY, SIPRECD_ENCRYPTION_PASSPHRASE=passphrase)
    config = os.path.join(server.directory, "siprecd.conf")
    return subprocess.run(
        [sys.executable, "-m", "siprecd.ctl", "--config", config, *arguments],
        capture_output=True, text=True, env=environment, timeout=60,
    )


class EncryptedCallTests(MediaTestCase):
    def start_server(self, directory: str) -> Server:
        section = encryption_section(directory, algorithm="ChaCha20-Poly1305", encrypt_metadata="true")
        self.keys = section["key_directory"]
        server = Server(
            directory,
            sections={"encryption": section, "recording": {"flush_interval": "0.2"}},
            environment={"SIPRECD_ENCRYPTION_PASSPHRASE": PASSPHRASE},
        )
        server.start()
        self.addCleanup(self._stop, server)
        return server

    def siprecctl(self, *arguments: str, passphrase: str = PASSPHRASE) -> subprocess.CompletedProcess[str]:
        return siprecctl(self.server, *arguments, passphrase=passphrase)

    def test_call_encrypted_then_decrypted_with_siprecctl(self) -> None:
        client = self.client()
        streams = [stream("PCMU", "a", TONE_A, 2.0), stream("PCMU", "b", TONE_B, 2.0)]
        self.start_call(client, streams)
        client.send_rtp(streams)
        self.end_call(client)
        document, directory = self.session(client.call_id)
        # session.json keeps no personal data; it lives sealed beside it.
        self.assertNotIn("participants", document)
        self.assertNotIn("sip", document)
        self.assertEqual(document["private_file"], "session-private.json.enc")
        names = sorted(os.listdir(directory))
        self.assertEqual([n for n in names if n.endswith((".wav", ".xml", ".sdp"))], [], names)
        files = [s["file"] for s in document["streams"]] + [document["mix"]["file"]]
        self.assertEqual(files, ["stream-1-a.wav.enc", "stream-2-b.wav.enc", "mix-stereo.wav.enc"])
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                self.assertFalse(handle.read(64).startswith(b"RIFF"), f"{name} is in clear")

        paths = [os.path.join(directory, n) for n in names if n.endswith(".enc")]
        verified = self.siprecctl("verify", *paths)
        self.assertEqual(verified.returncode, 0, verified.stdout + verified.stderr)
        self.assertEqual(verified.stdout.count(": ok ("), len(paths), verified.stdout)

        for name, frequency in zip(files[:2], (TONE_A, TONE_B)):
            output = os.path.join(self.server.directory, name[:-4])
            decrypted = self.siprecctl("decrypt", os.path.join(directory, name), output)
            self.assertEqual(decrypted.returncode, 0, decrypted.stdout + decrypted.stderr)
            rate, channels, samples = read_wav(output)
            self.assertEqual((rate, channels), (8000, 1))
            assert_near(self, dominant_frequency(samples[-8000:], rate), frequency, 3)
        private = os.path.join(self.server.directory, "private.json")
        result = self.siprecctl("decrypt", os.path.join(directory, "session-private.json.enc"), private)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        with open(private, encoding="utf-8") as handle:
            full = json.load(handle)
        self.assertEqual([p["aor"] for p in full["participants"]], ["sip:party0@example.com", "sip:party1@example.com"])

        wrong = self.siprecctl("verify", paths[0], passphrase="wrong")
        self.assertEqual(wrong.returncode, 1, wrong.stdout + wrong.stderr)
        self.assertIn("passphrase", wrong.stderr)

        listed = self.siprecctl("keys", "list")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertEqual(len(listed.stdout.splitlines()), 1)
        self.assertTrue(listed.stdout.rstrip().endswith("current"), listed.stdout)

    def seconds_sealed(self, part: str, output: str) -> float:
        """Seconds of audio in ``part`` (a running server's .enc.part) after its first sound."""
        self.siprecctl("decrypt", part, output)  # status 1 for a truncated file: read what it wrote
        try:
            rate, _, samples = read_wav(output)
        except (OSError, EOFError, wave.Error):
            return 0.0
        sound = np.flatnonzero(samples)
        return (len(samples) - int(sound[0])) / rate if len(sound) else 0.0

    def test_kill_9_leaves_truncated_not_corrupt_files(self) -> None:
        client = self.client()
        streams = [stream("PCMU", "a", TONE_A, 1.5), stream("PCMU", "b", TONE_B, 1.5)]
        self.start_call(client, streams)
        client.send_rtp(streams)
        _, directory = self.session(client.call_id)
        part = os.path.join(directory, "stream-1-a.wav.enc.part")
        polled = os.path.join(self.server.directory, "polled.wav")
        # Until the periodic flushes have sealed every packet in a chunk: polled, not slept
        # for, as the server's pace depends on the machine's load.
        deadline = time.monotonic() + 20
        while self.seconds_sealed(part, polled) < 1.5 - 0.01 and time.monotonic() < deadline:
            time.sleep(0.2)
        process = self.server.process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.server.process = None
        self.assertTrue(os.path.exists(part), os.listdir(directory))
        verified = self.siprecctl("verify", part)
        self.assertEqual(verified.returncode, 1)
        self.assertIn("truncated at chunk", verified.stdout)
        output = os.path.join(self.server.directory, "partial.wav")
        self.siprecctl("decrypt", part, output)
        rate, _, samples = read_wav(output)
        self.assertGreaterEqual(len(samples) / rate, 1.4)  # the session start, then 1.5 s of tone
        assert_near(self, dominant_frequency(samples[-4000:], rate), TONE_A, 3)
