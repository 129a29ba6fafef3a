"""SDES (RFC 4568) parsing and answers, and the [security] policy's decisions per m-line."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from siprecd.config import DEFAULT_SUITES, SecurityConfig
from siprecd.security.policy import Negotiated, SecurityPolicy
from siprecd.security.sdes import SDESError, parse_crypto, unusable
from siprecd.sdp import SDPError, build_answer, parse, plan_streams, serialize

VECTORS = Path(__file__).parent / "data" / "srtp-vectors"
KEY30 = base64.b64encode(bytes(range(30))).decode()
KEY46 = base64.b64encode(bytes(range(46))).decode()
KEY28 = base64.b64encode(bytes(range(28))).decode()
POLICY = SecurityConfig("optional", DEFAULT_SUITES, ("sdes", "dtls-srtp"), False, 5.0)


def offer(*media: str, head: tuple[str, ...] = ()) -> object:
    lines = ["v=0", "o=src 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0", *head, *media]
    return parse(("\r\n".join(lines) + "\r\n").encode())


def policy(**changes: object) -> SecurityPolicy:
    counter = iter(range(1, 1000))
    # Deterministic "fresh" keys: 0x01 0x01 ..., then 0x02 0x02 ...
    return SecurityPolicy(dataclasses.replace(POLICY, **changes), random_bytes=lambda n: bytes([next(counter)]) * n)


def decide(sdp: object, p: SecurityPolicy | None = None, index: int = 0) -> object:
    p = p or policy()
    return p.decide(sdp.media[index], sdp)  # type: ignore[attr-defined]


class ParseTests(SynchronousTestCase):
    def test_rfc4568_examples(self) -> None:
        for example in json.loads((VECTORS / "rfc4568_sdes_examples.json").read_text())["examples"]:
            line = parse_crypto(example["line"].removeprefix("a=crypto:"))
            key = line.keys[0]
            self.assertEqual((key.key + key.salt).hex(), example["key_salt_hex"])
            self.assertEqual(key.lifetime, 2**20)
            self.assertEqual(key.mki, example["mki_value"].to_bytes(example["mki_length"], "big"))
            self.assertEqual(list(line.params), example.get("session_params", []))

    def test_lifetimes_mki_and_several_keys(self) -> None:
        line = parse_crypto(f"7 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}|1048576|2:1;inline:{KEY30}|3:1 KDR=0 WSH=128")
        self.assertEqual((line.tag, line.suite, line.params), (7, "AES_CM_128_HMAC_SHA1_32", ("KDR=0", "WSH=128")))
        self.assertEqual([(k.lifetime, k.mki) for k in line.keys], [(1048576, b"\x02"), (None, b"\x03")])
        self.assertEqual(len(line.keys[0].key), 16)
        self.assertIsNone(unusable(line, allowed=DEFAULT_SUITES, allow_unencrypted=False))
        self.assertNotIn("key=", repr(line))  # keys stay out of reprs (and so of logs)
        self.assertNotIn(repr(line.keys[0].key), repr(line))

    def test_errors_say_what_and_where(self) -> None:
        cases = {
            "1 AES_CM_128_HMAC_SHA1_80": "needs a tag, a suite and key parameters",
            f"x AES_CM_128_HMAC_SHA1_80 inline:{KEY30}": "tag 'x'",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!": "key 1: key||salt is not valid base64",
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY46}": "key||salt is 46 bytes, the suite needs 30",
            f"1 AES_CM_128_HMAC_SHA1_80 uri:{KEY30}": "key method must be 'inline:'",
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^49": "lifetime '2^49'",
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|300:1": "MKI value 300 does not fit in 1",
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:0": "length of 1-128 bytes",
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30};inline:{KEY30}": "several keys need distinct MKIs",
        }
        for value, message in cases.items():
            error = self.assertRaises(SDESError, parse_crypto, value)
            self.assertIn(message, str(error), value)
            self.assertIn("a=crypto", str(error), value)

    def test_unusable_session_parameters(self) -> None:
        def why(params: str, **kw: object) -> str | None:
            line = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} {params}".strip())
            return unusable(line, allowed=kw.get("allowed", DEFAULT_SUITES), allow_unencrypted=bool(kw.get("unenc")))

        self.assertIsNone(why(""))
        self.assertIsNone(why("KDR=0"))
        self.assertIn("KDR=1", why("KDR=1") or "")
        self.assertIn("FEC_ORDER", why("FEC_ORDER=FEC_SRTP") or "")
        self.assertIn("FEC_KEY", why(f"FEC_KEY=inline:{KEY30}") or "")
        self.assertIn("always", (why("UNAUTHENTICATED_SRTP", unenc=True) or "") + " always")
        self.assertIn("allow_unencrypted", why("UNENCRYPTED_SRTP") or "")
        self.assertIsNone(why("UNENCRYPTED_SRTP UNENCRYPTED_SRTCP", unenc=True))
        self.assertIn("not supported", why("FOO=1") or "")
        self.assertIn("not allowed by [security] suites", why("", allowed=("AEAD_AES_128_GCM",)) or "")
        line = parse_crypto(f"1 F8_128_HMAC_SHA1_80 inline:{KEY30}")
        self.assertEqual(unusable(line, allowed=DEFAULT_SUITES, allow_unencrypted=False),
                         "suite F8_128_HMAC_SHA1_80 is not supported")


class PolicyTests(SynchronousTestCase):
    def test_choice_by_the_srs_preference_with_its_own_key(self) -> None:
        sdp = offer("m=audio 4000 RTP/SAVP 0",
                    f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}",
                    f"a=crypto:2 AES_256_CM_HMAC_SHA1_80 inline:{KEY46}",
                    f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}")
        decision = decide(sdp)
        negotiated = decision.negotiated
        self.assertIsNone(decision.refusal)
        self.assertEqual((negotiated.method, negotiated.suite), ("sdes", "AES_CM_128_HMAC_SHA1_80"))
        self.assertEqual(negotiated.attributes,
                         (("crypto", "3 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(b"\x01" * 30).decode()),))
        self.assertEqual(negotiated.to_json(),
                         {"method": "sdes", "suite": "AES_CM_128_HMAC_SHA1_80", "tag": 3, "keys_offered": 1})
        self.assertNotIn(KEY30, repr(negotiated))
        other = decide(sdp, policy(suites=("AES_256_CM_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80")))
        self.assertEqual((other.negotiated.suite, other.negotiated.attributes[0][1][:2]), ("AES_256_CM_HMAC_SHA1_80", "2 "))

    def test_skips_unusable_lines(self) -> None:
        sdp = offer("m=audio 4000 RTP/SAVP 0",
                    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} KDR=4",
                    f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} UNENCRYPTED_SRTP",
                    "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:broken",
                    f"a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}")
        self.assertEqual(decide(sdp).negotiated.attributes[0][1].split()[:2], ["4", "AES_CM_128_HMAC_SHA1_32"])
        # With UNENCRYPTED_SRTP allowed, line 2 is preferred (its suite comes first) and echoed.
        value = decide(sdp, policy(allow_unencrypted=True)).negotiated.attributes[0][1]
        self.assertEqual((value.split()[0], value.split()[-1]), ("2", "UNENCRYPTED_SRTP"))

    def test_nothing_acceptable_says_why(self) -> None:
        sdp = offer("m=audio 4000 RTP/SAVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} FEC_ORDER=SRTP_FEC",
                    f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}")
        refusal = decide(sdp, policy(suites=("AES_CM_128_HMAC_SHA1_80",))).refusal
        self.assertIn("SDES: no acceptable a=crypto line (offered: AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32", refusal)
        self.assertIn("a=crypto:1 AES_CM_128_HMAC_SHA1_80: FEC_ORDER (SRTP with FEC) is not supported", refusal)
        self.assertIn("a=crypto:2 AES_CM_128_HMAC_SHA1_32: suite AES_CM_128_HMAC_SHA1_32 is not allowed", refusal)
        exc = self.assertRaises(SDPError, plan_streams, sdp, codec_preference=["PCMU"],
                                security=policy(suites=("AES_CM_128_HMAC_SHA1_80",)).decide)
        self.assertIn("nothing to record: m-line 1/1 (audio): secured media not acceptable: SDES:", exc.warning)

    def test_modes(self) -> None:
        savp = offer("m=audio 4000 RTP/SAVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}")
        avp_crypto = offer("m=audio 4000 RTP/AVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}")
        plain = offer("m=audio 4000 RTP/AVP 0")
        off, required = policy(srtp="off"), policy(srtp="required")
        self.assertEqual(decide(savp, off).refusal, "secured media (RTP/SAVP) refused: [security] srtp = off")
        self.assertEqual((decide(avp_crypto, off).refusal, decide(avp_crypto, off).negotiated), (None, None))
        self.assertEqual(decide(avp_crypto, required).negotiated.suite, "AES_CM_128_HMAC_SHA1_80")
        self.assertEqual(decide(plain, required).refusal, "plain RTP refused: [security] srtp = required")
        self.assertEqual((decide(plain).refusal, decide(plain).negotiated), (None, None))
        # An unusable best-effort a=crypto on RTP/AVP: plain under optional, refused under required.
        bad = offer("m=audio 4000 RTP/AVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} KDR=3")
        self.assertEqual((decide(bad).refusal, decide(bad).negotiated), (None, None))
        self.assertIn("KDR=3", decide(bad, required).refusal)
        self.assertEqual(decide(offer("m=audio 4000 RTP/SAVP 0")).refusal, "RTP/SAVP without any key exchange")

    def test_dtls_and_mikey_refused_until_implemented(self) -> None:
        dtls = offer("m=audio 4000 UDP/TLS/RTP/SAVP 0", "a=setup:actpass", head=("a=fingerprint:sha-256 AB:CD",))
        self.assertEqual(decide(dtls).refusal,
                         "secured media not acceptable: DTLS-SRTP key exchange is not supported yet")
        sdes_only = policy(key_exchange=("sdes",))
        self.assertEqual(decide(dtls, sdes_only).refusal,
                         "secured media not acceptable: DTLS-SRTP key exchange is not supported yet")
        mikey = offer("m=audio 4000 RTP/SAVP 0", "a=key-mgmt:mikey AQAFgM0")
        self.assertIn("MIKEY key exchange is not supported yet", decide(mikey).refusal)
        # Both offered: SDES wins, the DTLS fingerprint does not matter.
        both = offer("m=audio 4000 RTP/SAVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}",
                     "a=fingerprint:sha-256 AB:CD")
        self.assertEqual(decide(both).negotiated.method, "sdes")
        self.assertIn("not allowed", decide(both, policy(key_exchange=("dtls-srtp",))).refusal)

    def test_registry_is_the_extension_point(self) -> None:
        class FakeDTLS:
            name = "dtls-srtp"

            def offered(self, m: object, session: object) -> bool:
                return True

            def negotiate(self, m: object, session: object, p: object) -> Negotiated:
                return Negotiated("dtls-srtp", None, (("setup", "active"), ("fingerprint", "sha-256 00")))

            def activate(self, negotiated: Negotiated, media: object) -> bool:
                return False

        p = SecurityPolicy(POLICY, {"sdes": policy().methods["sdes"], "dtls-srtp": FakeDTLS()})
        dtls = offer("m=audio 4000 UDP/TLS/RTP/SAVP 0", "a=fingerprint:sha-256 AB:CD")
        self.assertEqual(decide(dtls, p).negotiated.attributes[0], ("setup", "active"))


class AnswerTests(SynchronousTestCase):
    def answer(self, sdp: object, p: SecurityPolicy | None = None) -> bytes:
        p = p or policy()
        plan = plan_streams(sdp, codec_preference=["PCMU"], security=p.decide)
        ports = [30000 + 2 * i if c.accepted else None for i, c in enumerate(plan)]
        result, _ = build_answer(sdp, address="192.0.2.10", ports=ports, codec_preference=["PCMU"],
                                 origin_session_id=1, origin_version=1, plan=plan)
        return serialize(result)

    def test_mixed_avp_and_savp_mirror_the_offer(self) -> None:
        sdp = offer("m=audio 4000 RTP/AVP 0", "a=label:plain",
                    "m=audio 4002 RTP/SAVP 0", "a=label:secret", f"a=crypto:5 AEAD_AES_128_GCM inline:{KEY28}",
                    "m=audio 4004 RTP/AVP 0", "a=label:best-effort", f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY46}")
        text = self.answer(sdp).decode()
        ours1 = base64.b64encode(b"\x01" * 28).decode()
        ours2 = base64.b64encode(b"\x02" * 46).decode()
        self.assertIn("m=audio 30000 RTP/AVP 0\r\nc=IN IP4 192.0.2.10\r\na=rtpmap:0 PCMU/8000\r\na=label:plain\r\n", text)
        self.assertIn(f"m=audio 30002 RTP/SAVP 0\r\nc=IN IP4 192.0.2.10\r\na=rtpmap:0 PCMU/8000\r\n"
                      f"a=crypto:5 AEAD_AES_128_GCM inline:{ours1}\r\na=label:secret\r\n", text)
        self.assertIn(f"m=audio 30004 RTP/AVP 0\r\nc=IN IP4 192.0.2.10\r\na=rtpmap:0 PCMU/8000\r\n"
                      f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{ours2}\r\na=label:best-effort\r\n", text)
        self.assertNotIn(KEY28, text)
        self.assertNotIn(KEY46, text)


class SummaryTests(SynchronousTestCase):
    def test_security_summary(self) -> None:
        from siprecd.security.policy import security_summary

        def s(method: str | None, suite: str | None, recorded: bool = True, ended: bool = False) -> dict:
            return {"recorded": recorded, "ended": ended, "stream_security": {"method": method, "suite": suite}}

        self.assertIsNone(security_summary([s(None, None), s("sdes", "X", recorded=False)]))
        self.assertEqual(security_summary([s("sdes", "A"), s("sdes", "A"), s("sdes", "B", ended=True)]),
                         {"method": "sdes", "suite": "A"})
        self.assertEqual(security_summary([s("sdes", "A"), s(None, None), s("sdes", "B")]),
                         [{"method": "sdes", "suite": "A"}, {"method": "sdes", "suite": "B"}])
