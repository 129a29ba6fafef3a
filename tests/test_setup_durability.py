"""A call's files through the DurableWriter: the 200 waits for them, one batch per setup, a
full disk found by the writer thread still gives 503 and leaves nothing behind."""

from __future__ import annotations

import errno
import glob
import os

from unittest import mock

from siprecd import durable
from siprecd.crypto.at_rest import AtRest
from siprecd.durable import DurableWriter
from siprecd.sip.message import Response
from tests.test_durable import ManualPool
from tests.test_siprec_controller import SRC, Call, ControllerTestCase, audio, multipart, rfc7865, sdp_offer


class SetupDurabilityTests(ControllerTestCase):
    def setUp(self) -> None:
        self.pool = ManualPool()
        self.writer = DurableWriter(self.pool)
        self.start(at_rest=AtRest(None, durable=self.writer))

    def send(self, call: Call, method: str, body: bytes = b"", content_type: str | None = None) -> tuple[int, str]:
        data, branch = call.build(method, body=body, content_type=content_type)
        before = len(self.udp.sent)
        self.stack.receive(data, SRC)
        return before, branch

    def finals(self, before: int, branch: str) -> list[Response]:
        return [r for r in self.responses(before) if r.top_via.branch == branch and r.status >= 200]

    def files(self) -> list[str]:
        return sorted(os.path.relpath(p, self.recordings) for p in glob.glob(os.path.join(self.recordings, "**"), recursive=True)
                      if os.path.isfile(p))

    def test_the_200_waits_for_one_batch_with_every_file_of_the_setup(self) -> None:
        call = Call(self)
        before, branch = self.send(call, "INVITE", *multipart(sdp_offer(audio(10000, "a")), rfc7865("complete.xml")))
        self.assertEqual(self.finals(before, branch), [])
        self.assertEqual(len(self.pool.waiting), 1)  # everything of the setup in one batch
        self.assertFalse(any(f.endswith("session.json") for f in self.files()))
        self.pool.step()
        (response,) = self.finals(before, branch)
        self.assertEqual(response.status, 200)
        names = {os.path.basename(f) for f in self.files()}
        self.assertTrue({"session.json", "metadata-0001.xml", "sdp-0001-offer.sdp", "sdp-0002-answer.sdp"} <= names, names)
        self.assertEqual(len(os.listdir(os.path.join(self.recordings, ".active"))), 1)
        self.assertEqual(self.pool.waiting, [])
        call.to_tag = response.to.tag
        # A re-INVITE's 200 waits for its SDP files and session.json too.
        before, branch = self.send(call, "INVITE", sdp_offer(audio(10000, "a"), version=2), "application/sdp")
        self.assertEqual(self.finals(before, branch), [])
        self.pool.step()
        self.assertEqual([r.status for r in self.finals(before, branch)], [200])
        self.assertIn("sdp-0004-answer.sdp", {os.path.basename(f) for f in self.files()})
        call.ack()
        # The BYE's 200 waits for the final session.json (and the marker's removal).
        before, branch = self.send(call, "BYE")
        self.assertEqual(self.finals(before, branch), [])
        self.assertIn("stream-1-a.wav.part", {os.path.basename(f) for f in self.files()})
        self.pool.step()
        self.assertEqual([r.status for r in self.finals(before, branch)], [200])
        # Published (fsync, link) in the batch before the 200, with the final session.json.
        names = {os.path.basename(f) for f in self.files()}
        self.assertIn("stream-1-a.wav", names)
        self.assertFalse([n for n in names if n.endswith(".part")], names)
        self.assertEqual(self.session(call)["state"], "ended")
        self.assertEqual(os.listdir(os.path.join(self.recordings, ".active")), [])

    def test_disk_full_on_the_writer_thread_gives_503_and_leaves_nothing(self) -> None:
        real = durable._stage

        def full(path: str, data: bytes, mode: int) -> str:
            if path.endswith("session.json"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, data, mode)

        call = Call(self)
        before, branch = self.send(call, "INVITE", *multipart(sdp_offer(audio(10000, "a"), audio(10002, "b")), rfc7865("complete.xml")))
        with mock.patch.object(durable, "_stage", full):
            self.pool.step()
        (response,) = self.finals(before, branch)
        self.assertEqual((response.status, response.reason, response.headers.get("Retry-After")),
                         (503, "recording storage is full", "10"))
        while self.pool.waiting:  # the marker's removal, then the directory's
            self.pool.step()
        self.assert_nothing_bound()
        self.assertEqual(self.controller.sessions, {})
        self.assertEqual(self.controller.counters, {"storage_errors": 1})
        self.assertEqual(glob.glob(os.path.join(self.recordings, "*", "*", "*", "*")), [])
        self.assertEqual(os.listdir(os.path.join(self.recordings, ".active")), [])

    def test_metadata_lost_by_the_writer_is_counted_and_the_call_goes_on(self) -> None:
        real = durable._stage

        def full(path: str, data: bytes, mode: int) -> str:
            if "metadata-" in path:
                raise OSError(errno.EIO, "Input/output error")
            return real(path, data, mode)

        call = Call(self)
        before, branch = self.send(call, "INVITE", *multipart(sdp_offer(audio(10000, "a")), rfc7865("complete.xml")))
        with mock.patch.object(durable, "_stage", full):
            self.pool.step()
        self.assertEqual([r.status for r in self.finals(before, branch)], [200])
        self.assertEqual(self.controller.counters, {"storage_errors": 1})
        call.to_tag = self.finals(before, branch)[0].to.tag
        before, branch = self.send(call, "BYE")
        self.pool.step()
        # The final session.json says the version has no file.
        self.assertEqual([v["file"] for v in self.session(call)["metadata_versions"]], [""])

    def test_cancel_while_the_files_are_written(self) -> None:
        call = Call(self)
        before, branch = self.send(call, "INVITE", sdp_offer(audio(10000, "a")), "application/sdp")
        cancel, _ = call.build("CANCEL", cseq=call.cseq, branch=branch)
        self.stack.receive(cancel, SRC)
        self.assertEqual(self.controller.sessions, {})
        while self.pool.waiting:
            self.pool.step()
        self.assertEqual(sorted((r.cseq.method, r.status) for r in self.finals(before, branch)), [("CANCEL", 200), ("INVITE", 487)])
        self.assert_nothing_bound()


