"""SDES-secured SIPREC calls end to end: the project's SRC protects its RTP, siprecd records it.

One call with three m-lines, each under another suite (AES_CM_128_HMAC_SHA1_80 through
pylibsrtp, AES_256_CM_HMAC_SHA1_80 through the Python RFC 6188 path, AEAD_AES_128_GCM), a
known tone on each.  Checked: the answer's ``a=crypto`` (offer's tag and suite, the SRS's own
fresh key), the tone in every recorded file, forged SRTP and unauthenticated RTCP dropped and
counted, session.json's per-stream method and suite, and no key material in session.json, the
SDP answer aside, or the log.  Then SIPp: it has no SRTP of its own, so it replays a pcap that
this test protected beforehand with the key its offer carries (``play_pcap_audio`` sends the
bytes as they are), and the recording must be the tone, sample for sample.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import socket

import av
import numpy as np

from siprecd.media.rtcp import build_receiver_report
from siprecd.media.rtp import build_rtp
from siprecd.security.sdes import parse_crypto
from siprecd.security.srtp import OutboundSRTP
from tests.audio import assert_near, dominant_frequency, encode, onset, read_wav, tone
from tests.e2e.pcap import write_pcap
from tests.e2e.server import run_sipp
from tests.e2e.src import StreamSpec
from tests.e2e.test_media_e2e import MediaTestCase, SippTestCase, stream

SECONDS = 1.5
SUITES = {  # label -> (suite, codec, tone)
    "a": ("AES_CM_128_HMAC_SHA1_80", "PCMU", 440.0),
    "b": ("AES_256_CM_HMAC_SHA1_80", "PCMA", 1000.0),
    "c": ("AEAD_AES_128_GCM", "PCMU", 700.0),
}
KEY_LENGTHS = {"AES_CM_128_HMAC_SHA1_80": 30, "AES_256_CM_HMAC_SHA1_80": 46, "AEAD_AES_128_GCM": 28}


class SDESTests(MediaTestCase):
    def test_three_suites_recorded_with_their_tones(self) -> None:
        streams: list[StreamSpec] = []
        for label, (suite, codec, frequency) in SUITES.items():
            key = os.urandom(KEY_LENGTHS[suite])
            streams.append(stream(codec, label, frequency, SECONDS, crypto=(suite, key)))
        client = self.client()
        self.start_call(client, streams)

        # The answer: one a=crypto per m-line, the offer's tag and suite, the SRS's own key.
        answered = {}
        for m in client.answer.media:
            self.assertEqual(m.proto, "RTP/SAVP")
            values = m.attribute_values("crypto")
            self.assertEqual(len(values), 1, m)
            line = parse_crypto(values[0] or "")
            answered[m.label] = line
            spec = next(s for s in streams if s.label == m.label)
            self.assertEqual((line.tag, line.suite), (1, spec.crypto[0]))
            self.assertNotEqual(line.keys[0].key + line.keys[0].salt, spec.crypto[1], "offerer's key echoed")

        # Forged SRTP and unauthenticated (plain) RTCP on every stream before the media.
        port = client.rtp.getsockname()[1]
        for spec in streams:
            target = ("127.0.0.1", client.answer_ports[spec.label])
            client.rtp.sendto(build_rtp(0, 1, 1, 1234, b"\x00" * 160) + b"\x00" * 10, target)
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(rtcp.close)
            rtcp.bind(("127.0.0.1", 0))
            rtcp.sendto(build_receiver_report(4321, [], "forger"), ("127.0.0.1", target[1] + 1))
        self.assertTrue(port)
        report = client.send_rtp(streams)
        self.end_call(client)

        document, directory = self.session(client.call_id)
        by_label = self.streams_by_label(document)
        for spec in streams:
            suite, codec, frequency = SUITES[spec.label]
            entry = by_label[spec.label]
            what = f"stream {spec.label} ({suite})"
            self.assertEqual(entry["stream_security"]["method"], "sdes", what)
            self.assertEqual(entry["stream_security"]["suite"], suite, what)
            self.assertEqual(entry["packets_received"], report.sent(spec.label), what)
            reception = entry["reception"]
            self.assertEqual(reception["srtp_auth_failures"], 1, what)
            self.assertEqual(reception["srtcp_auth_failures"], 1, what)
            rate, _, samples = read_wav(os.path.join(directory, entry["file"]))
            start = onset(samples)
            self.assertIsNotNone(start, f"{what}: silent")
            heard = samples[start:]
            self.assertGreater(len(heard), rate, f"{what}: {len(heard)} samples of tone")
            self.assertAlmostEqual(dominant_frequency(heard[:rate], rate), frequency, delta=5, msg=what)

        # No key material in session.json or the log (the answer SDP carries only the SRS's key).
        with open(os.path.join(directory, "session.json"), encoding="utf-8") as handle:
            session_text = handle.read()
        log = self.server.log()
        for spec in streams:
            offered = base64.b64encode(spec.crypto[1]).decode()
            ours = answered[spec.label].keys[0]
            for secret in (offered, base64.b64encode(ours.key + ours.salt).decode(), spec.crypto[1].hex()):
                self.assertNotIn(secret, session_text)
                self.assertNotIn(secret, log)


class SIPpPcapTests(SippTestCase):
    def test_sipp_replays_pre_encrypted_srtp(self) -> None:
        samples = tone(440.0, 2.0, 8000)
        payloads = encode("pcm_alaw", samples, 8000, 160)
        key = os.urandom(30)
        protect = OutboundSRTP("AES_CM_128_HMAC_SHA1_80", key[:16], key[16:])
        packets = [protect.protect_rtp(build_rtp(8, 1000 + n, 8000 * 7 + 160 * n, 0x5151, p, marker=n == 0))
                   for n, p in enumerate(payloads)]
        workdir = os.path.join(self.server.directory, "sipp")
        os.makedirs(workdir)
        write_pcap(os.path.join(workdir, "srtp.pcap"), packets)
        result = run_sipp("siprec_srtp_pcap.xml", self.server.sip_port, workdir,
                          extra=["-key", "srtp_key", base64.b64encode(key).decode()])
        self.assertEqual(result.returncode, 0, f"{result.explain()}\n--- server log\n{self.server.log()[-3000:]}")
        (path,) = glob.glob(os.path.join(self.server.recordings, "*", "*", "*", "*", "session.json"))
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        (entry,) = document["streams"]
        self.assertEqual(entry["stream_security"], {"method": "sdes", "suite": "AES_CM_128_HMAC_SHA1_80", "tag": 1,
                                             "keys_offered": 1})
        self.assertEqual((entry["codec"], entry["packets_received"]), ("PCMA", len(packets)))
        self.assertEqual(entry["reception"]["srtp_auth_failures"], 0)
        rate, _, recorded = read_wav(os.path.join(os.path.dirname(path), entry["file"]))
        start = self.first_sound(recorded, "SRTP pcap stream")
        heard = recorded[start:]
        assert_near(self, len(heard) / rate, len(payloads) * 0.02, 0.02, "audio after the first packet")
        # A-law round trip of the tone: what was encoded, decoded again, sample for sample.
        decoder = av.CodecContext.create("pcm_alaw", "r")
        decoder.sample_rate = 8000
        decoder.layout = "mono"
        (frame,) = decoder.decode(av.Packet(b"".join(payloads)))
        self.assertTrue(np.array_equal(heard, frame.to_ndarray().reshape(-1).astype(heard.dtype)))
        self.assertAlmostEqual(dominant_frequency(heard, rate), 440.0, delta=3)
