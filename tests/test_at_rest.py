"""What the recorder writes at rest: clear or sealed files, and the redacted session.json."""

from __future__ import annotations

import io
import json
import os

from twisted.trial.unittest import SynchronousTestCase

from siprecd.recording.wav import PartFile
from siprecd.crypto.at_rest import PRIVATE_FILE, AtRest, redact
from siprecd.crypto.files import decrypt_stream, is_encrypted
from siprecd.crypto.keystore import MemoryKeyStore
from siprecd.ctl.main import main

DOCUMENT = {
    "session_id": "s1",
    "call_id": "c1",
    "state": "ended",
    "participants": [{"id": "p1", "aor": "sip:alice@example.com"}],
    "sip": {"from": "<sip:alice@example.com>"},
    "metadata": {"numbers": ["+15551234"]},
    "streams": [{"label": "a", "file": "stream-1-a.wav.enc", "sending_participants": ["p1"], "events": [{"digit": "5"}]}],
    "mix": {"file": "mix-stereo.wav.enc", "channels": [{"channel": "left", "sending_participants": ["p1"]}]},
    "metadata_versions": [{"index": 1, "file": "metadata-0001.xml.enc", "error": "line 3: <secret>"}],
}


class AtRestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.keys = MemoryKeyStore()

    def test_clear_by_default(self) -> None:
        at_rest = AtRest(None)
        self.assertEqual((at_rest.audio_name("x.wav"), at_rest.metadata_name("m.xml")), ("x.wav", "m.xml"))
        # Clear files too are opened through it: published by the durable writer.
        part = at_rest.open_audio()(os.path.join(self.mktemp() + "-x.wav"))
        self.addCleanup(os.unlink, part.part_path)
        self.assertIsInstance(part, PartFile)
        self.assertIs(part.durable, at_rest.durable)
        part.close()
        at_rest.write_session(self.directory, dict(DOCUMENT))
        with open(os.path.join(self.directory, "session.json")) as handle:
            self.assertEqual(json.load(handle), DOCUMENT)
        self.assertEqual(sorted(os.listdir(self.directory)), ["session.json"])

    def test_redact_keeps_no_personal_field(self) -> None:
        public = redact(DOCUMENT)
        text = json.dumps(public)
        for secret in ("alice", "+15551234", "p1", "digit", "<secret>"):
            self.assertNotIn(secret, text)
        self.assertEqual(public["streams"], [{"label": "a", "file": "stream-1-a.wav.enc"}])
        self.assertEqual(public["mix"]["channels"], [{"channel": "left"}])
        self.assertEqual(public["metadata_versions"], [{"index": 1, "file": "metadata-0001.xml.enc"}])

    def test_encrypt_metadata_seals_private_data_and_rewrites_it(self) -> None:
        at_rest = AtRest(self.keys, "AES-256-GCM", encrypt_metadata=True)
        self.assertEqual(at_rest.metadata_name("m.xml"), "m.xml.enc")
        for state in ("active", "ended"):
            at_rest.write_session(self.directory, dict(DOCUMENT, state=state))
        with open(os.path.join(self.directory, "session.json")) as handle:
            public = json.load(handle)
        self.assertEqual(public["private_file"], PRIVATE_FILE)
        self.assertNotIn("participants", public)
        sealed = os.path.join(self.directory, PRIVATE_FILE)
        self.assertTrue(is_encrypted(sealed))
        out = io.BytesIO()
        with open(sealed, "rb") as handle:
            status = decrypt_stream(handle, out, self.keys)
        self.assertEqual(status.state, "ok")
        self.assertEqual(json.loads(out.getvalue()), dict(DOCUMENT, state="ended"))
        self.assertEqual(sorted(os.listdir(self.directory)), [PRIVATE_FILE, "session.json"])

    def test_store_metadata_sealed_once(self) -> None:
        at_rest = AtRest(self.keys, "ChaCha20-Poly1305", encrypt_metadata=True)
        path = os.path.join(self.directory, "metadata-0001.xml.enc")
        at_rest.store_metadata(path, b"<recording/>")
        out = io.BytesIO()
        with open(path, "rb") as handle:
            self.assertEqual(decrypt_stream(handle, out, self.keys).state, "ok")
        self.assertEqual(out.getvalue(), b"<recording/>")


class SiprecctlTests(SynchronousTestCase):
    def test_bad_configuration_exits_2(self) -> None:
        self.patch(os, "environ", {"SIPRECD_ENCRYPTION_ALGORITHM": "rot13"})
        self.assertEqual(main(["keys", "list"]), 2)

    def test_memory_store_has_nothing_for_the_tool(self) -> None:
        self.patch(os, "environ", {"SIPRECD_ENCRYPTION_KEY_STORE": "memory"})
        self.assertEqual(main(["keys", "list"]), 1)
