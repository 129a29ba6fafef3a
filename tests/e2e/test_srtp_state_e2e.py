"""A secured call survives ``kill -9``: SDES SRTP from :mod:`tests.e2e.src`, the server killed
mid-call and started again on the same directory, state store and key store; the SRC keeps
sending SRTP under the same keys, re-INVITEs with them (the SRS answers its own key again) and
hangs up.  One session, the tone before and after the restart, BYE answered 200, and no key in
the state store's raw bytes.  Then the same through Redis: a session taken over (RFC 3891
Replaces) by a second node after the first is killed, and no key in Redis's values.  (The state is sealed under the key store's KEK, so this server
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
from tests.e2e.test_redundancy_e2e import (
    RECORDING,
    RedisTestCase,
    RedundancyTestCase,
    get_json,
    kill_9,
    read_json,
    sessions,
    wait_for,
)

SUITES = {"a": ("AES_CM_128_HMAC_SHA1_80", 30), "b": ("AES_256_CM_HMAC_SHA1_80", 46)}
# The SRC's random start: stream "a" begins at sequence number 65491, so it rolls over (ROC 1)
# 0.9 s into the call, before the kill: a fresh libsrtp context after the restart would refuse it.
SEED_ROLLING_OVER = 7122


def answered_keys(client: Any) -> dict[str, bytes]:
    """The SRS's own SDES key||salt per label, from the client's last answer."""
    out = {}
    for m in client.answer.media:
        (value,) = m.attribute_values("crypto")
        key = parse_crypto(value or "").keys[0]
        out[m.label] = key.key + key.salt
    return out


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

    def test_kill_9_restart_src_keeps_sending_srtp_then_bye(self) -> None:
        client = self.client()
        streams = [
            stream("PCMA", label, tone, 5.0, crypto=(SUITES[label][0], os.urandom(SUITES[label][1])))
            for label, tone in (("a", TONE_A), ("b", TONE_B))
        ]
        self.start_call(client, streams)
        ours = answered_keys(client)
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
        self.assertEqual(answered_keys(client), ours)
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


class SecuredTakeoverTests(RedisTestCase):
    """Two nodes, one Redis, one key store (the cluster's KEKs): node A records an SDES call and
    is killed; the SRC's INVITE with Replaces goes to node B, which carries the SRTP agreement
    on from node A's record (sealed in Redis): the same SRS key in its answer, the SRC's stream
    (past its rollover) authenticating on node B without a new key."""

    def setUp(self) -> None:
        self.keys = os.path.join(os.path.abspath(self.mktemp()), "keys")
        self.node = "node-a"
        super().setUp()
        self.node = "node-b"
        self.other = self.start_server(self.mktemp())
        for node in (self.server, self.other):
            wait_for(lambda: get_json(node.web_port, "/ready")[1]["status"] == "ready", "nodes ready with Redis")

    def start_server(self, directory: str) -> Server:
        server = Server(
            directory,
            sections={
                "recording": dict(RECORDING),
                "state": dict(self.state, node_id=self.node, lease="2"),
                "encryption": encryption_section(directory, key_directory=self.keys),
            },
            environment={"SIPRECD_ENCRYPTION_PASSPHRASE": PASSPHRASE},
        )
        server.start()
        self.addCleanup(self._stop, server)
        return server

    def redis_values(self) -> bytes:
        """Every value siprecd keeps in Redis, raw (strings and hashes)."""
        reply = self.redis.command("KEYS", "siprecd:*").decode()
        values = []
        for name in [line for line in reply.split("\r\n") if line.startswith("siprecd:")]:
            kind = self.redis.command("TYPE", name)
            values.append(self.redis.command("HGETALL" if b"hash" in kind else "GET", name))
        return b"".join(values)

    def test_sdes_session_taken_over_from_a_dead_node(self) -> None:
        client = self.client()
        streams = [stream("PCMA", "a", TONE_A, 7.0, crypto=(SUITES["a"][0], os.urandom(SUITES["a"][1])))]
        self.start_call(client, streams)
        ours = answered_keys(client)
        sent: dict[str, Any] = {}
        sender = threading.Thread(target=lambda: sent.setdefault("report", client.send_rtp(streams, seed=SEED_ROLLING_OVER)))
        sender.start()
        time.sleep(1.5)  # past the rollover, a few ticks stored
        (directory,) = sessions(self.server.recordings)
        session_id = read_json(directory)["session_id"]
        raw = self.redis_values()
        self.assertIn(session_id.encode(), raw)
        for secret in (streams[0].crypto[1], ours["a"]):
            for form in (secret, base64.b64encode(secret), secret.hex().encode()):
                self.assertNotIn(form, raw, "a key in clear in Redis")
        kill_9(self.server)
        wait_for(lambda: self.redis.command("EXISTS", f"siprecd:owner:{session_id}").startswith(b":0"), "the lease to run out")
        client.extra_headers = [f"Replaces: {client.replace_dialog()}", "Require: replaces"]
        client.server = ("127.0.0.1", self.other.sip_port)
        response = client.invite(streams)  # the same key: node B answers node A's SRS key
        self.assertEqual(response.status, 200, response)
        self.assertEqual(answered_keys(client), ours)
        switched_at = time.time()
        sender.join(30)
        self.assertGreater(sent["report"].last(), switched_at + 1.0, "the SRC was still sending to node B")
        self.assertEqual(client.bye().status, 200)

        (taken_dir,) = sessions(self.other.recordings)
        taken = read_json(taken_dir)
        self.assertEqual((taken["session_id"], taken["state"]), (session_id, "ended"))
        (resumption,) = taken["resumptions"]
        self.assertEqual((resumption["how"], resumption["previous_node"]), ("replaces", "node-a"))
        (entry,) = taken["streams"]
        security = entry["stream_security"]
        self.assertEqual((security["method"], security["restored"]["how"], security["restored"]["roc"]), ("sdes", "replaces", "carried"))
        (highest,) = security["restored"]["highest_index"].values()
        self.assertGreaterEqual(highest, 65536, "carried over past its rollover")
        self.assertEqual(entry["reception"]["srtp_auth_failures"], 0)
        output = os.path.join(self.other.directory, "taken.wav")
        decrypted = siprecctl(self.other, "decrypt", os.path.join(taken_dir, entry["file"]), output)
        self.assertEqual(decrypted.returncode, 0, decrypted.stdout + decrypted.stderr)
        rate, _, samples = read_wav(output)
        heard = samples[samples != 0]
        self.assertGreater(len(heard), rate, f"{len(heard)} samples of tone on node B")
        assert_near(self, dominant_frequency(heard[-rate:], rate), TONE_A, 5, "tone on node B")
