"""End to end on loopback: SIPp against a running ``twistd -n siprec`` over UDP and TCP."""

from __future__ import annotations

import json
import glob
import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.e2e.server import Server, assert_clean_stop, run_sipp, sipp_available


class SIPpTests(SynchronousTestCase):
    """One server for all scenarios of a test; each scenario runs over UDP and TCP."""

    def setUp(self) -> None:
        if not sipp_available():
            raise SkipTest("sipp (Debian package sip-tester) is not installed: run scripts/setup")
        self.server = Server(self.mktemp(), sections={"siprec": {"accept_plain_calls": "true"}})
        self.server.start()
        self.addCleanup(self._stop)

    def _stop(self) -> None:
        assert_clean_stop(self, self.server)

    def sipp(self, scenario: str, transport: str) -> None:
        result = run_sipp(scenario, self.server.sip_port, os.path.join(self.server.directory, "sipp"), transport=transport)
        self.assertEqual(result.returncode, 0, f"{scenario} over {transport}: {result.explain()}\n--- server log\n{self.server.log()[-4000:]}")

    def test_options(self) -> None:
        for transport in ("u1", "t1"):
            self.sipp("options.xml", transport)

    def test_unknown_method(self) -> None:
        for transport in ("u1", "t1"):
            self.sipp("unknown_method.xml", transport)

    def test_invite_bye(self) -> None:
        for transport in ("u1", "t1"):
            self.sipp("invite_bye.xml", transport)
        sessions = sorted(glob.glob(os.path.join(self.server.recordings, "*", "*", "*", "*", "session.json")))
        self.assertEqual(len(sessions), 2)
        transports = set()
        for path in sessions:
            with open(path) as handle:
                session = json.load(handle)
            self.assertEqual(session["state"], "ended")
            self.assertEqual(session["end_reason"], "BYE from the SRC")
            self.assertIs(session["siprec"], False)
            self.assertEqual([s["codec"] for s in session["streams"]], ["PCMU"])
            transports.add(session["src"]["transport"])
        self.assertEqual(transports, {"UDP", "TCP"})

    def test_cancel(self) -> None:
        for transport in ("u1", "t1"):
            self.sipp("cancel.xml", transport)
