"""siprecctl decrypt / verify / rewrap: lines in plain words and exit codes."""

from __future__ import annotations

import io
import os

from twisted.trial import unittest

from siprecd.crypto.container import AES_256_GCM
from siprecd.crypto.files import EncryptedPartFile
from siprecd.ctl.files import cmd_decrypt, cmd_rewrap, cmd_verify
from tests.test_crypto_container import K1, K2, FakeKeys, records


class CtlFilesTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.keys = FakeKeys(K1)
        self.out = io.StringIO()
        self.err = io.StringIO()

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def make(self, name: str, plaintext: bytes, *, publish: bool = True) -> str:
        writer = EncryptedPartFile(self.path(name), self.keys, AES_256_GCM, chunk_size=1024)
        writer.write(plaintext)
        writer.flush()
        if publish:
            return writer.publish()
        writer.close()
        return writer.part_path

    def tamper(self, path: str) -> None:
        with open(path, "r+b") as handle:
            data = handle.read()
            offset, _ = records(data)[1]
            handle.seek(offset + 10)
            handle.write(bytes([data[offset + 10] ^ 0x20]))

    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()

    def test_verify(self) -> None:
        good = self.make("good.enc", b"x" * 3000)
        truncated = self.make("cut.enc", b"y" * 2500, publish=False)
        self.assertEqual(cmd_verify([good], self.keys, stdout=self.out), 0)
        self.assertEqual(self.lines(), [f"{good}: ok (AES-256-GCM, key k-1, 4 chunks, 2.9 KiB)"])

        self.out = io.StringIO()
        tampered = self.make("bad.enc", b"z" * 3000)
        self.tamper(tampered)
        missing = self.path("missing.enc")
        self.assertEqual(cmd_verify([good, truncated, tampered], self.keys, stdout=self.out), 1)
        self.assertEqual(
            self.lines(),
            [
                f"{good}: ok (AES-256-GCM, key k-1, 4 chunks, 2.9 KiB)",
                f"{truncated}: truncated at chunk 3: the file ends without its final chunk "
                "(the recorder stopped before finishing it); 3 chunks decrypt",
                f"{tampered}: tampered at chunk 1: authentication failed",
            ],
        )

        self.out = io.StringIO()
        self.assertEqual(cmd_verify([tampered, missing, good], self.keys, stdout=self.out), 2)
        self.assertEqual(self.lines()[1], f"{missing}: error: No such file or directory")
        self.assertEqual(len(self.lines()), 3)

        self.out = io.StringIO()
        self.assertEqual(cmd_verify([good], FakeKeys(K2), stdout=self.out), 1)
        self.assertEqual(self.lines(), [f"{good}: unknown key k-1: not in the key store"])

    def test_verify_without_paths_is_a_usage_error(self) -> None:
        self.assertEqual(cmd_verify([], self.keys, stdout=self.out, stderr=self.err), 2)
        self.assertEqual((self.out.getvalue(), self.err.getvalue()), ("", "verify: no files given\n"))
        self.assertEqual(cmd_rewrap([], self.keys, stdout=self.out, stderr=self.err), 2)

    def test_decrypt(self) -> None:
        source = self.make("call.enc", b"audio" * 1000)
        out = self.path("call.raw")
        self.assertEqual(cmd_decrypt(source, out, self.keys, stdout=self.out), 0)
        self.assertEqual(self.lines(), [f"{source}: ok (AES-256-GCM, key k-1, 6 chunks, 4.9 KiB); written to {out}"])
        with open(out, "rb") as handle:
            self.assertEqual(handle.read(), b"audio" * 1000)

        self.out = io.StringIO()
        self.assertEqual(cmd_decrypt(source, out, self.keys, stdout=self.out), 2)
        self.assertEqual(self.lines(), [f"{source}: not decrypted: {out} already exists"])

    def test_decrypt_truncated_writes_what_decrypts(self) -> None:
        part = self.make("call.enc", b"a" * 2100, publish=False)
        out = self.path("call.raw")
        self.assertEqual(cmd_decrypt(part, out, self.keys, stdout=self.out), 1)
        self.assertEqual(
            self.lines(),
            [
                f"{part}: truncated at chunk 3: the file ends without its final chunk (the recorder stopped "
                f"before finishing it); 3 chunks decrypt; those were written to {out}"
            ],
        )
        with open(out, "rb") as handle:
            self.assertEqual(handle.read(), b"a" * 2100)

    def test_decrypt_tampered_writes_nothing(self) -> None:
        source = self.make("call.enc", b"a" * 3000)
        self.tamper(source)
        out = self.path("call.raw")
        self.assertEqual(cmd_decrypt(source, out, self.keys, stdout=self.out), 1)
        self.assertEqual(self.lines(), [f"{source}: tampered at chunk 1: authentication failed; nothing written"])
        self.assertEqual(os.listdir(self.directory), ["call.enc"])

        self.out = io.StringIO()
        self.assertEqual(cmd_decrypt(self.path("nope"), out, self.keys, stdout=self.out), 2)
        self.assertEqual(self.lines(), [f"{self.path('nope')}: error: No such file or directory"])

    def test_rewrap(self) -> None:
        first = self.make("a.enc", b"a" * 3000)
        second = self.make("b.enc", b"b" * 100)
        bad = self.make("c.enc", b"c" * 3000)
        self.tamper(bad)
        self.keys = FakeKeys(K1, K2)
        self.assertEqual(cmd_rewrap([first, second, bad], self.keys, stdout=self.out), 1)
        self.assertEqual(
            self.lines(),
            [
                f"{first}: rewrapped from key k-1 to key k-2 (4 chunks unchanged)",
                f"{second}: rewrapped from key k-1 to key k-2 (2 chunks unchanged)",
                f"{bad}: not rewrapped: tampered at chunk 1: authentication failed",
            ],
        )
        self.out = io.StringIO()
        self.assertEqual(cmd_rewrap([first], self.keys, stdout=self.out), 0)
        self.assertEqual(
            self.lines(), [f"{first}: already under key k-2; ok (AES-256-GCM, key k-2, 4 chunks, 2.9 KiB)"]
        )
        self.out = io.StringIO()
        self.assertEqual(cmd_verify([first, second], FakeKeys(K2), stdout=self.out), 0)
