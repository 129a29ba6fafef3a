"""Start-up recovery of the sessions a crash left open (the active index and session.json)."""

from __future__ import annotations

import json
import os
import wave

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from siprecd.config import load_config
from siprecd.recording.files import ActiveIndex, SessionFiles, session_directory
from siprecd.recording.interrupted import INTERRUPTED, recover_interrupted
from siprecd.recording.oggopus import OggOpusWriter
from siprecd.recording.session import iso_utc
from siprecd.recording.wav import WavWriter
from siprecd.siprec.controller import Controller, ControllerService

STARTED = 1_600_000_000.0
CRASHED = STARTED + 95.0  # the last write before the process died


class InterruptedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.index = ActiveIndex(self.root)

    def make_session(self, session_id: str, *, state: str = "active", torn: bool = True) -> str:
        """A session as kill -9 leaves it: .part files, session.json not ended, still marked."""
        directory = session_directory(self.root, session_id, STARTED)
        files = SessionFiles(directory)
        files.create()
        files.write_json(
            "session.json",
            {"session_id": session_id, "state": state, "started_at": iso_utc(STARTED), "ended_at": None,
             "end_reason": "BYE from the SRC" if state == "ended" else None},
        )
        self.index.mark(session_id, directory)
        writer = WavWriter(os.path.join(directory, "stream-1-caller.wav"), sample_rate=8000, first_chunk=1)
        writer.write(b"\x01\x00" * 800)
        writer.close()  # the crash: never finalized
        if torn:
            with open(writer.part_path, "ab") as handle:
                handle.write(b"\x07")  # half a sample frame
        ogg = OggOpusWriter(os.path.join(directory, "stream-2-callee.opus"))
        ogg.close()
        for name in os.listdir(directory):
            os.utime(os.path.join(directory, name), (CRASHED - 10, CRASHED - 10))
        os.utime(writer.part_path, (CRASHED, CRASHED))
        return directory

    def read_json(self, directory: str) -> dict:
        with open(os.path.join(directory, "session.json"), encoding="utf-8") as handle:
            return json.load(handle)

    def test_active_session_recovered(self) -> None:
        directory = self.make_session("s1")
        [report] = recover_interrupted(self.root)
        self.assertEqual(report, {"session_id": "s1", "directory": directory, "outcome": "recovered", "files": 2})
        self.assertEqual(sorted(os.listdir(directory)), ["session.json", "stream-1-caller.wav", "stream-2-callee.opus"])
        with wave.open(os.path.join(directory, "stream-1-caller.wav"), "rb") as handle:
            self.assertEqual((handle.getframerate(), handle.getnframes()), (8000, 800))
        session = self.read_json(directory)
        self.assertEqual(session["state"], "ended")
        self.assertTrue(session["end_reason"].startswith("interrupted: "))
        self.assertEqual(session["end_reason"], INTERRUPTED)
        # The end is the last write before the crash, not the time of the recovery.
        self.assertEqual(session["ended_at"], iso_utc(CRASHED))
        self.assertEqual(session["started_at"], iso_utc(STARTED))
        wav, ogg = session["recovered_files"]
        self.assertEqual(
            wav,
            {"file": "stream-1-caller.wav", "outcome": "recovered", "kind": "wav", "audio_bytes": 1600,
             "removed_bytes": 1, "detail": ""},
        )
        self.assertEqual((ogg["file"], ogg["outcome"], ogg["kind"]), ("stream-2-callee.opus", "recovered", "ogg"))
        self.assertEqual(self.index.entries(), [])
        self.assertEqual(recover_interrupted(self.root), [])  # done once

    def test_ended_session_keeps_its_end(self) -> None:
        # Killed between the final session.json and the unmark: only the files need anything.
        directory = self.make_session("s1", state="ended", torn=False)
        recover_interrupted(self.root)
        session = self.read_json(directory)
        self.assertEqual((session["state"], session["end_reason"], session["ended_at"]), ("ended", "BYE from the SRC", None))
        self.assertEqual(session["recovered_files"][0]["removed_bytes"], 0)
        self.assertEqual(self.index.entries(), [])

    def test_missing_directory_reported_and_unmarked(self) -> None:
        gone = os.path.join(self.root, "2020", "09", "13", "gone")
        self.index.mark("gone", gone)
        [report] = recover_interrupted(self.root)
        self.assertEqual(report, {"session_id": "gone", "directory": gone, "outcome": "missing"})
        self.assertEqual(self.index.entries(), [])

    def test_unreadable_session_json_logged_and_left_marked(self) -> None:
        bad = self.make_session("bad")
        with open(os.path.join(bad, "session.json"), "w", encoding="utf-8") as handle:
            handle.write("{not json")
        good = self.make_session("good")
        reports = recover_interrupted(self.root)
        self.assertEqual([r["session_id"] for r in reports], ["good"])  # one bad session stops nothing
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.index.entries(), [("bad", bad)])
        self.assertEqual(self.read_json(good)["state"], "ended")

    def test_no_index(self) -> None:
        self.assertEqual(recover_interrupted(self.root), [])
        self.assertEqual(recover_interrupted(os.path.join(self.root, "nothing-here")), [])

    def test_controller_service_recovers_at_start(self) -> None:
        directory = self.make_session("s1")
        config = load_config(None, {"SIPRECD_RECORDING_DIRECTORY": self.root})
        clock = task.Clock()
        service = ControllerService(Controller(clock, config, None))  # type: ignore[arg-type]
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(self.read_json(directory)["state"], "ended")
        self.assertEqual(self.index.entries(), [])


class ActiveIndexTests(SynchronousTestCase):
    def test_mark_entries_unmark(self) -> None:
        root = os.path.abspath(self.mktemp())
        index = ActiveIndex(root)
        self.assertEqual(index.entries(), [])
        index.mark("b", "/recordings/b")
        index.mark("a", "/recordings/a")
        with open(os.path.join(index.path, ".c.tmp"), "w") as handle:
            handle.write("/half/written")  # a temporary file of an interrupted mark
        self.assertEqual(index.entries(), [("a", "/recordings/a"), ("b", "/recordings/b")])
        index.unmark("a")
        index.unmark("a")  # twice: harmless
        self.assertEqual(index.entries(), [("b", "/recordings/b")])

    def test_mark_failure_is_not_fatal(self) -> None:
        root = os.path.abspath(self.mktemp())
        with open(root, "w") as handle:
            handle.write("a file where the directory should be")
        ActiveIndex(root).mark("a", "/x")  # no exception: only crash recovery is lost
        with open(root) as handle:
            self.assertEqual(handle.read(), "a file where the directory should be")
