"""Key stores: memory and file (permissions, atomic 0600 files, wrapping, clear errors)."""

from __future__ import annotations

import json
import os
import stat
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from siprecd.crypto import keystore
from siprecd.crypto.keystore import (
    KEK_ID,
    FileKeyStore,
    Kek,
    KeyStore,
    KeyStoreError,
    MemoryKeyStore,
)

T0 = 1_795_000_000.25  # 2026-11-18T...Z


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class MemoryKeyStoreTests(SynchronousTestCase):
    def test_current_creates_the_first_key(self) -> None:
        store = MemoryKeyStore(clock=FakeClock())
        self.assertEqual(store.list(), [])
        kek = store.current()
        self.assertIsInstance(kek, Kek)
        self.assertEqual(len(kek.key), 32)
        self.assertEqual(kek.created, T0)
        self.assertTrue(KEK_ID.match(kek.kek_id), kek.kek_id)
        self.assertTrue(kek.kek_id.startswith("k-20261118T"), kek.kek_id)
        self.assertEqual(store.current(), kek)
        self.assertEqual(store.list(), [kek])
        self.assertIsInstance(store, KeyStore)

    def test_rotate_makes_a_new_current_and_keeps_the_old(self) -> None:
        clock = FakeClock()
        store = MemoryKeyStore(clock=clock)
        first = store.current()
        clock.now += 10
        second = store.rotate()
        self.assertNotEqual(first.kek_id, second.kek_id)
        self.assertNotEqual(first.key, second.key)
        self.assertEqual(store.current(), second)
        self.assertEqual(store.get(first.kek_id), first)
        self.assertEqual(store.list(), [first, second])

    def test_unknown_id_is_none(self) -> None:
        store = MemoryKeyStore()
        store.current()
        self.assertIsNone(store.get("k-20000101T000000Z-00000000"))
        self.assertIsNone(store.get("nonsense"))

    def test_a_stopped_or_backward_clock_still_orders_keys(self) -> None:
        clock = FakeClock()
        store = MemoryKeyStore(clock=clock)
        keks = [store.rotate() for _ in range(5)]
        clock.now -= 3600  # the clock steps back
        keks.append(store.rotate())
        ids = [k.kek_id for k in keks]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), 6)
        created = [k.created for k in keks]
        self.assertEqual(created, sorted(created))
        self.assertEqual(len(set(created)), 6)
        self.assertEqual(store.current(), keks[-1])

    def test_repr_hides_the_key(self) -> None:
        kek = MemoryKeyStore().current()
        self.assertNotIn(repr(kek.key), repr(kek))
        self.assertIn(kek.kek_id, repr(kek))


class FileKeyStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.directory = os.path.join(self.base, "keys")
        self.clock = FakeClock()
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)

    def store(self, passphrase: str | None = None, kdf: str = "scrypt", cost: int | None = None) -> FileKeyStore:
        if cost is None:
            cost = 4 if kdf == "scrypt" else 10
        return FileKeyStore(self.directory, passphrase=passphrase, kdf=kdf, kdf_cost=cost, clock=self.clock)

    def key_file(self, kek: Kek) -> str:
        return os.path.join(self.directory, kek.kek_id + ".key")

    # --- permissions and files -----------------------------------------------------------------

    def test_directory_created_0700_and_key_files_0600(self) -> None:
        store = self.store()
        self.assertEqual(mode_of(self.directory), 0o700)
        kek = store.current()
        self.assertEqual(os.listdir(self.directory), [kek.kek_id + ".key"])  # no temporary left
        self.assertEqual(mode_of(self.key_file(kek)), 0o600)
        store.check()

    def test_nested_directory_created(self) -> None:
        self.directory = os.path.join(self.base, "a", "b", "keys")
        self.store().current()
        self.assertEqual(mode_of(self.directory), 0o700)

    def test_open_directory_refused_naming_path_and_mode(self) -> None:
        os.mkdir(self.directory)
        os.chmod(self.directory, 0o755)
        store = self.store()
        with self.assertRaises(KeyStoreError) as caught:
            store.check()
        message = str(caught.exception)
        self.assertIn(self.directory, message)
        self.assertIn("0755", message)
        for operation in (store.current, store.rotate, store.list):
            error = self.assertRaises(KeyStoreError, operation)
            self.assertIn("0755", str(error))
        self.assertEqual(os.listdir(self.directory), [])  # nothing written into it

    def test_group_readable_key_file_refused(self) -> None:
        kek = self.store().current()
        os.chmod(self.key_file(kek), 0o644)
        store = self.store()  # a fresh process: nothing cached
        error = self.assertRaises(KeyStoreError, store.get, kek.kek_id)
        self.assertIn(self.key_file(kek), str(error))
        self.assertIn("0644", str(error))
        self.assertRaises(KeyStoreError, store.current)
        self.assertRaises(KeyStoreError, store.check)

    def test_key_file_owned_by_another_user_refused(self) -> None:
        if os.geteuid() != 0:
            self.skipTest("needs root to chown")
        kek = self.store().current()
        os.chown(self.key_file(kek), 65534, 65534)
        error = self.assertRaises(KeyStoreError, self.store().get, kek.kek_id)
        self.assertIn("owned by uid 65534", str(error))
        os.chown(self.directory, 65534, 65534)
        error = self.assertRaises(KeyStoreError, self.store().check)
        self.assertIn(f"key directory {self.directory} is owned by uid 65534", str(error))

    def test_symlinked_key_file_refused(self) -> None:
        kek = self.store().current()
        elsewhere = os.path.join(self.base, "elsewhere.key")
        os.rename(self.key_file(kek), elsewhere)
        os.symlink(elsewhere, self.key_file(kek))
        error = self.assertRaises(KeyStoreError, self.store().get, kek.kek_id)
        self.assertIn("symbolic link", str(error))

    def test_check_lists_every_problem(self) -> None:
        first = self.store().current()
        self.clock.now += 1
        second = self.store().rotate()
        os.chmod(self.key_file(first), 0o640)
        with open(self.key_file(second), "w") as handle:
            handle.write("{not json")
        os.chmod(self.directory, 0o750)
        error = self.assertRaises(KeyStoreError, self.store().check)
        self.assertEqual(len(error.problems), 3, error.problems)
        text = str(error)
        self.assertIn("0750", text)
        self.assertIn("0640", text)
        self.assertIn("not valid JSON", text)

    def test_write_failure_leaves_no_temporary_and_names_the_file(self) -> None:
        store = self.store()
        with mock.patch.object(os, "replace", side_effect=OSError(28, "No space left on device")):
            error = self.assertRaises(KeyStoreError, store.current)
        self.assertIn("cannot write key file", str(error))
        self.assertIn("No space left on device", str(error))
        self.assertEqual(os.listdir(self.directory), [])

    def test_temporary_is_fsynced_before_rename_and_directory_after(self) -> None:
        calls: list[str] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            calls.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
            real_fsync(fd)

        def replace(a: str, b: str) -> None:
            calls.append("rename")
            real_replace(a, b)

        with mock.patch.object(os, "fsync", fsync), mock.patch.object(os, "replace", replace):
            self.store().current()
        self.assertEqual(calls, ["fsync-file", "rename", "fsync-dir"])

    # --- round trips ---------------------------------------------------------------------------

    def round_trip(self, passphrase: str | None, kdf: str) -> dict:
        store = self.store(passphrase, kdf)
        first = store.current()
        self.clock.now += 60
        second = store.rotate()
        reopened = self.store(passphrase, kdf)
        reopened.check()
        self.assertEqual(reopened.list(), [first, second])
        self.assertEqual(reopened.current(), second)
        self.assertEqual(reopened.get(first.kek_id), first)
        for kek in (first, second):
            with open(self.key_file(kek)) as handle:
                document = json.load(handle)
            self.assertEqual(document["id"], kek.kek_id)
            self.assertEqual(document["created"], kek.created)
            if passphrase is None:
                self.assertEqual(document["wrap"], "none")
            else:
                self.assertEqual(document["wrap"], "aes-256-gcm")
                self.assertNotIn("key", document)
                self.assertNotIn(kek.key.hex(), json.dumps(document))
        return document

    def test_round_trip_without_passphrase(self) -> None:
        self.round_trip(None, "scrypt")

    def test_round_trip_scrypt(self) -> None:
        document = self.round_trip("correct horse", "scrypt")
        self.assertEqual(document["kdf"]["name"], "scrypt")
        self.assertEqual((document["kdf"]["log2_n"], document["kdf"]["r"], document["kdf"]["p"]), (4, 8, 1))

    def test_round_trip_pbkdf2(self) -> None:
        document = self.round_trip("correct horse", "pbkdf2")
        self.assertEqual(document["kdf"]["name"], "pbkdf2-hmac-sha256")
        self.assertEqual(document["kdf"]["iterations"], 10)

    def test_derivation_runs_once_per_store(self) -> None:
        with mock.patch.object(keystore, "_derive", wraps=keystore._derive) as derive:
            store = self.store("pw")
            keks = [store.current()]
            for _ in range(3):
                self.clock.now += 1
                keks.append(store.rotate())
            self.assertEqual(derive.call_count, 1)
            reopened = self.store("pw")
            for kek in keks:
                self.assertEqual(reopened.get(kek.kek_id), kek)
                self.assertEqual(reopened.get(kek.kek_id), kek)
            self.assertEqual(derive.call_count, 2)

    def test_changed_cost_applies_to_new_keys_only(self) -> None:
        old = self.store("pw", cost=4).current()
        self.clock.now += 1
        new = self.store("pw", cost=5).rotate()
        store = self.store("pw", cost=5)
        self.assertEqual(store.list(), [old, new])
        with open(self.key_file(new)) as handle:
            self.assertEqual(json.load(handle)["kdf"]["log2_n"], 5)

    def test_key_rotated_by_another_process_becomes_current(self) -> None:
        server = self.store("pw")
        first = server.current()
        self.clock.now += 1
        second = self.store("pw").rotate()  # siprecctl keys rotate
        self.assertEqual(server.current(), second)
        self.assertEqual(server.get(first.kek_id), first)

    def test_rotate_always_rescans_the_directory(self) -> None:
        server = self.store()
        server.current()
        # The listing is old enough to be trusted; then another process adds a key within the
        # same timestamp tick (simulated: the directory's stat does not change).
        st = os.stat(self.directory)
        later = mock.patch.object(keystore.time, "time_ns", return_value=st.st_mtime_ns + 10**10)
        with later:
            server.current()
        self.clock.now += 1
        other = self.store().rotate()
        self.clock.now -= 1  # and this process's clock is behind
        with later, mock.patch.object(keystore.os, "stat", return_value=st):
            mine = server.rotate()
        self.assertGreater(mine.kek_id, other.kek_id)
        self.assertGreater(mine.created, other.created)
        self.assertEqual(self.store().current(), mine)

    def test_key_unknown_to_the_server_cache_is_read_from_disk(self) -> None:
        server = self.store()
        server.current()
        self.clock.now += 1
        other = self.store().rotate()
        self.assertEqual(server.get(other.kek_id), other)

    def test_unknown_id_is_none(self) -> None:
        store = self.store()
        store.current()
        self.assertIsNone(store.get("k-20000101T000000Z-00000000"))
        self.assertIsNone(store.get("../../etc/passwd"))
        self.assertIsNone(store.get(""))

    # --- clear errors --------------------------------------------------------------------------

    def test_wrong_passphrase(self) -> None:
        kek = self.store("right").current()
        store = self.store("wrong")
        error = self.assertRaises(KeyStoreError, store.get, kek.kek_id)
        self.assertIn(
            f"cannot unwrap key {kek.kek_id} with the given passphrase: wrong SIPRECD_ENCRYPTION_PASSPHRASE?",
            str(error),
        )
        self.assertRaises(KeyStoreError, store.current)
        self.assertRaises(KeyStoreError, store.check)
        # Never writes a key under the wrong passphrase.
        self.assertRaises(KeyStoreError, store.rotate)
        self.assertEqual(os.listdir(self.directory), [kek.kek_id + ".key"])

    def test_wrong_passphrase_pbkdf2(self) -> None:
        kek = self.store("right", "pbkdf2").current()
        error = self.assertRaises(KeyStoreError, self.store("wrong", "pbkdf2").get, kek.kek_id)
        self.assertIn("wrong SIPRECD_ENCRYPTION_PASSPHRASE?", str(error))

    def test_wrapped_store_without_passphrase(self) -> None:
        kek = self.store("pw").current()
        store = self.store(None)
        error = self.assertRaises(KeyStoreError, store.get, kek.kek_id)
        self.assertIn("is wrapped with a passphrase: set SIPRECD_ENCRYPTION_PASSPHRASE", str(error))
        self.assertRaises(KeyStoreError, store.check)
        self.assertRaises(KeyStoreError, store.rotate)

    def test_clear_store_with_passphrase_refused(self) -> None:
        kek = self.store(None).current()
        store = self.store("pw")
        error = self.assertRaises(KeyStoreError, store.current)
        self.assertIn("stored without a passphrase, but SIPRECD_ENCRYPTION_PASSPHRASE is set", str(error))
        self.assertRaises(KeyStoreError, store.rotate)
        self.assertEqual(os.listdir(self.directory), [kek.kek_id + ".key"])

    def test_altered_file_refused(self) -> None:
        kek = self.store("pw").current()
        path = self.key_file(kek)
        with open(path) as handle:
            document = json.load(handle)
        document["created"] += 1  # re-dated: bound into the AEAD tag
        with open(path, "w") as handle:
            json.dump(document, handle)
        error = self.assertRaises(KeyStoreError, self.store("pw").get, kek.kek_id)
        self.assertIn("was altered", str(error))

    def test_renamed_file_refused(self) -> None:
        kek = self.store().current()
        other = "k-20000101T000000Z-00000000"
        os.rename(self.key_file(kek), os.path.join(self.directory, other + ".key"))
        error = self.assertRaises(KeyStoreError, self.store().get, other)
        self.assertIn(f"holds key {kek.kek_id!r}, not {other}", str(error))

    def test_bad_settings(self) -> None:
        self.assertRaises(KeyStoreError, FileKeyStore, self.directory, passphrase="", kdf_cost=4)
        self.assertRaises(KeyStoreError, FileKeyStore, self.directory, passphrase=None, kdf="md5")
        error = self.assertRaises(KeyStoreError, FileKeyStore, self.directory, passphrase="x", kdf_cost=600_000)
        self.assertIn("scrypt", str(error))
