"""Complete and partial updates applied in sequence, with the history kept."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from siprecd.metadata import (
    MetadataState,
    ParticipantSessionAssoc,
    SessionAssociationEvent,
    StreamAssociationEvent,
    apply_update,
    parse_metadata,
    replay,
    senders_by_label,
)
from tests.test_metadata import rfc7865, sample

ALICE, BOB = "srfBElmCRp2QB23b7Mpk0w==", "zSfPoSvdSDCmU3A3TRDxAw=="
S96, S97, S98, S99 = (
    "UAAMm5GRQKSCMVvLyl4rFw==",
    "i1Pz3to5hGk8fuXl+PbwCw==",
    "8zc6e0lYTlWIINA6GR+3ag==",
    "EiXGlc+4TruqqoDaNE76ag==",
)
RFC_SENDERS = {"96": [ALICE], "97": [ALICE], "98": [BOB], "99": [BOB]}


def apply_files(*documents: bytes) -> MetadataState:
    state = MetadataState()
    for n, body in enumerate(documents, 1):
        state = state.apply(parse_metadata(body), at=f"t{n}")
    return state


class RFC7865HoldResumeTests(SynchronousTestCase):
    """RFC 7865 §8: the complete snapshot, then the partial hold and resume updates."""

    def setUp(self) -> None:
        self.complete = apply_files(rfc7865("complete.xml"))
        self.held = self.complete.apply(parse_metadata(rfc7865("partial-hold.xml")), at="t2")
        self.resumed = self.held.apply(parse_metadata(rfc7865("partial-resume.xml")), at="t3")

    def test_hold(self) -> None:
        held = self.held.current
        assert held is not None
        self.assertEqual(senders_by_label(held), {"96": [], "97": [], "98": [BOB], "99": [BOB]})
        self.assertEqual(held.sends(ALICE), ())
        self.assertEqual(held.receives(ALICE), (S98, S99))
        self.assertEqual(held.receives(BOB), ())
        # The partial update named no participant, stream or session: all are still there.
        self.assertEqual([p.participant_id for p in held.participants], [ALICE, BOB])
        self.assertEqual(len(held.streams), 4)
        self.assertEqual(len(list(held.all_extensions())), 5)
        self.assertEqual(held.datamode, "complete")

    def test_resume(self) -> None:
        resumed = self.resumed.current
        assert resumed is not None
        self.assertEqual(senders_by_label(resumed), RFC_SENDERS)
        self.assertEqual(resumed.receives(BOB), (S97, S96))

    def test_send_history_kept(self) -> None:
        self.assertEqual(
            [(e.update, e.at, e.participant_id, e.send) for e in self.resumed.stream_history],
            [
                (1, "t1", ALICE, (S97, S96)),
                (1, "t1", BOB, (S98, S99)),
                (2, "t2", ALICE, ()),
                (2, "t2", BOB, (S98, S99)),  # recv changed to nothing while Alice was on hold
                (3, "t3", ALICE, (S97, S96)),
                (3, "t3", BOB, (S98, S99)),
            ],
        )
        self.assertEqual(
            self.resumed.send_history(ALICE)[1],
            StreamAssociationEvent(2, "t2", ALICE, (), (S98, S99)),
        )

    def test_updates_and_previous_states_kept(self) -> None:
        updates = self.resumed.updates
        self.assertEqual(
            [(u.index, u.datamode, u.at) for u in updates],
            [(1, "complete", "t1"), (2, "partial", "t2"), (3, "partial", "t3")],
        )
        self.assertIsNone(updates[0].previous)
        self.assertEqual(updates[1].previous, self.complete.current)
        self.assertEqual(updates[2].previous, self.held.current)
        self.assertEqual(updates[1].document.participants, ())
        # Only the first document touched participant-session associations.
        self.assertEqual([e.update for e in self.resumed.session_history], [1, 1])

    def test_states_are_not_mutated(self) -> None:
        assert self.complete.current is not None
        self.assertEqual(senders_by_label(self.complete.current), RFC_SENDERS)
        self.assertEqual(len(self.complete.updates), 1)

    def test_replay(self) -> None:
        documents = [
            (parse_metadata(rfc7865(name)), at)
            for name, at in (
                ("complete.xml", "t1"),
                ("partial-hold.xml", "t2"),
                ("partial-resume.xml", "t3"),
            )
        ]
        self.assertEqual(replay(documents), self.resumed)


class PartialUpdateTests(SynchronousTestCase):
    def test_disassociate_then_join(self) -> None:
        state = apply_files(
            sample("rfc7865-final.xml"),
            sample("partial-mixed-case.xml"),  # Partial: Alice leaves at 09:04
            sample("partial-upper-case.xml"),  # PARTIAL: Carol joins at 09:03
        )
        current = state.current
        assert current is not None
        self.assertEqual(
            current.session_assocs("p-alice"),
            (
                ParticipantSessionAssoc(
                    "p-alice", "cs-1", "2024-03-01T09:00:01Z", "2024-03-01T09:04:00Z"
                ),
            ),
        )
        self.assertEqual(
            [p.participant_id for p in current.participants], ["p-alice", "p-bob", "p-carol"]
        )
        self.assertEqual(
            senders_by_label(current),
            {
                "a-leg": ["p-alice"],
                "b-leg": ["p-bob"],
                "video-1": ["p-alice"],
                "c-leg": ["p-carol"],
            },
        )
        self.assertEqual(current.receivers("s-a"), ("p-bob", "p-carol"))
        alice = current.participant("p-alice")
        assert alice is not None
        self.assertEqual(len(alice.name_ids), 2)  # untouched by the partial updates
        self.assertEqual(
            state.session_history[2:],
            (
                SessionAssociationEvent(
                    2, "t2", "p-alice", "cs-1", "2024-03-01T09:00:01Z", "2024-03-01T09:04:00Z"
                ),
                SessionAssociationEvent(3, "t3", "p-carol", "cs-1", "2024-03-01T09:03:00Z", None),
            ),
        )
        self.assertEqual(
            [(e.update, e.participant_id) for e in state.session_history[:2]],
            [(1, "p-alice"), (1, "p-bob")],
        )

    def test_late_draft_hold_resume_leave(self) -> None:
        state = apply_files(
            sample("draft-late.xml"),
            sample("draft-late-hold.xml"),
            sample("draft-late-resume.xml"),
            sample("draft-late-leave.xml"),
        )
        held = state.updates[2].previous
        assert held is not None and state.current is not None
        self.assertEqual(senders_by_label(held), {"1001": [], "1002": ["part-callee"]})
        caller = held.participant("part-caller")
        assert caller is not None
        self.assertEqual((caller.send, caller.recv), ((), ("strm-2",)))
        self.assertEqual(caller.aors, ("sip:2025550123@sbc.example.net",))
        self.assertEqual(len(caller.extensions), 1)
        self.assertEqual(
            senders_by_label(state.current), {"1001": ["part-caller"], "1002": ["part-callee"]}
        )
        self.assertEqual(
            [(e.update, e.send) for e in state.send_history("part-caller")],
            [(1, ("strm-1",)), (2, ()), (3, ("strm-1",))],
        )
        # The leave update named no session: it lands on the callee's only association.
        self.assertEqual(
            state.current.session_assocs("part-callee"),
            (
                ParticipantSessionAssoc(
                    "part-callee", "sess-A", "2024-03-02T10:00:03", "2024-03-02T10:07:30"
                ),
            ),
        )
        self.assertEqual(
            state.session_events("part-callee")[-1],
            SessionAssociationEvent(
                4, "t4", "part-callee", "sess-A", "2024-03-02T10:00:03", "2024-03-02T10:07:30"
            ),
        )

    def test_session_fields_merge(self) -> None:
        state = apply_files(
            sample("rfc7865-final.xml"),
            b"""<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>
            <session session_id="cs-1"><stop-time>2024-03-01T09:06:00Z</stop-time>
            <x:tag xmlns:x="urn:example:x">kept</x:tag></session>
            <stream stream_id="s-b" session_id="cs-1"><label>b-leg-renamed</label></stream>
            </recording>""",
        )
        assert state.current is not None
        (session,) = state.current.sessions
        self.assertEqual(
            (
                session.group_ref,
                session.start_time,
                session.stop_time,
                len(session.sip_session_ids),
            ),
            ("grp-1", "2024-03-01T09:00:01Z", "2024-03-01T09:06:00Z", 1),
        )
        self.assertEqual([e.tag for e in session.extensions], ["tag"])
        self.assertEqual(
            [s.label for s in state.current.streams], ["a-leg", "b-leg-renamed", "video-1"]
        )

    def test_same_partial_twice_changes_nothing_more(self) -> None:
        partial = sample("partial-upper-case.xml")
        once = apply_files(sample("rfc7865-final.xml"), partial)
        twice = once.apply(parse_metadata(partial), at="t3")
        self.assertEqual(twice.current, once.current)
        self.assertEqual(twice.session_history, once.session_history)
        self.assertEqual(twice.stream_history, once.stream_history)
        self.assertEqual(len(twice.updates), 3)

    def test_partial_without_a_base(self) -> None:
        state = apply_files(sample("partial-upper-case.xml"))
        assert state.current is not None
        self.assertEqual([p.participant_id for p in state.current.participants], ["p-carol"])
        self.assertEqual(senders_by_label(state.current), {"c-leg": ["p-carol"]})
        self.assertIsNone(state.updates[0].previous)


class CompleteReplacesTests(SynchronousTestCase):
    def test_complete_replaces_and_history_remembers(self) -> None:
        second = b"""<recording xmlns="urn:ietf:params:xml:ns:recording:1">
            <datamode>COMPLETE</datamode>
            <participant participant_id="p-alice"><nameID aor="sip:a@new.example"/></participant>
            <stream stream_id="s-z" session_id="cs-2"><label>z</label></stream>
            <participantsessionassoc participant_id="p-alice" session_id="cs-2">
              <associate-time>2024-03-01T10:00:00Z</associate-time></participantsessionassoc>
            <participantstreamassoc participant_id="p-alice"><send>s-z</send>
            </participantstreamassoc>
            </recording>"""
        first = apply_files(sample("rfc7865-final.xml"))
        state = first.apply(parse_metadata(second), at="t2")
        current = state.current
        assert current is not None
        self.assertEqual([p.participant_id for p in current.participants], ["p-alice"])
        self.assertEqual(senders_by_label(current), {"z": ["p-alice"]})
        self.assertEqual(current.sessions, ())
        self.assertEqual(state.updates[1].previous, first.current)
        self.assertEqual(
            [(e.update, e.participant_id, e.session_id, e.removed) for e in state.session_history],
            [
                (1, "p-alice", "cs-1", False),
                (1, "p-bob", "cs-1", False),
                (2, "p-alice", "cs-2", False),
                (2, "p-alice", "cs-1", True),
                (2, "p-bob", "cs-1", True),
            ],
        )
        self.assertEqual(
            [(e.update, e.participant_id, e.send) for e in state.stream_history],
            [
                (1, "p-alice", ("s-a", "s-v")),
                (1, "p-bob", ("s-b",)),
                (2, "p-alice", ("s-z",)),
                (2, "p-bob", ()),
            ],
        )

    def test_apply_update_function_equals_method(self) -> None:
        document = parse_metadata(sample("rfc7865-final.xml"))
        self.assertEqual(
            apply_update(MetadataState(), document, at="x"), MetadataState().apply(document, at="x")
        )
