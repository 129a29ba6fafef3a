"""siprecctl keys list / rotate: exact output and exit codes."""

from __future__ import annotations

import io
import os

from twisted.trial.unittest import SynchronousTestCase

from siprecd.crypto.keystore import FileKeyStore, KeyStoreError, MemoryKeyStore
from siprecd.ctl.keys import cmd_keys_list, cmd_keys_rotate


class StepClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class KeysCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = StepClock(1_795_000_000.0)  # 2026-11-18T11:06:40Z
        self.store = MemoryKeyStore(clock=self.clock)
        self.out = io.StringIO()
        self.err = io.StringIO()

    def test_list(self) -> None:
        first = self.store.current()
        self.clock.now += 86400 + 0.75
        second = self.store.rotate()
        self.assertEqual(cmd_keys_list(self.store, self.out, self.err), 0)
        self.assertEqual(
            self.out.getvalue(),
            f"{first.kek_id}  2026-11-18T11:06:40Z\n"
            f"{second.kek_id}  2026-11-19T11:06:40Z  current\n",
        )
        self.assertEqual(self.err.getvalue(), "")

    def test_list_empty_store(self) -> None:
        self.assertEqual(cmd_keys_list(self.store, self.out, self.err), 0)
        self.assertEqual(self.out.getvalue(), "")
        self.assertEqual(self.store.list(), [])  # listing creates nothing

    def test_rotate(self) -> None:
        first = self.store.current()
        self.clock.now += 1
        self.assertEqual(cmd_keys_rotate(self.store, self.out, self.err), 0)
        current = self.store.current()
        self.assertNotEqual(current, first)
        self.assertEqual(self.out.getvalue(), f"{current.kek_id}\n")
        self.assertEqual(self.err.getvalue(), "")

    def test_store_errors_exit_1_with_the_reason_on_stderr(self) -> None:
        class Refusing(MemoryKeyStore):
            def list(self):  # type: ignore[override]
                raise KeyStoreError("key directory /k has mode 0755: group and others must have no access")

            rotate = list  # type: ignore[assignment]

        for command in (cmd_keys_list, cmd_keys_rotate):
            out, err = io.StringIO(), io.StringIO()
            self.assertEqual(command(Refusing(), out, err), 1)
            self.assertEqual(out.getvalue(), "")
            self.assertEqual(
                err.getvalue(),
                "siprecctl: key directory /k has mode 0755: group and others must have no access\n",
            )

    def test_wrong_passphrase_on_a_file_store(self) -> None:
        directory = os.path.abspath(self.mktemp())
        kek = FileKeyStore(directory, passphrase="right", kdf_cost=4).current()
        store = FileKeyStore(directory, passphrase="wrong", kdf_cost=4)
        self.assertEqual(cmd_keys_rotate(store, self.out, self.err), 1)
        self.assertIn(f"cannot unwrap key {kek.kek_id} with the given passphrase", self.err.getvalue())
        self.assertEqual(os.listdir(directory), [kek.kek_id + ".key"])
