"""Session redundancy through a real SIP stack on a fake reactor (task.Clock time): the state
written before the answer leaves, resumption after a restart (same ports, dialog, segments,
outage as silence), orphans, and RFC 3891 Replaces here and from another node's record."""

from __future__ import annotations

import json
import os
import wave
from typing import Any

from siprecd.crypto.at_rest import AtRest
from siprecd.crypto.keystore import MemoryKeyStore
from siprecd.media.rtp import build_rtp
from siprecd.state.local import LocalStore, default_path
from tests.test_siprec_controller import (
    PORT_MIN,
    SRC,
    START,
    Call,
    ControllerTestCase,
    audio,
    multipart,
    rfc7865,
    sdp_offer,
)

PCMU_SILENCE = b"\xff" * 160  # mu-law 0xFF decodes to 0: a packet whose audio is silence
PCMU_LOUD = b"\x80" * 160  # mu-law 0x80: full scale


def offer(version: int = 1) -> bytes:
    return sdp_offer(audio(10000, "a"), audio(10002, "b"), version=version)


class RedundancyTestCase(ControllerTestCase):
    environment = {"SIPRECD_STATE_ORPHAN_TIMEOUT": "0", "SIPRECD_RECORDING_MIX": "none"}

    def setUp(self) -> None:
        self.start(SIPRECD_RECORDING_FLUSH_INTERVAL="0.5")
        self.store = LocalStore(default_path(self.recordings))
        self.addCleanup(self.store.close)
        self.boot(self.store)

    at_rest: AtRest | None = None

    def boot(self, store: Any, taken: frozenset[int] = frozenset(), **environment: str) -> None:
        """A fresh server process on the same recording directory and state store."""
        self.start(
            store=store, restart=True, taken=taken, at_rest=self.at_rest,
            SIPRECD_RECORDING_FLUSH_INTERVAL="0.5", **environment,
        )
        self.service.startService()

    def send(self, port: int, packets: int, *, first_seq: int = 0, payload: bytes = PCMU_LOUD, ssrc: int = 0x1234) -> None:
        """Packets of 20 ms into the stream bound at ``port``, one every 20 ms of clock."""
        protocol = self.reactor.udpPorts[port].protocol
        for n in range(packets):
            seq = first_seq + n
            protocol.datagramReceived(build_rtp(0, seq & 0xFFFF, 160 * seq, ssrc, payload), ("198.51.100.7", 10000 + port % 4))
            self.reactor.advance(0.02)

    def finish(self) -> None:
        self.service.drain_timeout = 0
        self.service.stopService()
        self.assert_quiet()

    def directory(self, document: dict[str, Any]) -> str:
        return os.path.join(self.recordings, "2023", "11", "14", document["session_id"])

    def wav(self, document: dict[str, Any], name: str) -> tuple[int, bytes]:
        with wave.open(os.path.join(self.directory(document), name), "rb") as handle:
            return handle.getnframes(), handle.readframes(handle.getnframes())


class StoredStateTests(RedundancyTestCase):
    def test_written_before_the_answer_on_every_change_and_forgotten_at_the_end(self) -> None:
        call = Call(self)
        response = call.invite(*multipart(offer(), rfc7865("complete.xml")))
        self.assertEqual(response.status, 200)
        (record,) = self.store.load_all().values()  # stored when the 200 was sent
        self.assertEqual(record["dialog"]["local_tag"], response.to.tag)
        self.assertEqual(record["dialog"]["remote_tag"], call.from_tag)
        self.assertEqual(record["dialog"]["remote_cseq"], 1)
        self.assertEqual(record["dialog"]["remote_target"], "sip:src@192.0.2.10:5062")
        self.assertEqual([s["rtp_port"] for s in record["streams"]], [PORT_MIN, PORT_MIN + 2])
        self.assertEqual(record["answer"].encode(), response.body)
        self.assertEqual(len(record["metadata"]["documents"]), 1)
        call.ack()
        call.reinvite(offer(version=2))
        (record,) = self.store.load_all().values()
        self.assertEqual((record["sdp_version"], record["dialog"]["remote_cseq"]), (2, 2))
        for _ in range(15):  # the tick starts at a random phase within its interval (0.5 s)
            self.reactor.advance(0.1)
        self.assertIn("streams", self.store.load_all()[record["session_id"]]["positions"])
        self.bye(call)
        self.assertEqual(self.store.load_all(), {})
        self.finish()


class RestartTests(RedundancyTestCase):
    def test_restart_resumes_ports_dialog_segments_and_the_outage_as_silence(self) -> None:
        call = Call(self)
        response = call.setup(*multipart(offer(), rfc7865("complete.xml")))
        self.send(PORT_MIN, 50)  # one second of audio on "a"
        self.reactor.advance(0.6)  # a flush: what a kill -9 leaves on disk
        document = self.sessions()[call.call_id]
        # The process dies (nothing finalized); a new one starts 3 s later on the same disk.
        killed = self.reactor.seconds()
        self.reactor.advance(3.0)
        old_reactor = self.reactor
        self.boot(LocalStore(default_path(self.recordings)))
        self.assertEqual(sorted(self.reactor.udpPorts), [PORT_MIN, PORT_MIN + 1, PORT_MIN + 2, PORT_MIN + 3])
        self.assertEqual(len(old_reactor.udpPorts), 4)  # (the dead process's fake sockets)
        resumed = self.sessions()[call.call_id]
        self.assertEqual((resumed["session_id"], resumed["state"]), (document["session_id"], "active"))
        self.assertEqual(resumed["participants"], document["participants"])  # metadata replayed
        (resumption,) = resumed["resumptions"]
        self.assertEqual((resumption["how"], resumption["segment"]), ("restart", 2))
        self.assertEqual(
            sorted((f["file"], f["outcome"]) for f in resumption["recovered_files"]),
            [("stream-1-a.wav", "recovered"), ("stream-2-b.wav", "recovered")],
        )
        # The dialog answers in-dialog requests: an old CSeq is refused, a re-INVITE keeps the ports.
        self.assertEqual(call.request("INFO", cseq=1).status, 500)
        again = call.reinvite(offer(version=2))
        self.assertEqual((again.status, again.to.tag), (200, response.to.tag))
        self.assertEqual([m.port for m in self.answer(again).media], [PORT_MIN, PORT_MIN + 2])
        restarted_at = self.reactor.seconds()
        self.send(PORT_MIN, 25, first_seq=5000)
        self.bye(call)
        final = self.sessions()[call.call_id]
        self.assertEqual((final["state"], final["end_reason"]), ("ended", "BYE from the SRC"))
        entry = final["streams"][0]
        self.assertEqual(entry["segments"], ["stream-1-a.wav", "stream-1-a.seg2.wav"])
        first, _ = self.wav(final, "stream-1-a.wav")
        second, pcm = self.wav(final, "stream-1-a.seg2.wav")
        # Segment 1 ends where its last flushed sample is; segment 2 is silent from there to
        # the first packet after the restart, then holds the 25 packets.
        started = START
        samples = [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]
        onset = next(i for i, s in enumerate(samples) if s)
        self.assertEqual(first + onset, round((restarted_at - started) * 8000))
        self.assertEqual(second - onset, 25 * 160)
        self.assertTrue(first >= 50 * 160 and killed > started)
        self.assertEqual(self.store.load_all(), {})
        self.finish()

    def test_ports_taken_meanwhile_closed_as_interrupted(self) -> None:
        call = Call(self)
        call.setup(*multipart(offer(), rfc7865("complete.xml")))
        self.boot(LocalStore(default_path(self.recordings)), taken=frozenset({PORT_MIN + 2}))
        document = self.sessions()[call.call_id]
        self.assertTrue(document["end_reason"].startswith("interrupted"), document["end_reason"])
        (error,) = self.flushLoggedErrors()
        self.assertIn(str(PORT_MIN + 2), str(error.value))
        self.assertEqual(self.bound(), [])  # the first stream's ports were let go again
        self.assertEqual(self.store.load_all(), {})
        self.finish()

    def test_unresumable_record_closed_as_interrupted(self) -> None:
        call = Call(self)
        call.setup(*multipart(offer(), rfc7865("complete.xml")))
        (record,) = self.store.load_all().values()
        record["offer"] = {"redacted": "v=0", "why": "test"}  # keys not stored: cannot resume
        self.store.put(record["session_id"], {k: v for k, v in record.items() if k != "positions"})
        self.boot(LocalStore(default_path(self.recordings)))
        document = self.sessions()[call.call_id]
        self.assertEqual(document["state"], "ended")
        self.assertTrue(document["end_reason"].startswith("interrupted"), document["end_reason"])
        self.assertEqual(len(self.flushLoggedErrors()), 1)
        self.assertEqual(self.store.load_all(), {})
        self.finish()


class OrphanTests(RedundancyTestCase):
    environment = {"SIPRECD_STATE_ORPHAN_TIMEOUT": "10", "SIPRECD_RECORDING_MIX": "none"}

    def test_no_media_and_no_sip_for_the_timeout_ends_the_session(self) -> None:
        call = Call(self)
        call.setup(*multipart(offer(), rfc7865("complete.xml")))
        for _ in range(4):  # media keeps it alive well past the timeout
            self.send(PORT_MIN, 250)
        self.assertEqual(self.sessions()[call.call_id]["state"], "active")
        self.reactor.advance(8)
        call.request("INFO")  # SIP keeps it alive too
        self.reactor.advance(8)
        self.assertEqual(self.sessions()[call.call_id]["state"], "active")
        before = len(self.udp.sent)
        self.reactor.advance(5)
        (bye, host, port), = self.requests_sent(before)
        self.assertEqual((bye.method, bye.call_id, host, port), ("BYE", call.call_id, SRC.host, SRC.port))
        document = self.sessions()[call.call_id]
        self.assertEqual(document["state"], "ended")
        self.assertTrue(document["end_reason"].startswith("orphaned"), document["end_reason"])
        self.assertEqual(self.controller.counters["orphans_closed"], 1)
        self.assertEqual(self.store.load_all(), {})
        self.finish()


class ReplacesTests(RedundancyTestCase):
    def test_replaces_takes_the_session_to_the_new_dialog_and_ends_the_old(self) -> None:
        old = Call(self)
        first = old.setup(*multipart(offer(), rfc7865("complete.xml")))
        document = self.sessions()[old.call_id]
        new = Call(self)
        before = len(self.udp.sent)
        replaces = f"{old.call_id};to-tag={first.to.tag};from-tag={old.from_tag}"
        response = new.setup(offer(), headers=(("Replaces", replaces),))
        self.assertEqual([m.port for m in self.answer(response).media], [PORT_MIN, PORT_MIN + 2])
        (bye, _, _), = self.requests_sent(before)
        self.assertEqual((bye.method, bye.call_id, bye.from_.tag, bye.to.tag), ("BYE", old.call_id, first.to.tag, old.from_tag))
        self.assertEqual(old.request("BYE").status, 481)  # the old dialog is over
        taken = self.sessions()[new.call_id]
        self.assertEqual((taken["session_id"], taken["state"]), (document["session_id"], "active"))
        self.assertEqual(taken["resumptions"][0]["how"], "replaces")
        self.assertEqual(len(self.controller.sessions), 1)
        self.send(PORT_MIN, 10)
        self.bye(new)
        final = self.sessions()[new.call_id]
        self.assertEqual((final["state"], final["streams"][0]["segments"]), ("ended", ["stream-1-a.wav"]))
        self.finish()

    def test_failed_offer_leaves_the_session_on_the_old_dialog(self) -> None:
        old = Call(self)
        first = old.setup(offer())
        new = Call(self)
        before = len(self.udp.sent)
        replaces = f"{old.call_id};to-tag={first.to.tag};from-tag={old.from_tag}"
        bad = sdp_offer(audio(10000, "a", formats="18"))  # G.729 only: no codec to record
        self.assertEqual(new.invite(bad, headers=(("Replaces", replaces),)).status, 488)
        new.ack()
        self.assertEqual(self.requests_sent(before), [])  # no BYE to the old dialog
        document = self.sessions()[old.call_id]
        self.assertEqual((document["state"], document["resumptions"]), ("active", []))
        self.assertEqual(old.reinvite(offer(version=2)).status, 200)  # still its dialog
        self.bye(old)
        self.finish()

    def test_unknown_dialog_481_and_early_only_486(self) -> None:
        unknown = Call(self)
        response = unknown.invite(offer(), headers=(("Replaces", "nope@src;to-tag=1;from-tag=2"),))
        self.assertEqual(response.status, 481)
        unknown.ack()
        old = Call(self)
        first = old.setup(offer())
        early = Call(self)
        value = f"{old.call_id};to-tag={first.to.tag};from-tag={old.from_tag};early-only"
        self.assertEqual(early.invite(offer(), headers=(("Replaces", value),)).status, 486)
        early.ack()
        broken = Call(self)
        self.assertEqual(broken.invite(offer(), headers=(("Replaces", "only-a-call-id"),)).status, 400)
        broken.ack()
        self.assertEqual(self.sessions()[old.call_id]["state"], "active")
        self.finish()


class FakeSharedStore(LocalStore):
    """The local store plus the one thing the controller asks a shared store: a dialog's
    record and whether its owner is alive (a real Redis is in tests/e2e)."""

    def __init__(self, path: str, records: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        super().__init__(path)
        self.records = records

    def find_dialog(self, key: tuple[str, str, str]) -> tuple[dict[str, Any] | None, bool]:
        record = self.records.get(key)
        return (json.loads(json.dumps(record)), False) if record else (None, False)


class RemoteTakeoverTests(RedundancyTestCase):
    def test_record_of_a_dead_node_taken_over_with_the_same_session_id(self) -> None:
        old = Call(self)
        first = old.setup(*multipart(offer(), rfc7865("complete.xml")))
        self.send(PORT_MIN, 50)
        self.reactor.advance(0.6)
        (record,) = self.store.load_all().values()
        record["node"] = "node-a"
        document = self.sessions()[old.call_id]
        # Node B: its own disk (another recording directory) and the shared records.
        self.recordings = os.path.abspath(self.mktemp())
        key = (old.call_id, first.to.tag, old.from_tag)
        store = FakeSharedStore(default_path(self.recordings), {key: record})
        self.addCleanup(store.close)
        self.boot(store, SIPRECD_STATE_NODE_ID="node-b")
        new = Call(self)
        response = new.setup(*multipart(offer(), rfc7865("complete.xml")), headers=(("Replaces", f"{key[0]};to-tag={key[1]};from-tag={key[2]}"),))
        self.assertEqual(response.status, 200)
        taken = self.sessions()[new.call_id]
        self.assertEqual((taken["session_id"], taken["started_at"]), (document["session_id"], document["started_at"]))
        self.assertEqual(taken["participants"], document["participants"])
        (resumption,) = taken["resumptions"]
        self.assertEqual(
            (resumption["how"], resumption["node"], resumption["previous_node"], resumption["segment"]),
            ("replaces", "node-b", "node-a", 2),
        )
        # Metadata versions go on from the dead node's (the new INVITE's is number 2).
        self.assertEqual([v["index"] for v in taken["metadata_versions"]], [1, 2])
        arrived = self.reactor.seconds()
        self.send(PORT_MIN, 10)
        self.bye(new)
        final = self.sessions()[new.call_id]
        entry = final["streams"][0]
        self.assertEqual(entry["segments"], ["stream-1-a.wav", "stream-1-a.seg2.wav"])
        frames, pcm = self.wav(final, "stream-1-a.seg2.wav")
        samples = [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]
        onset = next(i for i, s in enumerate(samples) if s)
        # Segment 2's timeline starts where node A's stored positions say segment 1 ended.
        ended = START + record["positions"]["streams"]["label:a"]
        self.assertEqual(onset, round((arrived - ended) * 8000))
        self.assertEqual(frames - onset, 10 * 160)
        self.finish()

    def test_dialog_alive_on_another_node_481(self) -> None:
        class Alive(FakeSharedStore):
            def find_dialog(self, key):  # type: ignore[no-untyped-def]
                return ({"node": "node-a"}, True)

        store = Alive(default_path(os.path.abspath(self.mktemp())), {})
        self.addCleanup(store.close)
        self.boot(store, SIPRECD_STATE_NODE_ID="node-b")
        call = Call(self)
        response = call.invite(offer(), headers=(("Replaces", "c@src;to-tag=1;from-tag=2"),))
        self.assertEqual(response.status, 481)
        self.assertIn("node-a", response.reason)
        call.ack()
        self.finish()


class KeepOnStopTests(RedundancyTestCase):
    environment = {"SIPRECD_STATE_ORPHAN_TIMEOUT": "0", "SIPRECD_RECORDING_MIX": "none", "SIPRECD_STATE_ON_STOP": "keep"}

    def test_clean_stop_keeps_the_call_for_the_next_start(self) -> None:
        call = Call(self)
        call.setup(*multipart(offer(), rfc7865("complete.xml")))
        self.send(PORT_MIN, 20)
        before = len(self.udp.sent)
        self.service.drain_timeout = 0
        self.service.stopService()
        self.assertEqual(self.requests_sent(before), [])  # no BYE
        self.assertEqual(self.bound(), [])
        document = self.sessions()[call.call_id]
        self.assertEqual(document["state"], "active")
        names = os.listdir(self.directory(document))
        self.assertIn("stream-1-a.wav.part", names)  # every buffered sample written, not final
        self.assertEqual(os.path.getsize(os.path.join(self.directory(document), "stream-1-a.wav.part")), 44 + 20 * 320)
        self.boot(LocalStore(default_path(self.recordings)))
        self.assertEqual(self.sessions()[call.call_id]["resumptions"][0]["how"], "restart")
        self.bye(call)
        final = self.sessions()[call.call_id]
        self.assertEqual(final["streams"][0]["segments"], ["stream-1-a.wav", "stream-1-a.seg2.wav"])
        frames, _ = self.wav(final, "stream-1-a.wav")
        self.assertEqual(frames, 20 * 160)
        self.finish()


class EncryptedTests(RedundancyTestCase):
    def setUp(self) -> None:
        self.at_rest = AtRest(MemoryKeyStore(), encrypt_metadata=True)
        super().setUp()

    def test_private_data_sealed_in_the_store_and_the_session_resumes(self) -> None:
        call = Call(self)
        call.setup(*multipart(offer(), rfc7865("complete.xml")))
        self.send(PORT_MIN, 50)
        self.reactor.advance(0.6)
        path = default_path(self.recordings)
        raw = b"".join(open(p, "rb").read() for p in (path, path + "-wal") if os.path.exists(p))
        self.assertIn(b"session_id", raw)  # the record is there...
        for secret in (b"sip:src@example.com", b"Alice", b"alice@atlanta.com", b"<recording"):
            # ...but nobody's name, number or metadata in clear.
            self.assertTrue(secret not in raw, f"{secret!r} in clear in the state store")
        self.boot(LocalStore(path))
        (session_id,) = self.controller.sessions
        session = self.controller.sessions[session_id]
        self.assertEqual(session.sip["from"], "<sip:src@example.com>;tag=" + call.from_tag)
        self.assertTrue(session.metadata.current is not None)  # replayed from the sealed copy
        self.assertEqual(session.resumptions[0]["how"], "restart")
        self.send(PORT_MIN, 10, first_seq=900)
        self.bye(call)
        directory = os.path.join(self.recordings, "2023", "11", "14", session_id)
        self.assertIn("stream-1-a.seg2.wav.enc", os.listdir(directory))
        self.finish()


class RestoredDialogTests(RedundancyTestCase):
    def test_requests_the_srs_sends_after_a_restart_use_the_stored_dialog(self) -> None:
        """The BYE of a drain after a restart: the stored tags, Call-ID, route set and CSeq."""
        call = Call(self)
        first = call.setup(offer(), headers=(("Record-Route", "<sip:192.0.2.77:5070;lr>"),))
        self.boot(LocalStore(default_path(self.recordings)))
        before = len(self.udp.sent)
        self.service.drain_timeout = 0
        self.service.stopService()
        (bye, host, port), = self.requests_sent(before)
        self.assertEqual((bye.method, host, port), ("BYE", "192.0.2.77", 5070))  # the first route
        self.assertEqual(bye.call_id, call.call_id)
        self.assertEqual((bye.from_.tag, bye.to.tag), (first.to.tag, call.from_tag))
        self.assertEqual(bye.headers.get_list("Route"), ["<sip:192.0.2.77:5070;lr>"])
        self.assertEqual(bye.cseq.number, 1)
        self.assertEqual(str(bye.uri), "sip:src@192.0.2.10:5062")  # the remote target
        self.assert_quiet()
