"""The state store's pieces: SQLite local store, sealing under the KEK, the session record."""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from siprecd.crypto.keystore import MemoryKeyStore
from siprecd.recording.session import RecordedStream
from siprecd.sdp import StreamChoice
from siprecd.sip.dialog import Dialog, DialogState
from siprecd.sip.source import Source
from siprecd.sip.uri import parse_uri
from siprecd.state.local import LocalStore, default_path
from siprecd.state.record import (
    dialog_record,
    open_sdp,
    restore_dialog,
    restore_security,
    stored_sdp,
    stream_record,
)
from siprecd.state.sealing import Sealer, SealError
from siprecd.state.store import StoreError

# A fake of what the srtp branch's StreamMedia.security_state() reports (the shape is theirs;
# the store treats it as an opaque dict).
SECURITY = {"method": "sdes", "suite": "AES_CM_128_HMAC_SHA1_80", "inbound_key": "c2VjcmV0LWtleS1tYXRlcmlhbA==", "roc": 3}
SDES_OFFER = (
    b"v=0\r\no=src 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 10000 RTP/SAVP 0\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n"
    b"a=label:1\r\n"
)


class LocalStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = default_path(os.path.abspath(self.mktemp()))
        self.store = LocalStore(self.path)
        self.addCleanup(self.store.close)

    def test_put_positions_delete_survive_reopening(self) -> None:
        self.store.put("s1", {"session_id": "s1", "n": 1})
        self.store.put("s1", {"session_id": "s1", "n": 2})  # replaced, not duplicated
        self.store.positions("s1", {"at": 5.0, "streams": {"label:a": 1.5}})
        self.store.put("s2", {"session_id": "s2"})
        self.store.delete("s2")
        reopened = LocalStore(self.path)
        self.addCleanup(reopened.close)
        self.assertEqual(
            reopened.load_all(),
            {"s1": {"session_id": "s1", "n": 2, "positions": {"at": 5.0, "streams": {"label:a": 1.5}}}},
        )
        # WAL mode: a crash keeps every committed write, readers do not block the writer.
        self.assertEqual(reopened._db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        # A new put keeps the positions (the tick's update is separate from the record).
        self.store.put("s1", {"session_id": "s1", "n": 3})
        self.assertEqual(self.store.load_all()["s1"]["positions"]["streams"], {"label:a": 1.5})
        self.assertIsNone(self.store.problem())

    def test_unreadable_row_reported_others_loaded(self) -> None:
        self.store.put("good", {"session_id": "good"})
        self.store._db.execute("INSERT INTO sessions (session_id, record) VALUES ('bad', '{nope')")
        loaded = self.store.load_all()
        self.assertEqual(loaded["good"]["session_id"], "good")
        self.assertIn(self.path, loaded["bad"]["unreadable"])

    def test_write_failure_is_a_store_error_and_a_problem(self) -> None:
        self.store._db.execute("DROP TABLE sessions")
        with self.assertRaises(StoreError) as caught:
            self.store.put("s1", {})
        self.assertIn(self.path, str(caught.exception))
        self.assertIn("session s1", self.store.problem() or "")

    def test_unopenable_path(self) -> None:
        blocker = os.path.abspath(self.mktemp())
        open(blocker, "w").close()
        with self.assertRaises(StoreError) as caught:
            LocalStore(os.path.join(blocker, "state.sqlite"))
        self.assertIn(blocker, str(caught.exception))


class SealingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.keys = MemoryKeyStore()
        self.sealer = Sealer(self.keys)

    def test_round_trip_never_in_clear(self) -> None:
        blob = self.sealer.seal(SECURITY, "s1/label:1/security")
        assert blob is not None
        text = json.dumps(blob)
        for secret in ("c2VjcmV0", "AES_CM_128", "sdes"):
            self.assertNotIn(secret, text)
        self.assertEqual(blob["kek_id"], self.keys.current().kek_id)
        self.assertEqual(self.sealer.open(blob, "s1/label:1/security"), SECURITY)

    def test_bound_to_its_record_and_kek(self) -> None:
        blob = self.sealer.seal(SECURITY, "s1/label:1/security")
        assert blob is not None
        with self.assertRaises(SealError):
            self.sealer.open(blob, "s2/label:1/security")  # moved to another session
        tampered = dict(blob, sealed=blob["sealed"][:-4] + "AAAA")
        with self.assertRaises(SealError):
            self.sealer.open(tampered, "s1/label:1/security")
        with self.assertRaises(SealError) as caught:
            Sealer(MemoryKeyStore()).open(blob, "s1/label:1/security")
        self.assertIn("not in the key store", str(caught.exception))
        # After a rotation the old KEK still opens what it sealed.
        self.keys.rotate()
        self.assertEqual(self.sealer.open(blob, "s1/label:1/security"), SECURITY)

    def test_no_key_store_stores_nothing(self) -> None:
        self.assertIsNone(Sealer(None).seal(SECURITY, "x"))


class FakeSecureMedia:
    """A StreamMedia's two SRTP state hooks: security_state() and restore_security()."""

    def __init__(self, state: dict | None = None) -> None:
        self.state = state
        self.restored: list[dict] = []
        self.recorder = None

    def security_state(self) -> dict | None:
        return self.state

    def restore_security(self, state: dict, **carried: object) -> None:
        self.restored.append(state)


def choice() -> StreamChoice:
    return StreamChoice(0, "audio", "1", True, "recvonly", "sendonly", False, 0, "PCMU", 8000, 1, None, None, 20000)


class RecordTests(SynchronousTestCase):
    def test_stream_security_sealed_and_restored_through_the_hook(self) -> None:
        sealer = Sealer(MemoryKeyStore())
        stream = RecordedStream("label:1", choice(), media=FakeSecureMedia(SECURITY))  # type: ignore[arg-type]
        record = stream_record("s1", stream, sealer)
        self.assertNotIn("c2VjcmV0", json.dumps(record))
        self.assertEqual(set(record["security"]), {"kek_id", "nonce", "sealed"})
        resumed = RecordedStream("label:1", choice(), media=FakeSecureMedia())  # type: ignore[arg-type]
        restore_security("s1", resumed, record, sealer)
        self.assertEqual(resumed.media.restored, [SECURITY])  # type: ignore[union-attr]

    def test_plain_stream_has_no_security(self) -> None:
        stream = RecordedStream("label:1", choice(), media=FakeSecureMedia(None))  # type: ignore[arg-type]
        record = stream_record("s1", stream, Sealer(None))
        self.assertIsNone(record["security"])
        restore_security("s1", stream, record, Sealer(None))  # nothing to do

    def test_security_without_key_store_is_not_stored_and_resume_says_why(self) -> None:
        stream = RecordedStream("label:1", choice(), media=FakeSecureMedia(SECURITY))  # type: ignore[arg-type]
        record = stream_record("s1", stream, Sealer(None))
        self.assertNotIn("c2VjcmV0", json.dumps(record))
        with self.assertRaises(SealError) as caught:
            restore_security("s1", stream, record, Sealer(None))
        self.assertIn("no key store", str(caught.exception))

    def test_security_without_restore_hook_fails_loudly(self) -> None:
        sealer = Sealer(MemoryKeyStore())
        record = stream_record("s1", RecordedStream("label:1", choice(), media=FakeSecureMedia(SECURITY)), sealer)  # type: ignore[arg-type]

        class OldMedia:
            recorder = None

        with self.assertRaises(SealError) as caught:
            restore_security("s1", RecordedStream("label:1", choice(), media=OldMedia()), record, sealer)  # type: ignore[arg-type]
        self.assertIn("cannot restore", str(caught.exception))

    def test_sdes_keys_in_sdp_sealed_or_cut(self) -> None:
        sealer = Sealer(MemoryKeyStore())
        sealed = stored_sdp(SDES_OFFER, "s1/offer", sealer)
        self.assertNotIn("WVNfX19z", json.dumps(sealed))
        self.assertEqual(open_sdp(sealed, "s1/offer", sealer), SDES_OFFER)
        cut = stored_sdp(SDES_OFFER, "s1/offer", Sealer(None))
        self.assertNotIn("WVNfX19z", json.dumps(cut))
        self.assertIn("a=crypto:1 AES_CM_128_HMAC_SHA1_80 <not stored>", cut["redacted"])
        with self.assertRaises(SealError):
            open_sdp(cut, "s1/offer", Sealer(None))
        mikey = b"v=0\r\na=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAYAbWlrZXlAZXhhbXBsZQ==\r\nm=audio 1 RTP/SAVP 0\r\n"
        cut = stored_sdp(mikey, "s1/offer", Sealer(None))
        self.assertNotIn("AQAFgM0X", json.dumps(cut))
        self.assertIn("a=key-mgmt:mikey <not stored>", cut["redacted"])
        plain = b"v=0\r\nm=audio 1 RTP/AVP 0\r\n"
        self.assertEqual(stored_sdp(plain, "s1/offer", sealer), plain.decode())
        self.assertEqual(open_sdp(plain.decode(), "s1/offer", sealer), plain)

    def test_dialog_round_trip(self) -> None:
        dialog = Dialog(
            call_id="c1@src", local_tag="ours", remote_tag="theirs", local_uri="<sip:srs@example.net>",
            remote_uri="<sip:src@example.com>;tag=theirs", remote_target=parse_uri("sip:src@192.0.2.10:5062;transport=tcp"),
            route_set=["<sip:proxy.example.com;lr>"], remote_cseq=7, source=Source("TCP", "192.0.2.10", 40123),
            local_cseq=2,
        )
        restored = restore_dialog(json.loads(json.dumps(dialog_record(dialog))))
        self.assertEqual(
            (restored.key, restored.local_uri, restored.remote_uri, str(restored.remote_target), restored.route_set,
             restored.remote_cseq, restored.local_cseq, restored.source.transport, restored.source.host,
             restored.source.port, restored.state, restored.invite_pending),
            (dialog.key, dialog.local_uri, dialog.remote_uri, str(dialog.remote_target), dialog.route_set, 7, 2,
             "TCP", "192.0.2.10", 40123, DialogState.CONFIRMED, False),
        )


class DirectoryOwnerTests(SynchronousTestCase):
    def test_a_cluster_node_refuses_another_nodes_recording_directory(self) -> None:
        from siprecd.config import load_config
        from siprecd.preflight import preflight
        from siprecd.state.factory import directory_owner_problem, mark_directory

        root = os.path.abspath(self.mktemp())
        os.makedirs(root)

        def config(node: str, backend: str = "redis"):  # type: ignore[no-untyped-def]
            return load_config(None, {
                "SIPRECD_RECORDING_DIRECTORY": root, "SIPRECD_STATE_BACKEND": backend, "SIPRECD_STATE_NODE_ID": node,
                "SIPRECD_SIP_UDP_PORT": "0", "SIPRECD_SIP_TCP_PORT": "0", "SIPRECD_WEB_PORT": "0",
            })

        self.assertIsNone(directory_owner_problem(config("node-a")))  # nobody's yet
        mark_directory(config("node-a"))
        self.assertIsNone(directory_owner_problem(config("node-a")))
        problem = directory_owner_problem(config("node-b"))
        self.assertIn("belongs to node 'node-a'", problem or "")
        self.assertIn(root, problem or "")
        self.assertIn(problem, preflight(config("node-b")))
        self.assertIsNone(directory_owner_problem(config("node-b", backend="local")))  # one node: no cluster
