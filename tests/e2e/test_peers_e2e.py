"""Interop on loopback: independent SIP phones (linphonec, baresip) call ``twistd -n siprec``.

siprecd runs with ``[siprec] accept_plain_calls = true``, so an ordinary call from a phone is
recorded like a one-stream SIPREC session.  Each phone plays a known tone as its microphone
(:func:`tests.e2e.peers.write_tone`), talks for a few seconds and hangs up; the test then finds
the session by the Call-ID the phone really sent, and checks session.json and the recorded WAV:
the tone's frequency (FFT peak) and level, and that it lasts about as long as the call.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from siprecd.security.suites import DTLS_PROFILES
from tests.audio import assert_near, dominant_frequency, onset, read_wav, rms
from tests.e2e.peers import BARESIP, LINPHONEC, Baresip, Linphone, PeerCall, peer_available, write_tone
from tests.e2e.server import Server

CALL_SECONDS = 3.0
# RFC 4568 / 6188: master key + salt octets in an inline: key.
KEY_AND_SALT = {"AES_CM_128_HMAC_SHA1_80": 30, "AES_256_CM_HMAC_SHA1_80": 46, "AES_256_CM_HMAC_SHA1_32": 46}
_CRYPTO = re.compile(r"^a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)", re.M)
TONE_RMS = 0.5 * 32767 / 2**0.5  # write_tone's level: a sine at half scale


class PeerTestCase(SynchronousTestCase):
    program = ""
    security: dict[str, str] = {}

    def setUp(self) -> None:
        if not peer_available(self.program):
            raise SkipTest(f"{self.program} is not installed (Debian linphone-cli / baresip-core): run scripts/setup")
        sections = {"siprec": {"accept_plain_calls": "true"}}
        if self.security:
            sections["security"] = dict(self.security)
        self.server = Server(self.mktemp(), sections=sections)
        self.server.start()
        self.addCleanup(self.stop_server)

    def stop_server(self) -> None:
        # A clean stop also says so in the log.
        self.assertIn("Server Shut Down.", self.server.stop_cleanly(self))

    @property
    def uri(self) -> str:
        return f"sip:srs@127.0.0.1:{self.server.sip_port}"

    def place_call(self, peer: Linphone | Baresip, frequency: float) -> PeerCall:
        self.addCleanup(peer.kill)
        wav = write_tone(os.path.join(peer.directory, "tone.wav"), frequency, CALL_SECONDS + 5)
        call = peer.call(self.uri, wav, CALL_SECONDS)
        context = f"{call.explain()}\n--- server log (end)\n{self.server.log()[-4000:]}"
        self.assertTrue(call.connected, context)
        self.assertTrue(call.ended, context)
        self.assertFalse(call.timed_out, context)
        self.assertEqual(call.returncode, 0, context)
        return call

    def session(self, call: PeerCall) -> tuple[dict[str, Any], str]:
        """session.json and directory of the call whose Call-ID the peer sent."""
        invites = call.invites()
        self.assertTrue(invites, f"no INVITE in the peer's trace\n{call.explain()}")
        found = re.search(r"^(?:Call-ID|i):\s*(\S+)", invites[0], re.M | re.I)
        assert found is not None, invites[0]
        for path in glob.glob(os.path.join(self.server.recordings, "*", "*", "*", "*", "session.json")):
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            if document["call_id"] == found.group(1):
                return document, os.path.dirname(path)
        self.fail(f"no session.json for Call-ID {found.group(1)}\n{self.server.log()[-4000:]}")

    def assert_tone_recorded(self, call: PeerCall, frequency: float, user_agent: str) -> dict[str, Any]:
        """The call's single stream was recorded and holds the tone; returns its stream entry."""
        document, directory = self.session(call)
        self.assertEqual((document["state"], document["end_reason"]), ("ended", "BYE from the SRC"))
        self.assertIn(user_agent, document["sip"]["user_agent"])
        (entry,) = [s for s in document["streams"] if s["recorded"]]
        self.assertEqual(entry["codec"], "PCMU")
        self.assertIsNone(entry["recording"]["error"])
        if entry["stream_security"]["method"] is not None:
            # Every RTP datagram the peer sent authenticated (STUN keep-alives are not SRTP).
            self.assertEqual(entry["reception"]["srtp_auth_failures"], 0, entry["reception"])
        # 50 packets a second for most of the call (start-up and hang-up cost a little).
        self.assertGreater(entry["packets_received"], 0.6 * 50 * CALL_SECONDS, entry)
        rate, channels, samples = read_wav(os.path.join(directory, entry["file"]))
        self.assertEqual((rate, channels), (8000, 1))
        start = onset(samples)
        self.assertIsNotNone(start, f"{entry['file']}: no sound at all")
        assert start is not None
        heard = samples[start:]
        self.assertGreater(len(heard) / rate, 0.6 * CALL_SECONDS, "too little of the tone was recorded")
        body = heard[rate // 10 : len(heard) - rate // 10]
        assert_near(self, dominant_frequency(body, rate), frequency, 3, "tone frequency")
        assert_near(self, rms(body), TONE_RMS, 0.15 * TONE_RMS, "tone level")
        return entry

    def assert_sdes_answer(self, call: PeerCall, directory: str, suite: str, proto: str = "RTP/SAVP") -> None:
        """siprecd answered the offered tag and suite with its own fresh key of the right
        length, and neither key appears in the server's log or any file it wrote for the call
        (session.json, the stored offer and answer)."""
        offered = _CRYPTO.findall(call.invites()[0])
        answered = _CRYPTO.findall(call.answers()[0])
        self.assertEqual(len(answered), 1, call.answers()[0])
        ((tag, answered_suite, key),) = answered
        self.assertIn((tag, answered_suite), [(t, s) for t, s, _ in offered])
        self.assertEqual(answered_suite, suite)
        self.assertEqual(len(base64.b64decode(key)), KEY_AND_SALT[suite])
        self.assertNotIn(key, [k for _, _, k in offered], "the offerer's key was echoed")
        self.assertRegex(call.answers()[0], rf"m=audio \d+ {re.escape(proto)} ")
        texts = {"the log": self.server.log()}
        for name in os.listdir(directory):
            if not name.endswith((".wav", ".part")):
                with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as handle:
                    texts[name] = handle.read()
        self.assertIn("session.json", texts)
        for secret in [key] + [k for _, _, k in offered]:
            for name, text in texts.items():
                self.assertNotIn(secret, text, f"key material in {name}")


class LinphonePlainTests(PeerTestCase):
    program = LINPHONEC

    def test_plain_call_recorded(self) -> None:
        """linphonec calls with plain RTP (PCMU chosen from its offer): the tone is recorded."""
        call = self.place_call(Linphone(self.mktemp()), 523.0)
        entry = self.assert_tone_recorded(call, 523.0, "Linphonec/")
        self.assertEqual(entry["stream_security"]["method"], None)


class BaresipPlainTests(PeerTestCase):
    program = BARESIP

    def test_plain_call_recorded(self) -> None:
        """baresip calls with plain RTP: the tone is recorded."""
        call = self.place_call(Baresip(self.mktemp()), 659.0)
        entry = self.assert_tone_recorded(call, 659.0, "baresip")
        self.assertEqual(entry["stream_security"]["method"], None)


class LinphoneSDESTests(PeerTestCase):
    program = LINPHONEC

    def check_suite(self, suite: str, frequency: float) -> None:
        call = self.place_call(Linphone(self.mktemp(), encryption="srtp", suites=[suite]), frequency)
        entry = self.assert_tone_recorded(call, frequency, "Linphonec/")
        self.assertEqual((entry["stream_security"]["method"], entry["stream_security"]["suite"]), ("sdes", suite))
        self.assert_sdes_answer(call, self.session(call)[1], suite)

    def test_aes_cm_128_hmac_sha1_80(self) -> None:
        self.check_suite("AES_CM_128_HMAC_SHA1_80", 587.0)

    def test_aes_256_cm_hmac_sha1_80(self) -> None:
        self.check_suite("AES_256_CM_HMAC_SHA1_80", 698.0)


class LinphoneSDESPreferenceTests(PeerTestCase):
    program = LINPHONEC
    security = {"suites": "AES_256_CM_HMAC_SHA1_32 AES_CM_128_HMAC_SHA1_80"}

    def test_srs_preference_decides(self) -> None:
        """linphonec offers its four default suites (tags 1-4); siprecd takes the first of its
        own [security] suites that is offered: tag 4, AES_256_CM_HMAC_SHA1_32."""
        call = self.place_call(Linphone(self.mktemp(), encryption="srtp"), 740.0)
        offered = [suite for _, suite, _ in _CRYPTO.findall(call.invites()[0])]
        self.assertEqual(len(offered), 4, offered)
        self.assertEqual(offered[3], "AES_256_CM_HMAC_SHA1_32")
        ((tag, _, _),) = _CRYPTO.findall(call.answers()[0])
        self.assertEqual(tag, "4")
        entry = self.assert_tone_recorded(call, 740.0, "Linphonec/")
        security = entry["stream_security"]
        self.assertEqual((security["method"], security["suite"]), ("sdes", "AES_256_CM_HMAC_SHA1_32"))
        self.assert_sdes_answer(call, self.session(call)[1], "AES_256_CM_HMAC_SHA1_32")


class BaresipSDESTests(PeerTestCase):
    program = BARESIP

    def test_srtp_mandatory(self) -> None:
        call = self.place_call(Baresip(self.mktemp(), mediaenc="srtp-mand"), 784.0)
        entry = self.assert_tone_recorded(call, 784.0, "baresip")
        self.assertEqual((entry["stream_security"]["method"], entry["stream_security"]["suite"]), ("sdes", "AES_CM_128_HMAC_SHA1_80"))
        self.assert_sdes_answer(call, self.session(call)[1], "AES_CM_128_HMAC_SHA1_80")

    def test_best_effort_srtp_on_rtp_avp(self) -> None:
        """mediaenc=srtp puts a=crypto on an RTP/AVP m-line: siprecd answers it there, with
        its own key, and the media is SRTP."""
        call = self.place_call(Baresip(self.mktemp(), mediaenc="srtp"), 1109.0)
        self.assertRegex(call.invites()[0], r"m=audio \d+ RTP/AVP ")
        entry = self.assert_tone_recorded(call, 1109.0, "baresip")
        self.assertEqual(entry["stream_security"]["method"], "sdes")
        self.assertRegex(call.answers()[0], r"m=audio \d+ RTP/AVP ")
        self.assert_sdes_answer(call, self.session(call)[1], "AES_CM_128_HMAC_SHA1_80", proto="RTP/AVP")


class DTLSTestCase(PeerTestCase):
    def assert_dtls(self, call: PeerCall, entry: dict[str, Any], setup: str, proto: str, mux: bool = False) -> None:
        """siprecd answered with its role and a fingerprint, one handshake ran with the peer on
        the RTP port and, without rtcp-mux, another on the RTCP port (RFC 5764 §4.1.2), and the
        suite recorded is the one the handshake's SRTP profile names."""
        answer = call.answers()[0]
        self.assertRegex(answer, rf"m=audio \d+ {re.escape(proto)} ")
        self.assertRegex(answer, rf"(?m)^a=setup:{setup}\r?$")
        self.assertRegex(answer, r"(?mi)^a=fingerprint:sha-256 ([0-9A-F]{2}:){31}[0-9A-F]{2}\r?$")
        self.assertNotIn("a=crypto", answer)
        security = entry["stream_security"]
        self.assertEqual((security["method"], security["setup"], security["offered_setup"]), ("dtls-srtp", setup, "actpass"))
        dtls = security["dtls"]
        self.assertEqual((dtls["role"], dtls["handshakes"], dtls["failure"]), (setup, 1, None), dtls)
        self.assertEqual(DTLS_PROFILES[dtls["profile"]], security["suite"])
        if mux:
            self.assertIsNone(security.get("dtls_rtcp"), security)
        else:
            rtcp = security["dtls_rtcp"]
            self.assertEqual((rtcp["role"], rtcp["handshakes"], rtcp["failure"]), (setup, 1, None), rtcp)


class LinphoneDTLSTests(DTLSTestCase):
    program = LINPHONEC

    def test_siprecd_active(self) -> None:
        """siprecd answers a=setup:active to linphonec's actpass and starts the handshake."""
        call = self.place_call(Linphone(self.mktemp(), encryption="dtls"), 880.0)
        entry = self.assert_tone_recorded(call, 880.0, "Linphonec/")
        self.assert_dtls(call, entry, "active", "UDP/TLS/RTP/SAVP")
        # linphonec protects its RTCP under the RTCP port's association: none of it is refused.
        self.assertEqual(entry["reception"]["srtcp_auth_failures"], 0, entry["reception"])


    def test_siprecd_active_rtcp_mux(self) -> None:
        """With [rtp] rtcp_mux=1 linphonec offers a=rtcp-mux, siprecd answers it, and one DTLS
        association keys RTP and RTCP on one port (without it linphonec runs a second one on
        the RTCP port)."""
        call = self.place_call(Linphone(self.mktemp(), encryption="dtls", options={"rtp": {"rtcp_mux": "1"}}), 831.0)
        self.assertRegex(call.invites()[0], r"(?m)^a=rtcp-mux\r?$")
        self.assertRegex(call.answers()[0], r"(?m)^a=rtcp-mux\r?$")
        entry = self.assert_tone_recorded(call, 831.0, "Linphonec/")
        self.assert_dtls(call, entry, "active", "UDP/TLS/RTP/SAVP", mux=True)
        self.assertEqual(entry["reception"]["srtcp_auth_failures"], 0, entry["reception"])


class LinphoneDTLSPassiveTests(DTLSTestCase):
    program = LINPHONEC
    security = {"dtls_setup": "passive"}

    def test_siprecd_passive(self) -> None:
        """With dtls_setup = passive siprecd waits for linphonec's ClientHello."""
        call = self.place_call(Linphone(self.mktemp(), encryption="dtls"), 932.0)
        entry = self.assert_tone_recorded(call, 932.0, "Linphonec/")
        self.assert_dtls(call, entry, "passive", "UDP/TLS/RTP/SAVP")
        # linphonec protects its RTCP under the RTCP port's association: none of it is refused.
        self.assertEqual(entry["reception"]["srtcp_auth_failures"], 0, entry["reception"])


class BaresipDTLSTests(DTLSTestCase):
    program = BARESIP

    def test_dtls_srtp(self) -> None:
        """baresip's offer keeps a=setup and a=fingerprint at session level (UDP/TLS/RTP/SAVPF)."""
        call = self.place_call(Baresip(self.mktemp(), mediaenc="dtls_srtp"), 988.0)
        entry = self.assert_tone_recorded(call, 988.0, "baresip")
        self.assert_dtls(call, entry, "active", "UDP/TLS/RTP/SAVPF")


class BaresipDTLSPassiveTests(DTLSTestCase):
    program = BARESIP
    security = {"dtls_setup": "passive"}

    def test_dtls_srtp_siprecd_passive(self) -> None:
        """baresip as the DTLS client (it offers the AEAD profiles first)."""
        call = self.place_call(Baresip(self.mktemp(), mediaenc="dtls_srtp"), 1047.0)
        entry = self.assert_tone_recorded(call, 1047.0, "baresip")
        self.assert_dtls(call, entry, "passive", "UDP/TLS/RTP/SAVPF")
