"""DTLS-SRTP SIPREC calls end to end: a DTLS peer written with pyOpenSSL (tests/e2e/dtls_src.py)
handshakes with ``twistd -n siprec`` on the stream's RTP port and sends SRTP; siprecd records it.

Two calls, one per SRS role: siprecd active (the default answer to ``a=setup:actpass``) and
siprecd passive (``[security] dtls_setup = passive``).  Checked: the answer (proto, a=setup,
a=fingerprint of the certificate the peer then sees), plain RTP sent before the handshake is
not recorded, the tone in the recorded file, session.json's method, suite and DTLS role, the
metrics, and no key material in session.json or the log.
"""

from __future__ import annotations

import json
import os
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from siprecd.media.rtp import build_rtp
from tests.audio import dominant_frequency, onset, read_wav
from tests.e2e.dtls_src import DTLSSRCClient
from tests.e2e.server import Server
from tests.e2e.test_media_e2e import MediaTestCase, stream

SECONDS = 1.5
TONE = 440.0


class DTLSCallMixin(MediaTestCase):
    srs_role = "active"
    security: dict[str, str] = {}
    profile = suite = ""
    key_salt = (0, 0)

    def start_server(self, directory: str) -> Server:
        server = Server(directory, sections={"security": dict(self.security)})
        server.start()
        self.addCleanup(self._stop, server)
        return server

    def test_dtls_srtp_call_recorded(self) -> None:
        client = DTLSSRCClient(self.server.sip_port)
        self.addCleanup(client.close)
        spec = stream("PCMU", "a", TONE, SECONDS, **client.dtls_attributes("actpass"))
        self.start_call(client, [spec])
        [m] = client.answer.media
        self.assertEqual(m.proto, "UDP/TLS/RTP/SAVP")
        self.assertEqual(m.attribute("setup"), self.srs_role)
        self.assertTrue((m.attribute("fingerprint") or "").startswith("sha-256 "))
        self.assertIsNotNone(m.attribute("tls-id"))

        # Plain RTP before the keys exist must not be recorded (nor latch the stream).
        target = ("127.0.0.1", client.answer_ports["a"])
        client.plain_rtp.sendto(build_rtp(0, 1, 1, 1234, b"\xff" * 160), target)
        profile = client.handshake()  # checks the SRS certificate against the answer
        # The DTLS server picks the profile by its own order: this peer lists AES128_CM_SHA1_80
        # first, the SRS's [security] suites put AEAD_AES_256_GCM first.
        self.assertEqual(profile, self.profile)
        report = client.send_rtp([spec])
        self.end_call(client)

        document, directory = self.session(client.call_id)
        entry = self.streams_by_label(document)["a"]
        security = entry["stream_security"]
        self.assertEqual(security["method"], "dtls-srtp")
        self.assertEqual(security["suite"], self.suite)
        self.assertEqual(security["dtls"]["role"], self.srs_role)
        self.assertEqual(security["dtls"]["profile"], profile)
        self.assertEqual(security["dtls"]["handshakes"], 1)
        self.assertEqual(entry["packets_received"], report.sent("a"))
        self.assertEqual(entry["reception"]["srtp_auth_failures"], 1)  # the plain packet
        self.assertGreater(entry["reception"]["dtls_datagrams"], 0)
        rate, _, samples = read_wav(os.path.join(directory, entry["file"]))
        start = onset(samples)
        self.assertIsNotNone(start, "recording is silent")
        heard = samples[start:]
        self.assertGreater(len(heard), rate)
        self.assertAlmostEqual(dominant_frequency(heard[:rate], rate), TONE, delta=5)

        with urllib.request.urlopen(f"http://127.0.0.1:{self.server.web_port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        handshakes = {
            (sample.labels["outcome"], sample.labels["role"], sample.labels["profile"], sample.labels["component"]): sample.value
            for family in text_string_to_metric_families(metrics)
            if family.name == "siprecd_dtls_handshakes"
            for sample in family.samples
        }
        # This peer runs no second association on its RTCP port (siprecd's would time out later).
        self.assertEqual(handshakes, {("completed", self.srs_role, self.profile, "rtp"): 1.0})

        # The exported keys never appear in session.json or the log.
        connection = client._connection
        key, salt = self.key_salt
        material = connection.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (key + salt))
        with open(os.path.join(directory, "session.json"), encoding="utf-8") as handle:
            text = handle.read()
        log = self.server.log()
        self.assertNotIn("Traceback", log)
        for secret in (material.hex(), material[:key].hex(), material[key : 2 * key].hex()):
            self.assertNotIn(secret, text)
            self.assertNotIn(secret, log)
        json.loads(text)


class SRSActiveTests(DTLSCallMixin):
    srs_role = "active"
    profile, suite, key_salt = "SRTP_AES128_CM_SHA1_80", "AES_CM_128_HMAC_SHA1_80", (16, 14)


class SRSPassiveTests(DTLSCallMixin):
    srs_role = "passive"
    security = {"dtls_setup": "passive"}
    profile, suite, key_salt = "SRTP_AEAD_AES_256_GCM", "AEAD_AES_256_GCM", (32, 12)


del DTLSCallMixin
