"""SRTP state across restarts and takeovers: the agreement exported, sealed, rebuilt; the ROC
carried for streams past a rollover; the SRS's SRTCP index continued above what the SRC saw.

Unit level (a StreamMedia on a task.Clock, the state round trip per method and suite) and
through the controller (a restart on the same state store, a takeover from a dead node's
record), all on task.Clock time.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.crypto.at_rest import AtRest
from siprecd.crypto.keystore import MemoryKeyStore
from siprecd.media.receiver import StreamMedia
from siprecd.metrics import Metrics
from siprecd.media.rtcp import build_receiver_report, parse_rtcp
from siprecd.media.rtp import build_rtp, parse_rtp
from siprecd.security.carried import SRTCP_INDEX_MARGIN
from siprecd.security.dtls import SRTPKeys
from siprecd.security.dtls_method import DTLSSRTP
from siprecd.security.dtls_stream import DTLSSettings
from siprecd.security.policy import Negotiated, SecurityPolicy
from siprecd.security.sdes import parse_crypto
from siprecd.security.srtp import InboundSRTP, OutboundSRTP
from siprecd.security.suites import SUITES
from siprecd.state.local import LocalStore, default_path
from siprecd.state.sealing import Sealer
from tests.test_media_receiver import FakeDatagramTransport
from tests.test_redundancy import PCMU_LOUD, FakeSharedStore, RedundancyTestCase
from tests.test_security_calls import crypto, savp
from tests.test_security_sdes import POLICY, offer
from tests.test_siprec_controller import PORT_MIN, Call, sdp_offer

SSRC = 0x1234
SRC_ADDRESS = ("198.51.100.7", 10000)


def packet(seq: int, ssrc: int = SSRC) -> bytes:
    return build_rtp(0, seq & 0xFFFF, 160 * seq & 0xFFFFFFFF, ssrc, PCMU_LOUD)


def stream_media(policy: SecurityPolicy, clock: Clock) -> StreamMedia:
    return StreamMedia(clock, latch_sdp_address=False, ssrc=int.from_bytes(os.urandom(4), "big"), cname="t", security=policy)


def sdes_line(suite: str, key: bytes) -> str:
    return f"a=crypto:1 {suite} inline:{base64.b64encode(key).decode()}"


class FakeDTLS:
    """Stands for a StreamDTLS whose handshake has exported ``keys`` (tests/test_dtls* run real ones)."""

    def __init__(self, keys: SRTPKeys) -> None:
        self.endpoint = self
        self.keys = keys

    def close(self) -> None:
        pass


class RoundTripTests(SynchronousTestCase):
    """security_state() -> sealed -> opened -> restore_security(): the same contexts again."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.policy = SecurityPolicy(POLICY)
        self.sealer = Sealer(MemoryKeyStore())
        # Rekeys start grace timers on the clock: none may be left behind (habit 7).
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def carry(self, media: StreamMedia, indices: dict[str, Any] | None, how: str = "restart") -> StreamMedia:
        state = media.security_state()
        assert state is not None
        sealed = self.sealer.seal(state, "s/label:a/security")
        assert sealed is not None
        for secret in (state["keys"].get("local"), *(k["key"] for k in state["keys"].get("line", {}).get("keys", []))):
            if secret:
                self.assertNotIn(secret, str(sealed))
                self.assertNotIn(base64.b64decode(secret).hex(), str(sealed))
        restored = stream_media(self.policy, self.clock)
        restored.restore_security(self.sealer.open(sealed, "s/label:a/security"), indices=indices, how=how)
        return restored

    def sdes(self, suite: str) -> tuple[StreamMedia, bytes, Any]:
        key = os.urandom(SUITES[suite].inline_length)
        sdp = offer(f"m=audio 10000 RTP/SAVP 0", sdes_line(suite, key))
        decision = self.policy.decide(sdp.media[0], sdp)  # type: ignore[attr-defined]
        media = stream_media(self.policy, self.clock)
        self.policy.activate(decision.negotiated, media)
        return media, key, decision.negotiated

    def test_sdes_every_suite_roc_above_zero_and_srtcp_index_continued(self) -> None:
        for suite in SUITES:
            s = SUITES[suite]
            media, key, negotiated = self.sdes(suite)
            sender = OutboundSRTP(suite, key[: s.key_length], key[s.key_length:])
            # The SRC's stream crosses a rollover before the restart (ROC 1 after it).
            for seq in range(65530, 65536 + 3):
                protected = sender.protect_rtp(packet(seq))
                if seq < 65536:
                    self.assertIsNotNone(media.unprotect(protected, rtcp=False), suite)
            # The SRC's view of the SRS's reports: libsrtp, with its SRTCP replay list.
            srs_key = negotiated.material.local
            src_view = InboundSRTP(suite, srs_key[: s.key_length], srs_key[s.key_length:])
            for _ in range(5):
                src_view.unprotect_rtcp(media.outbound.protect_rtcp(build_receiver_report(media.ssrc, [], "t")))
            self.assertEqual(media.outbound.last_index, 5)
            indices = {"received": {str(SSRC): 65535 + 3}, "srtcp_last": media.outbound.last_index}
            restored = self.carry(media, indices)
            agreement = restored.negotiated
            self.assertEqual((agreement.method, agreement.suite, agreement.identity), ("sdes", suite, negotiated.identity))
            self.assertEqual(agreement.attributes, negotiated.attributes)  # the same answer key
            # A re-offer with the same key keeps the restored agreement (and its contexts).
            self.assertIs(self.policy.carry_over(negotiated, agreement), agreement)
            summary = dict(agreement.details)["restored"]
            self.assertEqual(summary["how"], "restart")
            self.assertEqual(summary["roc"], "carried")
            self.assertEqual(self.policy.restored["sdes", suite, "restart", "carried"], 1)
            for seq in range(65536 + 3, 65536 + 10):
                plain = restored.unprotect(sender.protect_rtp(packet(seq)), rtcp=False)
                self.assertEqual(plain, packet(seq), f"{suite} seq {seq} after the restart")
            # The same SSRC for the reports, the index above what the SRC's replay list holds.
            self.assertEqual(restored.ssrc, media.ssrc)
            report = restored.outbound.protect_rtcp(build_receiver_report(restored.ssrc, [], "t"))
            self.assertEqual(parse_rtcp(src_view.unprotect_rtcp(report))[0].ssrc, media.ssrc)
            self.assertEqual(restored.outbound.last_index, 5 + 1 + SRTCP_INDEX_MARGIN)
            self.assertEqual(restored.counters.srtp_auth_failures, 0)

    def test_without_the_carried_index_a_rolled_over_stream_fails(self) -> None:
        """The reason for all this: a fresh libsrtp context takes ROC 0 and refuses ROC 1."""
        suite = "AES_CM_128_HMAC_SHA1_80"
        media, key, _ = self.sdes(suite)
        sender = OutboundSRTP(suite, key[:16], key[16:])
        for seq in range(65530, 65536 + 3):
            sender.protect_rtp(packet(seq))
        restored = self.carry(media, indices=None)
        self.assertIsNone(restored.unprotect(sender.protect_rtp(packet(65536 + 3)), rtcp=False))
        self.assertEqual(restored.counters.srtp_auth_failures, 1)

    def test_aead_at_roc_zero_resumes(self) -> None:
        suite = "AEAD_AES_128_GCM"
        media, key, _ = self.sdes(suite)
        sender = OutboundSRTP(suite, key[:16], key[16:])
        for seq in range(100, 110):
            media.unprotect(sender.protect_rtp(packet(seq)), rtcp=False)
        restored = self.carry(media, {"received": {str(SSRC): 109}, "srtcp_last": 0})
        self.assertEqual(dict(restored.negotiated.details)["restored"]["roc"], "carried")
        self.assertEqual(restored.unprotect(sender.protect_rtp(packet(110)), rtcp=False), packet(110))
        self.assertEqual(self.policy.restored["sdes", suite, "restart", "carried"], 1)

    def test_sdes_with_mki_and_several_keys(self) -> None:
        suite = "AES_CM_128_HMAC_SHA1_80"
        k1, k2 = os.urandom(30), os.urandom(30)
        value = (f"a=crypto:2 {suite} inline:{base64.b64encode(k1).decode()}|2^20|1:4;"
                 f"inline:{base64.b64encode(k2).decode()}|2^20|2:4")
        sdp = offer("m=audio 10000 RTP/SAVP 0", value)
        decision = self.policy.decide(sdp.media[0], sdp)  # type: ignore[attr-defined]
        media = stream_media(self.policy, self.clock)
        self.policy.activate(decision.negotiated, media)
        restored = self.carry(media, {"received": {}, "srtcp_last": 0})
        sender = OutboundSRTP(suite, k2[:16], k2[16:], mki=b"\0\0\0\2")
        self.assertEqual(restored.unprotect(sender.protect_rtp(packet(7)), rtcp=False), packet(7))
        self.assertEqual(
            parse_crypto(value.removeprefix("a=crypto:")).fingerprint(), restored.negotiated.identity
        )

    def test_dtls_srtp_exported_keys_and_identity(self) -> None:
        dtls = DTLSSRTP(DTLSSettings(None, self.clock))  # type: ignore[arg-type]
        self.policy.methods["dtls-srtp"] = dtls
        for profile, suite in (("SRTP_AES128_CM_SHA1_80", "AES_CM_128_HMAC_SHA1_80"), ("SRTP_AEAD_AES_128_GCM", "AEAD_AES_128_GCM")):
            s = SUITES[suite]
            keys = SRTPKeys(profile, os.urandom(s.key_length), os.urandom(s.salt_length),
                            os.urandom(s.key_length), os.urandom(s.salt_length))
            agreed = Negotiated("dtls-srtp", None, (("setup", "active"), ("fingerprint", "sha-256 AB:CD")),
                                (("setup", "active"),), identity=b"identity", material=None)
            media = stream_media(self.policy, self.clock)
            media.negotiated, media.dtls, media.rtcp_mux = agreed, FakeDTLS(keys), True
            self.assertIsNone(StreamMedia(self.clock, latch_sdp_address=False, ssrc=1, cname="t").security_state())
            restored = self.carry(media, {"received": {str(SSRC): 40000}, "srtcp_last": 3})
            self.assertIsNone(restored.dtls)  # the association does not survive...
            sender = OutboundSRTP(suite, keys.remote_key, keys.remote_salt)
            for seq in range(40001, 40004):
                # ...its SRTP keys do, and the index goes on from the stored one.
                self.assertEqual(restored.unprotect(sender.protect_rtp(packet(seq)), rtcp=False), packet(seq))
            agreement = restored.negotiated
            self.assertEqual((agreement.suite, agreement.identity, agreement.attributes), (suite, b"identity", agreed.attributes))
            self.assertTrue(restored.rtcp_mux)
            # Exported again from the restored agreement (a second restart keeps the keys).
            again = restored.security_state()
            assert again is not None
            self.assertEqual(again["keys"]["rtp"]["remote_key"], base64.b64encode(keys.remote_key).decode())

    def test_dtls_srtp_before_its_handshake_is_not_carried_on(self) -> None:
        """No keys yet: stored as incomplete, refused on restore (never recorded as plain RTP)."""
        self.policy.methods["dtls-srtp"] = DTLSSRTP(DTLSSettings(None, self.clock))  # type: ignore[arg-type]
        media = stream_media(self.policy, self.clock)
        media.negotiated = Negotiated("dtls-srtp", None, (), (), identity=b"i", material=None)
        state = media.security_state()
        self.assertEqual(state, {"method": "dtls-srtp", "incomplete": "no SRTP keys yet (key exchange not complete)"})
        with self.assertRaises(ValueError) as caught:
            stream_media(self.policy, self.clock).restore_security(state)  # type: ignore[arg-type]
        self.assertIn("cannot be carried on: no SRTP keys yet", str(caught.exception))

    def test_positions_indices_follow_the_rollover(self) -> None:
        suite = "AES_CM_128_HMAC_SHA1_80"
        media, key, _ = self.sdes(suite)
        media.attach(None, 8000)
        sender = OutboundSRTP(suite, key[:16], key[16:])
        for seq in range(65500, 65536 + 20):
            plain = media.unprotect(sender.protect_rtp(packet(seq)), rtcp=False)
            assert plain is not None
            media.stats.update(parse_rtp(plain), 0.0)  # type: ignore[union-attr]
        self.assertEqual(media.srtp_indices(), {"received": {str(SSRC): 65536 + 19}, "srtcp_last": 0})
        # Restored from there, the next rollover's index counts on from the stored one.
        restored = self.carry(media, media.srtp_indices())
        restored.attach(None, 8000)
        for seq in range(65536 + 20, 65536 + 25):
            plain = restored.unprotect(sender.protect_rtp(packet(seq)), rtcp=False)
            assert plain is not None
            restored.stats.update(parse_rtp(plain), 0.0)  # type: ignore[union-attr]
        self.assertEqual(restored.srtp_indices()["received"], {str(SSRC): 65536 + 24})  # type: ignore[index]


class SecuredCase(RedundancyTestCase):
    """SDES calls through the controller, the process restarted on the same state store (the
    key store that seals their state is kept: the same KEKs after the restart)."""

    suite = "AES_CM_128_HMAC_SHA1_80"

    def setUp(self) -> None:
        self.at_rest = AtRest(MemoryKeyStore())
        super().setUp()

    def send_srtp(self, sender: OutboundSRTP, first: int, count: int) -> None:
        protocol = self.reactor.udpPorts[PORT_MIN].protocol
        for seq in range(first, first + count):
            protocol.datagramReceived(sender.protect_rtp(packet(seq)), SRC_ADDRESS)
            self.reactor.advance(0.02)

    def media(self) -> StreamMedia:
        (call,) = self.controller.calls.values()
        return call.streams.current[0].media  # type: ignore[no-any-return]

    def stored_bytes(self) -> bytes:
        path = default_path(self.recordings)
        return b"".join(open(p, "rb").read() for p in (path, path + "-wal") if os.path.exists(p))


class SecuredRestartTests(SecuredCase):
    def test_restart_past_a_rollover_keeps_authenticating_and_reporting(self) -> None:
        s = SUITES[self.suite]
        key = os.urandom(s.inline_length)
        call = Call(self)
        response = call.setup(sdp_offer(savp(10000, "a", crypto(key, suite=self.suite))))
        self.assertEqual(response.status, 200)
        (answered,) = self.answer(response).media[0].attribute_values("crypto")
        ours = parse_crypto(answered or "").keys[0]
        sender = OutboundSRTP(self.suite, key[: s.key_length], key[s.key_length:])
        self.send_srtp(sender, 65536 - 40, 60)  # across the rollover: ROC 1 at the end
        media = self.media()
        media.rtcp.transport = transport = FakeDatagramTransport()
        for _ in range(3):
            self.assertTrue(media.send_report())
        src_view = InboundSRTP(self.suite, ours.key, ours.salt)
        for report, _ in transport.written:
            src_view.unprotect_rtcp(report)
        srs_ssrc = media.ssrc
        self.reactor.advance(0.6)  # a tick: the positions (highest index, SRTCP index) stored
        raw = self.stored_bytes()
        self.assertIn(b"session_id", raw)
        for secret in (key, ours.key + ours.salt):
            self.assertNotIn(secret, raw)
            self.assertNotIn(base64.b64encode(secret), raw)
            self.assertNotIn(base64.b64encode(secret)[:20], raw)
        self.assertNotIn(b"inline:", raw)  # the SDP with a=crypto is sealed as a whole

        self.boot(LocalStore(default_path(self.recordings)))  # kill -9 and a new process
        media = self.media()
        self.assertEqual(media.ssrc, srs_ssrc)
        self.send_srtp(sender, 65536 + 20, 25)
        self.assertEqual(media.counters.srtp_auth_failures, 0)
        self.assertEqual(media.recorder.counters.packets, 25)
        media.rtcp.transport = transport = FakeDatagramTransport()
        self.assertTrue(media.send_report())
        (report, _), = transport.written
        self.assertEqual(parse_rtcp(src_view.unprotect_rtcp(report))[0].ssrc, srs_ssrc)  # no replay
        security = self.session(call)["streams"][0]["stream_security"]
        self.assertEqual((security["method"], security["suite"]), ("sdes", self.suite))
        self.assertEqual(security["restored"]["how"], "restart")
        self.assertEqual(security["restored"]["roc"], "carried")
        self.assertEqual(self.controller.security.restored["sdes", self.suite, "restart", "carried"], 1)
        metrics = Metrics(process=False)
        metrics.watch_controller(self.controller)
        exposition = metrics.exposition()[0].decode()
        self.assertIn(
            f'siprecd_srtp_restored_total{{how="restart",method="sdes",outcome="carried",suite="{self.suite}"}} 1.0',
            exposition,
        )
        # A re-offer with the same key: the same answer key, the same contexts.
        inbound = media.inbound
        again = call.reinvite(sdp_offer(savp(10000, "a", crypto(key, suite=self.suite)), version=2))
        self.assertEqual(self.answer(again).media[0].attribute_values("crypto"), [answered])
        self.assertIs(media.inbound, inbound)
        self.send_srtp(sender, 65536 + 45, 5)
        self.assertEqual(media.counters.srtp_auth_failures, 0)
        self.bye(call)
        final = self.session(call)
        # (audio is encrypted at rest: the key store that seals the state encrypts the files too)
        self.assertEqual(final["streams"][0]["segments"], ["stream-1-a.wav.enc", "stream-1-a.seg2.wav.enc"])
        self.assertEqual(self.store.load_all(), {})
        self.finish()

    def test_without_a_key_store_the_secured_call_is_closed_cleanly(self) -> None:
        self.at_rest = None
        self.boot(self.store)
        call = Call(self)
        key = os.urandom(30)
        self.assertEqual(call.setup(sdp_offer(savp(10000, "a", crypto(key)))).status, 200)
        raw = self.stored_bytes()
        self.assertNotIn(base64.b64encode(key), raw)  # cut out, never in clear
        self.boot(LocalStore(default_path(self.recordings)))
        document = self.session(call)
        self.assertEqual(document["state"], "ended")
        self.assertTrue(document["end_reason"].startswith("interrupted"), document["end_reason"])
        (error,) = self.flushLoggedErrors()
        self.assertIn("SRTP cannot be resumed", str(error.value))
        self.assertEqual(self.bound(), [])
        self.finish()


class SecuredAEADRestartTests(SecuredCase):
    """GCM past a rollover: resumed on the project's GCM transform with its ROC carried."""

    suite = "AEAD_AES_128_GCM"

    def test_restart_past_a_rollover_carries_the_roc(self) -> None:
        key = os.urandom(28)
        call = Call(self)
        call.setup(sdp_offer(savp(10000, "a", crypto(key, suite=self.suite))))
        sender = OutboundSRTP(self.suite, key[:16], key[16:])
        self.send_srtp(sender, 65536 - 40, 60)
        srs_ssrc = self.media().ssrc
        self.reactor.advance(0.6)
        self.boot(LocalStore(default_path(self.recordings)))
        security = self.session(call)["streams"][0]["stream_security"]
        self.assertEqual(security["restored"]["roc"], "carried")
        self.assertIn("continues from", security["restored"]["srtcp_index"])
        self.assertEqual(self.media().ssrc, srs_ssrc)
        self.assertEqual(self.controller.security.restored["sdes", self.suite, "restart", "carried"], 1)
        # The SRC goes on past the rollover (ROC 1): every packet authenticates.
        self.send_srtp(sender, 65536 + 20, 10)
        self.assertEqual(self.media().counters.srtp_auth_failures, 0)
        self.bye(call)
        self.finish()


class SecuredTakeoverTests(SecuredCase):
    def test_sdes_session_of_a_dead_node_taken_over_with_its_keys_and_counters(self) -> None:
        key = os.urandom(30)
        old = Call(self)
        first = old.setup(sdp_offer(savp(10000, "a", crypto(key))))
        (answered,) = self.answer(first).media[0].attribute_values("crypto")
        sender = OutboundSRTP("AES_CM_128_HMAC_SHA1_80", key[:16], key[16:])
        protocol = self.reactor.udpPorts[PORT_MIN].protocol
        for seq in range(65536 - 30, 65536 + 10):
            protocol.datagramReceived(sender.protect_rtp(packet(seq)), SRC_ADDRESS)
            self.reactor.advance(0.02)
        self.reactor.advance(0.6)
        (record,) = self.store.load_all().values()
        record["node"] = "node-a"
        # Node B: its own disk, the same KEKs (the cluster's key store), the shared records.
        self.recordings = os.path.abspath(self.mktemp())
        dialog = (old.call_id, first.to.tag, old.from_tag)
        store = FakeSharedStore(default_path(self.recordings), {dialog: record})
        self.addCleanup(store.close)
        self.boot(store, SIPRECD_STATE_NODE_ID="node-b")
        new = Call(self)
        response = new.setup(
            sdp_offer(savp(10000, "a", crypto(key))),
            headers=(("Replaces", f"{dialog[0]};to-tag={dialog[1]};from-tag={dialog[2]}"),),
        )
        self.assertEqual(response.status, 200)
        # The same SRS key as node A answered: the SRC's contexts need not change.
        self.assertEqual(self.answer(response).media[0].attribute_values("crypto"), [answered])
        (call,) = self.controller.calls.values()
        media = call.streams.current[0].media
        protocol = self.reactor.udpPorts[PORT_MIN].protocol
        for seq in range(65536 + 10, 65536 + 20):  # ROC 1 goes on
            protocol.datagramReceived(sender.protect_rtp(packet(seq)), SRC_ADDRESS)
            self.reactor.advance(0.02)
        self.assertEqual(media.counters.srtp_auth_failures, 0)
        self.assertEqual(media.recorder.counters.packets, 10)
        security = self.session(new)["streams"][0]["stream_security"]
        self.assertEqual(security["restored"]["how"], "replaces")
        self.assertEqual(self.controller.security.restored["sdes", "AES_CM_128_HMAC_SHA1_80", "replaces", "carried"], 1)
        self.bye(new)
        self.finish()
