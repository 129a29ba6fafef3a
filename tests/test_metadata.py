"""Metadata parsing: every corpus offer and RFC 7865 example, and every dialect and oddity.

The other metadata test modules (merge, summary, hardening) import the helpers below; they
import functions only, so trial does not collect these test cases twice.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from siprecd.metadata import (
    MetadataError,
    Name,
    ParticipantSessionAssoc,
    ParticipantStreamAssoc,
    Recording,
    SessionRecordingAssoc,
    parse_metadata,
    senders_by_label,
)
from siprecd.sip.multipart import parse_multipart

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus"
SAMPLES = DATA / "metadata"


def corpus_metadata(name: str, *, crlf: bool = False) -> bytes:
    """The rs-metadata part of a drachtio corpus offer (multipart body, LF as stored)."""
    raw = (CORPUS / name).read_bytes()
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    match = re.search(rb"^--([^\r\n]+?)\r?$", raw, re.M)
    assert match is not None, f"{name}: no boundary line"
    parts = parse_multipart("multipart/mixed;boundary=" + match.group(1).decode(), raw)
    for part in parts:
        if "rs-metadata" in part.content_type:
            return part.body
    for part in parts:  # broadworks-offer.txt says "application/ +xml"
        if part.body.lstrip().startswith(b"<"):
            return part.body
    raise AssertionError(f"{name}: no metadata part")


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def rfc7865(name: str) -> bytes:
    return (CORPUS / "rfc7865" / name).read_bytes()


def people(recording: Recording) -> list[tuple[str, tuple[str, ...], tuple[Name, ...]]]:
    return [(p.participant_id, p.aors, p.display_names) for p in recording.participants]


def labels(recording: Recording) -> dict[str, str | None]:
    return {s.stream_id: s.label for s in recording.streams}


class CorpusOfferTests(SynchronousTestCase):
    """Offers as real SRCs sent them; expected values read from the files by hand."""

    def parse(self, name: str) -> Recording:
        recording = parse_metadata(corpus_metadata(name))
        # SIP on the wire is CRLF: the same body with CRLF must give the same model.
        self.assertEqual(parse_metadata(corpus_metadata(name, crlf=True)), recording)
        return recording

    def test_acme(self) -> None:
        r = self.parse("acme-siprec-offer.txt")
        self.assertEqual((r.datamode, r.dialect), ("complete", "draft"))
        self.assertEqual(
            people(r),
            [
                ("fSD3PFErSjNTHLDiXCELjw==", ("sip:9000@192.168.50.102",), (Name("9000"),)),
                ("EbccNyypRlFYXTm4iw8hxw==", ("sip:1002@192.168.50.10",), (Name("1002"),)),
            ],
        )
        self.assertEqual(
            labels(r),
            {"Q4O8SGLQSilXHUGQX2zd8Q==": "16777227", "l1NyQy8ORSlouUj2G3UE/A==": "16777228"},
        )
        self.assertEqual(
            senders_by_label(r),
            {"16777227": ["fSD3PFErSjNTHLDiXCELjw=="], "16777228": ["EbccNyypRlFYXTm4iw8hxw=="]},
        )
        # <send> inside <participant> is kept as given, and the session attribute plus the
        # participant's associate-time become a participant-session association.
        self.assertEqual(r.participants[0].send, ("Q4O8SGLQSilXHUGQX2zd8Q==",))
        self.assertEqual(r.participants[0].recv, ())
        self.assertEqual(
            r.participant_session_assocs[1],
            ParticipantSessionAssoc(
                "EbccNyypRlFYXTm4iw8hxw==", "AavRXwIIQj1Q39eJulTipQ==", "2019-03-09T16:50:20"
            ),
        )
        self.assertEqual(
            r.session_recording_assocs,
            (SessionRecordingAssoc("AavRXwIIQj1Q39eJulTipQ==", "2019-03-09T16:50:20"),),
        )
        self.assertEqual([s.mode for s in r.streams], ["separate", "separate"])
        self.assertEqual(r.streams[1].associate_time, "2019-03-09T16:50:31")
        ext = r.participants[1].extensions
        self.assertEqual([(e.kind, e.tag) for e in ext], [("extensiondata", "extensiondata")])
        self.assertIn("<apkt:callingParty>false</apkt:callingParty>", ext[0].xml)
        self.assertEqual(ext[0].fields, (("extensiondata/callingParty", "false"),))

    def test_broadworks_avaya_style(self) -> None:
        r = self.parse("broadworks-offer-2.txt")  # <dataMode> spelling
        self.assertEqual((r.datamode, r.dialect, r.warnings), ("complete", "rfc7865", ()))
        self.assertEqual(
            people(r),
            [
                ("9a2de728ba0bc348db1e", ("sip:9878942259@212.188.68.145",), ()),
                ("abcdef12345678901234", ("sip:ASBCE@asbce.com",), ()),
            ],
        )
        self.assertEqual(labels(r), {"e6988909e02ca808ec0a": "10", "261ddd3615629f108092": "20"})
        self.assertEqual(
            senders_by_label(r),
            {"10": ["9a2de728ba0bc348db1e"], "20": ["abcdef12345678901234"]},
        )

    def test_broadworks_markup_lost(self) -> None:
        # Upstream lost the markup: only text is left in the root. Readable, but empty.
        r = self.parse("broadworks-offer.txt")
        self.assertEqual((r.dialect, r.participants, r.streams), ("early-draft", (), ()))
        self.assertTrue(r.warnings[0].startswith("text directly inside <recording_metadata>"))
        self.assertEqual(r.warnings[1], "no <datamode>; assuming complete")

    def test_cisco(self) -> None:
        r = self.parse("cisco-siprec-offer.txt")
        self.assertEqual(
            people(r),
            [
                ("kQNhKFdEEeeJ99D/VsPGWA==", ("sip:7301@35.162.237.204",), ()),
                ("kQNhKFdEEeeJ+ND/VsPGWA==", ("sip:7300@35.162.237.204",), (Name("7300", "en"),)),
            ],
        )
        self.assertEqual(
            labels(r), {"kQOH5VdEEeeJ/ND/VsPGWA==": "1", "kQOH5VdEEeeJ/dD/VsPGWA==": "2"}
        )
        self.assertEqual(
            senders_by_label(r),
            {"1": ["kQNhKFdEEeeJ99D/VsPGWA=="], "2": ["kQNhKFdEEeeJ+ND/VsPGWA=="]},
        )
        self.assertEqual(
            r.sessions[0].sip_session_ids,
            ("e9fffff2020a598b86962867715db0cf;remote=cd0f7093d62c5f0697098fd69a4aa57b",),
        )
        self.assertEqual(r.sessions[0].start_time, "2017-06-23T12:16:06.040Z")
        self.assertEqual(r.receives("kQNhKFdEEeeJ99D/VsPGWA=="), ("kQOH5VdEEeeJ/dD/VsPGWA==",))

    def test_cisco_inactive_empty_stream_assocs(self) -> None:
        r = self.parse("inactive-sdp-offer.txt")
        self.assertEqual(
            people(r),
            [
                ("GZBIusaXEeuxxa1dFIaIyA==", ("sip:0733165805@192.168.40.34",), ()),
                ("GZBIusaXEeuxxq1dFIaIyA==", ("sip:+972546136443@192.168.10.140",), ()),
            ],
        )
        self.assertEqual(
            labels(r), {"GbZGg8aXEeuxy61dFIaIyA==": "1", "GbZGg8aXEeuxzK1dFIaIyA==": "2"}
        )
        # Empty <participantstreamassoc>: nobody is known to send; never guess by order.
        self.assertEqual(senders_by_label(r), {"1": [], "2": []})
        self.assertEqual(
            r.participant_stream_assocs[0], ParticipantStreamAssoc("GZBIusaXEeuxxa1dFIaIyA==")
        )

    def test_connectel_without_associations(self) -> None:
        names = {
            "connectel-offer.txt": "test_user;lang=en-US;id=22",
            "connectel-offer2.txt": "test_user;lang=en-US",
            "connectel-offer3.txt": "test_user",
        }
        for name, display in names.items():
            r = self.parse(name)
            self.assertEqual(
                people(r),
                [
                    (
                        "WEWTz80cS1Cqdyepmu3STQ==",
                        ("sip:0771121212@52.57.92.239",),
                        (Name(display),),
                    ),
                    ("21Isz6eFRYuiDN0vEkVXQQ==", ("sip:0760516936@sip-cust1.connectel.io",), ()),
                ],
            )
            self.assertEqual(
                labels(r), {"EkG6jSRhQqCupqs53tna1w==": "1", "4CLOddBJRvGyTJJxPE2ZSw==": "2"}
            )
            self.assertEqual(senders_by_label(r), {"1": [], "2": []})
            self.assertEqual(
                r.sessions[0].sip_session_ids, ("2d8abbf0769c66e15bb349f509693d60@52.57.92.239",)
            )

    def test_procomm_sems(self) -> None:
        r = self.parse("procomm-siprec-offer.txt")  # application/rs-metadata without +xml
        self.assertEqual(
            people(r),
            [
                (
                    "Ye5S5pU+SAG2JY4oG7M4Cw==",
                    ("sip:016190200@87.252.209.116",),
                    (Name("016190200"),),
                ),
                (
                    "QDhKextjTa+F1TzXuvHZHw==",
                    ("Extension-016190619@speechpath.ie",),
                    (Name("Speechpath-Main-Line 016190619"),),
                ),
            ],
        )
        self.assertEqual(
            labels(r), {"HdU6Bt7GTZiHcNe4R2LHdA==": "a_leg", "T6T6syCpRSGH1J+gwLFaIQ==": "b_leg"}
        )
        self.assertEqual(
            senders_by_label(r),
            {"a_leg": ["Ye5S5pU+SAG2JY4oG7M4Cw=="], "b_leg": ["QDhKextjTa+F1TzXuvHZHw=="]},
        )

    def test_sonus_prefixed_with_vendor_block(self) -> None:
        r = self.parse("sonus-siprec-offer.txt")
        self.assertEqual((r.dialect, r.namespace), ("draft", "urn:ietf:params:xml:ns:recording"))
        self.assertEqual(
            people(r),
            [
                (
                    "MTQ3YzA3YzItNjdkNy0xMA==",
                    ("2249888500@172.16.198.55",),
                    (Name("Extension 8500", "en"),),
                ),
                ("MTQ3YzA3YzMtNjdkNy0xMA==", ("2249888012@172.16.195.72",), (Name("", "en"),)),
            ],
        )
        self.assertEqual(
            labels(r), {"MTQ3YzA3YzQtNjdkNy0xMA==": "1", "MTQ3YzA3YzUtNjdkNy0xMA==": "2"}
        )
        # The stream labelled 2 is sent by the first participant: the association says so,
        # m-line order would have said otherwise.
        self.assertEqual(
            senders_by_label(r),
            {"1": ["MTQ3YzA3YzMtNjdkNy0xMA=="], "2": ["MTQ3YzA3YzItNjdkNy0xMA=="]},
        )
        self.assertEqual(r.sessions[0].group_ref, "MTQ3YzA3YzAtNjdkNy0xMA==")
        (call_data,) = r.groups[0].extensions
        self.assertEqual(
            (call_data.kind, call_data.tag, call_data.namespace, call_data.parent),
            ("vendor", "callData", "urn:ietf:params:xml:ns:callData", "MTQ3YzA3YzAtNjdkNy0xMA=="),
        )
        self.assertIn("<gcid>241205267</gcid>", call_data.xml)
        self.assertEqual(
            call_data.fields[0],
            (
                "callData/fromhdr",
                '"Extension 8500" <sip:2249888500@172.16.198.55>;tag=SerryvK5ej0jc',
            ),
        )

    def test_non_siprec_body_is_not_metadata(self) -> None:
        body = (CORPUS / "non-siprec-payload.txt").read_bytes()
        self.assertRaises(MetadataError, parse_metadata, body)


class RFC7865ExampleTests(SynchronousTestCase):
    def test_complete(self) -> None:
        r = parse_metadata(rfc7865("complete.xml"))
        self.assertEqual((r.datamode, r.dialect, r.warnings), ("complete", "rfc7865", ()))
        self.assertEqual(
            people(r),
            [
                ("srfBElmCRp2QB23b7Mpk0w==", ("sip:alice@atlanta.com",), (Name("Alice", "it"),)),
                ("zSfPoSvdSDCmU3A3TRDxAw==", ("sip:bob@biloxy.com",), (Name("Bob", "it"),)),
            ],
        )
        self.assertEqual(
            labels(r),
            {
                "UAAMm5GRQKSCMVvLyl4rFw==": "96",
                "i1Pz3to5hGk8fuXl+PbwCw==": "97",
                "8zc6e0lYTlWIINA6GR+3ag==": "98",
                "EiXGlc+4TruqqoDaNE76ag==": "99",
            },
        )
        alice, bob = "srfBElmCRp2QB23b7Mpk0w==", "zSfPoSvdSDCmU3A3TRDxAw=="
        self.assertEqual(
            senders_by_label(r), {"96": [alice], "97": [alice], "98": [bob], "99": [bob]}
        )
        self.assertEqual(r.receivers("UAAMm5GRQKSCMVvLyl4rFw=="), (bob,))
        (session,) = r.sessions
        self.assertEqual(
            session.sip_session_ids,
            ("ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2",),
        )
        self.assertEqual(session.group_ref, "7+OTCyoxTmqmqyA/1weDAg==")  # was split over lines
        self.assertEqual(r.groups[0].associate_time, "2010-12-16T23:41:07Z")
        self.assertEqual(
            [(e.tag, e.namespace) for e in r.groups[0].extensions],
            [
                ("call-center", "urn:ietf:params:xml:ns:callcenter"),
                ("mydata", "http://example.com/my"),
            ],
        )
        self.assertEqual([e.tag for e in session.extensions], ["mydata"])
        self.assertEqual([len(p.extensions) for p in r.participants], [1, 1])
        self.assertEqual(len(list(r.all_extensions())), 5)
        self.assertEqual(
            r.participant_session_assocs[0],
            ParticipantSessionAssoc(alice, "hVpd7YQgRW2nD22h7q60JQ==", "2010-12-16T23:41:07Z"),
        )

    def test_partial_hold_and_resume(self) -> None:
        hold = parse_metadata(rfc7865("partial-hold.xml"))
        self.assertEqual((hold.datamode, hold.participants, hold.streams), ("partial", (), ()))
        self.assertEqual(
            hold.participant_stream_assocs,
            (
                ParticipantStreamAssoc(
                    "srfBElmCRp2QB23b7Mpk0w==",
                    (),
                    ("8zc6e0lYTlWIINA6GR+3ag==", "EiXGlc+4TruqqoDaNE76ag=="),
                ),
                ParticipantStreamAssoc(
                    "zSfPoSvdSDCmU3A3TRDxAw==",
                    ("8zc6e0lYTlWIINA6GR+3ag==", "EiXGlc+4TruqqoDaNE76ag=="),
                    (),
                ),
            ),
        )
        resume = parse_metadata(rfc7865("partial-resume.xml"))
        self.assertEqual(resume.datamode, "partial")
        self.assertEqual(
            resume.sends("srfBElmCRp2QB23b7Mpk0w=="),
            ("i1Pz3to5hGk8fuXl+PbwCw==", "UAAMm5GRQKSCMVvLyl4rFw=="),
        )
