"""The session.json view: participants with numbers and roles, senders per stream label."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from siprecd.metadata import MetadataState, numbers_in, parse_metadata, summarize
from tests.test_metadata import corpus_metadata, rfc7865, sample


def brief(summary: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (p["id"], p["name"], p["aor"], p["numbers"], p["role"]) for p in summary["participants"]
    ]


class CorpusSummaryTests(SynchronousTestCase):
    def test_sonus_numbers_from_vendor_block(self) -> None:
        s = summarize(parse_metadata(corpus_metadata("sonus-siprec-offer.txt")))
        self.assertEqual(
            brief(s),
            [
                (
                    "MTQ3YzA3YzItNjdkNy0xMA==",
                    "Extension 8500",
                    "2249888500@172.16.198.55",
                    ["2249888500"],
                    "caller",
                ),
                (
                    "MTQ3YzA3YzMtNjdkNy0xMA==",
                    None,
                    "2249888012@172.16.195.72",
                    ["2249888012"],
                    "callee",
                ),
            ],
        )
        self.assertEqual(
            s["numbers"],
            [
                {"number": "2249888500", "role": "caller", "source": "callData/fromhdr"},
                {"number": "2249888012", "role": "callee", "source": "callData/tohdr"},
            ],
        )
        self.assertEqual(
            s["senders_by_label"],
            {"1": ["MTQ3YzA3YzMtNjdkNy0xMA=="], "2": ["MTQ3YzA3YzItNjdkNy0xMA=="]},
        )
        self.assertEqual(
            s["label_by_stream_id"],
            {"MTQ3YzA3YzQtNjdkNy0xMA==": "1", "MTQ3YzA3YzUtNjdkNy0xMA==": "2"},
        )
        first = s["participants"][0]
        self.assertEqual(
            (first["associate_time"], first["disassociate_time"], first["send_labels"]),
            ("1970-05-13T03:29:05Z", None, ["2"]),
        )
        self.assertEqual([e["tag"] for e in s["extensions"]], ["callData"])
        self.assertEqual(s["sessions"][0]["group_id"], "MTQ3YzA3YzAtNjdkNy0xMA==")

    def test_acme_calling_party_flag(self) -> None:
        s = summarize(parse_metadata(corpus_metadata("acme-siprec-offer.txt")))
        self.assertEqual(
            brief(s),
            [
                ("fSD3PFErSjNTHLDiXCELjw==", "9000", "sip:9000@192.168.50.102", ["9000"], "caller"),
                ("EbccNyypRlFYXTm4iw8hxw==", "1002", "sip:1002@192.168.50.10", ["1002"], "callee"),
            ],
        )
        self.assertEqual(s["numbers"], [])

    def test_cisco_streams(self) -> None:
        s = summarize(parse_metadata(corpus_metadata("cisco-siprec-offer.txt")))
        self.assertEqual(
            [
                (t["label"], t["sending_participants"], t["receiving_participants"])
                for t in s["streams"]
            ],
            [
                ("1", ["kQNhKFdEEeeJ99D/VsPGWA=="], ["kQNhKFdEEeeJ+ND/VsPGWA=="]),
                ("2", ["kQNhKFdEEeeJ+ND/VsPGWA=="], ["kQNhKFdEEeeJ99D/VsPGWA=="]),
            ],
        )
        self.assertEqual([p["numbers"] for p in s["participants"]], [["7301"], ["7300"]])
        self.assertEqual(
            s["sessions"][0]["sip_session_ids"],
            ["e9fffff2020a598b86962867715db0cf;remote=cd0f7093d62c5f0697098fd69a4aa57b"],
        )

    def test_procomm_aor_without_scheme_is_not_a_number(self) -> None:
        s = summarize(parse_metadata(corpus_metadata("procomm-siprec-offer.txt")))
        self.assertEqual([p["numbers"] for p in s["participants"]], [["016190200"], []])

    def test_every_corpus_summary_is_json(self) -> None:
        names = [
            "acme-siprec-offer.txt",
            "broadworks-offer-2.txt",
            "broadworks-offer.txt",
            "cisco-siprec-offer.txt",
            "connectel-offer.txt",
            "inactive-sdp-offer.txt",
            "procomm-siprec-offer.txt",
            "sonus-siprec-offer.txt",
        ]
        for name in names:
            s = summarize(parse_metadata(corpus_metadata(name)))
            self.assertEqual(json.loads(json.dumps(s)), s, name)


class SampleSummaryTests(SynchronousTestCase):
    def test_broadworks_numbers_matched_to_participants(self) -> None:
        s = summarize(parse_metadata(sample("early-draft-broadworks.xml")))
        uuid = "urn:uuid:0b5e1c1e-0000-4000-8000-00000000000"
        self.assertEqual(
            brief(s),
            [
                (uuid + "4", None, "sip:02025550111@as.example.net", ["02025550111"], "caller"),
                (
                    uuid + "5",
                    None,
                    "sip:2025550177@sbc.example.net;user=phone",
                    ["2025550177"],
                    "callee",
                ),
            ],
        )
        prefix = "extensiondata/broadWorksRecordingMetadata/"
        self.assertEqual(
            s["numbers"],
            [
                {"number": "02025550111", "role": None, "source": prefix + "userID"},
                {
                    "number": "+12025550111",
                    "role": "caller",
                    "source": prefix + "callType/origCall/callingPartyNumber",
                },
                {
                    "number": "2025550177",
                    "role": "callee",
                    "source": prefix + "callType/origCall/calledPartyNumber",
                },
            ],
        )
        self.assertEqual(s["senders_by_label"], {"1": [uuid + "4", uuid + "5"]})
        self.assertEqual(s["recording_id"], uuid + "1")

    def test_prefixed_vendor_numbers(self) -> None:
        s = summarize(parse_metadata(sample("prefixed-vendor.xml")))
        self.assertEqual(
            brief(s),
            [
                (
                    "cGFydC0x",
                    "Front Desk",
                    "sip:+442079460123@gw.example.co.uk",
                    ["+442079460123"],
                    "caller",
                ),
                ("cGFydC0y", None, "sip:agent42@pbx.example.co.uk", [], None),
            ],
        )
        self.assertEqual(
            [(n["number"], n["role"]) for n in s["numbers"]],
            [("+18005550100", "callee"), ("+442079460123", "caller"), ("4420794609999", "callee")],
        )

    def test_rfc7865_final_participants(self) -> None:
        s = summarize(parse_metadata(sample("rfc7865-final.xml")))
        alice, bob = s["participants"]
        self.assertEqual(
            alice,
            {
                "id": "p-alice",
                "name": "Alice Agent",
                "names": [
                    {"text": "Alice Agent", "lang": "en"},
                    {"text": "Alice Agente", "lang": "fr"},
                ],
                "aor": "sip:+12025550101@carrier.example.net",
                "aors": ["sip:+12025550101@carrier.example.net", "tel:+1-202-555-0101"],
                "numbers": ["+12025550101"],
                "role": None,
                "associate_time": "2024-03-01T09:00:01Z",
                "disassociate_time": None,
                "sessions": [
                    {
                        "session_id": "cs-1",
                        "associate_time": "2024-03-01T09:00:01Z",
                        "disassociate_time": None,
                    }
                ],
                "send": ["s-a", "s-v"],
                "send_labels": ["a-leg", "video-1"],
                "recv": ["s-b"],
            },
        )
        self.assertEqual(
            (bob["numbers"], bob["associate_time"], bob["disassociate_time"]),
            ([], "2024-03-01T09:00:02Z", "2024-03-01T09:04:59Z"),
        )
        self.assertEqual(
            s["sessions"],
            [
                {
                    "session_id": "cs-1",
                    "sip_session_ids": [
                        "0123456789abcdef0123456789abcdef;remote=fedcba9876543210fedcba9876543210"
                    ],
                    "group_id": "grp-1",
                    "start_time": "2024-03-01T09:00:01Z",
                    "stop_time": "2024-03-01T09:05:00Z",
                    "associate_time": "2024-03-01T09:00:01Z",
                    "disassociate_time": "2024-03-01T09:05:00Z",
                }
            ],
        )
        self.assertEqual(
            [(t["stream_id"], t["content_type"]) for t in s["streams"]],
            [("s-a", "main"), ("s-b", None), ("s-v", "slides")],
        )
        self.assertNotIn("history", s)


class StateSummaryTests(SynchronousTestCase):
    def test_history_in_summary(self) -> None:
        state = MetadataState()
        for name, at in (
            ("complete.xml", "t1"),
            ("partial-hold.xml", "t2"),
            ("partial-resume.xml", "t3"),
        ):
            state = state.apply(parse_metadata(rfc7865(name)), at=at)
        s = summarize(state)
        alice = "srfBElmCRp2QB23b7Mpk0w=="
        self.assertEqual(
            s["history"]["updates"],
            [
                {"index": 1, "datamode": "complete", "at": "t1"},
                {"index": 2, "datamode": "partial", "at": "t2"},
                {"index": 3, "datamode": "partial", "at": "t3"},
            ],
        )
        self.assertEqual(
            [
                (e["update"], e["send_labels"])
                for e in s["history"]["streams"]
                if e["participant_id"] == alice
            ],
            [(1, ["97", "96"]), (2, []), (3, ["97", "96"])],
        )
        self.assertEqual(len(s["history"]["sessions"]), 2)
        self.assertEqual(s["senders_by_label"]["96"], [alice])
        self.assertEqual(json.loads(json.dumps(s)), s)

    def test_empty(self) -> None:
        for source in (None, MetadataState()):
            s = summarize(source)
            self.assertEqual((s["participants"], s["streams"], s["senders_by_label"]), ([], [], {}))


class NumbersInTests(SynchronousTestCase):
    def test_numbers_in(self) -> None:
        cases = {
            "sip:+12025550111@as.example.net": ["+12025550111"],
            "tel:+1-202-555-0101;phone-context=example.com": ["+12025550101"],
            '"Extension 8500" <sip:2249888500@172.16.198.55>;tag=x': ["2249888500"],
            "2249888012@172.16.195.72": ["2249888012"],
            "+1 (800) 555-0100": ["+18005550100"],
            "sips:alice@example.com": [],
            "Extension-016190619@speechpath.ie": [],
            "12": [],
            "true": [],
            "sip:+1MYPHONENUMBER@SBC_IP": [],
            "<sip:100@a>, <tel:200>": ["100", "200"],
        }
        for value, expected in cases.items():
            self.assertEqual(numbers_in(value), expected, value)
