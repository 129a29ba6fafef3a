"""Metadata parsing: one hand-written sample per dialect and oddity (tests/data/metadata/)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from siprecd.metadata import (
    MetadataError,
    Name,
    NameID,
    ParticipantSessionAssoc,
    SessionRecordingAssoc,
    parse_metadata,
    senders_by_label,
)
from tests.test_metadata import labels, people, sample


class DialectTests(SynchronousTestCase):
    """Hand-written samples, one per dialect and oddity (tests/data/metadata/README.md)."""

    def test_rfc7865_final(self) -> None:
        r = parse_metadata(sample("rfc7865-final.xml"))
        self.assertEqual((r.dialect, r.warnings), ("rfc7865", ()))
        alice = r.participant("p-alice")
        assert alice is not None
        self.assertEqual(
            alice.name_ids,
            (
                NameID(
                    "sip:+12025550101@carrier.example.net",
                    (Name("Alice Agent", "en"), Name("Alice Agente", "fr")),
                ),
                NameID("tel:+1-202-555-0101"),
            ),
        )
        self.assertEqual(
            alice.aors, ("sip:+12025550101@carrier.example.net", "tel:+1-202-555-0101")
        )
        self.assertEqual([s.content_type for s in r.streams], ["main", None, "slides"])
        self.assertEqual(
            senders_by_label(r), {"a-leg": ["p-alice"], "b-leg": ["p-bob"], "video-1": ["p-alice"]}
        )
        (session,) = r.sessions
        self.assertEqual(
            (session.group_ref, session.start_time, session.stop_time),
            ("grp-1", "2024-03-01T09:00:01Z", "2024-03-01T09:05:00Z"),
        )
        self.assertEqual(
            r.session_recording_assocs,
            (SessionRecordingAssoc("cs-1", "2024-03-01T09:00:01Z", "2024-03-01T09:05:00Z"),),
        )
        self.assertEqual(
            r.session_assocs("p-bob"),
            (
                ParticipantSessionAssoc(
                    "p-bob", "cs-1", "2024-03-01T09:00:02Z", "2024-03-01T09:04:59Z"
                ),
            ),
        )

    def test_late_draft(self) -> None:
        r = parse_metadata(sample("draft-late.xml"))
        self.assertEqual((r.dialect, r.namespace), ("draft", "urn:ietf:params:xml:ns:recording"))
        self.assertEqual(
            people(r),
            [
                ("part-caller", ("sip:2025550123@sbc.example.net",), (Name("Caller Name"),)),
                ("part-callee", ("sip:2025550188@pbx.example.org",), ()),
            ],
        )
        self.assertEqual(r.participant_stream_assocs, ())
        self.assertEqual(
            [(p.send, p.recv) for p in r.participants],
            [(("strm-1",), ("strm-2",)), (("strm-2",), ("strm-1",))],
        )
        self.assertEqual(senders_by_label(r), {"1001": ["part-caller"], "1002": ["part-callee"]})
        self.assertEqual(r.receivers("strm-1"), ("part-callee",))
        self.assertEqual(
            r.participant_session_assocs,
            (
                ParticipantSessionAssoc("part-caller", "sess-A", "2024-03-02T10:00:00"),
                ParticipantSessionAssoc("part-callee", "sess-A", "2024-03-02T10:00:03"),
            ),
        )
        self.assertEqual(
            r.session_recording_assocs, (SessionRecordingAssoc("sess-A", "2024-03-02T10:00:00"),)
        )
        self.assertEqual(
            r.participants[0].extensions[0].fields,
            (
                ("extensiondata/callingParty", "true"),
                ("extensiondata/ucid", "00FA080019000150AB12CD;encoding=hex"),
            ),
        )

    def test_early_draft(self) -> None:
        r = parse_metadata(sample("early-draft-broadworks.xml"))
        uuid = "urn:uuid:0b5e1c1e-0000-4000-8000-00000000000"
        self.assertEqual((r.dialect, r.datamode, r.warnings), ("early-draft", "complete", ()))
        self.assertEqual(r.recording_id, uuid + "1")
        self.assertEqual(
            people(r),
            [
                (uuid + "4", ("sip:02025550111@as.example.net",), ()),
                (uuid + "5", ("sip:2025550177@sbc.example.net;user=phone",), ()),
            ],
        )
        # Both parties on one mixed stream, referenced as <send><id>...</id></send>.
        self.assertEqual(senders_by_label(r), {"1": [uuid + "4", uuid + "5"]})
        self.assertEqual(r.streams[0].mode, "mixed")
        self.assertEqual(
            (r.sessions[0].group_ref, r.sessions[0].start_time),
            (uuid + "2", "2019-01-13T14:48:35-05:00"),
        )
        self.assertEqual(
            [a.session_id for a in r.participant_session_assocs], [uuid + "3", uuid + "3"]
        )
        # <extensiondata parent="session id"> at top level is attached to that session.
        (bw,) = r.sessions[0].extensions
        self.assertEqual((bw.kind, bw.parent), ("extensiondata", uuid + "3"))
        self.assertIn("callingPartyNumber", bw.xml)
        self.assertIn(
            (
                "extensiondata/broadWorksRecordingMetadata/callType/origCall/callingPartyNumber",
                "sip:+12025550111@as.example.net",
            ),
            bw.fields,
        )
        # The <recording> and <initiator> elements are not interpreted, so they are kept.
        self.assertEqual([e.tag for e in r.extensions], ["recording"])
        self.assertEqual([e.tag for e in r.groups[0].extensions], ["initiator"])

    def test_prefixed_with_vendor_blocks_everywhere(self) -> None:
        r = parse_metadata(sample("prefixed-vendor.xml"))
        self.assertEqual((r.dialect, r.datamode, r.warnings), ("rfc7865", "complete", ()))
        self.assertEqual(
            people(r),
            [
                (
                    "cGFydC0x",
                    ("sip:+442079460123@gw.example.co.uk",),
                    (Name("Front Desk", "en-GB"),),
                ),
                ("cGFydC0y", ("sip:agent42@pbx.example.co.uk",), ()),
            ],
        )
        self.assertEqual(senders_by_label(r), {"10": ["cGFydC0y"], "20": ["cGFydC0x"]})
        self.assertEqual(r.sessions[0].session_id, "c2Vzcy0x")  # rs:session_id attribute
        self.assertEqual(
            r.sessions[0].sip_session_ids,
            ("aaaabbbbccccddddeeeeffff00001111;remote=2222333344445555666677778888999a",),
        )
        kept = {(e.tag, e.parent) for e in r.all_extensions()}
        self.assertEqual(
            kept,
            {
                ("routing", None),
                ("note", "cGFydC0x"),  # from the participantstreamassoc
                ("callData", "c2Vzcy0x"),
                ("agentId", "cGFydC0x"),  # from inside nameId
                ("customer", "cGFydC0x"),
                ("codecHint", "c3RyLTE="),
            },
        )
        self.assertTrue(all(e.kind == "vendor" for e in r.all_extensions()))

    def test_no_namespace(self) -> None:
        r = parse_metadata(sample("no-namespace.xml"))
        self.assertEqual((r.dialect, r.namespace), ("none", None))
        self.assertEqual(
            people(r),
            [
                ("nn-p1", ("sip:100@pbx.example.com",), (Name("Reception"),)),
                ("nn-p2", ("sip:200@pbx.example.com",), ()),
            ],
        )
        self.assertEqual(senders_by_label(r), {"x": ["nn-p2"], "y": ["nn-p1"]})

    def test_leading_whitespace(self) -> None:
        data = sample("leading-whitespace.xml")
        self.assertTrue(data.startswith(b"\r\n  \t\n<?xml"))
        r = parse_metadata(data)
        self.assertEqual(people(r), [("ws-p", ("sip:300@example.com",), ())])
        self.assertEqual(senders_by_label(r), {"7": ["ws-p"]})
        # A BOM before the whitespace is tolerated too.
        self.assertEqual(parse_metadata(b"\xef\xbb\xbf" + data), r)

    def test_case_oddities(self) -> None:
        r = parse_metadata(sample("case-oddities.xml"))
        self.assertEqual((r.datamode, r.warnings), ("complete", ()))
        self.assertEqual(
            people(r), [("co-p", ("sip:400@example.com",), (Name("Vierhundert", "de"),))]
        )
        self.assertEqual(r.sessions[0].sip_session_ids, ("11112222333344445555666677778888",))
        self.assertEqual(senders_by_label(r), {"L1": ["co-p"]})
        self.assertEqual(r.session_assocs("co-p")[0].associate_time, "2024-03-04T08:00:00Z")

    def test_partial_any_case(self) -> None:
        self.assertEqual(parse_metadata(sample("partial-mixed-case.xml")).datamode, "partial")
        upper = parse_metadata(sample("partial-upper-case.xml"))
        self.assertEqual(upper.datamode, "partial")
        self.assertEqual(upper.sends("p-carol"), ("s-c",))

    def test_all_dialects_give_one_model(self) -> None:
        """The same call in four dialects parses to equal participants, streams and senders."""
        bodies = {
            "rfc7865": b"""<recording xmlns="urn:ietf:params:xml:ns:recording:1">
                <datamode>complete</datamode><session session_id="S"/>
                <participant participant_id="P"><nameID aor="sip:1@x"><name>One</name></nameID>
                </participant><stream stream_id="T" session_id="S"><label>9</label></stream>
                <participantsessionassoc participant_id="P" session_id="S"/>
                <participantstreamassoc participant_id="P"><send>T</send></participantstreamassoc>
                </recording>""",
            "draft": b"""<recording xmlns="urn:ietf:params:xml:ns:recording">
                <datamode>complete</datamode><session id="S"/>
                <participant id="P" session="S"><nameID aor="sip:1@x"><name>One</name></nameID>
                <send>T</send><recv/></participant>
                <stream id="T" session="S"><label>9</label></stream></recording>""",
            "early-draft": b"""<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
                <dataMode>complete</dataMode><session id="S"/>
                <participant id="P" session="S"><aor>sip:1@x</aor><name>One</name>
                <send><id>T</id></send></participant>
                <stream id="T" session="S"><label>9</label></stream></recording_metadata>""",
            "none": b"""<recording><datamode>complete</datamode><session session_id="S"/>
                <participant participant_id="P"><nameID aor="sip:1@x"><name>One</name></nameID>
                </participant><stream stream_id="T" session_id="S"><label>9</label></stream>
                <participantsessionassoc participant_id="P" session_id="S"/>
                <participantstreamassoc participant_id="P"><send>T</send></participantstreamassoc>
                </recording>""",
        }
        for dialect, body in bodies.items():
            r = parse_metadata(body)
            self.assertEqual(r.dialect, dialect)
            self.assertEqual(people(r), [("P", ("sip:1@x",), (Name("One"),))], dialect)
            self.assertEqual(labels(r), {"T": "9"}, dialect)
            self.assertEqual(r.sends("P"), ("T",), dialect)
            self.assertEqual(r.participant_session_assocs, (ParticipantSessionAssoc("P", "S"),))

    def test_missing_datamode_defaults_to_complete(self) -> None:
        r = parse_metadata(b'<recording xmlns="urn:ietf:params:xml:ns:recording:1"/>')
        self.assertEqual(
            (r.datamode, r.warnings), ("complete", ("no <datamode>; assuming complete",))
        )

    def test_unknown_root_namespace_is_read_with_a_warning(self) -> None:
        r = parse_metadata(
            b'<recording xmlns="urn:example:recording:2"><datamode>complete</datamode>'
            b'<participant participant_id="Q"/></recording>'
        )
        self.assertEqual(
            (r.dialect, [p.participant_id for p in r.participants]), ("unknown", ["Q"])
        )
        self.assertEqual(
            r.warnings, ("root namespace 'urn:example:recording:2' is not a recording namespace",)
        )

    def test_element_without_id_is_kept_not_dropped(self) -> None:
        r = parse_metadata(
            b"<recording><datamode>complete</datamode>\n"
            b'<participant><nameID aor="sip:who@x"/></participant>\n'
            b'<participant participant_id="A"/><participant participant_id="A"><x/></participant>'
            b"</recording>"
        )
        self.assertEqual([p.participant_id for p in r.participants], ["A"])
        self.assertEqual(
            r.warnings,
            (
                "<participant> at line 2 has no participant_id; kept as extension",
                "duplicate <participant> at line 3 kept as extension",
            ),
        )
        self.assertEqual([e.kind for e in r.extensions], ["unrecognized", "unrecognized"])
        self.assertIn('aor="sip:who@x"', r.extensions[0].xml)

    def test_metadata_error_is_not_a_sip_error(self) -> None:
        from siprecd.errors import SIPError

        self.assertFalse(issubclass(MetadataError, SIPError))
