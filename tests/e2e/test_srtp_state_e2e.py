"""A secured call survives ``kill -9``: SDES SRTP from :mod:`tests.e2e.src`, the server killed
mid-call and started again on the same directory, state store and key store; the SRC keeps
sending SRTP under the same keys, re-INVITEs with them (the SRS answers its own key again) and
hangs up.  One session, the tone before and after the restart, BYE answered 200, and no key in
the state store's raw bytes.  (The state is sealed under the key store's KEK, so this server
runs with ``[encryption] enabled``: its recordings are decrypted with siprecctl to be heard.)
"""

from __future__ import annotations

import base64
import os
import threading
import time
from typing import Any

from siprecd.security.sdes import parse_crypto
from siprecd.state.local import default_path
from tests.audio import assert_near, dominant_frequency, read_wav
from tests.e2e.server import Server
from tests.e2e.test_encryption_e2e import PASSPHRASE, encryption_section, siprecctl
from tests.e2e.test_media_e2e import TONE_A, TONE_B, stream
from tests.e2e.test_redundancy_e2e import RECORDING, RedundancyTestCase, kill_9, read_json, sessions

SUITES = {"a": ("AES_CM_128_HMAC_SHA1_80", 30), "b": ("AES_256_CM_HMAC_SHA1_80", 46)}
# The SRC's random start: stream "a" begins at sequence number 65491, so it rolls over (ROC 1)
# 0.9 s into the call, before the kill: a fresh libsrtp context after the restart would refuse it.
SEED_ROLLING_OVER = 7122


class SecuredRestartTests(RedundancyTestCase):
    state = {"orphan_timeout": "30"}

    def start_server(self, directory: str) -> Server:
        server = Server(
            directory,
            sections={
                "recording": dict(RECORDING),
                "state": dict(self.state),
                "encryption": encryption_section(directory),
            },
            environment={"SIPRECD_ENCRYPTION_PASSPHRASE": PASSPHRASE},
        )
        server.start()
        self.addCleanup(self._stop, server)
        return server

    def answered_keys(self, client: Any) -> dict[str, bytes]:
        out = {}
        for m in client.answer.media:
            (value,) = m.attribute_values("crypto")
            key = parse_crypto(value or "").keys[0]
            out[m.label] = key.key + key.salt
        return out

    def test_kill_9_restart_src_keeps_sending_srtp_then_bye(self) -> None:
        client = self.client()
        streams = [
            stream("PCMA", label, tone, 5.0, crypto=(SUITES[label][0], os.urandom(SUITES[label][1])))
            for label, tone in (("a", TONE_A), ("b", TONE_B))
        ]
        self.start_call(client, streams)
        ours = self.answered_keys(client)
        sent: dict[str, Any] = {}
        sender = threading.Thread(target=lambda: sent.setdefault("report", client.send_rtp(streams, seed=SEED_ROLLING_OVER)))
        sender.start()
        time.sleep(1.5)
        kill_9(self.server)
        state = default_path(self.server.recordings)
        raw = b"".join(open(p, "rb").read() for p in (state, state + "-wal") if os.path.exists(p))
        self.assertIn(b"session_id", raw)
        for spec in streams:
            for secret in (spec.crypto[1], ours[spec.label]):
                for form in (secret, base64.b64encode(secret), secret.hex().encode()):
                    self.assertNotIn(form, raw, f"stream {spec.label}: a key in the state store")
        self.server.start()
        restarted_at = time.time()
        sender.join(30)
        self.assertGreater(sent["report"].last(), restarted_at + 1.0, "the SRC was still sending after the restart")
        reinvite = client.invite(streams)  # the same keys: the SRS keeps its own
        self.assertEqual(reinvite.status, 200, reinvite)
        self.assertEqual(self.answered_keys(client), ours)
        self.assertEqual(client.bye().status, 200)

        (directory,) = sessions(self.server.recordings)
        document = read_json(directory)
        self.assertEqual((document["state"], document["end_reason"]), ("ended", "BYE from the SRC"))
        (resumption,) = document["resumptions"]
        self.assertEqual((resumption["how"], resumption["segment"]), ("restart", 2))
        for spec, frequency in zip(streams, (TONE_A, TONE_B)):
            entry = {s["label"]: s for s in document["streams"]}[spec.label]
            what = f"stream {spec.label} ({spec.crypto[0]})"
            security = entry["stream_security"]
            self.assertEqual((security["method"], security["suite"]), ("sdes", spec.crypto[0]), what)
            self.assertEqual(security["restored"]["how"], "restart", what)
            self.assertEqual(security["restored"]["roc"], "carried", what)
            if spec.label == "a":
                (highest,) = security["restored"]["highest_index"].values()
                self.assertGreaterEqual(highest, 65536, f"{what}: restored past its rollover")
            # Every packet after the restart authenticated (ROC and replay state carried on).
            self.assertEqual(entry["reception"]["srtp_auth_failures"], 0, what)
            self.assertEqual(len(entry["segments"]), 2, what)
            for number, name in enumerate(entry["segments"], 1):
                output = os.path.join(self.server.directory, f"{spec.label}-{name}.wav")
                decrypted = siprecctl(self.server, "decrypt", os.path.join(directory, name), output)
                if number == 1:
                    # Cut by kill -9: recovered as far as its last sealed chunk, and said so.
                    self.assertIn(decrypted.returncode, (0, 1), decrypted.stdout + decrypted.stderr)
                    if decrypted.returncode:
                        self.assertIn("truncated at chunk", decrypted.stdout)
                else:
                    self.assertEqual(decrypted.returncode, 0, decrypted.stdout + decrypted.stderr)
                rate, _, samples = read_wav(output)
                heard = samples[samples != 0]  # A-law has no zero: zeros are the outage
                self.assertGreater(len(heard), rate // 2, f"{what} {name}: {len(heard)} samples of tone")
                assert_near(self, dominant_frequency(heard[-rate // 2:], rate), frequency, 5, f"{what} {name}")
