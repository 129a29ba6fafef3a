"""``GET /metrics`` end to end: a real ``twistd -n siprec``, real SIP and RTP on loopback.

One scenario makes every metric move: a key rotation at start-up (the key store's only key is
older than ``rotation_interval``), an OPTIONS, a non-SIP datagram and a malformed request, a
SIPREC call with two streams (PCMU and PCMA) carrying lost, late and duplicate packets, metadata
that is not XML in an INFO, a BYE, an SDES-secured call (G.722, AES_CM_128_HMAC_SHA1_80) with
a forged SRTP packet and an unauthenticated RTCP packet, a burst of out-of-dialog requests over the rate limit, and
finally a failed rotation: the key directory is opened to 0755 (which the key store refuses)
until the next scheduled rotation, 60 s after the first (the shortest interval the config
allows), so this test takes about a minute.  /metrics is scraped before, during and after.

The check is generic, so a metric nobody feeds fails this test: every ``siprecd_`` counter
family must have moved from its initial value, zero in a fresh process (the start-up rotation is
counted before the first scrape can happen), and never go down between scrapes (the hand-over
of a finished session's counts from the live streams to the totals); every gauge must change
between scrapes or hold a plausible non-zero value.  Exact values are checked where loopback
makes them deterministic.
"""

from __future__ import annotations

import glob
import os
import socket
import time
import urllib.request
import uuid

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from siprecd.crypto.keystore import FileKeyStore
from siprecd.media.rtcp import build_receiver_report
from siprecd.media.rtp import build_rtp
from tests.e2e.server import Server
from tests.e2e.src import SRCClient, StreamSpec

PACKETS = 100  # 2 s at 20 ms
MISSING = (10, 11, 12)  # never sent in time: given up as lost
LATE = 11  # sent again at packet 60, long after it was given up (max_reorder_delay 0.2 s)
DUPLICATE = 59  # sent twice
SILENCE = {0: b"\xff" * 160, 8: b"\xd5" * 160}  # PCMU and PCMA silence

# family -> {labels: value}
Scrape = dict[str, dict[frozenset[tuple[str, str]], float]]


class MetricsEndToEnd(SynchronousTestCase):
    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        self.keys = os.path.join(directory, "keys")
        # One key, made an hour ago: the server rotates at once on start.
        FileKeyStore(self.keys, passphrase=None, clock=lambda: time.time() - 3600).current()
        self.server = Server(
            directory,
            sections={
                "sip": {"rate_limit": "1", "rate_burst": "3"},
                "recording": {"flush_interval": "0.2"},
                "encryption": {"enabled": "true", "key_directory": self.keys, "rotation_interval": "60s"},
            },
        )
        self.server.start()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        os.chmod(self.keys, 0o700)
        code = self.server.stop()
        self.assertIn(code, (0, -15), f"twistd exit status {code}\n{self.server.log()}")

    # --- helpers -----------------------------------------------------------------------------

    def scrape(self) -> Scrape:
        url = f"http://127.0.0.1:{self.server.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            self.assertEqual(response.status, 200)
            self.assertTrue(response.headers["Content-Type"].startswith("text/plain; version=0.0.4"))
            text = response.read().decode()
        out: Scrape = {}
        for family in text_string_to_metric_families(text):
            samples = out.setdefault(family.name, {})
            for sample in family.samples:
                samples[frozenset(sample.labels.items())] = sample.value
        self.types.update({f.name: f.type for f in text_string_to_metric_families(text)})
        return out

    def value(self, scrape: Scrape, family: str, **labels: str) -> float:
        return scrape.get(family, {}).get(frozenset(labels.items()), 0.0)

    def wait_for(self, family: str, at_least: float, timeout: float = 10.0, **labels: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.value(self.scrape(), family, **labels) >= at_least:
                return
            time.sleep(0.25)
        self.fail(f"{family}{labels or ''} did not reach {at_least} in {timeout}s\n{self.server.log()[-4000:]}")

    def sip(self, data: bytes) -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.bind(("127.0.0.1", 0))
            sock.sendto(data, ("127.0.0.1", self.server.sip_port))
            try:
                return sock.recv(65535)
            except TimeoutError:
                return None

    def request(self, method: str, *, cseq: str | None = None) -> bytes:
        return (
            f"{method} sip:srs@127.0.0.1:{self.server.sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\nTo: <sip:srs@127.0.0.1>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: {cseq or '1 ' + method}\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def send_media(self, client: SRCClient, streams: list[StreamSpec]) -> dict[int, int]:
        """Both streams paced at 20 ms with MISSING held back, LATE sent at packet 60 and
        DUPLICATE twice; returns packets sent per payload type."""
        sent = {s.payload_type: 0 for s in streams}
        start = time.monotonic()
        for index in range(PACKETS):
            delay = start + index * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sequences = [] if index in MISSING else [index]
            if index == 60:
                sequences.append(LATE)
            if index == DUPLICATE:
                sequences.append(DUPLICATE)
            for spec in streams:
                for sequence in sequences:
                    packet = build_rtp(spec.payload_type, sequence, 160 * sequence, spec.ssrc, SILENCE[spec.payload_type])
                    client.rtp.sendto(packet, ("127.0.0.1", client.answer_ports[spec.label]))
                    sent[spec.payload_type] += 1
        return sent

    # --- the scenario ------------------------------------------------------------------------

    def test_every_metric_moves(self) -> None:
        self.types: dict[str, str] = {}
        scrapes = [self.scrape()]
        before = scrapes[0]

        self.wait_for("siprecd_key_rotations", 1)  # at start-up: the key was an hour old

        # SIP without a call: OPTIONS, something that is not SIP, a malformed request.
        self.assertTrue((self.sip(self.request("OPTIONS")) or b"").startswith(b"SIP/2.0 200 "))
        self.assertIsNone(self.sip(b"\x16\x03\x01\x00\x05hello"))
        reply = self.sip(self.request("OPTIONS", cseq="one OPTIONS")) or b""
        self.assertTrue(reply.startswith(b"SIP/2.0 400 "), reply)

        # A SIPREC call with RTP on two streams.
        client = SRCClient(self.server.sip_port)
        self.addCleanup(client.close)
        streams = [
            StreamSpec("a", 0, "PCMU/8000", [], 160, ssrc=0x1111),
            StreamSpec("b", 8, "PCMA/8000", [], 160, ssrc=0x2222),
        ]
        self.assertEqual(client.invite(streams).status, 200)
        sent = self.send_media(client, streams)
        # A session file the writer thread cannot make durable: a directory stands where the
        # INFO's metadata file goes (the rename fails); siprecd_durable_writes_failed counts it.
        (session_json,) = glob.glob(os.path.join(self.server.recordings, "*", "*", "*", "*", "session.json"))
        for name in ("metadata-0002.xml", "metadata-0002.xml.enc"):
            os.mkdir(os.path.join(os.path.dirname(session_json), name))
        client.sip.sendto(
            client._request("INFO", "<recording><not-xml", "application/rs-metadata+xml"), client.server
        )
        self.assertEqual(client._final("INFO").status, 200)
        time.sleep(0.5)  # a few flushes
        # Every packet read before the BYE closes the ports (the server's pace depends on load).
        self.wait_for("siprecd_rtp_packets", sent[0], codec="PCMU")
        self.wait_for("siprecd_rtp_packets", sent[8], codec="PCMA")
        during = self.scrape()
        scrapes.append(during)
        self.assertEqual(self.value(during, "siprecd_sessions_active"), 1)
        self.assertEqual(client.bye().status, 200)

        # An SDES call: ten SRTP packets, one forged SRTP packet, one plain (unauthenticated) RTCP.
        secured = SRCClient(self.server.sip_port)
        self.addCleanup(secured.close)
        srtp_stream = StreamSpec("s", 9, "G722/8000", [b"\0" * 160] * 10, 160,
                                 crypto=("AES_CM_128_HMAC_SHA1_80", os.urandom(30)))
        self.assertEqual(secured.invite([srtp_stream]).status, 200)
        port = secured.answer_ports["s"]
        secured.rtp.sendto(build_rtp(9, 1, 1, 77, b"\0" * 160) + b"\0" * 10, ("127.0.0.1", port))
        secured.send_rtp([srtp_stream])
        secured.rtp.sendto(build_receiver_report(77, [], "forger"), ("127.0.0.1", port + 1))
        self.wait_for("siprecd_rtp_packets", 10, codec="G722")
        self.wait_for("siprecd_srtp_auth_failures", 1, kind="rtcp")
        self.assertEqual(secured.bye().status, 200)

        # Out-of-dialog requests over the rate limit (1/s, burst 3): the later ones get 503.
        codes = [(self.sip(self.request("BYE")) or b"")[8:11] for _ in range(6)]
        self.assertIn(b"503", codes)

        # The next scheduled rotation (60 s after the first) fails: the key directory is open.
        os.chmod(self.keys, 0o755)
        try:
            self.wait_for("siprecd_key_rotation_failures", 1, timeout=75)
        finally:
            os.chmod(self.keys, 0o700)

        after = self.scrape()
        scrapes.append(after)

        # --- exact values where loopback makes them deterministic
        for codec, payload_type in (("PCMU", 0), ("PCMA", 8)):
            self.assertEqual(self.value(after, "siprecd_rtp_packets", codec=codec), sent[payload_type])
            self.assertEqual(self.value(after, "siprecd_rtp_payload_bytes", codec=codec), 160 * sent[payload_type])
            self.assertEqual(self.value(after, "siprecd_rtp_lost_packets", codec=codec), len(MISSING))
            self.assertEqual(self.value(after, "siprecd_rtp_late_packets", codec=codec), 1)
            self.assertEqual(self.value(after, "siprecd_rtp_duplicate_packets", codec=codec), 1)
        self.assertEqual(self.value(after, "siprecd_sessions_active"), 0)
        self.assertEqual(self.value(after, "siprecd_sessions_finished", outcome="bye"), 2)
        self.assertEqual(self.value(after, "siprecd_sip_requests", method="INVITE", transport="UDP"), 2)
        self.assertEqual(self.value(after, "siprecd_sip_responses", method="INVITE", code="200"), 2)
        self.assertEqual(self.value(after, "siprecd_sip_responses", method="OPTIONS", code="200"), 1)
        self.assertEqual(self.value(after, "siprecd_sip_responses", method="OPTIONS", code="400"), 1)
        self.assertEqual(self.value(after, "siprecd_sip_messages_dropped", reason="not_sip"), 1)
        self.assertEqual(self.value(after, "siprecd_sip_messages_dropped", reason="malformed"), 1)
        self.assertEqual(
            self.value(after, "siprecd_sip_messages_dropped", reason="rate_limited"), codes.count(b"503")
        )
        self.assertEqual(self.value(after, "siprecd_errors", kind="metadata"), 1)
        self.assertEqual(self.value(after, "siprecd_durable_writes_failed"), 1)
        self.assertEqual(self.value(after, "siprecd_key_rotations"), 1)
        self.assertEqual(self.value(after, "siprecd_key_rotation_failures"), 1)
        audio = glob.glob(os.path.join(self.server.recordings, "*", "*", "*", "*", "*.wav.enc"))
        self.assertEqual(len(audio), 4)  # two streams and the stereo mix, the SDES call's stream
        self.assertEqual(self.value(after, "siprecd_rtp_packets", codec="G722"), 10)
        self.assertEqual(
            self.value(after, "siprecd_srtp_sessions", method="sdes", suite="AES_CM_128_HMAC_SHA1_80"), 1
        )
        self.assertEqual(self.value(after, "siprecd_srtp_auth_failures", kind="rtp"), 1)
        self.assertEqual(self.value(after, "siprecd_srtp_auth_failures", kind="rtcp"), 1)
        self.assertEqual(
            self.value(after, "siprecd_recording_bytes_written"), sum(os.path.getsize(p) for p in audio)
        )

        # --- no dead metrics: every siprecd_ family moved from its first value
        families = sorted({name for scrape in scrapes for name in scrape if name.startswith("siprecd_")})
        self.assertGreaterEqual(len(families), 15, families)
        dead, decreased = [], []
        for name in families:
            if self.types[name] == "counter":
                moved = any(value > 0 for value in after.get(name, {}).values())
                for earlier, later in zip(scrapes, scrapes[1:]):
                    for labels, value in earlier.get(name, {}).items():
                        if later.get(name, {}).get(labels, 0.0) < value:
                            decreased.append(f"{name}{dict(labels)}: {value} -> {later.get(name, {}).get(labels)}")
            else:
                first = before.get(name)
                moved = any(scrape.get(name) != first for scrape in scrapes[1:])
                moved = moved or any(value > 0 for value in (first or {}).values())
            if not moved:
                dead.append(f"{name}: {after.get(name)}")
        self.assertEqual(dead, [], "metrics that never moved")
        self.assertEqual(decreased, [], "counters that went down")
        self.assertEqual(
            [name for name in before if name.startswith("siprecd_") and name not in after], [], "families vanished"
        )
