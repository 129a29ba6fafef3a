"""The Redis store's logic on a task.Clock with a fake Redis connection (the real redis-server
is in tests/e2e/test_redundancy_e2e.py): degraded and resynced, leases, ownership lost."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import task
from twisted.internet.defer import fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from siprecd.config import load_config
from siprecd.errors import ServiceUnavailable
from siprecd.state.local import LocalStore
from siprecd.state.redis import CLAIM, RedisStore, dialog_key


class FakeFactory:
    def __init__(self) -> None:
        self.pool: list[object] = []


class FakeRedis:
    """The commands the store uses, on a dict; ``down`` makes every command fail."""

    def __init__(self) -> None:
        self._factory = FakeFactory()
        self.data: dict[str, str] = {}
        self.expiry: dict[str, int] = {}
        self.down = False

    def _run(self, result: Any) -> Any:
        if self.down:
            return fail(ConnectionError("connection lost"))
        return succeed(result)

    def set(self, key: str, value: str, pexpire: int | None = None) -> Any:
        if not self.down:
            self.data[key] = value
            if pexpire:
                self.expiry[key] = pexpire
        return self._run(True)

    def get(self, key: str) -> Any:
        return self._run(self.data.get(key))

    def delete(self, keys: list[str]) -> Any:
        if not self.down:
            for key in keys:
                self.data.pop(key, None)
        return self._run(len(keys))

    def eval(self, script: str, keys: list[str], args: list[str]) -> Any:
        assert script == CLAIM
        owner = self.data.get(keys[0])
        if owner is None or owner == args[0]:
            return self.set(keys[0], args[0], pexpire=int(args[1]))
        return self._run(owner)


def record(session_id: str, call_id: str = "c1") -> dict[str, Any]:
    return {"session_id": session_id, "node": "node-a", "dialog": {"call_id": call_id, "local_tag": "ours", "remote_tag": "theirs"}}


class RedisStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        config = load_config(None, {"SIPRECD_STATE_BACKEND": "redis", "SIPRECD_STATE_NODE_ID": "node-a", "SIPRECD_STATE_LEASE": "3"})
        self.local = LocalStore(os.path.join(os.path.abspath(self.mktemp()), "state.sqlite"))
        self.store = RedisStore(self.clock, config.state, self.local, "node-a")
        self.redis = self.store.redis = FakeRedis()
        self.lost: list[tuple[str, str]] = []
        self.store.on_lost = lambda session_id, owner: self.lost.append((session_id, owner))

    def tearDown(self) -> None:
        self.local.close()

    def up(self) -> None:
        self.redis._factory.pool = [object()]
        self.store.beat()

    def test_degraded_until_connected_then_everything_written(self) -> None:
        self.store.put("s1", record("s1"))
        self.store.positions("s1", {"at": 1.0, "streams": {"label:a": 0.5}})
        self.assertTrue(self.store.degraded)
        self.assertIn("unreachable", self.store.shared_problem() or "")
        self.assertIsNone(self.store.problem())  # not a failure: local state is complete
        self.assertEqual(self.redis.data, {})
        self.assertEqual(set(self.local.load_all()), {"s1"})
        self.up()
        self.assertFalse(self.store.degraded)
        self.assertIsNone(self.store.shared_problem())
        self.assertEqual(self.store.counters["resyncs"], 1)
        self.assertEqual(self.redis.data["siprecd:owner:s1"], "node-a")
        self.assertEqual(self.redis.expiry["siprecd:owner:s1"], 3000)
        self.assertEqual(self.redis.data[dialog_key("c1", "ours", "theirs")], "s1")
        self.assertIn('"session_id":"s1"', self.redis.data["siprecd:session:s1"])
        self.assertIn("label:a", self.redis.data["siprecd:positions:s1"])
        self.assertEqual(self.redis.data["siprecd:node:node-a"], "alive")
        self.store.delete("s1")
        self.assertEqual(set(self.redis.data), {"siprecd:node:node-a"})
        self.assertEqual(self.local.load_all(), {})

    def test_lost_connection_keeps_changes_and_resyncs(self) -> None:
        self.up()
        self.store.put("s1", record("s1"))
        self.redis.down = True
        self.store.put("s2", record("s2", "c2"))  # fails: degraded, s2 stays dirty
        self.assertTrue(self.store.degraded)
        self.assertNotIn("siprecd:session:s2", self.redis.data)
        self.redis.down = False
        self.redis.data.clear()  # Redis restarted empty
        self.store.beat()
        self.assertEqual(self.store.counters["resyncs"], 2)
        self.assertEqual({k for k in self.redis.data if k.startswith("siprecd:session:")}, {"siprecd:session:s1", "siprecd:session:s2"})

    def test_heartbeat_renews_leases(self) -> None:
        self.up()
        self.store.put("s1", record("s1"))
        del self.redis.data["siprecd:owner:s1"]
        self.store.beat()  # what the LoopingCall does every lease / 3
        self.assertEqual(self.redis.data["siprecd:owner:s1"], "node-a")

    def test_session_taken_over_by_another_node_is_given_up(self) -> None:
        self.store.put("s1", record("s1"))
        self.redis.data["siprecd:owner:s1"] = "node-b"
        self.redis.data["siprecd:session:s1"] = "node B's record"
        self.up()
        self.assertEqual(self.lost, [("s1", "node-b")])
        self.assertEqual(self.redis.data["siprecd:session:s1"], "node B's record")  # not overwritten
        self.store.put("s1", record("s1"))  # this node's last change as it ends its copy
        self.store.delete("s1")
        self.assertEqual(self.redis.data["siprecd:owner:s1"], "node-b")  # not deleted either
        self.assertEqual(self.redis.data["siprecd:session:s1"], "node B's record")

    def test_find_dialog(self) -> None:
        with self.assertRaises(ServiceUnavailable):
            self.store.find_dialog(("c1", "ours", "theirs"))
        self.up()
        self.store.put("s1", record("s1"))
        found = self.successResultOf(self.store.find_dialog(("c1", "ours", "theirs")))
        self.assertEqual((found[0]["session_id"], found[0]["node"], found[1]), ("s1", "node-a", True))
        del self.redis.data["siprecd:owner:s1"]  # the lease ran out: the owner is dead
        found = self.successResultOf(self.store.find_dialog(("c1", "ours", "theirs")))
        self.assertEqual((found[0]["node"], found[1]), ("node-a", False))
        self.assertEqual(self.successResultOf(self.store.find_dialog(("nope", "1", "2"))), (None, False))
        # Replaced: the old dialog's index entry goes, the session stays.
        self.store.forget_dialog(("c1", "ours", "theirs"))
        self.assertNotIn(dialog_key("c1", "ours", "theirs"), self.redis.data)
        self.assertIn("siprecd:session:s1", self.redis.data)
